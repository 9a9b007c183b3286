"""Setup scripts, environment.yml and CI workflows: parsed, linted, validated, and setup.sh run for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import tree_sitter
import tree_sitter_powershell
import yaml
from cookiecutter.main import cookiecutter

from conftest import TEMPLATE_DIR

BIN = Path(sys.executable).parent
POWERSHELL = tree_sitter.Language(tree_sitter_powershell.language())
# Pip names of the conda packages environment.yml may list beside python and pip.
CONDA_TO_PIP = {"pytorch": "torch"}
# Packages that must come from conda together: mixing conda's torch with PyPI's torchvision breaks both.
TORCH_FAMILY = {"torch", "torchvision", "torchaudio"}

SCRIPT_RENDERS = {
    "conda": {"env_manager": "conda", "powershell": "yes", "ci": "github"},
    "pip": {"env_manager": "pip", "powershell": "yes", "ci": "github", "python_version": "3.12"},
    "uv": {"env_manager": "uv", "powershell": "yes", "ci": "github", "python_version": "3.10"},
}


@pytest.fixture(params=sorted(SCRIPT_RENDERS))
def project(request: pytest.FixtureRequest, render) -> Path:
    return render(**SCRIPT_RENDERS[request.param])


def tool(name: str) -> str:
    """A tool installed beside this interpreter (requirements-dev.txt), else from PATH."""
    for candidate in (BIN / name, BIN / f"{name}.exe"):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} is missing: install requirements-dev.txt (make setup)"
    return found


def powershell_errors(source: bytes) -> list[str]:
    """ERROR and MISSING nodes of the tree-sitter PowerShell parse of ``source``."""
    tree = tree_sitter.Parser(POWERSHELL).parse(source)
    errors, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            line = node.start_point[0] + 1
            errors.append(f"line {line}: {node.type} {node.text[:60]!r}")
        stack.extend(node.children)
    return errors


def test_next_steps_lead_windows_users_with_setup_cmd(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """The first command after `cd` works on a fresh Windows, whose execution policy refuses .ps1 files."""
    for powershell in ("yes", "no"):
        cookiecutter(str(TEMPLATE_DIR), no_input=True, output_dir=str(tmp_path / powershell),
                     extra_context={"powershell": powershell})
        commands = [line.split("#")[0].strip() for line in capfd.readouterr().out.splitlines()[1:]]
        assert commands[0] == "cd my-experiment"
        assert (commands[1] == ".\\setup.cmd") == (powershell == "yes"), commands
        assert not any("setup.ps1" in command for command in commands)  # refused under the default policy


def test_setup_cmd_runs_setup_ps1_under_bypass_and_waits(project: Path) -> None:
    """setup.cmd: Bypass for this one run (no setting changed), every argument passed on, the exit code kept, and
    a pause so that a double-clicked window shows "Ready." before it closes (not in CI)."""
    data = (project / "setup.cmd").read_bytes()
    assert data.isascii() and data.count(b"\r\n") == data.count(b"\n"), "setup.cmd: ASCII with CRLF line ends"
    lines = [line for line in data.decode().splitlines() if line and not line.lower().startswith("rem ")]
    assert lines[0] == "@echo off"
    run = next(line for line in lines if "setup.ps1" in line)
    assert run == 'powershell.exe -NoLogo -NoProfile -ExecutionPolicy Bypass -File "%~dp0scripts\\setup.ps1" %*'
    after = lines[lines.index(run) + 1:]
    assert after[0] == 'set "SETUP_EXIT=%ERRORLEVEL%"' and after[-1] == "exit /b %SETUP_EXIT%"
    assert any(line.endswith(" pause") and "if not defined CI" in line for line in after)
    assert not re.search(r"^\s*(:\w|goto\b)", data.decode(), re.MULTILINE | re.IGNORECASE)  # no labels: LF-safe


def test_rendered_windows_scripts_are_ascii_with_a_korean_project_name(render) -> None:
    """Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page (cp949 in Korea): a Korean
    project name in it would show as mojibake in Get-Help. The rendered .ps1 and .cmd files stay ASCII."""
    project = render(project_name="딥러닝 실험", powershell="yes")
    scripts = sorted([*project.rglob("*.ps1"), *project.rglob("*.cmd")])
    assert {path.name for path in scripts} == {"setup.ps1", "tasks.ps1", "setup.cmd"}
    for path in scripts:
        text = path.read_bytes()
        assert text.isascii(), f"{path.name}: {[line for line in text.splitlines() if not line.isascii()][:3]}"


def test_powershell_parser_reports_broken_scripts() -> None:
    assert powershell_errors(b"function Broken {\n    if ($x -eq 1 {\n}\n")
    assert not powershell_errors(b"param([string] $Name = 'x')\nWrite-Host \"hi $Name\"\n")


def test_every_rendered_ps1_parses(project: Path) -> None:
    scripts = sorted(project.rglob("*.ps1"))
    assert {path.name for path in scripts} == {"setup.ps1", "tasks.ps1"}
    for path in scripts:
        assert powershell_errors(path.read_bytes()) == [], path.name


def test_setup_ps1_offers_the_promised_switches(project: Path) -> None:
    text = (project / "scripts" / "setup.ps1").read_text(encoding="utf-8")
    for parameter in ("$CondaPath", "$ProfilePath", "$DryRun", "$Cpu", "$ProfileOnly", "$UndoProfile", "$EnvManager"):
        assert parameter in text, parameter
    assert "SupportsShouldProcess" in text  # -WhatIf
    helper = (project / "scripts" / "conda_profile.py").read_text(encoding="utf-8")
    assert '" shell.powershell hook | Out-String | " + WHERE_NOT_EMPTY + " | Invoke-Expression"' in helper
    # Nothing PowerShell 7 only: Windows PowerShell 5.1 has no ?? ?. or && between commands.
    code = re.sub(r"'[^']*'|\"[^\"]*\"|#.*", "", text)
    assert not re.search(r"\?\?|\?\.|&&|\|\|", code)


def helper_options(helper: Path, commands: tuple[str, ...]) -> set[str]:
    accepted = set()
    for command in commands:
        usage = subprocess.run([sys.executable, str(helper), command, "--help"], capture_output=True, text=True)
        assert usage.returncode == 0, usage.stderr
        accepted |= set(re.findall(r"--[a-z-]+", usage.stdout))
    return accepted


def test_setup_ps1_passes_the_profile_helper_only_options_it_has(project: Path) -> None:
    """setup.ps1 hands the profile edit and the policy verdict to conda_profile.py: the options must match."""
    text = (project / "scripts" / "setup.ps1").read_text(encoding="utf-8")
    helper = project / "scripts" / "conda_profile.py"
    helper_part = text[text.index("function Invoke-Helper"):text.index("function Test-CondaTerms")]
    passed = set(re.findall(r"'(--[a-z-]+)'", helper_part))
    assert {"--documents", "--edition", "--profile-path", "--conda", "--dry-run", "--server", "--blocked"} <= passed
    assert passed <= helper_options(helper, ("add", "remove", "policy")), passed
    for word in ("'add'", "'remove'", "'policy'", "GetFolderPath('MyDocuments')", "Get-ExecutionPolicy -List"):
        assert word in text, word


def test_setup_ps1_leaves_conda_output_and_gpu_choice_to_python(project: Path) -> None:
    """conda's output (tos, env list), the folder checks and the CUDA build are decided in setup_checks.py and
    torch_build.py, which the tests here run; setup.ps1 only passes arguments and shows the answers."""
    text = (project / "scripts" / "setup.ps1").read_text(encoding="utf-8")
    checks = text[text.index("function Test-CondaTerms"):text.index("function Build-CondaEnv")]
    assert set(re.findall(r"'(--[a-z-]+)'", checks)) <= helper_options(
        project / "scripts" / "setup_checks.py", ("tos", "env-prefix", "location"))
    for call in ("@('tos', '--conda', $Conda)", "@('env-prefix', '--conda', $Conda, '--name', $EnvName)",
                 "@('location', '--project', $ProjectRoot, '--site-packages', $SitePackages)",
                 "'LongPathsEnabled'", "'OneDrive', 'OneDriveCommercial', 'OneDriveConsumer'",
                 "Invoke-Helper $Python @('index') -Capture -Script $TorchHelper"):
        assert call in checks, call
    assert "& $Conda tos" not in checks and "& $Conda env list" not in checks and "ConvertFrom-Json $json" not in text
    code = re.sub(r"#.*", "", re.sub(r"<#.*?#>", "", text, flags=re.DOTALL))
    assert "cu126" not in code and "cu128" not in code  # no fixed CUDA build: torch_build.py picks it
    for builder in ("Build-CondaEnv", "Build-Venv", "Build-UvEnv"):  # warned before anything is installed
        body = text[text.index(f"function {builder}"):]
        body = body[:body.index("\n}")]
        assert "Test-ProjectLocation" in body, builder
    assert "Set-TorchSource \"pytorch-$build\" -IfUntouched" in text
    status = text[text.index("function Show-Status"):text.index("function Invoke-Setup")]
    assert "@($TorchHelper, 'probe')" in status and "is_available" not in re.sub(r"#.*", "", status)


def ps_string_array(script: str, name: str) -> list[str]:
    """The single-quoted strings of ``$name = @( ... )`` in a PowerShell script, unquoted."""
    body = re.search(rf"^\${name} = @\((.*?)\)\s*$", script, re.MULTILINE | re.DOTALL)
    assert body, f"${name} = @(...) is missing"
    return [text.replace("''", "'") for text in re.findall(r"'((?:[^']|'')*)'", body[1])]


def first_conda(roots: list[str], env: dict[str, str], disk: Path) -> str | None:
    """What Find-Conda's loop over $CondaRoots returns: the first root (%VARIABLES% expanded as Windows does,
    an undefined one left as it is and skipped) with Scripts\\conda.exe, on a fake ``disk``."""
    for root in roots:
        expanded = re.sub(r"%(\w+)%", lambda match: env.get(match[1].lower(), match[0]), root)
        if "%" in expanded:
            continue
        candidate = expanded + "\\Scripts\\conda.exe"
        if (disk / candidate.replace(":", "").replace("\\", "/")).is_file():
            return candidate
    return None


def test_conda_search_finds_the_installs_of_users_with_korean_names(project: Path, tmp_path: Path) -> None:
    """The installers refuse non-ASCII folders: 김철수 installs conda to C:\\miniconda3 (or anaconda3, miniforge3)."""
    script = (project / "scripts" / "setup.ps1").read_text(encoding="utf-8")
    roots = ps_string_array(script, "CondaRoots")
    env = {"userprofile": r"C:\Users\김철수", "localappdata": r"C:\Users\김철수\AppData\Local",
           "programdata": r"C:\ProgramData", "systemdrive": "C:"}
    assert first_conda(roots, env, tmp_path) is None
    for name in ("miniforge3", "anaconda3", "miniconda3"):  # each found alone
        exe = tmp_path / "C" / name / "Scripts" / "conda.exe"
        exe.parent.mkdir(parents=True)
        exe.write_bytes(b"")
        assert first_conda(roots, env, tmp_path) == rf"C:\{name}\Scripts\conda.exe"
    mine = tmp_path / "C" / "Users" / "김철수" / "miniconda3" / "Scripts" / "conda.exe"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"")  # the user's own install comes before the machine-wide ones
    assert first_conda(roots, env, tmp_path) == r"C:\Users\김철수\miniconda3\Scripts\conda.exe"
    assert first_conda(roots, {key: value for key, value in env.items() if key != "userprofile"}, tmp_path) == \
        r"C:\miniconda3\Scripts\conda.exe"
    find = script[script.index("function Find-Conda"):script.index("function Get-RegisteredConda")]
    assert "foreach ($root in $CondaRoots)" in find and "ExpandEnvironmentVariables($root)" in find
    assert find.index("$env:CONDA_EXE") < find.index("$CondaRoots") < find.index("Get-RegisteredConda") < \
        find.index("Get-Command conda.exe")
    # PEP 514's three places; the InstallPath key's default value is the install's root.
    assert ps_string_array(script, "PythonRegistryKeys") == [
        r"HKCU:\Software\Python", r"HKLM:\Software\Python", r"HKLM:\Software\WOW6432Node\Python"]
    registry = script[script.index("function Get-RegisteredConda"):script.index("function Get-PythonVersion")]
    assert "OpenSubKey('InstallPath')" in registry and "GetValue('')" in registry


def test_undo_comes_before_anything_that_needs_conda(project: Path) -> None:
    script = (project / "scripts" / "setup.ps1").read_text(encoding="utf-8")
    setup = script[script.index("function Invoke-Setup"):]
    undo = setup.index("if ($UndoProfile)")
    assert undo < setup.index("conda not found") and undo < setup.index("Test-PolicyAdvice")
    assert "catch" in setup[undo:setup.index("return", undo)]  # a -CondaPath that is gone does not stop it
    helper = script[script.index("function Get-HelperPython"):script.index("function Invoke-Helper")]
    assert "Find-Python ([version] '3.8')" in helper  # conda's python.exe, or any Python 3.8+


def test_pip_and_uv_modes_leave_the_profiles_alone_but_check_the_policy(project: Path) -> None:
    script = (project / "scripts" / "setup.ps1").read_text(encoding="utf-8")
    setup = script[script.index("function Invoke-Setup"):]
    hooked = "if (($EnvManager -eq 'conda' -or $CondaPath) -and -not $SkipProfile) {\n        Set-CondaHook $conda\n"
    assert hooked in setup  # conda mode, or asked for with -CondaPath
    assert setup.count("Set-CondaHook") == 2  # that one, and -UndoProfile's
    advice = script[script.index("function Test-PolicyAdvice"):script.index("function Test-CondaTerms")]
    assert "try {" in advice and "catch {" in advice  # advice only: an error there is a warning
    assert re.search(r"^    Test-PolicyAdvice \$conda", setup, re.MULTILINE)  # every mode


def test_tasks_ps1_hands_setup_its_arguments_as_received(project: Path) -> None:
    """`tasks.ps1 setup -Cpu`: a [string] copy of -Cpu is a value, not a switch; $args splatted keeps it a switch."""
    script = (project / "scripts" / "tasks.ps1").read_text(encoding="utf-8")
    assert re.search(r"^\$Received = \$args$", script, re.MULTILINE)
    assert "& (Join-Path $PSScriptRoot 'setup.ps1') @Received" in script
    assert "@Rest" not in script[script.index("if ($Task -eq 'setup')"):]


PATH_COMMANDS = {"push-location", "set-location", "test-path", "get-content", "remove-item", "resolve-path",
                 "get-item", "select-string"}


def test_ps1_scripts_use_literal_paths_and_always_set_the_exit_code(project: Path) -> None:
    """No wildcard paths, no Set-Location leaking into the caller, and `exit $code` as the last statement."""
    for name in ("setup.ps1", "tasks.ps1"):
        root = tree_sitter.Parser(POWERSHELL).parse((project / "scripts" / name).read_bytes()).root_node
        commands, stack = [], [root]
        while stack:
            node = stack.pop()
            if node.type == "command" and node.child_by_field_name("command_name") is not None:
                commands.append(node)
            stack.extend(node.children)
        for command in commands:
            verb = command.child_by_field_name("command_name").text.decode().lower()
            assert verb not in {"set-location", "cd", "sl", "chdir"}, f"{name}: {command.text!r}"
            if verb in PATH_COMMANDS:
                assert b"-LiteralPath" in command.text, f"{name}: {command.text!r}"
        statements = next(child for child in root.children if child.type == "statement_list").children
        assert statements[-1].type == "flow_control_statement", name
        assert re.fullmatch(rb"exit \$\w+", statements[-1].text), statements[-1].text


def test_setup_sh_is_shellcheck_clean(project: Path) -> None:
    script = project / "scripts" / "setup.sh"
    assert os.access(script, os.X_OK), "setup.sh lost its executable bit"
    result = subprocess.run([tool("shellcheck"), "--shell=bash", "--severity=style", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_catches_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n", encoding="utf-8")
    assert subprocess.run([tool("shellcheck"), str(bad)], capture_output=True).returncode != 0


def test_line_endings_by_gitattributes(project: Path) -> None:
    rules = (project / ".gitattributes").read_text(encoding="utf-8").splitlines()
    assert "*.ps1 text eol=crlf" in rules and "*.sh text eol=lf" in rules
    assert b"\r\n" not in (project / "scripts" / "setup.sh").read_bytes()


@pytest.mark.parametrize("python_version", ["3.10", "3.11", "3.12"])
def test_environment_yml_pins_python(render, python_version: str) -> None:
    project = render(env_manager="conda", python_version=python_version)
    env = yaml.safe_load((project / "environment.yml").read_text(encoding="utf-8"))
    assert env["name"] == project.name
    assert f"python={python_version}" in env["dependencies"]
    assert env["channels"] == ["conda-forge"]


def requirement_name(requirement: str) -> tuple[str, str]:
    """(normalized name, version specifier) of a pip or conda requirement string."""
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)", requirement)
    assert match, requirement
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def test_environment_yml_agrees_with_pyproject(render) -> None:
    project = render(env_manager="conda")
    env = yaml.safe_load((project / "environment.yml").read_text(encoding="utf-8"))
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = dict(requirement_name(line) for line in pyproject["dependencies"])
    conda = [item for item in env["dependencies"] if isinstance(item, str)]
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    conda_packages = {}
    for item in conda:
        name, spec = requirement_name(item.replace("=", "==", 1) if re.match(r"[\w-]+=\d", item) else item)
        conda_packages[CONDA_TO_PIP.get(name, name)] = spec
    conda_packages.pop("python"), conda_packages.pop("pip")
    for name, spec in conda_packages.items():
        assert name in declared, f"environment.yml installs {name}, which pyproject.toml does not declare"
        assert spec == declared[name], f"{name}: environment.yml says {spec!r}, pyproject.toml {declared[name]!r}"
    missing = (TORCH_FAMILY & set(declared)) - set(conda_packages)
    assert not missing, f"add {sorted(missing)} to environment.yml's conda packages (the conda torch needs them)"
    installs = [line for line in pip_section if line.startswith("-e .")]
    assert len(installs) == 1, pip_section
    extras = set(re.findall(r"\[([^\]]*)\]", installs[0])[0].split(","))
    assert "dev" in extras and extras <= set(pyproject.get("optional-dependencies", {}))


def workflow_files(project: Path | None = None) -> list[Path]:
    root = project if project is not None else TEMPLATE_DIR
    return sorted((root / ".github" / "workflows").glob("*.y*ml"))


def validate_workflows(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, paths)], capture_output=True, text=True)


def test_workflows_validate_against_the_github_schema(render) -> None:
    rendered = render(ci="github")
    paths = workflow_files() + workflow_files(rendered)
    assert {path.name for path in paths} >= {"template.yml", "ci.yml"}
    result = validate_workflows(paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_schema_rejects_a_job_without_runner(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: echo hi\n", encoding="utf-8")
    assert validate_workflows([bad]).returncode != 0


def test_rendered_ci_keeps_github_expressions_and_gets_project_values(render) -> None:
    project = render(ci="github", python_version="3.12")
    text = (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "${{ matrix.os }}" in text and "${{ github.ref }}" in text
    workflow = yaml.safe_load(text)
    job = workflow["jobs"]["test"]
    assert job["strategy"]["matrix"]["os"] == ["ubuntu-latest", "windows-latest"]
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    setup_python = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup_python["with"] == {"python-version": "3.12", "cache": "pip", "cache-dependency-path": "pyproject.toml"}
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    smoke = next(step["run"] for name, step in steps.items() if name and "smoke" in name.lower())
    assert f"-m {package}.train debug=fast" in smoke and workflow["env"]["WANDB_MODE"] == "offline"
    assert "ruff check" in str(steps) and "pytest" in str(steps)


def check_windows_setup_job(job: dict) -> None:
    """The Windows job runs setup.ps1 as a user does, under both editions, and checks a new shell."""
    assert job["runs-on"] == "windows-latest" and isinstance(job["timeout-minutes"], int)
    assert job["strategy"]["matrix"]["shell"] == ["powershell", "pwsh"]
    assert job["env"]["EDITION"] == "${{ matrix.shell }}"
    runs = [step["run"] for step in job["steps"] if "run" in step]
    for run in runs:  # each step is PowerShell 7 that runs the edition under test as $env:EDITION
        assert powershell_errors(run.encode()) == [], run
    text = "\n".join(runs)
    assert "[IO.File]::WriteAllText($file, 'Set-Alias -Name ll -Value Get-ChildItem')" in text  # no newline
    setups = [line for line in text.splitlines() if "-File scripts\\setup.ps1" in line and "-WhatIf" not in line
              and "-SkipProfile" not in line]
    assert len(setups) == 2 and "-ProfilePath" in setups[0] and "-ProfilePath" not in setups[1], setups
    assert "-File scripts\\setup.ps1 -WhatIf" in text
    new_shell = next(run for run in runs if "-EncodedCommand $encoded" in run)
    for part in ("2> $stderr", "Invoke-Expression $env:ACTIVATE", "python -c $env:IMPORT", "$errors.Count -gt 0",
                 "-OutputFormat Text", "<S S=\"Error\">"):
        assert part in new_shell, part
    assert "-NoProfile" not in new_shell
    # setup.cmd under the policy a new Windows has, where the same script run directly is refused.
    policy = next(run for run in runs if "& .\\setup.cmd" in run)
    assert policy.index("CurrentUser Restricted") < policy.index("-File scripts\\setup.ps1") < \
        policy.index("& .\\setup.cmd -WhatIf") < policy.index("CurrentUser Undefined")
    assert "running scripts is disabled" in policy


def test_template_ci_runs_weekly_and_on_windows() -> None:
    workflow = yaml.safe_load((TEMPLATE_DIR / ".github" / "workflows" / "template.yml").read_text(encoding="utf-8"))
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"].split()[-1] == "1"
    windows = workflow["jobs"]["windows"]
    check_windows_setup_job(windows)
    assert windows["strategy"]["matrix"]["env_manager"] == ["conda", "pip", "uv"]
    runs = "\n".join(step.get("run", "") for step in windows["steps"])
    assert "powershell=yes" in runs and "& $tasks smoke" in runs and "optimizer=adam,sgd" in runs
    assert "& $tasks test -q -m 'not slow'" in runs  # the slow tests (torchrun, many runs) stay on Linux
    cells = windows["strategy"]["matrix"]["include"]
    assert {"env_manager": "conda", "shell": "powershell", "tos": "pending"} in cells
    assert any(cell.get("temp") == "hangul" for cell in cells)
    steps = {step.get("if"): step["run"] for step in windows["steps"] if step.get("if")}
    terms = steps["matrix.tos == 'pending'"]
    for part in ("$env:CONDA_PLUGINS_AUTO_ACCEPT_TOS = $null", "$env:CI = $null", "tos clean --all",
                 "-File scripts\\setup.ps1 -CondaPath $env:CONDA -SkipProfile", "$LASTEXITCODE -ne 1",
                 "tos accept --override-channels --channel https://repo\\.anaconda\\.com/pkgs/main",
                 "CondaToSNonInteractiveError"):
        assert part in terms, part
    assert terms.index("$env:CI = $null") < terms.index("tos clean") < terms.index("-File scripts\\setup.ps1")
    hangul = steps["matrix.temp == 'hangul'"]
    assert '"TEMP=$temp" >> $env:GITHUB_ENV' in hangul and not re.search(r"'[^']*'", hangul)[0].isascii()


@pytest.mark.parametrize("env_manager", ["conda", "pip", "uv"])
def test_rendered_windows_workflow_checks_setup_ps1_under_both_editions(render, env_manager: str) -> None:
    project = render(env_manager=env_manager, powershell="yes", ci="github")
    workflow = yaml.safe_load((project / ".github" / "workflows" / "windows-setup.yml").read_text(encoding="utf-8"))
    job = workflow["jobs"]["setup"]
    check_windows_setup_job(job)
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    venv = ". .\\.venv\\Scripts\\Activate.ps1"
    activate = {"conda": f"conda activate {project.name}", "pip": venv, "uv": venv}
    assert job["env"]["ACTIVATE"] == activate[env_manager] and job["env"]["IMPORT"] == f"import {package}"
    installs_uv = [step for step in job["steps"] if "pip install uv" in step.get("run", "")]
    assert len(installs_uv) == 1 and job["env"]["ENV_MANAGER"] == env_manager


def test_pre_commit_config_has_ruff_and_file_checks(render) -> None:
    config = yaml.safe_load((render() / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "check-yaml", "end-of-file-fixer", "mypy"} <= hooks
    assert all(repo["rev"] for repo in config["repos"] if repo["repo"] != "local")
    # the hook's ruff formats as the ruff of the lock (what tests/format_template.py formats with)
    ruff = next(repo for repo in config["repos"] if repo["repo"].endswith("/ruff-pre-commit"))
    lock = (Path(__file__).resolve().parents[1] / "requirements-dev.lock").read_text(encoding="utf-8")
    assert f"ruff=={ruff['rev'].removeprefix('v')}\n" in lock


FAKE_CONDA = """#!/usr/bin/env bash
# Records each call; keeps the list of envs in a file; `run ... python ARGS` runs the real Python.
echo "$*" >> "$FAKE_CONDA_LOG"
if [ "$1 $2" = "env list" ]; then
    printf '# conda environments:\\nbase  /opt/conda\\n'
    cat "$FAKE_CONDA_ENVS" 2>/dev/null || true
elif [ "$1 $2" = "env create" ]; then
    printf '%s  /envs/%s\\n' "$4" "$4" >> "$FAKE_CONDA_ENVS"
elif [ "$1" = run ]; then
    while [ "$1" != python ]; do shift; done
    shift
    exec "$REAL_PYTHON" "$@"
fi
"""


def test_setup_sh_drives_conda_through_conda_exe(render, tmp_path: Path) -> None:
    """Conda mode calls $CONDA_EXE (no shell function): create once, then update; --cpu swaps the torch build."""
    project = render()
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    conda = tmp_path / "conda"
    conda.write_text(FAKE_CONDA, encoding="utf-8")
    conda.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "CONDA_EXE": str(conda), "FAKE_CONDA_LOG": str(log), "REAL_PYTHON": sys.executable,
           "FAKE_CONDA_ENVS": str(tmp_path / "envs.txt"), "PYTHONPATH": str(project / "src")}
    runs = [subprocess.run(["bash", "scripts/setup.sh", *flags], cwd=project, env=env, capture_output=True,
                           text=True, timeout=300) for flags in ([], ["--cpu"])]
    for result in runs:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "conda activate my-experiment" in result.stdout and "torch " in result.stdout
    calls = log.read_text(encoding="utf-8").splitlines()
    assert calls.count("env create --name my-experiment --file environment.yml") == 1
    assert calls.count("env update --name my-experiment --file environment.yml --prune") == 1
    assert calls.count("install --yes --name my-experiment --channel conda-forge pytorch=*=cpu*") == 1
    assert f"run --no-capture-output --name my-experiment python -c import {package}" in calls


def test_setup_sh_without_conda_says_what_to_do(render, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=render(), env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "--pip" in result.stderr, result.stderr


def torch_spec() -> str:
    """TORCH_SPEC from the Makefile (exported), else the torch and torchvision this interpreter has."""
    if os.environ.get("TORCH_SPEC"):
        return os.environ["TORCH_SPEC"]
    import torch
    import torchvision

    return f"torch=={torch.__version__.split('+')[0]} torchvision=={torchvision.__version__.split('+')[0]}"


@pytest.mark.slow
def test_setup_sh_builds_a_working_venv_end_to_end(render, tmp_path: Path) -> None:
    """setup.sh --pip makes .venv from nothing: torch from TORCH_SPEC, the project, its dev tools."""
    project = render(env_manager="pip", logger="csv", powershell="no", ci="none")
    package = next(path.name for path in (project / "src").iterdir() if path.name != "hydra_plugins")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "CONDA"))}
    env.update(TORCH_SPEC=torch_spec(), VENV_DIR=str(tmp_path / "venv"), PYTHON=sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)

    started = time.perf_counter()
    first = subprocess.run(["bash", "scripts/setup.sh"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=1800)
    first_s = time.perf_counter() - started
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "creating" in first.stdout and "torch " in first.stdout and "CUDA" in first.stdout
    assert f"python -m {package}.train" in first.stdout

    venv_python = tmp_path / "venv" / "bin" / "python"
    code = f"import {package}, torch, hydra, pytest, sys; sys.stdout.write(sys.prefix)"
    check = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True, env={"PATH": env["PATH"]})
    assert check.returncode == 0 and check.stdout == str(tmp_path / "venv"), check.stderr[-2000:]

    started = time.perf_counter()
    second = subprocess.run(["bash", "scripts/setup.sh"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=900)
    second_s = time.perf_counter() - started
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "reusing" in second.stdout and "creating" not in second.stdout
    sys.stderr.write(f"setup.sh end to end: first run {first_s:.0f}s, rerun {second_s:.0f}s\n")

    smoke = subprocess.run([str(venv_python), "-m", f"{package}.train", "debug=fast",
                            f"hydra.run.dir={tmp_path / 'run'}"], cwd=project, capture_output=True, text=True,
                           env={**env, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.csv").is_file()


# ------------------------------------------------------------------ the CUDA build for the GPU (torch_build.py)
def torch_build(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(project / "scripts" / "torch_build.py"), *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize(("capability", "build"), [
    ("12.0", "cu128"),  # RTX 50-series: cu126 has no sm_120 kernels ("no kernel image is available")
    ("12.1", "cu128"),  # sm_121 runs sm_120's kernels (same major version)
    ("10.0", "cu128"),  # B200
    ("8.9", "cu128"),  # RTX 40-series runs sm_86's kernels
    ("7.5", "cu128"),  # Turing, the oldest cu128 has
    ("7.0", "cu126"),  # Volta: dropped by cu128
    ("6.1", "cu126"),  # GTX 10-series
    ("5.2", "cu126"),  # Maxwell
])
def test_the_cuda_build_follows_the_compute_capability(render, capability: str, build: str) -> None:
    result = torch_build(render(), "index", "--compute-cap", capability)
    assert result.returncode == 0 and result.stdout == f"{build}\n", result.stdout + result.stderr


def test_gpus_no_build_covers_get_the_build_for_most_and_a_warning(render) -> None:
    result = torch_build(render(), "index", "--compute-cap", "12.0", "--compute-cap", "6.1", "--compute-cap", "8.6")
    build, warning = result.stdout.splitlines()
    assert build == "cu128" and "GPU 1 (sm_61)" in warning and "GPU 0" not in warning


FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
# nvidia-smi as a driver answers `--query-gpu=compute_cap,name --format=csv,noheader`.
[ "$*" = "--query-gpu=compute_cap,name --format=csv,noheader" ] || { echo "unexpected: $*" >&2; exit 9; }
if [ -n "${OLD_DRIVER:-}" ]; then
    echo 'Field "compute_cap" is not a valid field to query.'; exit 2
fi
printf '%s\\n' "$GPUS"
"""


def fake_nvidia_smi(folder: Path) -> Path:
    path = folder / "nvidia-smi"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_NVIDIA_SMI, encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("gpus", "old_driver", "expected"), [
    ("12.0, NVIDIA GeForce RTX 5090", "", ["cu128"]),
    ("8.6, NVIDIA GeForce RTX 3060 Laptop GPU\n8.6, NVIDIA GeForce RTX 3060 Laptop GPU", "", ["cu128"]),
    ("6.1, NVIDIA GeForce GTX 1080 Ti", "", ["cu126"]),
    ("", "1", ["cu126", "update the driver"]),  # a driver too old to say: the build with the oldest GPUs
])
def test_the_build_comes_from_nvidia_smi(render, tmp_path: Path, gpus: str, old_driver: str,
                                         expected: list[str]) -> None:
    smi = fake_nvidia_smi(tmp_path)
    result = torch_build(render(), "index", "--nvidia-smi", str(smi), env={**os.environ, "GPUS": gpus,
                                                                             "OLD_DRIVER": old_driver})
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0] == expected[0], result.stdout + result.stderr
    assert all(word in result.stdout for word in expected[1:])


def test_no_nvidia_smi_means_no_cuda_build(render) -> None:
    result = torch_build(render(), "index", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout == "none\n"


FAKE_TORCH = '''"""A torch whose GPU is visible (is_available) but whose kernels may not run on it."""
import os


class _Cuda:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def device_count():
        return 1

    @staticmethod
    def get_device_name(number):
        return "NVIDIA GeForce RTX 5090"

    @staticmethod
    def get_device_capability(number):
        return (12, 0)

    @staticmethod
    def get_arch_list():
        return ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


class _Tensor:
    def __mul__(self, other):
        if os.environ.get("NO_KERNEL"):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device\\nmore")
        return self

    def sum(self):
        return self

    def item(self):
        return 16.0


class _Version:
    cuda = "12.6"


cuda = _Cuda()
version = _Version()
__version__ = "2.9.1+cu126"


def ones(*shape, device=None):
    return _Tensor()
'''


@pytest.mark.parametrize("no_kernel", ["", "1"])
def test_the_probe_runs_an_operation_on_the_gpu(render, tmp_path: Path, no_kernel: str) -> None:
    """is_available() is true for an RTX 50-series under cu126; only an operation shows it cannot run there."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH, encoding="utf-8")
    result = torch_build(render(), "probe", env={**os.environ, "PYTHONPATH": str(tmp_path), "NO_KERNEL": no_kernel})
    if not no_kernel:
        assert result.returncode == 0 and "NVIDIA GeForce RTX 5090 (sm_120) runs PyTorch" in result.stdout
        return
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if "cannot run" in line]
    assert "no kernel image is available" in line and "sm_120" in line and "more" not in line
    assert line.endswith("pip install --force-reinstall torch torchvision "
                         "--index-url https://download.pytorch.org/whl/cu128")


def test_the_probe_with_a_cpu_build_says_training_runs_on_the_cpu(render) -> None:
    result = torch_build(render(), "probe")
    assert result.returncode == 0 and "torch " in result.stdout and "CUDA: no" in result.stdout


FAKE_UV = """#!/usr/bin/env bash
# uv: sync records pyproject.toml's torch source; run --no-sync python ARGS runs the real Python.
case "$1" in
    --version) echo "uv 0.0.0 (fake)" ;;
    sync) grep -E '^(torch|torchvision) = ' pyproject.toml > "$SYNCED" || true ;;
    run) while [ "$1" != python ]; do shift; done; shift; exec "$REAL_PYTHON" "$@" ;;
    *) echo "unexpected: $*" >&2; exit 9 ;;
esac
"""


@pytest.mark.parametrize(("gpus", "index"), [("12.0, NVIDIA GeForce RTX 5090", "pytorch-cu128"),
                                             ("6.1, NVIDIA GeForce GTX 1080 Ti", "pytorch-cu126")])
def test_setup_sh_routes_torch_to_the_gpus_build(render, tmp_path: Path, gpus: str, index: str) -> None:
    """setup.sh --uv with an NVIDIA GPU: torch and torchvision go to the index torch_build.py picks, then the
    probe runs (here on this machine's CPU build)."""
    source = render(env_manager="uv")
    project = tmp_path / "project"
    shutil.copytree(source, project)
    fake_nvidia_smi(tmp_path / "bin")
    uv = tmp_path / "bin" / "uv"
    uv.write_text(FAKE_UV, encoding="utf-8")
    uv.chmod(0o755)
    synced = tmp_path / "synced.txt"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "UV": str(uv), "GPUS": gpus,
           "SYNCED": str(synced), "REAL_PYTHON": sys.executable, "PYTHONPATH": str(project / "src")}
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert synced.read_text(encoding="utf-8").splitlines() == [f'torch = [{{ index = "{index}" }}]',
                                                              f'torchvision = [{{ index = "{index}" }}]']
    assert f"the {index.removeprefix('pytorch-')} build" in result.stderr + result.stdout
    assert "CUDA: no" in result.stdout and "Ready." in result.stdout


def test_tests_that_start_torchrun_skip_on_windows_with_the_reason(render) -> None:
    """PyTorch's Windows wheels lack libuv, so torchrun's rendezvous cannot start there: every rendered test that
    runs torch.distributed.run carries the win32 skip, and the README says where multi-process training runs."""
    import ast

    project = render()
    conftest = (project / "tests" / "conftest.py").read_text(encoding="utf-8")
    marker = re.search(r"^needs_torchrun = pytest\.mark\.skipif\(\n\s+sys\.platform == \"win32\",\n\s+reason=\"(.+)\",",
                       conftest, re.MULTILINE)
    assert marker and "Linux or WSL" in marker[1] and "libuv" in marker[1], "conftest.py: needs_torchrun"
    starts = ("torch.distributed.run", "TORCHRUN", "train_on_two_ranks")  # conftest's helpers start torchrun
    starting = []
    for path in sorted((project / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        whole_module = any(isinstance(node, ast.Assign) and ast.unparse(node) == "pytestmark = needs_torchrun"
                           for node in tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and \
                    any(name in ast.unparse(node) for name in starts):
                decorators = {ast.unparse(decorator) for decorator in node.decorator_list}
                assert whole_module or "needs_torchrun" in decorators, \
                    f"{path.name}::{node.name} starts torchrun without the skip"
                starting.append(node.name)
        helpers = [node for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_")
                   and "torch.distributed.run" in ast.unparse(node)]
        tests = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
        for helper in helpers:  # a fixture may start torchrun when every test that takes it carries the skip
            fixture = any("pytest.fixture" in ast.unparse(decorator) for decorator in helper.decorator_list)
            users = [test for test in tests if helper.name in {arg.arg for arg in test.args.args}]
            assert whole_module or (fixture and all(
                "needs_torchrun" in {ast.unparse(decorator) for decorator in test.decorator_list} for test in users)), \
                f"{path.name}: {helper.name} starts torchrun; mark the module or each test using it needs_torchrun"
            starting.extend(test.name for test in users)
    assert len(starting) >= 4, starting
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "Multi-process training needs Linux or WSL" in readme
