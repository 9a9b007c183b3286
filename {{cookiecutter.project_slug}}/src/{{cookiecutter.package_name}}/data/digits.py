"""scikit-learn's 8x8 digits: 1,797 images that ship with scikit-learn (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.data.common import DataInfo, DataModule, seeded_split, take_fraction


class DigitsDataModule(DataModule):
    """Images of shape (1, 8, 8), standardised with the train split's statistics."""

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 subset_fraction: float = 1.0, **loader_kwargs) -> None:
        super().__init__(**loader_kwargs)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.subset_fraction = subset_fraction

    def setup(self) -> DataInfo:
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
        labels = torch.tensor(digits.target, dtype=torch.long)
        train, val, test = seeded_split(len(labels), [self.val_fraction, self.test_fraction], self.seed)
        train = take_fraction(train, self.subset_fraction)
        mean, std = self.mean, self.std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[val], labels[val])
        self.test_set = TensorDataset(images[test], labels[test])
        self.info = DataInfo(num_classes=10, in_chans=1, img_size=8,
                             class_names=[str(digit) for digit in range(10)])
        return self.info

    def preprocess(self, image: Any) -> torch.Tensor:
        """A picture of a digit -> the (1, 8, 8) input training saw: gray, 8x8, on the digits' 0-16 scale,
        standardised with the train split's statistics (after ``setup``). Digits are light ink on dark."""
        gray = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        pixels = torch.tensor(np.asarray(gray), dtype=torch.float32) * (16.0 / 255.0)
        return ((pixels - self.mean) / self.std).unsqueeze(0)
