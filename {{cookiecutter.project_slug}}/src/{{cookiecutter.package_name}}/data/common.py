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
from {{ cookiecutter.package_name }}.data.rules import DATA
from {{ cookiecutter.package_name }}.errors import check_arguments


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

    Under DDP each rank takes every ``world_size``-th index of the same permutation. With
    ``pad`` (training) the order is padded with its first indices so that all ranks take the
    same number of steps; without it (validation, test) every example is seen exactly once, and
    the first ``length % world_size`` ranks hold one more. ``start`` skips the first samples of
    this rank's share, which is how a run resumes mid-epoch.
    """

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, pad: bool = True):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.num_samples = math.ceil(length / world_size) if pad else len(range(rank, length, world_size))
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
        if self.pad:
            order += order[: self.num_samples * self.world_size - len(order)]
        return iter(order[self.rank :: self.world_size][self.start :])

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


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """:func:`seeded_split` within each class, so that every split keeps the classes' proportions."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label, members in sorted(by_class.items()):
        for part, chosen in zip(parts, seeded_split(len(members), fractions, seed + label), strict=True):
            part.extend(members[index] for index in chosen)
    generator = torch.Generator().manual_seed(seed)
    return [[part[index] for index in torch.randperm(len(part), generator=generator).tolist()] for part in parts]


MIN_PER_CLASS = 10  # fewer examples per class in a split and its metrics say little


def thin_splits(labels_by_split: dict[str, list[int]], class_names: Sequence[str]) -> str | None:
    """One sentence on the splits that lack a class or hold under :data:`MIN_PER_CLASS` examples per class."""
    problems = []
    for split, labels in labels_by_split.items():
        missing = [name for index, name in enumerate(class_names) if index not in set(labels)]
        if missing:
            problems.append(
                f"the {split} split ({len(labels)} examples) has no {', '.join(missing[:5])}"
                f"{' and more' if len(missing) > 5 else ''}"
            )
        elif len(labels) < MIN_PER_CLASS * len(class_names):
            problems.append(f"the {split} split has {len(labels)} examples for {len(class_names)} classes")
    if not problems:
        return None
    return (
        "; ".join(problems) + f": its metrics say little (under {MIN_PER_CLASS} per class). "
        "Add images, or raise data.test_fraction / data.val_fraction."
    )


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


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader worker's ``worker_init_fn``: stop signals are the main process's to handle.

    SLURM signals every process of a job step and torchrun a worker's whole process group, so
    a worker gets the SIGTERM (or submitit's USR2) its trainer gets. Dying of it would crash the
    trainer before it saves ``last.pt``; running a handler inherited from the trainer (or
    submitit's requeue) would act twice. The worker carries on until the trainer closes it, and
    exits by itself when the trainer's process is gone.
    """
    import signal

    for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)


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

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | None = 0,
        pin_memory: bool = True,
        seed: int = 0,
        persistent_workers: bool = True,
    ) -> None:
        check_arguments("data", DATA, {"batch_size": batch_size, "num_workers": num_workers})
        self.batch_size = batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed

    def setup(self) -> DataInfo:
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]

    def sampler(self, split: str, dataset: Dataset) -> EpochSampler:
        """The order of ``split``: shuffled for training, sharded under DDP, padded for training only.

        A data source with its own order (e.g. grouping by length) overrides this and keeps the
        sharding and padding rules by passing ``options`` on.
        """
        return EpochSampler(len(dataset), **self.sampler_options(split))  # type: ignore[arg-type]  # map-style: sized

    def sampler_options(self, split: str) -> dict[str, Any]:
        """The :class:`EpochSampler` arguments of ``split``: validation and test see each example once."""
        return {
            "shuffle": split == "train",
            "seed": self.seed,
            "rank": runtime.rank(),
            "world_size": runtime.world_size(),
            "pad": split == "train",
        }

    def loader(self, split: str) -> DataLoader:
        """A loader over ``split`` with :meth:`sampler`'s order; its workers leave stop signals to the trainer.

        Tensors in memory (a ``TensorDataset``) are indexed a whole batch at a time instead of
        sample by sample and collated: the same batches, several times faster.
        """
        dataset = self.dataset(split)
        sampler = self.sampler(split, dataset)
        batched = isinstance(dataset, TensorDataset) and self.collate_fn is None
        return DataLoader(
            dataset,
            batch_size=None if batched else self.batch_size,
            sampler=BatchSampler(sampler, self.batch_size, drop_last=False) if batched else sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self.collate_fn,
            worker_init_fn=ignore_stop_signals if self.num_workers > 0 else None,
            generator=torch.Generator(),
        )
