"""A venv made like the GPU machine's image, for a dry run of ``gpu_check.sh`` on a machine without a GPU.

The image's ``python3`` is a venv holding torch and the packages of ``image-packages.txt``, and nothing
else. This makes such a venv from the running Python: each installed distribution the image also has is
linked into the new venv's site-packages (its modules and its ``.dist-info``); the others (cookiecutter,
hydra, bitsandbytes, datasets, trl, ...) are left out, so the check must bring them as wheels.

    python benchmarks/gpu/image_venv.py <folder>      # then: <folder>/bin/python
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import sysconfig
from collections import defaultdict
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from wheels import image_packages


def top_entries(files: list[importlib.metadata.PackagePath], shared: set[str]) -> set[PurePosixPath]:
    """A distribution's files and folders under site-packages to link: the top level, or the level below
    for a folder it ``shared`` with a distribution of the other kind (scripts elsewhere left out)."""
    entries = set()
    for file in files:
        parts = PurePosixPath(str(file)).parts
        if parts and parts[0] != ".." and not parts[0].startswith("__editable__"):
            entries.add(PurePosixPath(*parts[:2]) if len(parts) > 1 and parts[0] in shared else PurePosixPath(parts[0]))
    return entries


def with_requirements(names: set[str], distributions: list[importlib.metadata.Distribution]) -> set[str]:
    """``names`` and what their installed versions require: a newer release here may need a package that the
    image's older one did not (huggingface-hub and httpx2, say)."""
    requires = {canonicalize_name(distribution.metadata["Name"]): distribution.requires or []
                for distribution in distributions}
    found, pending = set(), [name for name in names if name in requires]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for text in requires.get(name, []):
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    added = sorted(found - names)
    if added:
        print(f"image_venv: also linked, as requirements of this environment's versions: {' '.join(added)}")
    return found | names


def build(folder: Path) -> Path:
    """Make the venv and link the image's distributions into it; return its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(folder)], check=True)
    python = folder / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    source = Path(sysconfig.get_paths()["purelib"])
    distributions = [distribution for distribution in importlib.metadata.distributions(path=[str(source)])
                     if distribution.files]
    image = with_requirements(set(image_packages()), distributions)
    # each metadata and file list is parsed once: read per file, they took half a minute
    in_image = [canonicalize_name(distribution.metadata["Name"]) in image for distribution in distributions]
    files = [distribution.files or [] for distribution in distributions]
    owners: dict[str, set[bool]] = defaultdict(set)
    for wanted, listed in zip(in_image, files, strict=True):
        for file in listed:
            parts = PurePosixPath(str(file)).parts
            if len(parts) > 1 and parts[0] != "..":
                owners[parts[0]].add(wanted)
    shared = {name for name, kinds in owners.items() if kinds == {True, False}}
    for wanted, listed in zip(in_image, files, strict=True):
        if not wanted:
            continue
        for entry in top_entries(listed, shared):
            link, real = target / entry, source / entry
            if real.exists() and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(real)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    print(build(parser.parse_args().folder))


if __name__ == "__main__":
    main()
