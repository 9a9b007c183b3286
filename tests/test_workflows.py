"""GitHub Actions, in the template and in every render with ci=github: pinned, least privilege, audited by zizmor."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import tree_sitter
import yaml
from test_render import MATRIX, answers_for
from test_setup_scripts import POWERSHELL, powershell_errors, tool

from conftest import TEMPLATE_DIR

# zizmor's severities, lowest first; a finding at BLOCKING or above fails the tests.
SEVERITIES = ["Unknown", "Informational", "Low", "Medium", "High"]
BLOCKING = "Medium"
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # (?P<version>v\d+(\.\d+)*)$")
GITHUB_RENDERS = sorted(name for name in MATRIX if answers_for(name)["ci"] == "github")
# What actions/runner wraps around every `shell: pwsh` / `shell: powershell` step (and every step of a Windows
# job without a shell): the step's script, run as `pwsh -command ". '{0}'"`, between these two lines. The
# last line turns whatever $LASTEXITCODE the script leaves into the step's exit code.
GITHUB_POWERSHELL_PROLOGUE = "$ErrorActionPreference = 'stop'"
GITHUB_POWERSHELL_EPILOGUE = "if ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) { exit $LASTEXITCODE }"
# Commands that are PowerShell's own (they leave $LASTEXITCODE alone): Verb-Noun cmdlets and these aliases.
POWERSHELL_BUILTINS = {"echo", "cd", "ls", "dir", "cat", "rm", "cp", "mv", "write", "%", "?", "foreach", "where",
                       "select", "sort", "tee", "exit", "throw", "return"}
LASTEXITCODE = re.compile(r"^\$(?:global:)?LASTEXITCODE$", re.IGNORECASE)


def github_files(root: Path) -> list[Path]:
    """Every workflow of ``root`` (found by glob, so new ones are covered) and its dependabot.yml."""
    github = root / ".github"
    return sorted(github.glob("workflows/*.y*ml")) + sorted(github.glob("dependabot.y*ml"))


def workflow_files(root: Path) -> list[Path]:
    return [path for path in github_files(root) if path.parent.name == "workflows"]


def zizmor_findings(paths: list[Path]) -> list[str]:
    """zizmor's offline findings at BLOCKING severity or above, each as ``file:line rule (severity): what``."""
    result = subprocess.run([tool("zizmor"), "--offline", "--format", "json", "--no-progress", *map(str, paths)],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().startswith("["), f"zizmor failed (exit {result.returncode}): {result.stderr[-2000:]}"
    findings = []
    for finding in json.loads(result.stdout):
        severity = finding["determinations"]["severity"]
        if finding.get("ignored") or SEVERITIES.index(severity) < SEVERITIES.index(BLOCKING):
            continue
        where = next((loc for loc in finding["locations"] if loc["symbolic"]["kind"] == "Primary"),
                     finding["locations"][0])
        path = where["symbolic"]["key"]["Local"]["verbatim_path"]
        line = where["concrete"]["location"]["start_point"]["row"] + 1
        findings.append(f"{path}:{line} {finding['ident']} ({severity}): {finding['desc']}")
    return findings


def rendered_with_ci(render, name: str) -> Path:
    return render(**MATRIX[name])


@pytest.fixture(params=["template", *GITHUB_RENDERS])
def github_root(request: pytest.FixtureRequest, render) -> Path:
    """The template's own repository, then each render of the matrix that has CI."""
    return TEMPLATE_DIR if request.param == "template" else rendered_with_ci(render, request.param)


def test_the_matrix_has_renders_with_ci() -> None:
    assert GITHUB_RENDERS, "no render in tests/test_render.py's MATRIX has ci=github"


def test_zizmor_finds_nothing_of_medium_severity_or_above(github_root: Path) -> None:
    paths = github_files(github_root)
    assert any(path.parent.name == "workflows" for path in paths), f"no workflow under {github_root}"
    findings = zizmor_findings(paths)
    assert not findings, "zizmor:\n" + "\n".join(findings)


def test_zizmor_check_names_file_line_and_rule_of_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\npermissions: {}\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - uses: actions/checkout@v4\n", encoding="utf-8")
    findings = zizmor_findings([bad])
    assert f"{bad}:7 unpinned-uses (High): unpinned action reference" in findings, findings
    assert any(finding.startswith(f"{bad}:7 artipacked (Medium)") for finding in findings), findings


def test_every_workflow_is_hardened(github_root: Path) -> None:
    """Read-only token by default, superseded runs cancelled, a timeout per job, no persisted credentials."""
    for path in workflow_files(github_root):
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert workflow.get("permissions") == {"contents": "read"}, f"{path.name}: top-level permissions"
        concurrency = workflow.get("concurrency") or {}
        assert concurrency.get("group") and concurrency.get("cancel-in-progress") is True, f"{path.name}: concurrency"
        for job_id, job in workflow["jobs"].items():
            assert isinstance(job.get("timeout-minutes"), int), f"{path.name}: job {job_id} has no timeout-minutes"
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: job {job_id}"


def test_actions_are_pinned_to_commits_with_their_version(render) -> None:
    """Every `uses:` names a full commit SHA and its version; one action has one pin across all workflows."""
    roots = [TEMPLATE_DIR, *(rendered_with_ci(render, name) for name in GITHUB_RENDERS)]
    pins: dict[str, set[str]] = {}
    for path in (path for root in roots for path in workflow_files(root)):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found = re.match(r"^\s*(?:-\s+)?uses:\s*(.+?)\s*$", line)
            if not found or found[1].startswith("./"):
                continue
            pin = PINNED.match(found[1])
            assert pin, f"{path}:{number}: pin `{found[1]}` as owner/action@<40-hex SHA> # vX.Y.Z"
            pins.setdefault(pin["action"], set()).add(f"{pin['sha']} # {pin['version']}")
    assert {"actions/checkout", "actions/setup-python"} <= set(pins)
    assert all(len(versions) == 1 for versions in pins.values()), pins


def test_dependabot_updates_actions_and_pip_weekly(github_root: Path) -> None:
    config = yaml.safe_load((github_root / ".github" / "dependabot.yml").read_text(encoding="utf-8"))
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(updates) == {"github-actions", "pip"}
    assert all(update["schedule"]["interval"] == "weekly" for update in updates.values())


def test_dependabot_config_validates_against_its_schema(render) -> None:
    paths = [root / ".github" / "dependabot.yml" for root in (TEMPLATE_DIR, render(ci="github"))]
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", *map(str, paths)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_ci_tests_the_lock_on_pushes_and_the_newest_releases_weekly() -> None:
    workflow = yaml.safe_load((TEMPLATE_DIR / ".github" / "workflows" / "template.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["render-and-test"]["steps"]
    locked = [step for step in steps if re.search(r"\bmake test\b(?!-)", step.get("run", ""))]
    latest = [step for step in steps if "make test-latest" in step.get("run", "")]
    assert len(locked) == 1 and locked[0]["if"] == "github.event_name != 'schedule'", locked
    assert len(latest) == 1 and latest[0]["if"] == "github.event_name == 'schedule'", latest
    assert "schedule" in workflow[True] and "push" in workflow[True] and "pull_request" in workflow[True]


def powershell_steps(workflow: dict) -> list[tuple[str, str]]:
    """(job id and step name, script) of every step GitHub runs in PowerShell."""
    found = []
    default = (workflow.get("defaults") or {}).get("run", {}).get("shell")
    for job_id, job in workflow["jobs"].items():
        shell = (job.get("defaults") or {}).get("run", {}).get("shell", default)
        runners = str(job.get("runs-on", "")) + str((job.get("strategy") or {}).get("matrix", ""))
        for number, step in enumerate(job.get("steps", []), 1):
            if "run" not in step:
                continue
            step_shell = step.get("shell", shell)
            if step_shell in ("pwsh", "powershell") or (step_shell is None and "windows" in runners):
                found.append((f"{job_id}: {step.get('name', f'step {number}')}", step["run"]))
    return found


def exit_code_events(script: str) -> list[tuple[str, str]]:
    """What ``script`` does to $LASTEXITCODE, in the order it runs: (event, text), where event is
    `native` (an external command or a script runs), `expect-success` (`$LASTEXITCODE -ne 0` checked),
    `expect-failure` (any other test of it: the command before was expected to fail) or `reset` (set to 0)."""
    script = re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", script)  # GitHub puts the value in before PowerShell runs
    wrapped = f"{GITHUB_POWERSHELL_PROLOGUE}\n{script}\n{GITHUB_POWERSHELL_EPILOGUE}\n".encode()
    assert powershell_errors(wrapped) == [], script
    events, stack = [], [tree_sitter.Parser(POWERSHELL).parse(wrapped).root_node]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))
        text = node.text.decode()
        if node.type == "command":
            name = node.child_by_field_name("command_name")
            invoked = any(child.type == "command_invokation_operator" and child.text == b"&" for child in node.children)
            word = name.text.decode().lower() if name is not None else ""
            if invoked or (word and not re.fullmatch(r"\w+-\w+", word) and word not in POWERSHELL_BUILTINS):
                events.append(("native", text))
        elif node.type == "comparison_expression" and len(node.children) == 3:
            left, operator, right = (child.text.decode().strip() for child in node.children)
            if LASTEXITCODE.match(left):
                success = operator.lower() == "-ne" and right == "0"
                events.append(("expect-success" if success else "expect-failure", text))
        elif node.type == "assignment_expression" and LASTEXITCODE.match(node.children[0].text.decode().strip()):
            events.append(("reset" if node.children[-1].text.decode().strip() == "0" else "expect-failure", text))
    return events[:-1] if events and events[-1][1] == "$LASTEXITCODE" else events


def exit_code_problems(script: str) -> list[str]:
    """Why GitHub's wrapper would give this step the wrong exit code: a command expected to fail whose code
    is still in $LASTEXITCODE at the end (the step fails), or a command whose failure a later one hides."""
    problems, state, unchecked = [], "zero", None
    for event, text in exit_code_events(script):
        if event == "native" and unchecked is not None:
            problems.append(f"`{unchecked}` can fail unnoticed: check $LASTEXITCODE after it")
        if event == "native":
            state, unchecked = "natural", text
        else:
            state, unchecked = ("failed" if event == "expect-failure" else "zero"), None
    if state == "failed":
        problems.append("a command expected to fail leaves its exit code for the wrapper's `exit $LASTEXITCODE`: "
                        "set $global:LASTEXITCODE = 0 after checking it")
    return problems


@pytest.mark.parametrize(("script", "problem"), [
    ("& pwsh -File setup.ps1 -CondaPath C:\\no\\such\\conda\nif ($LASTEXITCODE -ne 1) { throw 'x' }",
     "expected to fail"),
    ("python -m pip install uv\ncookiecutter --no-input .", "can fail unnoticed"),
    ("if ($true) { & $tasks train no_such_key=1 }\nif ($LASTEXITCODE -eq 0) { throw 'should fail' }",
     "expected to fail"),
])
def test_the_wrapper_check_names_a_bad_step(script: str, problem: str) -> None:
    problems = exit_code_problems(script)
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("script", [
    "& pwsh -File setup.ps1 -CondaPath C:\\no\nif ($LASTEXITCODE -ne 1) { throw 'x' }\n$global:LASTEXITCODE = 0",
    "python -m pip install uv\nif ($LASTEXITCODE -ne 0) { throw 'x' }\ncookiecutter --no-input .\n'A=1' >> $env:F",
    "Set-Location x\nWrite-Host hi\nGet-ChildItem | ForEach-Object { $_ }",
    "& $tasks train no_such_key=1\nif ($LASTEXITCODE -eq 0) { throw 'should fail' }\npython -c 1",
])
def test_the_wrapper_check_passes_a_good_step(script: str) -> None:
    assert exit_code_problems(script) == []


def test_powershell_steps_survive_githubs_exit_code_wrapper(github_root: Path) -> None:
    """Every PowerShell step ends with `exit $LASTEXITCODE` on GitHub: nothing expected to fail may leave its
    code there, and no failing command may be hidden by a later one."""
    problems = []
    for path in workflow_files(github_root):
        for step, script in powershell_steps(yaml.safe_load(path.read_text(encoding="utf-8"))):
            problems += [f"{path.name}, {step}: {problem}" for problem in exit_code_problems(script)]
    assert not problems, "\n".join(problems)


def test_the_windows_jobs_are_checked_for_the_wrapper() -> None:
    workflow = yaml.safe_load((TEMPLATE_DIR / ".github" / "workflows" / "template.yml").read_text(encoding="utf-8"))
    steps = dict(powershell_steps(workflow))
    assert any("-CondaPath C:\\no\\such\\conda" in script for script in steps.values()), list(steps)
    assert not any(step.startswith("render-and-test") for step in steps)


# What a child Windows PowerShell writes to a redirected stderr: progress records (no error), and the same
# error as CLIXML (without -OutputFormat Text) and as text (with it).
CLIXML_PROGRESS = ['#< CLIXML', '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
                   '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
                   '</TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV>'
                   '</PR></MS></Obj></Objs>']
CLIXML_ERROR = ['#< CLIXML', '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
                '<S S="Error">&amp; : The term \'C:\\no\\such\\conda.exe\' is not recognized as the name of a cmdlet'
                '_x000D__x000A_</S></Objs>']
TEXT_ERROR = ["& : The term 'C:\\no\\such\\conda.exe' is not recognized as the name of a cmdlet, function, script",
              "file, or operable program."]


def stderr_filter(step: str):
    """The step's filter of a child shell's stderr lines (its -match / -notmatch patterns), as Python."""
    filtered = re.search(r"Get-Content -LiteralPath \$stderr \| Where-Object \{ (.+) \}\)", step)
    assert filtered, "the step reads the child's stderr with Get-Content ... | Where-Object { ... }"
    condition = filtered[1]
    errors = re.findall(r"\$_ -match '([^']+)'", condition)
    ignored = re.findall(r"\$_ -notmatch '([^']+)'", condition)

    def is_error(line: str) -> bool:
        return bool(line) and (any(re.search(pattern, line) for pattern in errors)
                               or all(not re.search(pattern, line) for pattern in ignored))
    return is_error


def new_shell_steps(root: Path) -> list[tuple[str, str]]:
    return [(f"{path.name}, {name}", script) for path in workflow_files(root)
            for name, script in powershell_steps(yaml.safe_load(path.read_text(encoding="utf-8")))
            if "-EncodedCommand" in script and "2> $stderr" in script]


def test_the_stderr_filter_check_tells_a_blind_filter_from_a_working_one() -> None:
    blind = stderr_filter("$x = @(Get-Content -LiteralPath $stderr | Where-Object { $_ -and "
                          "$_ -notmatch '^(#< CLIXML|<Objs )' })")
    assert not any(map(blind, CLIXML_ERROR))  # the old check: a CLIXML error is dropped as progress
    working = stderr_filter("$x = @(Get-Content -LiteralPath $stderr | Where-Object { $_ -and ($_ -match "
                            "'<S S=\"Error\">' -or $_ -notmatch '^(#< CLIXML|<Objs )') })")
    assert any(map(working, CLIXML_ERROR)) and any(map(working, TEXT_ERROR)) and not any(map(working, CLIXML_PROGRESS))


def test_new_shell_checks_can_fail(github_root: Path) -> None:
    """A new shell's profile check sees errors however the child writes them (-OutputFormat Text, and a CLIXML
    error record counts), and proves it on a deliberately broken hook before it trusts a clean run."""
    steps = new_shell_steps(github_root)
    if not steps:
        assert github_root != TEMPLATE_DIR and not (github_root / ".github/workflows/windows-setup.yml").exists()
        return
    for step, script in steps:
        call = next(line for line in script.splitlines() if "-EncodedCommand" in line)
        assert "-OutputFormat Text" in call and "2> $stderr" in call, f"{step}: {call}"
        is_error = stderr_filter(script)
        assert any(map(is_error, CLIXML_ERROR)) and any(map(is_error, TEXT_ERROR)), step
        assert not any(map(is_error, CLIXML_PROGRESS)), f"{step}: progress records are no errors"
        broken = re.search(r"AppendAllText\(\$hook, .*'C:\\no\\such\\conda\.exe'.*\n\s*\$broken = @\(Test-NewShell\)\n"
                           r"\s*\[IO\.File\]::WriteAllBytes\(\$hook, \$saved\)\n"
                           r"\s*if \(\$broken\.Count -eq 0\) \{ throw", script)
        assert broken, f"{step}: no deliberately broken hook that the check must catch"
        assert script.index("$broken = @(Test-NewShell)") < script.index("$errors = @(Test-NewShell)"), step
