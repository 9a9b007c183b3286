"""tests/warm.py: a command forked from the warm-start server behaves as one started in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
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
    "            value=os.environ.get('WARM_PROBE'), package_before=before,\n"
    "            left=[name for name in os.environ['PYTEST_WARM_LEFT'].split(',') if name in sys.modules])\n"
    "print(json.dumps(seen))\n"
    "print('to stderr', file=sys.stderr)\n"
    f"sys.exit(int(os.environ.get('{PACKAGE.upper()}_EXIT', '0')))\n"
)


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    (tmp_path / "warm_probe.py").write_text(PROBE, encoding="utf-8")
    return tmp_path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[warm.Server]:
    """A server of this test's own, started in the offline environment the suite's commands get."""
    started = warm.Server(tmp_path_factory.mktemp("warm"), offline_env())
    yield started
    started.stop()


def test_a_forked_command_has_its_own_process_folder_environment_and_output(server: warm.Server, probe: Path) -> None:
    command = [sys.executable, "-m", "warm_probe", "a", "b c"]
    left = ",".join(warm.left_to_commands())
    env = {**offline_env(), "PYTEST_WARM_LEFT": left, f"{PACKAGE.upper()}_EXIT": "3"}  # variables read at use: warm
    assert server.fits(env)
    result = warm.run_on(server, command, probe, env, timeout=60)
    seen = json.loads(result.stdout)
    assert result.returncode == 3 and result.stderr == "to stderr\n"
    assert seen["parent"] == server.process.pid and seen["cwd"] == str(probe)  # forked from the server
    assert seen["argv"] == ["a", "b c"] and seen["name"] == "__main__" and seen["path0"] == str(probe)
    assert seen["package_before"] is False  # the server never imports the package: each command does
    assert seen["left"] == []  # nor what the package leaves to commands, even where a preloaded library tries it


def test_an_environment_read_at_import_starts_a_fresh_interpreter(server: warm.Server, probe: Path) -> None:
    for changed in ({"HF_WARM_PROBE": "1"}, {"TORCH_LOGS": "dynamo"}, {"PYTHONWARNINGS": "error"}):
        assert not server.fits({**offline_env(), **changed})
    assert warm.server_for(probe, offline_env()) is not None  # the suite's server, as the suite's commands find it
    env = {**offline_env(), "HF_WARM_PROBE": "1", "WARM_PROBE": "fresh", "PYTEST_WARM_LEFT": ""}
    result = warm.run([sys.executable, "-m", "warm_probe"], probe, env, timeout=120)
    seen = json.loads(result.stdout)
    assert result.returncode == 0 and seen["value"] == "fresh" and seen["parent"] == os.getpid()


def test_a_command_past_its_timeout_is_killed(server: warm.Server, tmp_path: Path) -> None:
    (tmp_path / "warm_sleeper.py").write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run_on(server, [sys.executable, "-m", "warm_sleeper"], tmp_path, offline_env(), timeout=2)
    after = warm.run_on(server, [sys.executable, "-m", "warm_missing"], tmp_path, offline_env(), timeout=60)
    assert after.returncode == 1 and "No module named warm_missing" in after.stderr  # the server goes on


def test_the_server_preloads_what_data_and_model_code_import_less_the_optional(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "tracking").mkdir()
    (tmp_path / "data" / "source.py").write_text(
        "import json\nimport numpy\n\n\ndef load():\n    from scipy import stats\n"
        "    try:\n        import yaml\n    except ImportError:\n        pass\n",
        encoding="utf-8",
    )
    (tmp_path / "tracking" / "logger.py").write_text("import numpy\nimport pandas\n", encoding="utf-8")
    assert warm.libraries(tmp_path) == ["numpy", "scipy"]  # not json (stdlib), yaml (optional), pandas (tracking)
    assert warm.left_to_commands(tmp_path) == ["pandas", "yaml"]  # numpy, imported outside tracking too, is not
