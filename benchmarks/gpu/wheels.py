"""The wheels that ``benchmarks/gpu_check.sh`` carries to a GPU machine with no network (``make gpu-wheels``).

The machine's image (``image-packages.txt``) has Python, a CUDA PyTorch, transformers, peft, accelerate and
pytest, but not the rest of what the check needs. This downloads, for the image's Python (3.12 by default),
manylinux x86_64, one wheel per missing package at the version ``requirements-dev.lock`` pins, following
each wheel's ``Requires-Dist`` until every requirement is either carried or in the image; a package with no
wheel on PyPI (antlr4-python3-runtime 4.9.3) is built from its source into a pure-Python wheel. Then it
checks that every carried requirement's version range holds (for the image's packages, where their version
is known) and that the folder fits the device machine's limit, and prints its size.

Not carried: wandb (20 MB, and 6 MB of requirements) — the check renders ``logger=csv``, which has no W&B
code, and bitsandbytes' 43 MB leave no room for it within the limit.

    python benchmarks/gpu/wheels.py [--python-version 3.12] [--dest .whl] [--limit-mib 60]

On the GPU machine: ``python3 -m pip install --no-index --no-deps --target <folder> .whl/*.whl`` and that
folder on ``PYTHONPATH`` (``gpu_check.sh`` does it).
"""

from __future__ import annotations

import argparse
import email.parser
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# What the check uses beyond the image: the render and the benchmarks (cookiecutter), the rendered
# project (hydra, its launcher and sweeper, 4-bit loading, chat data) and the SFT comparison (trl).
# peft and accelerate are in the image; named here, they are carried should the image lose them.
ROOTS = ["cookiecutter", "hydra-core", "omegaconf", "hydra-submitit-launcher", "submitit", "optuna", "bitsandbytes",
         "datasets", "trl", "peft", "accelerate"]
# manylinux tags, newest first; the image is glibc 2.39 (Ubuntu 24.04, Python 3.12.3).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
PURE_TAGS = {"py3-none-any", "py2.py3-none-any"}


def marker_environment(python_version: str) -> dict[str, str]:
    """Marker values of the GPU machine: Linux, x86_64, CPython ``python_version``."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def image_packages(path: Path = HERE / "image-packages.txt") -> dict[str, Version | None]:
    """The image's packages, each with its version where it was read."""
    packages: dict[str, Version | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = Version(version) if version else None
    return packages


def lock_pins(environment: dict[str, str], path: Path = ROOT / "requirements-dev.lock") -> dict[str, Version]:
    """The lock's version of each package, for the lines whose markers hold on the GPU machine."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            pins[canonicalize_name(requirement.name)] = Version(next(iter(requirement.specifier)).version)
    return pins


def requirements(wheel: Path, environment: dict[str, str]) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` that apply on the GPU machine (extras left out)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.BytesParser().parsebytes(archive.read(name))
    found = [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]
    return [requirement for requirement in found
            if requirement.marker is None or Marker(str(requirement.marker)).evaluate(environment)]


def wheels_in(folder: Path) -> dict[str, tuple[Version, Path]]:
    found = {}
    for path in folder.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(path.name)
        found[canonicalize_name(name)] = (version, path)
    return found


def fetch(name: str, version: Version, python_version: str, dest: Path) -> Path:
    """Download ``name==version``'s wheel for the GPU machine, or build a pure-Python one from its source."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    download = [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                "--implementation", "cp", *(f"--platform={tag}" for tag in PLATFORMS), "--dest", str(dest),
                f"{name}=={version}"]
    result = subprocess.run(download, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        with tempfile.TemporaryDirectory() as built:
            build = [*pip, "wheel", "--quiet", "--no-deps", "--no-binary", name, "--wheel-dir", built,
                     f"{name}=={version}"]
            result = subprocess.run(build, capture_output=True, text=True, check=False)
            made = list(Path(built).glob("*.whl"))
            if result.returncode != 0 or not made:
                raise SystemExit(f"gpu_wheels: no wheel of {name}=={version} for Python {python_version}, "
                                 f"and its source does not build: {result.stderr.strip()[-500:]}")
            _, _, _, tags = parse_wheel_filename(made[0].name)
            if not {str(tag) for tag in tags} & PURE_TAGS:
                raise SystemExit(f"gpu_wheels: {name}=={version} has no wheel for Python {python_version} "
                                 f"and builds only for this machine ({made[0].name})")
            made[0].replace(dest / made[0].name)
    return wheels_in(dest)[canonicalize_name(name)][1]


def collect(python_version: str, dest: Path) -> tuple[dict[str, Path], list[str], list[str]]:
    """Fetch what the image lacks, following requirements.

    Returns the wheels, the problems found, and the requirements on image packages whose version is not known.
    """
    environment = marker_environment(python_version)
    image, pins = image_packages(), lock_pins(environment)
    dest.mkdir(parents=True, exist_ok=True)
    present = wheels_in(dest)
    carried: dict[str, Path] = {}
    needed: list[tuple[str, Requirement | None, str]] = [(canonicalize_name(name), None, "") for name in ROOTS]
    problems, unchecked = [], []
    while needed:
        name, requirement, wanted_by = needed.pop(0)
        if name in image:
            version = image[name]
            if requirement is None or not requirement.specifier:
                continue
            if version is None:
                unchecked.append(f"{requirement} ({wanted_by})")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{wanted_by} needs {requirement}; the image has {name} {version}")
            continue
        if name not in carried:
            if name not in pins:
                problems.append(f"{wanted_by or 'the check'} needs {name}, which requirements-dev.lock does not pin "
                                f"for Python {python_version}: add it to requirements-dev.txt and run make lock")
                continue
            version, path = present.get(name, (None, None))
            carried[name] = path if version == pins[name] else fetch(name, pins[name], python_version, dest)
            needed += [(canonicalize_name(child.name), child, name)
                       for child in requirements(carried[name], environment)]
        if requirement is not None:
            version = parse_wheel_filename(carried[name].name)[1]
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{wanted_by} needs {requirement}; the lock pins {name} {version}")
    for path in dest.glob("*.whl"):  # one version of each, nothing left over from another set
        if path not in carried.values():
            path.unlink()
    return carried, problems, unchecked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="the wheel folder (default .whl)")
    parser.add_argument("--limit-mib", type=float, default=60.0,
                        help="the most the wheels may take: the device machine takes 64 MiB with the working tree")
    options = parser.parse_args()
    carried, problems, unchecked = collect(options.python_version, options.dest)
    size = sum(path.stat().st_size for path in carried.values()) / 2**20
    print(f"gpu_wheels: {len(carried)} wheels for Python {options.python_version} in {options.dest}: {size:.1f} MiB "
          f"(limit {options.limit_mib:g} MiB): {' '.join(sorted(path.name for path in carried.values()))}")
    if unchecked:
        print(f"gpu_wheels: in the image, versions not known, so not checked: {', '.join(sorted(set(unchecked)))}")
    if size > options.limit_mib:
        problems.append(f"the wheels take {size:.1f} MiB, over the {options.limit_mib:g} MiB limit")
    for problem in problems:
        print(f"gpu_wheels: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
