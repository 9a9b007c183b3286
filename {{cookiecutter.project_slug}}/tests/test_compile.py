"""``trainer.compile``: compiled training equals eager, checkpoints cross both ways, failures are one line.

The runs train this project's default experiment in-process (20 steps, fp32 on the CPU) and share
one compile: torch.compile's code stays cached in the process, and on disk in ``compiling.cache_dir()``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.training import compiling

from conftest import PACKAGE, PROJECT_ROOT, compose_config, needs_torchrun, offline_env, run_command, run_module

# scheduler=none: a run of 10 steps resumed to 20 then follows the learning rates of a 20-step run
STEPS = ["logger=csv", "trainer.device=cpu", "precision=fp32", "scheduler=none", "trainer.limit_train_batches=5"]
STEPS += ["trainer.limit_val_batches=2", "trainer.progress_bar=false", "trainer.early_stopping.patience=null"]


def train_run(folder: Path, epochs: int, compiled: bool, resume: Path | None = None) -> dict[str, torch.Tensor]:
    """Train the default experiment for ``epochs`` x 5 steps in this process; return last.pt's weights."""
    from {{ cookiecutter.package_name }}.train import train

    overrides = [*STEPS, f"trainer.max_epochs={epochs}", f"trainer.compile={str(compiled).lower()}"]
    train(compose_config([*overrides, path_override("resume", resume or "none")], output_dir=folder))
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]


class Recorder(logging.Handler):
    """Keeps the messages of one logger (in-process runs write no train.log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run folders: eager and compiled for 20 steps; 10 steps each way, resumed to 20 the other way."""
    root = tmp_path_factory.mktemp("compile")
    folders = {name: root / name for name in ("eager", "compiled", "eager_half", "compiled_half")}
    for name, folder in folders.items():
        handler = Recorder()
        logging.getLogger(compiling.__name__).addHandler(handler)
        logging.getLogger(compiling.__name__).setLevel(logging.INFO)
        try:
            train_run(folder, 2 if name.endswith("half") else 4, compiled=name.startswith("compiled"))
        finally:
            logging.getLogger(compiling.__name__).removeHandler(handler)
        (folder / "compile.log").write_text("\n".join(handler.messages), encoding="utf-8")
    for first, then in (("compiled_half", "eager"), ("eager_half", "compiled")):
        folders[f"{first}_then_{then}"] = root / f"{first}_then_{then}"
        train_run(folders[f"{first}_then_{then}"], 4, then == "compiled", folders[first] / "checkpoints" / "last.pt")
    return folders


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_close(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert one.keys() == other.keys()
    for key in one:
        torch.testing.assert_close(one[key], other[key], atol=1e-4, rtol=1e-4, msg=key)


def test_twenty_compiled_steps_equal_eager(runs: dict[str, Path]) -> None:
    log = (runs["compiled"] / "compile.log").read_text(encoding="utf-8")
    assert "torch.compile: " in log and "trainer.compile is off" not in log
    assert_close(weights(runs["compiled"]), weights(runs["eager"]))
    assert not any("_orig_mod" in key for key in weights(runs["compiled"]))


@pytest.mark.parametrize("first", ["compiled_half", "eager_half"])
def test_checkpoints_resume_across_compiled_and_eager(runs: dict[str, Path], first: str) -> None:
    """10 steps one way, resumed for 10 more the other way: the same weights as 20 eager steps."""
    then = "eager" if first.startswith("compiled") else "compiled"
    assert_close(weights(runs[f"{first}_then_{then}"]), weights(runs["eager"]))


@needs_torchrun
@pytest.mark.slow
def test_evaluate_predict_export_from_a_compiled_run(ddp_runs: dict[bool, Path], tmp_path: Path) -> None:
    """A compiled run's checkpoint (2 DDP ranks) loads in one eager process: evaluate, predict, export."""
    run = ddp_runs[True]
    assert "torch.compile: " in (run / "train.log").read_text(encoding="utf-8")
    evaluated = run_module("evaluate", path_override("run", run), path_override("output", tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    if "causal_lm" in (run / ".hydra" / "config.yaml").read_text(encoding="utf-8"):
        inputs = tmp_path / "prompts.txt"
        inputs.write_text("Once upon a time\n", encoding="utf-8")
    else:
        from PIL import Image

        inputs = tmp_path / "images"
        inputs.mkdir()
        Image.new("L", (8, 8), color=128).save(inputs / "gray.png")
    predicted = run_module(
        "predict",
        path_override("run", run),
        path_override("input", inputs),
        path_override("output", tmp_path / "predict"),
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert any((tmp_path / "predict").iterdir())
    exported = run_module("export", path_override("run", run), path_override("output", tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "export" / "README.md").is_file()


def test_compile_options() -> None:
    assert compiling.compile_options(False) is None and compiling.compile_options(True) == {}
    assert compiling.compile_options({"mode": "max-autotune", "dynamic": None}) == {"mode": "max-autotune"}
    with pytest.raises(UserError, match="trainer.compile.mdoe is not a torch.compile option: did you mean mode?"):
        compiling.compile_options({"mdoe": "max-autotune"})


def one_warning(caplog: pytest.LogCaptureFixture) -> str:
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    return warnings[0]


def test_an_unknown_backend_trains_eager_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Linear(4, 4)
    with caplog.at_level(logging.INFO):
        assert not compiling.compile_model(model, {"backend": "inductr"}, torch.device("cpu"))
    assert "trainer.compile.backend=inductor" in one_warning(caplog)
    assert "_compiled_call_impl" not in vars(model) or model._compiled_call_impl is None
    with pytest.raises(UserError, match="fullgraph"):
        compiling.compile_model(model, {"backend": "inductr", "fullgraph": True}, torch.device("cpu"))


def test_no_cxx_compiler_trains_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """As on Windows without Visual Studio's C++ tools: inductor finds no compiler."""
    import torch._dynamo
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(PROJECT_ROOT / "no-such-c++")))
    monkeypatch.setattr(torch._inductor.config, "force_disable_caches", True)
    compiling._probe.cache_clear()
    torch._dynamo.reset()
    try:
        with caplog.at_level(logging.INFO):
            assert not compiling.compile_model(nn.Linear(4, 4), True, torch.device("cpu"))
        assert "C++ compiler" in one_warning(caplog) and "trainer.compile=false" in one_warning(caplog)
        with pytest.raises(UserError, match="C\\+\\+ compiler") as stopped:
            compiling.compile_model(nn.Linear(4, 4), {"fullgraph": True}, torch.device("cpu"))
        assert "\n" not in str(stopped.value)
    finally:
        compiling._probe.cache_clear()
        torch._dynamo.reset()


def test_the_cache_lives_in_a_stable_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tempfile

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compiling.cache_dir() == tmp_path / "mine"  # the user's choice wins
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "torchinductor_someone"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert compiling.cache_dir() == tmp_path / "cache" / PACKAGE / "torch_compile"  # not torch's temp folder


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """Run folders of 2 CPU processes (gloo), 10 steps, eager (False) and compiled (True)."""
    root = tmp_path_factory.mktemp("ddp_compile")
    folders = {}
    for compiled in (False, True):
        folder = root / str(compiled)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
        command += [f"{PACKAGE}.train", "trainer=ddp", *STEPS, "trainer.max_epochs=2"]
        command += [f"trainer.compile={str(compiled).lower()}", path_override("hydra.run.dir", folder)]
        env = {**offline_env(), "OMP_NUM_THREADS": "1"}
        result = run_command(command, env=env, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        folders[compiled] = folder
    return folders


@needs_torchrun
@pytest.mark.slow
def test_ddp_compiled_equals_ddp_eager(ddp_runs: dict[bool, Path]) -> None:
    """2 CPU processes (gloo), 10 steps each way: the same weights."""
    assert "torch.compile: " in (ddp_runs[True] / "train.rank1.log").read_text(encoding="utf-8")
    assert_close(weights(ddp_runs[True]), weights(ddp_runs[False]))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "trainer.compile must be true, false or a mapping of mode, dynamic, fullgraph, backend"),
        ("{mode:fast}", "trainer.compile.mode=fast is not accepted"),
        ("{fullgraph:maybe}", "trainer.compile.fullgraph=maybe is not accepted"),
    ],
)
def test_compile_config_is_checked_in_one_line(tmp_path: Path, value: str, message: str) -> None:
    from {{ cookiecutter.package_name }}.config.checks import check_config

    check_config(compose_config(["trainer.compile={mode:max-autotune,dynamic:true}"], output_dir=tmp_path))
    with pytest.raises(UserError, match=message):
        check_config(compose_config([f"trainer.compile={value}"], output_dir=tmp_path))
