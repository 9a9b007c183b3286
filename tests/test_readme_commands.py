"""Every command of each rendered README, run as a user types it, in every render of the matrix.

The commands come from the README's text (``README*.md``, so translations count too): every line
of a ``bash``/``shell``/``powershell`` code block, and inline code or lines of other blocks that
start with a program this file knows. Each command is one test. It is either skipped by ``SKIP``
(network, GPU, cluster, Windows or conda only, each with its reason) or run in a copy of the render,
made small by appending overrides (``SMALL``); placeholders such as ``/path/to/saved/model`` get a
tiny local model. A command whose program this file does not know fails and asks to be added.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_render import MATRIX, package_of

from conftest import default_answers, project_env, session_renderer

BIN = Path(sys.executable).parent
PWSH = shutil.which("pwsh")
COMMAND_BLOCKS = {"bash", "sh", "shell", "console", "powershell", "pwsh", "ps1"}
# Programs whose commands this file runs (small() below says how) or skips (SKIP); others fail.
PROGRAMS = {"python", "make", "pytest", "torchrun", "uv", r".\scripts\tasks.ps1", "./scripts/tasks.ps1",
            "pip", "conda", "bash", "hf", "huggingface-cli", "wandb", "pre-commit", "sbatch", "srun",
            "mlflow", "tensorboard",
            r".\scripts\setup.ps1", "powershell", "pwsh", "Set-ExecutionPolicy", "&", r".venv\Scripts\activate",
            r".\setup.cmd"}
# Inline code that names a form of command rather than giving one.
PROSE = {"uv run", "uv run <command>", "python -m"}

# The only commands not run: (regular expression searched in the command, why it cannot run here).
SKIP = [
    (r"\bpip install\b|^python -m pip\b|^uv (sync|lock|add)\b", "installs packages from the network"),
    (r"\bscripts/setup\.sh\b|^make setup|tasks\.ps1 setup\b",
     "builds an environment from the network (tests/test_setup_scripts.py runs setup.sh)"),
    (r"^conda\b", "needs conda"),
    (r"^(hf|huggingface-cli|wandb)\b", "needs the network and an account"),
    (r"model\.name_or_path=[\w.-]+/[\w.-]+", "downloads a model from the Hugging Face hub"),
    (r"\b(data|experiment|data\.dataset)=(mnist|fashion_mnist|cifar10)|data=torchvision(?!.*data\.dataset=fake)",
     "downloads a data set"),
    (r"model\.pretrained=true", "downloads pretrained weights"),
    (r"^torchrun\b(?!.*trainer\.device=cpu)", "one process per GPU: needs several GPUs"),
    (r"hydra/launcher=slurm|^(sbatch|srun)\b", "needs a SLURM cluster"),
    (r"^(\.\\scripts\\setup\.ps1|\.\\setup\.cmd\b|powershell\b|Set-ExecutionPolicy\b|&\s|\.venv\\Scripts\\)",
     "Windows only (the template's Windows CI job runs setup.ps1)"),
    (r"^if \(Test-Path\b", "PowerShell profile code (Windows; tests/test_conda_profile.py checks what is written)"),
    (r"^pre-commit install", "the hooks it installs download their tools from the network"),
    (r"^(mlflow (ui|server)|tensorboard)\b", "starts a web server that runs until stopped (tests/test_mlflow.py in an "
     "MLflow render starts a real server)"),
    (r"\.mlflow_sync\b", "uploads to a lab's MLflow server (tests/test_mlflow.py syncs a run to a real one)"),
]
if PWSH is None:
    SKIP.append((r"^(\.\\|\./)?scripts[\\/]tasks\.ps1", "needs PowerShell (pwsh), which is not installed here"))

# What is appended to make a command small (later Hydra overrides win over the README's own). W&B's
# offline service takes seconds to start: only the commands about a tracker keep it (tests/test_wandb.py,
# test_mlflow.py and test_tensorboard.py in the renders cover the rest).
SMALL_TRAIN = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.progress_bar=false",
               "data.num_workers=0"]
NO_WANDB = ["logger=csv"]
SMALL_SEARCH = ["hydra.sweeper.n_trials=1"]
SMALL_TESTS = ["--collect-only", "-q"]  # the suites themselves run in test_render.py
# Placeholders in README commands and what stands in for them.
PLACEHOLDERS = {"model.name_or_path=...": "model.name_or_path={model}", "/path/to/saved/model": "{model}",
                "<its folder>": "{folder}", "<그 폴더>": "{folder}",  # README.ko.md says "its folder" in Korean
                "<lab-server>": "127.0.0.1:9"}  # where nothing answers: the run falls back to mlflow.db

ENV_ASSIGNMENT = re.compile(r"""^[A-Z_][A-Z0-9_]*=("[^"]*"|'[^']*'|\S*)\s+""")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def program_of(command: str) -> str:
    """The program a command line starts (after leading ``NAME=value`` assignments)."""
    while (match := ENV_ASSIGNMENT.match(command)) is not None:
        command = command[match.end():]
    return command.split(maxsplit=1)[0] if command.strip() else ""


def block_commands(body: str) -> list[str]:
    """Command lines of a code block: comments dropped, continuation lines joined."""
    commands, pending = [], ""
    for raw in body.splitlines():
        line = re.split(r"\s+#\s|\s+#$", raw.strip(), maxsplit=1)[0].strip()
        if not line or line.startswith("#"):
            if pending:
                commands.append(pending)
                pending = ""
            continue
        continued = line.endswith(("\\", "`")) and not line.endswith(("\\\\", "``"))
        pending = f"{pending} {line[:-1].strip() if continued else line}".strip()
        if not continued and pending.count("{") <= pending.count("}"):  # a PowerShell { ... } block is one
            commands.append(pending)
            pending = ""
    return commands + ([pending] if pending else [])


def readme_commands(text: str) -> list[str]:
    """The commands of a README, in order, without repeats."""
    commands: list[str] = []
    for block in FENCE.finditer(text):
        if block["body"].startswith("#!") and "#SBATCH" in block["body"]:  # a batch script: one job to submit
            commands.append("sbatch <the batch script shown in the README>")
            continue
        lines = block_commands(block["body"])
        if block["lang"].lower() not in COMMAND_BLOCKS:  # text, a tree, a table: only known programs
            lines = [line for line in lines if program_of(line) in PROGRAMS]
        commands += lines
    prose = FENCE.sub("", text)
    commands += [span.strip() for span in INLINE.findall(prose)  # "`python -m ...` commands", "`wandb`": prose
                 if program_of(span.strip()) in PROGRAMS and "..." not in span.split() and len(span.split()) > 1
                 and span.strip() not in PROSE]
    return list(dict.fromkeys(" ".join(command.split()) for command in commands))


def skip_reason(command: str) -> str | None:
    """Why ``command`` is not run here (``uv run X`` is skipped where ``X`` is), or None."""
    bare = command.removeprefix("uv run ")
    return next((reason for pattern, reason in SKIP if re.search(pattern, command) or re.search(pattern, bare)), None)


def with_args(command: str, args: list[str]) -> str:
    return " ".join([command, *args]) if args else command


def small(command: str, package: str) -> str:
    """``command`` with the arguments that make it small appended; fails for an unknown program."""
    program = program_of(command)
    trains = re.search(rf"-m {re.escape(package)}\.train\b", command) is not None
    train_args = SMALL_TRAIN + (SMALL_SEARCH if "hparams_search=" in command else []) + \
        ([] if re.search("wandb|mlflow|tensorboard", command, re.IGNORECASE) else NO_WANDB)
    overrides = command.split(".train", 1)[-1]
    if re.search(r"""(^|[\s"'])(-m|--multirun)(\s|$)""", overrides):  # a multirun sweeps each key's first value
        train_args += [f"{key}={first}" for key, first in re.findall(r"\s([\w.]+)=([\w.+-]+)(?:,[\w.+-]+)+", overrides)]
    if program in {"python", "torchrun", "uv"}:
        if trains:
            return with_args(command, train_args)
        return with_args(command, SMALL_TESTS if re.search(r"(^|\s)pytest\b", command) else [])
    if program == "pytest":
        return with_args(command, SMALL_TESTS)
    if program == "pip":  # pip freeze and the like (pip install is skipped)
        return command
    if program == "make":
        target = command.split()[1] if len(command.split()) > 1 else ""
        extra = {"train": train_args, "smoke": train_args, "test": SMALL_TESTS}.get(target, [])
        if not extra:
            return command
        match = re.search(r"""\bARGS=("([^"]*)"|'([^']*)'|(\S*))""", command)
        if match is None:
            return f"{command} ARGS={shlex.quote(' '.join(extra))}"
        given = next(group for group in match.groups()[1:] if group is not None)
        return command[:match.start()] + f"ARGS={shlex.quote(' '.join([given, *extra]).strip())}" + \
            command[match.end():]
    if program.endswith("tasks.ps1"):
        task, *rest = command.split()[1:] or ["help"]
        extra = {"train": train_args, "smoke": train_args, "test": SMALL_TESTS}.get(task, [])
        return " ".join(["pwsh", "-NoProfile", "-File", "scripts/tasks.ps1", task, *rest, *extra])
    pytest.fail(f"README command {command!r} starts with {program!r}, which tests/test_readme_commands.py "
                "neither runs nor skips: teach small() to run it, or add it to SKIP with the reason.")


def trains(command: str) -> bool:
    """Whether a command runs training, or reads the run folder (``run=``) of a training command before it:
    the costly ones, marked slow (so that ``-m "not slow"`` leaves out both)."""
    words = command.split()
    task = words[1] if len(words) > 1 else ""
    return re.search(r"\.train\b|\.compare\b|(^|\s)run=", command) is not None or (
        (program_of(command) == "make" or program_of(command).endswith("tasks.ps1")) and task in {"train", "smoke"})


def code_path(case: str, command: str) -> str:
    """The task a command trains or reports on in render ``case``: a ``both`` render runs vision by default."""
    task = {**default_answers(), **MATRIX[case]}["task"]
    if task == "both":
        return "causal-lm" if re.search(r"experiment=tiny_lm|\.memory\b|model=causal_lm", command) else "vision"
    return "causal-lm" if task == "causal-lm" else "vision"


def collect() -> list:
    """One pytest param per README command, from each render's README files.

    A command that reads the same in several renders (the package name aside) and runs the same task
    there is one test, run in the first of them; its id names them all. (``make`` in a uv render goes
    through ``uv run``: tests/test_uv.py runs that.)
    """
    shown: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for case in MATRIX:
        project = session_renderer()(**MATRIX[case])
        package = package_of(project)
        for readme in sorted(project.glob("README*.md")):
            for command in readme_commands(readme.read_text(encoding="utf-8")):
                same = command.replace(package, "<package>")
                for placeholder, stand_in in PLACEHOLDERS.items():  # a translated placeholder is the same command
                    same = same.replace(placeholder, stand_in)
                key = (code_path(case, command), same)
                if case not in (renders := shown.setdefault(key, [])):
                    renders.append((case, command))
    params = []
    for renders in shown.values():
        case, command = renders[0]
        reason = skip_reason(command)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        if not reason and trains(command):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(case, command, marks=marks, id=f"{'+'.join(c for c, _ in renders)}: {command}"))
    return params


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama and its tokenizer saved with save_pretrained: what stands in for a README's model path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    tokenizer = Tokenizer(models.BPE(unk_token=special["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(special.values()), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["One plus two is three.", "The brown fox sleeps by the river."] * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    # 72 is no multiple of 32 on purpose: the loader must cope with layers bitsandbytes' CPU kernel cannot take.
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=72, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny_model")
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def workspaces(render, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of each render to run commands in, so that their outputs do not touch the render the other tests read."""
    base = tmp_path_factory.mktemp("readme_commands")
    return {case: Path(shutil.copytree(render(**MATRIX[case]), base / case)) for case in sorted(MATRIX)}


def run_line(project: Path, line: str) -> subprocess.CompletedProcess:
    """Run a command line in a render as a user would, offline, with this environment's programs first."""
    env = project_env(project)
    env.update(PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]), MPLBACKEND="Agg",
               UV_PROJECT_ENVIRONMENT=sys.prefix, UV_NO_SYNC="1", UV_OFFLINE="1")
    return subprocess.run(["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True, timeout=900)


def ensure_run_folders(project: Path, command: str) -> None:
    """Train the README's own run (or sweep) folder that ``run=<folder>`` (or ``compare <folder>``) reads, where no
    earlier test in this process has:
    under pytest-xdist the training command may have run in another worker's copy of the render."""
    compared = re.findall(r"\s([\w./-]+)(?=\s|$)", command.split(".compare", 1)[1]) if ".compare " in command else []
    for folder in [*re.findall(r"(?:^|\s)run=(\S+)", command), *compared]:
        if (project / folder / ".hydra").is_dir() or (project / folder / "multirun.yaml").is_file():
            continue
        readmes = sorted(project.glob("README*.md"))
        producer = next((line for readme in readmes for line in readme_commands(readme.read_text(encoding="utf-8"))
                         if {f"hydra.run.dir={folder}", f"hydra.sweep.dir={folder}"} & set(line.split())
                         and not skip_reason(line)), None)
        assert producer is not None, f"README command {command!r} reads run={folder}, which no README command trains"
        result = run_line(project, small(producer, package_of(project)))
        assert result.returncode == 0, f"{producer} (which {command!r} needs) failed:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize(("case", "command"), collect())
def test_readme_command_runs(case: str, command: str, workspaces: dict[str, Path], tiny_model: Path,
                             tmp_path: Path) -> None:
    project = workspaces[case]
    line = small(command, package_of(project))
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value.format(model=tiny_model, folder=tmp_path / "run"))
    unfilled = re.findall(r"<[^<>\s]+[^<>]*>|=\.\.\.", line)
    assert not unfilled, f"README command {command!r} has placeholders {unfilled}: add them to PLACEHOLDERS"
    ensure_run_folders(project, command)
    result = run_line(project, line)
    assert result.returncode == 0, (f"README command failed (exit {result.returncode}): {command}\nran: {line}\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


SAMPLE = """
Intro `python -m pkg.memory model.name_or_path=... quantization=4bit` and `model.device_map=auto`.

```bash
pip install -e ".[dev]"     # or: bash scripts/setup.sh
python -m pkg.train a=1 \\
    b=2   # comment
# a comment line
mystery-tool --go
```

```text
configs/     Hydra config groups
make lint
```
"""


def test_commands_come_from_blocks_inline_code_and_known_programs_only() -> None:
    assert readme_commands(SAMPLE) == ['pip install -e ".[dev]"', "python -m pkg.train a=1 b=2", "mystery-tool --go",
                                       "make lint", "python -m pkg.memory model.name_or_path=... quantization=4bit"]


def test_small_appends_and_unknown_programs_fail() -> None:
    train = " ".join(SMALL_TRAIN + NO_WANDB)
    assert small("python -m pkg.train seed=7", "pkg") == f"python -m pkg.train seed=7 {train}"
    assert small("WANDB_MODE=offline python -m pkg.train", "pkg") == \
        "WANDB_MODE=offline python -m pkg.train " + " ".join(SMALL_TRAIN)
    assert small('make train ARGS="seed=7"', "pkg") == f"make train ARGS='seed=7 {train}'"
    assert small("make smoke", "pkg") == f"make smoke ARGS='{train}'"
    assert small("python -m pkg.train -m seed=1,2 x=[a,b]", "pkg").endswith(f"x=[a,b] {train} seed=1")
    assert small("python -m pkg.train x=[a,b]", "pkg") == f"python -m pkg.train x=[a,b] {train}"
    assert small("pytest", "pkg") == "pytest --collect-only -q"
    assert small("python -m pkg.memory x=1", "pkg") == "python -m pkg.memory x=1"
    with pytest.raises(pytest.fail.Exception, match="mystery-tool"):
        small("mystery-tool --go", "pkg")


def test_every_render_documents_its_entry_points() -> None:
    for case in sorted(MATRIX):
        project = session_renderer()(**MATRIX[case])
        commands = readme_commands((project / "README.md").read_text(encoding="utf-8"))
        package = package_of(project)
        assert any(re.search(rf"(^|\s)python -m {package}\.train$", command) for command in commands), case
        if MATRIX[case].get("task", "image-classification") != "image-classification":
            assert any(command.startswith(f"python -m {package}.memory") for command in commands), case
