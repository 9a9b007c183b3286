"""What every data source shares: metadata, seeded splits and DDP-aware loaders."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, TensorDataset

from {{ cookiecutter.package_name }} import runtime


@dataclass
class DataInfo:
    """Metadata a model is built from (filled in by the data source)."""

    num_classes: int | None = None
    in_chans: int | None = None
    img_size: int | None = None
    class_names: list[str] = field(default_factory=list)
    tokenizer: Any = None


class EpochSampler(Sampler[int]):
    """Shuffles (or not) with a seed that depends only on ``seed`` and the epoch.

    Under DDP each rank takes every ``world_size``-th index of the same permutation,
    padded so that all ranks see the same number of samples. ``start`` skips the
    first samples of this rank's share, which is how a run resumes mid-epoch.
    """

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.num_samples = math.ceil(length / world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """This epoch's order of every index, before sharding."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return torch.randperm(self.length, generator=generator).tolist()
        return list(range(self.length))

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        total = self.num_samples * self.world_size
        order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size][self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def seeded_split(length: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split ``range(length)`` into len(fractions)+1 disjoint index lists, the remainder first."""
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    sizes = [int(round(length * fraction)) for fraction in fractions]
    first = length - sum(sizes)
    parts, offset = [order[:first]], first
    for size in sizes:
        parts.append(order[offset : offset + size])
        offset += size
    return parts


def take_fraction(indices: list[int], fraction: float) -> list[int]:
    """The first ``fraction`` of ``indices`` (at least one), for quick debugging runs."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"subset_fraction must be in (0, 1], got {fraction}")
    return indices[: max(1, int(len(indices) * fraction))]


def default_num_workers(requested: int | None) -> int:
    """``requested``, or a safe default: 0 on Windows and macOS (spawn start method)."""
    if requested is not None:
        return requested
    return 0 if platform.system() in {"Windows", "Darwin"} else 2


def set_epoch(loader: Any, epoch: int, start_batch: int = 0) -> None:
    """Fix the loader's order (and its workers' seeds) for ``epoch``, skipping ``start_batch`` batches.

    Anything that is not a loader over an :class:`EpochSampler` (e.g. the fixed batches
    of ``trainer.overfit_batches``) is left as it is.
    """
    sampler = getattr(loader, "sampler", None)
    batch_size = getattr(sampler, "batch_size", None) or getattr(loader, "batch_size", None) or 1
    sampler = getattr(sampler, "sampler", sampler)  # inside a BatchSampler (in-memory tensors)
    if isinstance(sampler, EpochSampler):
        sampler.set_epoch(epoch, start=start_batch * batch_size)
        if loader.generator is not None:
            loader.generator.manual_seed(sampler.seed + epoch)


class DataModule:
    """Base class: subclasses set ``train_set``, ``val_set``, ``test_set`` and ``info`` in ``setup``."""

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset
    info: DataInfo
    collate_fn: Callable | None = None

    def __init__(self, batch_size: int = 64, num_workers: int | None = 0, pin_memory: bool = True,
                 seed: int = 0, persistent_workers: bool = True) -> None:
        self.batch_size = batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed

    def setup(self) -> DataInfo:
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]

    def loader(self, split: str) -> DataLoader:
        """A loader over ``split`` with an :class:`EpochSampler`, sharded under DDP.

        Tensors in memory (a ``TensorDataset``) are indexed a whole batch at a time instead of
        sample by sample and collated: the same batches, several times faster.
        """
        dataset = self.dataset(split)
        sampler = EpochSampler(len(dataset), shuffle=split == "train", seed=self.seed, rank=runtime.rank(),
                               world_size=runtime.world_size())
        batched = isinstance(dataset, TensorDataset) and self.collate_fn is None
        return DataLoader(
            dataset,
            batch_size=None if batched else self.batch_size,
            sampler=BatchSampler(sampler, self.batch_size, drop_last=False) if batched else sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self.collate_fn,
            generator=torch.Generator(),
        )
