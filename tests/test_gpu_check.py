"""benchmarks/gpu_check.sh, up to its GPU steps, on this machine: a dry run in a venv made like the GPU image.

The GPU machine has no network, and its python3 holds torch, transformers and pytest but not cookiecutter,
hydra, bitsandbytes, datasets or trl: those travel as wheels (`make gpu-wheels`). Here the wheels are
downloaded for this interpreter's Python (a CUDA torch for 3.12 is gigabytes), installed offline by the
check into a venv that has only the image's packages, and every step that needs no GPU runs. The 3.12 set
the real machine gets is downloaded too and checked: each of its requirements is carried or in the image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import BytesParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from conftest import TEMPLATE_DIR

SCRIPT = TEMPLATE_DIR / "benchmarks" / "gpu_check.sh"
GPU = TEMPLATE_DIR / "benchmarks" / "gpu"
BIN = Path(sys.executable).parent
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# What the check needs beyond the image; the wheel set must hold each.
# The caps are the GPU machine's (16 cores); a shared 2-core machine imports and collects far slower.
SLOW_MACHINE = {"GPU_CHECK_BUDGET_S": "3000", "GPU_CHECK_CAP_PACKAGES": "600", "GPU_CHECK_CAP_RENDER": "300",
                "GPU_CHECK_CAP_PYTEST_GPU": "600", "GPU_CHECK_CAP_MAKE_TEST": "600"}
CARRIED = {"cookiecutter", "hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-submitit-launcher", "submitit",
           "optuna", "bitsandbytes", "datasets", "trl"}


def make_gpu_wheels(python_version: str, dest: Path) -> subprocess.CompletedProcess:
    """`make gpu-wheels`, as the README shows it, with this interpreter's environment standing for .venv."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    return subprocess.run([make, "-o", ".venv/.installed", "gpu-wheels", f"BIN={BIN}",
                           f"GPU_PYTHON_VERSION={python_version}", f"GPU_WHEELS={dest}"],
                          cwd=TEMPLATE_DIR, capture_output=True, text=True, timeout=900)


def gpu_check(*args: str, python: str = sys.executable, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GPU_CHECK_")}
    environment.update(env)
    return subprocess.run(["bash", str(SCRIPT), *args, python], capture_output=True, text=True, env=environment,
                          timeout=900)


@pytest.fixture(scope="module")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv with the image's packages only (linked from this environment)."""
    folder = tmp_path_factory.mktemp("image") / "venv"
    result = subprocess.run([sys.executable, str(GPU / "image_venv.py"), str(folder)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def local_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("wheels") / ".whl"
    result = make_gpu_wheels(LOCAL_PYTHON, dest)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return dest


def test_caps_that_exceed_the_budget_are_refused_before_anything_runs() -> None:
    result = gpu_check(GPU_CHECK_BUDGET_S="300")
    assert result.returncode == 2
    assert result.stdout.strip() == ("gpu_check: the steps' caps add up to 480 s, over the 300 s budget: "
                                     "lower GPU_CHECK_CAP_<STEP> or raise GPU_CHECK_BUDGET_S")
    assert "no step named 'qlorra'" in gpu_check("--only", "qlorra").stdout


def test_without_cuda_it_skips_unless_asked_for_a_dry_run() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    result = gpu_check("--only", "qlora", GPU_CHECK_BUDGET_S="300")  # 30 + 15 + 100 s: within the budget
    assert result.returncode == 0
    assert result.stdout == "gpu_check: no CUDA device visible; skipped (--dry-run runs the steps that need no GPU).\n"


def test_gpu_check_is_shellcheck_clean() -> None:
    shellcheck = BIN / "shellcheck" if (BIN / "shellcheck").is_file() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: install requirements-dev.txt (make setup)"
    result = subprocess.run([str(shellcheck), "--shell=bash", "--severity=style", str(SCRIPT)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_the_image_venv_lacks_what_the_wheels_bring(image_python: str) -> None:
    probe = "import importlib.util as u; print(*[u.find_spec(n) is None for n in ('torch', 'transformers', " \
            "'hydra', 'cookiecutter', 'bitsandbytes', 'trl', 'datasets')])"
    result = subprocess.run([image_python, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "True", "True", "True", "True", "True"]


@pytest.mark.slow
def test_dry_run_in_an_image_like_venv_runs_every_step_but_the_gpu_ones(image_python: str, local_wheels: Path,
                                                                         tmp_path: Path) -> None:
    result = gpu_check("--dry-run", python=image_python, PIP_NO_INDEX="1", GPU_CHECK_WHEELS=str(local_wheels),
                       GPU_CHECK_LOGS=str(tmp_path / "logs"),
                       GPU_CHECK_TEST_ARGS="--collect-only -q -p no:cacheprovider", **SLOW_MACHINE)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert f"packages: {len(list(local_wheels.glob('*.whl')))} wheels from" in out
    assert "imports: all 20 modules import" in out
    assert "gpu_check: rendered " in out
    for step in ("bf16", "qlora", "sft", "memory", "spill"):
        assert f"gpu_check: {step} skipped (dry run: it needs the GPU)" in out
    assert "gpu_tests_failed=0 (goal = 0)" in out and "pytest_gpu: 3 skipped" in out
    collected = next(line for line in out.splitlines() if line.startswith("make_test: "))
    assert int(collected.split()[1]) > 100 and "tests collected" in collected, collected
    assert "make_test_failed=0 (goal = 0)" in out
    # the installed wheels came from the folder, not from this environment
    assert (tmp_path / "logs" / "packages.log").is_file()


@pytest.mark.slow
def test_a_step_past_its_cap_is_reported_as_a_timeout(image_python: str, local_wheels: Path, tmp_path: Path) -> None:
    result = gpu_check("--dry-run", "--only", "pytest_gpu", python=image_python, PIP_NO_INDEX="1",
                       GPU_CHECK_WHEELS=str(local_wheels), GPU_CHECK_LOGS=str(tmp_path / "logs"),
                       **{**SLOW_MACHINE, "GPU_CHECK_CAP_PYTEST_GPU": "1"})
    assert result.returncode == 1, result.stdout
    assert "gpu_check: pytest_gpu timed out at its 1 s cap" in result.stdout
    assert "gpu_tests_failed=timeout (goal = 0)" in result.stdout
    assert result.stdout.rstrip().endswith("gpu_check: figures that did not come: gpu_tests_failed")
    assert "make_test" not in result.stdout  # not asked for


@pytest.mark.slow
def test_without_the_wheels_the_check_names_what_is_missing(image_python: str, tmp_path: Path) -> None:
    result = gpu_check("--dry-run", python=image_python, PIP_NO_INDEX="1", GPU_CHECK_WHEELS=str(tmp_path / "none"),
                       GPU_CHECK_LOGS=str(tmp_path / "logs"), **SLOW_MACHINE)
    assert result.returncode == 1
    assert "0 wheels from" in result.stdout and "(make gpu-wheels makes them)" in result.stdout
    assert "cookiecutter (ModuleNotFoundError" in result.stdout and "trl (ModuleNotFoundError" in result.stdout
    assert "nothing else can run" in result.stdout and "rendered" not in result.stdout


@pytest.mark.slow
def test_the_python_3_12_wheel_set_resolves_and_fits(tmp_path: Path) -> None:
    dest = tmp_path / ".whl"
    result = make_gpu_wheels("3.12", dest)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    wheels = {canonicalize_name(parse_wheel_filename(path.name)[0]): path for path in dest.glob("*.whl")}
    assert CARRIED <= set(wheels), CARRIED - set(wheels)
    assert len(wheels) == len(list(dest.glob("*.whl"))), "two versions of one package"
    for path in wheels.values():
        tags = {str(tag) for tag in parse_wheel_filename(path.name)[3]}
        assert any(tag.startswith(("py3-none", "py2.py3-none", "cp312-cp312", "py312")) for tag in tags), path.name
        assert not any("macosx" in tag or "win" in tag for tag in tags), path.name
    assert sum(path.stat().st_size for path in wheels.values()) <= 60 * 2**20
    image = {canonicalize_name(line.partition("==")[0].strip())
             for line in (GPU / "image-packages.txt").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")}
    environment = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    for path in wheels.values():
        with zipfile.ZipFile(path) as archive:
            name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
            metadata = BytesParser().parsebytes(archive.read(name))
        for text in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            needed = canonicalize_name(requirement.name)
            assert needed in wheels or needed in image, f"{path.name} needs {text}: neither carried nor in the image"
            if needed in wheels:
                version = parse_wheel_filename(wheels[needed].name)[1]
                assert requirement.specifier.contains(version, prereleases=True), f"{path.name}: {text} vs {version}"
    assert "MiB (limit 60 MiB)" in result.stdout
