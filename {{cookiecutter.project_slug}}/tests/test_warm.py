"""tests/warm.py: a command forked from the warm-start server behaves as one started in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import warm
from conftest import PACKAGE, offline_env

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the warm start forks: Linux only"),
    pytest.mark.skipif(os.environ.get(warm.COLD) == "1", reason=f"{warm.COLD}=1 turns the warm start off"),
]

PROBE = (
    "import json, os, sys\n"
    f"before = {PACKAGE!r} in sys.modules\n"
    f"import {PACKAGE}\n"
    "seen = dict(pid=os.getpid(), parent=os.getppid(), cwd=os.getcwd(), argv=sys.argv[1:], name=__name__, path0=sys.path[0],\n"
    "            value=os.environ.get('WARM_PROBE'), package_before=before)\n"
    "print(json.dumps(seen))\n"
    "print('to stderr', file=sys.stderr)\n"
    f"sys.exit(int(os.environ.get('{PACKAGE.upper()}_EXIT', '0')))\n"
)


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    (tmp_path / "warm_probe.py").write_text(PROBE, encoding="utf-8")
    return tmp_path


def test_a_forked_command_has_its_own_process_folder_environment_and_output(probe: Path) -> None:
    command = [sys.executable, "-m", "warm_probe", "a", "b c"]
    env = {**offline_env(), "WANDB_PROBE": "1", f"{PACKAGE.upper()}_EXIT": "3"}  # variables read at use: warm
    env["WARM_PROBE"] = "here"
    assert "WARM_PROBE" not in offline_env()
    server = warm.server_for(probe, offline_env())
    assert server is not None and not server.fits(env)  # WARM_PROBE is not known to be read only at use ...
    env.pop("WARM_PROBE")
    assert server.fits(env)  # ... the W&B variable is
    result = warm.run(command, probe, env, timeout=60)
    seen = json.loads(result.stdout)
    assert result.returncode == 3 and result.stderr == "to stderr\n"
    assert seen["parent"] == server.process.pid and seen["cwd"] == str(probe)  # forked from the server
    assert seen["argv"] == ["a", "b c"] and seen["name"] == "__main__" and seen["path0"] == str(probe)
    assert seen["package_before"] is False  # the server never imports the package: each command does


def test_an_environment_read_at_import_starts_a_fresh_interpreter(probe: Path) -> None:
    env = {**offline_env(), "WARM_PROBE": "fresh"}
    result = warm.run([sys.executable, "-m", "warm_probe"], probe, env, timeout=120)
    seen = json.loads(result.stdout)
    assert result.returncode == 0 and seen["value"] == "fresh" and seen["parent"] == os.getpid()


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    (tmp_path / "warm_sleeper.py").write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([sys.executable, "-m", "warm_sleeper"], tmp_path, offline_env(), timeout=2)
    after = warm.run([sys.executable, "-m", "warm_probe_missing"], tmp_path, offline_env(), timeout=60)
    assert after.returncode == 1 and "No module named warm_probe_missing" in after.stderr  # the server goes on
