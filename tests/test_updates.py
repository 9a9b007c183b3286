"""Renders stay updatable: deterministic output, hooks safe to rerun, and cruft's round trip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from cookiecutter.environment import StrictEnvironment
from cookiecutter.generate import generate_context, generate_files
from cookiecutter.main import cookiecutter
from cookiecutter.prompt import prompt_for_config

from conftest import TEMPLATE_DIR
from expected import expected_files

PROJECT_DIR = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
# Every answer given, so that nothing depends on the day the test runs.
ALL_ANSWERS = {
    "default": {"copyright_year": "2025"},
    "both-4bit-bsd": {"task": "both", "quantization": "4bit", "license": "BSD-3-Clause", "copyright_year": "2024",
                      "project_name": "딥러닝 실험 Lab", "env_manager": "pip", "logger": "wandb", "ci": "github"},
}


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and link under ``root``: relative path -> (mode, bytes)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            files[path.relative_to(root).as_posix()] = (path.lstat().st_mode, data)
    return files


def context_for(answers: dict[str, str], **private: str) -> dict:
    """The ``cookiecutter`` context for ``answers``, built as cookiecutter and cruft build it."""
    context = generate_context(context_file=str(TEMPLATE_DIR / "cookiecutter.json"), extra_context=answers)
    return {**prompt_for_config(context, no_input=True), **private}


def write_post_gen(context: dict, folder: Path) -> Path:
    """post_gen_project.py rendered for ``context``, as cookiecutter renders it before running it."""
    env = StrictEnvironment(context={"cookiecutter": context}, keep_trailing_newline=True)
    source = (TEMPLATE_DIR / "hooks" / "post_gen_project.py").read_text(encoding="utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "post_gen_project.py"
    script.write_text(env.from_string(source).render(cookiecutter=context), encoding="utf-8")
    return script


def run_hook(script: Path, project: Path, sandbox: Path) -> subprocess.CompletedProcess:
    """Run the hook in ``project`` as cookiecutter does, with HOME and TMPDIR inside ``sandbox``."""
    env = {**os.environ, "HOME": str(sandbox / "home"), "TMPDIR": str(sandbox / "tmp"),
           "GIT_CONFIG_NOSYSTEM": "1"}
    for name in ("home", "tmp"):
        (sandbox / name).mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, str(script)], cwd=project, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("name", sorted(ALL_ANSWERS))
def test_same_answers_render_byte_identical_files(tmp_path: Path, name: str) -> None:
    renders = [Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context=ALL_ANSWERS[name],
                                 output_dir=str(tmp_path / label))) for label in ("first", "second")]
    first, second = (snapshot(project) for project in renders)
    assert first.keys() == second.keys()
    differing = [path for path in first if first[path] != second[path]]
    assert not differing, f"files differ between two renders of the same answers: {differing}"


def test_copyright_year_is_an_answer_not_the_clock(tmp_path: Path) -> None:
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path),
                                extra_context={"copyright_year": "1999"}))
    assert "Copyright (c) 1999 Your Name" in (project / "LICENSE").read_text(encoding="utf-8")


def test_no_file_body_reads_the_clock_or_a_random_source() -> None:
    """Dates and random values in a render break `cruft update`: every update would change them."""
    clock = re.compile(r"\{%-?\s*now\b|\|\s*random\b|uuid|range\(.*\)\s*\|\s*random")
    hits = []
    for path in PROJECT_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="ignore")
            hits += [f"{path.relative_to(PROJECT_DIR)}: {match}" for match in clock.findall(text)]
    assert not hits, hits


def test_no_pre_prompt_hook() -> None:
    """cruft never runs a ``pre_prompt`` hook, so a render must not depend on one."""
    assert not list((TEMPLATE_DIR / "hooks").glob("pre_prompt*"))


def test_post_gen_runs_twice_on_one_render_with_the_same_result(tmp_path: Path) -> None:
    answers = {"git_init": "yes", "ci": "none", "powershell": "no", "copyright_year": "2025"}
    out = tmp_path / "out"
    project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context=answers, output_dir=str(out)))
    assert (project / ".git").is_dir()
    before = snapshot(project)
    script = write_post_gen(context_for(answers), tmp_path / "hook")
    run_hook(script, project, tmp_path / "sandbox")
    assert snapshot(project) == before, "a second post_gen run changed the render"
    assert [path.name for path in out.iterdir()] == [project.name]
    assert not any((tmp_path / "sandbox").rglob("*.*")), "post_gen wrote outside the rendered folder"


def test_post_gen_in_a_cruft_temp_folder_runs_no_git(tmp_path: Path) -> None:
    """A stand-in for cruft's update render: a fresh temporary folder and a context with ``_commit``."""
    answers = {"git_init": "yes", "copyright_year": "2025"}
    context = context_for(answers, _template=str(TEMPLATE_DIR), _commit="0" * 40)
    cruft_tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    project = Path(generate_files(repo_dir=str(TEMPLATE_DIR), context={"cookiecutter": context},
                                  output_dir=str(cruft_tmp), accept_hooks=False))
    script = write_post_gen(context, tmp_path / "hook")
    sandbox = tmp_path / "sandbox"
    first = run_hook(script, project, sandbox)
    after_first = snapshot(project)
    run_hook(script, project, sandbox)
    assert snapshot(project) == after_first
    assert not (project / ".git").exists(), "git init ran inside cruft's temporary render"
    assert set(after_first) == expected_files(context, context["package_name"])
    assert [path.name for path in cruft_tmp.iterdir()] == [project.name]
    assert not any(sandbox.rglob("*.*")), "post_gen wrote outside the rendered folder"
    assert "git init" in first.stdout  # the next steps tell a cruft user to run it


# --- the cruft round trip (slow: clones, renders and applies patches with git) -------------------------------

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
CRUFT = Path(sys.executable).with_name("cruft")


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV})
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CRUFT)] if CRUFT.is_file() else [sys.executable, "-m", "cruft"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **GIT_ENV})


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def template_copy(destination: Path) -> Path:
    """The working tree under test (uncommitted edits included, ignored files left out) as a fresh repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=TEMPLATE_DIR, capture_output=True, text=True)
    if listed.returncode == 0:
        for relative in filter(None, listed.stdout.split("\0")):
            source = TEMPLATE_DIR / relative
            if source.is_file():  # a tracked file deleted in the working tree is left out
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / relative)
    else:  # not a git checkout (e.g. an unpacked archive)
        ignore = shutil.ignore_patterns(".git", ".venv*", ".demo", "__pycache__", ".pytest_cache", ".ruff_cache")
        shutil.copytree(TEMPLATE_DIR, destination, ignore=ignore)
    git(destination, "init", "-q", "-b", "main")
    return destination


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def user_project(tmp_path: Path) -> tuple[Path, Path, str]:
    """(template repository, a user's project created from its first commit with cruft, that commit)."""
    template = template_copy(tmp_path / "template")
    first = commit_all(template, "fixture: the template as it is")
    created = cruft(tmp_path, "create", str(template), "--checkout", first, "--output-dir", str(tmp_path / "work"),
                    "--no-input", "--extra-context", '{"git_init": "yes", "copyright_year": "2025"}')
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / "work" / "my-experiment"
    assert (project / ".cruft.json").is_file()
    assert not (project / ".git").exists()  # cruft renders: the hook leaves git to the user
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Create from project_template")
    return template, project, first


@pytest.mark.slow
def test_cruft_update_keeps_user_edits_and_brings_template_changes(user_project: tuple[Path, Path, str]) -> None:
    template, project, _ = user_project
    started = time.perf_counter()
    # The user changes a config value and adds a file.
    replace_in(project / "configs" / "trainer" / "default.yaml", "max_epochs: ", "max_epochs: 42  # was ")
    (project / "notes.md").write_text("# My notes\n", encoding="utf-8")
    commit_all(project, "user: more epochs, notes")
    # The template changes a config default and gains a file.
    slug = template / "{{cookiecutter.project_slug}}"
    replace_in(slug / "configs" / "optimizer" / "adamw.yaml", "weight_decay: ", "weight_decay: 0.02  # was ")
    (slug / "configs" / "debug" / "tiny.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 1\n",
                                                           encoding="utf-8")
    new = commit_all(template, "template: weight decay 0.02, debug=tiny")

    assert cruft(project, "check").returncode == 1  # behind
    # Uncommitted changes, even an untracked file: cruft refuses and changes nothing.
    (project / "scratch.txt").write_text("draft\n", encoding="utf-8")
    before = snapshot(project)
    refused = cruft(project, "update", "--skip-apply-ask", "--checkout", new)
    assert refused.returncode == 1 and "unclean" in refused.stdout + refused.stderr
    assert snapshot(project) == before
    (project / "scratch.txt").unlink()
    updated = cruft(project, "update", "--skip-apply-ask", "--checkout", new)
    assert updated.returncode == 0, updated.stdout + updated.stderr
    elapsed = time.perf_counter() - started

    assert "max_epochs: 42" in (project / "configs" / "trainer" / "default.yaml").read_text(encoding="utf-8")
    assert (project / "notes.md").is_file()
    assert "weight_decay: 0.02" in (project / "configs" / "optimizer" / "adamw.yaml").read_text(encoding="utf-8")
    assert (project / "configs" / "debug" / "tiny.yaml").is_file()
    assert not list(project.rglob("*.rej")), "the update left conflicts"
    assert not list(project.rglob("*.orig"))
    commit_all(project, "Update from project_template")
    checked = cruft(project, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    sys.stderr.write(f"cruft round trip (edit, template change, check, update): {elapsed:.1f}s\n")


@pytest.mark.slow
def test_cruft_update_conflict_lands_beside_the_file(user_project: tuple[Path, Path, str]) -> None:
    """A template change to a line the user also changed: in a git project a merge conflict inside the file;
    outside git (or when the original is not in git's history) a ``<file>.rej`` beside it."""
    template, project, _ = user_project
    config = Path("configs") / "optimizer" / "adamw.yaml"
    replace_in(project / config, "weight_decay: ", "weight_decay: 0.5  # user ")
    commit_all(project, "user: weight decay 0.5")
    replace_in(template / "{{cookiecutter.project_slug}}" / config, "weight_decay: ", "weight_decay: 0.02  # tmpl ")
    new = commit_all(template, "template: weight decay 0.02")

    # A git project: cruft applies the patch with `git apply -3`; the conflict is marked inside the file.
    merged = cruft(project, "update", "-y", "--checkout", new)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    text = (project / config).read_text(encoding="utf-8")
    assert "<<<<<<<" in text and "weight_decay: 0.5" in text and "weight_decay: 0.02" in text
    assert config.as_posix() in git(project, "diff", "--name-only", "--diff-filter=U")
    assert not list(project.rglob("*.rej"))

    # The same project without git: `git apply --reject` writes the rejected hunk beside the file.
    git(project, "reset", "-q", "--hard", "HEAD")
    shutil.rmtree(project / ".git")
    rejected = cruft(project, "update", "-y", "--checkout", new)
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert [path.relative_to(project) for path in project.rglob("*.rej")] == [config.with_name("adamw.yaml.rej")]
    assert "weight_decay: 0.5" in (project / config).read_text(encoding="utf-8")
    assert "weight_decay: 0.02" in (project / config.with_name("adamw.yaml.rej")).read_text(encoding="utf-8")


# --- the rendered template-update workflow --------------------------------------------------------------------

PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


def test_template_update_workflow_is_opt_in_pinned_and_minimal(render) -> None:
    project = render(ci="github", python_version="3.12")
    path = project / ".github" / "workflows" / "template-update.yml"
    text = path.read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    assert workflow[True] == {"workflow_dispatch": None}  # YAML 1.1 reads `on` as True; the schedule is a comment
    assert re.search(r"^\s*#\s*schedule:\s*\n\s*#\s*- cron:", text, re.MULTILINE), "no commented schedule"
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["group"] == "${{ github.workflow }}"
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert job["timeout-minutes"] <= 30
    uses = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    assert set(uses) == {"actions/checkout", "actions/setup-python", "peter-evans/create-pull-request"}
    for step in uses.values():
        assert PINNED.match(step["uses"]), step["uses"]
        assert re.search(re.escape(step["uses"]) + r"\s+# v\d+\.\d+\.\d+", text), f"{step['uses']} lacks # vX.Y.Z"
    assert uses["actions/checkout"]["with"]["persist-credentials"] is False
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.12"
    assert uses["peter-evans/create-pull-request"]["with"]["token"] == "${{ secrets.GITHUB_TOKEN }}"
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "cruft check" in runs and "cruft update --skip-apply-ask" in runs


def test_template_update_workflow_passes_zizmor(render) -> None:
    zizmor = Path(sys.executable).with_name("zizmor")
    command = [str(zizmor)] if zizmor.is_file() else [shutil.which("zizmor") or "zizmor"]
    workflow = render(ci="github") / ".github" / "workflows" / "template-update.yml"
    result = subprocess.run([*command, "--offline", "--min-severity", "medium", str(workflow)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def workflow_step(project: Path, name: str) -> str:
    workflow = yaml.safe_load((project / ".github" / "workflows" / "template-update.yml").read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    return next(step["run"] for step in job["steps"] if step.get("name", "").startswith(name))


def run_step(project: Path, script: str, outputs: Path) -> subprocess.CompletedProcess:
    """A workflow `run:` step as GitHub runs it (bash -eo pipefail), with cruft from this environment."""
    env = {**os.environ, **GIT_ENV, "GITHUB_OUTPUT": str(outputs),
           "PATH": os.pathsep.join([str(CRUFT.parent), os.environ.get("PATH", "")])}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_template_update_workflow_steps_detect_and_apply(user_project: tuple[Path, Path, str], tmp_path: Path
                                                          ) -> None:
    template, project, _ = user_project
    check, update = workflow_step(project, "Is the project behind"), workflow_step(project, "Apply the template")
    current = run_step(project, check, tmp_path / "out0")
    assert current.returncode == 0 and (tmp_path / "out0").read_text() == "behind=false\n", current.stderr

    adamw = Path("configs") / "optimizer" / "adamw.yaml"
    replace_in(template / "{{cookiecutter.project_slug}}" / adamw, "lr: ", "lr: 0.002 # ")
    commit_all(template, "template: lr 0.002")
    behind = run_step(project, check, tmp_path / "out1")
    assert behind.returncode == 0 and (tmp_path / "out1").read_text() == "behind=true\n", behind.stderr
    applied = run_step(project, update, tmp_path / "out2")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "lr: 0.002" in (project / adamw).read_text(encoding="utf-8")
    assert adamw.as_posix() in git(project, "diff", "--cached", "--name-only")

    (project / ".cruft.json").unlink()  # not a cruft project: the check step fails instead of reporting "behind"
    broken = run_step(project, check, tmp_path / "out3")
    assert broken.returncode != 0 and not (tmp_path / "out3").exists()
