"""torchvision image data sets (MNIST, Fashion-MNIST, CIFAR-10), image folders and fake images.

Every source yields (image, label) pairs shaped for the model: ``channels`` (1 or 3;
grayscale is repeated to RGB, RGB is averaged to gray) and ``img_size`` (square
resize), normalised with the source's own statistics. Both keys default to the
source's native shape; the data configs read them from the model config.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from {{ cookiecutter.package_name }}.data.common import (
    DataInfo,
    DataModule,
    seeded_split,
    stratified_split,
    take_fraction,
    thin_splits,
)
from {{ cookiecutter.package_name }}.data.download import download_error, reachable
from {{ cookiecutter.package_name }}.data.rules import DATA
from {{ cookiecutter.package_name }}.errors import UserError, check_arguments

log = logging.getLogger(__name__)

# name -> title, torchvision class, download URL, folder and files to fetch by hand, native shape, statistics
TORCHVISION_SETS: dict[str, dict[str, Any]] = {
    "mnist": dict(
        title="MNIST",
        cls=datasets.MNIST,
        url=datasets.MNIST.mirrors[0],
        folder="MNIST/raw",
        files="train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz",
        channels=1,
        size=28,
        mean=(0.1307,),
        std=(0.3081,),
    ),
    "fashion_mnist": dict(
        title="Fashion-MNIST",
        cls=datasets.FashionMNIST,
        url=datasets.FashionMNIST.mirrors[0],
        folder="FashionMNIST/raw",
        files="train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz",
        channels=1,
        size=28,
        mean=(0.2860,),
        std=(0.3530,),
    ),
    "cifar10": dict(
        title="CIFAR-10",
        cls=datasets.CIFAR10,
        url=datasets.CIFAR10.url,
        folder=".",
        files="cifar-10-python.tar.gz (extracted to cifar-10-batches-py/)",
        channels=3,
        size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
}


def image_transform(
    native_channels: int, channels: int, size: int | None, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], torch.Tensor]:
    """PIL image or uint8 tensor -> normalised float tensor with ``channels`` channels, resized to ``size``."""
    if channels not in (1, 3):
        raise UserError(f"data.channels={channels}: images have 1 (gray) or 3 (RGB) channels; use 1 or 3.")
    steps: list[Any] = [v2.ToImage()]
    if channels != native_channels:
        steps.append(v2.Grayscale(num_output_channels=channels))
        mean, std = _adapt_stats(mean, std, channels)
    if size is not None:
        steps.append(v2.Resize((size, size), antialias=True))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def _adapt_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel statistics for ``channels``: repeated for gray -> RGB, averaged for RGB -> gray."""
    if len(mean) == channels:
        return list(mean), list(std)
    if channels == 3:
        return [mean[0]] * 3, [std[0]] * 3
    return [sum(mean) / len(mean)], [sum(std) / len(std)]


def labels_of(dataset: Any) -> list[int] | None:
    """The class label of each example, read without opening images (``targets``); None when unknown."""
    if isinstance(dataset, Subset):
        inner = labels_of(dataset.dataset)
        return None if inner is None else [inner[index] for index in dataset.indices]
    targets = getattr(dataset, "targets", None)
    return None if targets is None else [int(target) for target in targets]


class Transformed(Dataset):
    """Applies ``transform`` to the images of a (image, label) data set."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image), int(label)


class VisionDataModule(DataModule):
    """Shared by every image source: seeded train/val split, subset, shape and normalisation.

    Subclasses implement :meth:`load` (raw train and test sets) and set the class
    attributes describing the source's native images.
    """

    name = "images"
    native_channels = 3
    native_size = 32
    always_resize = False  # True where images come in any size
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    stratify = False  # True: the val split keeps the class proportions, and thin splits get one warning

    def __init__(
        self,
        data_dir: str = "data",
        img_size: int | None = None,
        channels: int | None = None,
        val_fraction: float = 0.1,
        subset_fraction: float = 1.0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_arguments("data", DATA, {"val_fraction": val_fraction, "subset_fraction": subset_fraction})
        self.data_dir = Path(data_dir).expanduser()
        self.img_size, self.channels = img_size, channels
        self.val_fraction, self.subset_fraction = val_fraction, subset_fraction

    def load(self) -> tuple[Dataset, Dataset, list[str]]:
        """The raw (train, test) data sets yielding (PIL image or tensor, label), and the class names."""
        raise NotImplementedError

    def setup(self) -> DataInfo:
        train_full, test, class_names = self.load()
        channels = self.channels or self.native_channels
        size = self.img_size or self.native_size
        resize = size if self.always_resize or size != self.native_size else None
        transform = self.transform = image_transform(self.native_channels, channels, resize, self.mean, self.std)
        labels = labels_of(train_full) if self.stratify else None
        train, val = (
            stratified_split(labels, [self.val_fraction], self.seed)
            if labels is not None
            else seeded_split(len(train_full), [self.val_fraction], self.seed)  # type: ignore[arg-type]  # a map-style data set has a length
        )
        test_indices = list(range(len(test)))  # type: ignore[arg-type]
        test_labels = labels_of(test) if labels is not None else None
        if labels is not None and test_labels is not None:
            picked = {
                "train": [labels[index] for index in take_fraction(train, self.subset_fraction)],
                "val": [labels[index] for index in take_fraction(val, self.subset_fraction)],
                "test": [test_labels[index] for index in take_fraction(test_indices, self.subset_fraction)],
            }
            if warning := thin_splits(picked, class_names):
                log.warning("%s", warning)
        self.train_set = Transformed(Subset(train_full, take_fraction(train, self.subset_fraction)), transform)
        self.val_set = Transformed(Subset(train_full, take_fraction(val, self.subset_fraction)), transform)
        self.test_set = Transformed(Subset(test, take_fraction(test_indices, self.subset_fraction)), transform)
        self.info = DataInfo(num_classes=len(class_names), in_chans=channels, img_size=size, class_names=class_names)
        return self.info

    def preprocess(self, image: Any) -> torch.Tensor:
        """One PIL image (any mode and size) -> the tensor the model saw in training (after ``setup``)."""
        return self.transform(image.convert("L" if self.native_channels == 1 else "RGB"))


class TorchvisionDataModule(VisionDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10, downloaded into ``data_dir`` on first use."""

    def __init__(self, dataset: str, download: bool = True, download_timeout: float = 5.0, **kwargs: Any) -> None:
        if dataset not in TORCHVISION_SETS:
            raise UserError(f"data.dataset={dataset}: choose one of {', '.join(TORCHVISION_SETS)}.")
        super().__init__(**kwargs)
        self.spec = TORCHVISION_SETS[dataset]
        self.name, self.download, self.download_timeout = dataset, download, download_timeout
        self.native_channels, self.native_size = self.spec["channels"], self.spec["size"]
        self.mean, self.std = self.spec["mean"], self.spec["std"]

    def _build(self, train: bool) -> Dataset:
        return self.spec["cls"](str(self.data_dir), train=train, download=False)

    def load(self) -> tuple[Dataset, Dataset, list[str]]:
        try:
            train, test = self._build(True), self._build(False)
        except RuntimeError:  # not on disk (or corrupt): fetch it
            self._fetch()
            train, test = self._build(True), self._build(False)
        return train, test, [str(name) for name in train.classes]  # type: ignore[attr-defined]

    def _fetch(self) -> None:
        url, folder = self.spec["url"], str(self.data_dir / self.spec["folder"])
        if not self.download:
            raise download_error(self.spec["title"], url, folder, self.spec["files"], "data.download=false")
        if not reachable(url, self.download_timeout):
            raise download_error(self.spec["title"], url, folder, self.spec["files"], "no connection")
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(max(30.0, self.download_timeout))
        try:
            for train in (True, False):
                self.spec["cls"](str(self.data_dir), train=train, download=True)
        except (OSError, RuntimeError, ValueError) as failure:
            raise download_error(self.spec["title"], url, folder, self.spec["files"], type(failure).__name__) from None
        finally:
            socket.setdefaulttimeout(previous)


class ImageFolderDataModule(VisionDataModule):
    """Your own images: ``root/<class name>/*.png|jpg|...``; a ``test/`` folder beside ``train/`` if any.

    With ``root/train`` and ``root/test`` present those are the splits; otherwise ``root``
    holds the class folders and ``test_fraction`` of each class becomes the test split (stratified, as is the
    validation split; a split lacking a class or under 10 images per class gets one warning).
    """

    name = "image_folder"
    always_resize = True
    stratify = True

    def __init__(
        self,
        root: str,
        native_size: int = 64,
        channels: int | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        test_fraction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(channels=channels, **kwargs)
        check_arguments("data", DATA, {"test_fraction": test_fraction})
        self.root, self.test_fraction = Path(root).expanduser(), test_fraction
        self.native_size = native_size  # images are resized to this unless the model asks for a size
        self.native_channels = 3  # ImageFolder opens every image as RGB
        self.mean, self.std = list(mean), list(std)

    def load(self) -> tuple[Dataset, Dataset, list[str]]:
        if not self.root.is_dir():
            raise UserError(
                f"data.root={self.root} is not a folder: point it at a folder of class folders "
                "(root/<class>/<image>.png)."
            )
        split_dirs = self.root / "train", self.root / "test"
        try:
            if all(path.is_dir() for path in split_dirs):
                train, test = (datasets.ImageFolder(str(path)) for path in split_dirs)
            else:
                full = datasets.ImageFolder(str(self.root))
                rest, held_out = stratified_split(full.targets, [self.test_fraction], self.seed + 1)
                train, test = Subset(full, rest), Subset(full, held_out)
        except (FileNotFoundError, OSError) as error:
            raise UserError(f"data.root={self.root}: {error}; put each class's images in root/<class>/.") from None
        classes = (train.dataset if isinstance(train, Subset) else train).classes  # type: ignore[union-attr]
        return train, test, list(classes)


class FakeDataModule(VisionDataModule):
    """Random images and labels (torchvision ``FakeData``) for smoke tests and benchmarks."""

    name = "fake"

    def __init__(
        self,
        num_samples: int = 256,
        num_test: int = 64,
        num_classes: int = 10,
        native_channels: int = 3,
        native_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_samples, self.num_test, self.num_classes = num_samples, num_test, num_classes
        self.native_channels, self.native_size = native_channels, native_size
        self.mean, self.std = [0.5] * native_channels, [0.5] * native_channels

    def load(self) -> tuple[Dataset, Dataset, list[str]]:
        shape = (self.native_channels, self.native_size, self.native_size)
        train = datasets.FakeData(self.num_samples, shape, self.num_classes, random_offset=self.seed)
        test = datasets.FakeData(self.num_test, shape, self.num_classes, random_offset=self.seed + self.num_samples)
        return train, test, [str(index) for index in range(self.num_classes)]
