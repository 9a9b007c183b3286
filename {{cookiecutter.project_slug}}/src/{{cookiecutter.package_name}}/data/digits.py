"""scikit-learn's 8x8 digits: 1,797 images that ship with scikit-learn (no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.data.common import DataInfo, DataModule, seeded_split, take_fraction
from {{ cookiecutter.package_name }}.data.rules import DATA
from {{ cookiecutter.package_name }}.errors import check_arguments


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits' images (N, 8, 8) on a 0-16 scale and labels, as ``sklearn.datasets.load_digits`` gives them.

    Read from the file scikit-learn ships, without importing scikit-learn (a second of every
    run's start-up); scikit-learn's own loader where that file is not where it has always been.
    """
    spec = importlib.util.find_spec("sklearn")
    folders = spec.submodule_search_locations if spec is not None else None
    path = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_load_digits

        digits = sklearn_load_digits()
        return digits.images, digits.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


class DigitsDataModule(DataModule):
    """Images of shape (1, 8, 8), standardised with the train split's statistics."""

    def __init__(
        self, val_fraction: float = 0.15, test_fraction: float = 0.15, subset_fraction: float = 1.0, **loader_kwargs
    ) -> None:
        super().__init__(**loader_kwargs)
        fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction, "subset_fraction": subset_fraction}
        check_arguments("data", DATA, fractions)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.subset_fraction = subset_fraction

    def setup(self) -> DataInfo:
        digit_images, digit_labels = load_digits()
        images = torch.tensor(digit_images, dtype=torch.float32).unsqueeze(1)
        labels = torch.tensor(digit_labels, dtype=torch.long)
        train, val, test = seeded_split(len(labels), [self.val_fraction, self.test_fraction], self.seed)
        train = take_fraction(train, self.subset_fraction)
        mean, std = self.mean, self.std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[val], labels[val])
        self.test_set = TensorDataset(images[test], labels[test])
        self.info = DataInfo(num_classes=10, in_chans=1, img_size=8, class_names=[str(digit) for digit in range(10)])
        return self.info

    def preprocess(self, image: Any) -> torch.Tensor:
        """A picture of a digit -> the (1, 8, 8) input training saw: gray, 8x8, on the digits' 0-16 scale,
        standardised with the train split's statistics (after ``setup``). Digits are light ink on dark."""
        from PIL import Image

        gray = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        pixels = torch.tensor(np.asarray(gray), dtype=torch.float32) * (16.0 / 255.0)
        return ((pixels - self.mean) / self.std).unsqueeze(0)
