"""GitHub Actions, in the template and in every render with ci=github: pinned, least privilege, audited by zizmor."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_render import MATRIX, answers_for
from test_setup_scripts import tool

from conftest import TEMPLATE_DIR

# zizmor's severities, lowest first; a finding at BLOCKING or above fails the tests.
SEVERITIES = ["Unknown", "Informational", "Low", "Medium", "High"]
BLOCKING = "Medium"
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # (?P<version>v\d+(\.\d+)*)$")
GITHUB_RENDERS = sorted(name for name in MATRIX if answers_for(name)["ci"] == "github")


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
