"""A one-node SLURM cluster for the tests marked ``slurm`` (``make test-slurm``).

Debian's slurmctld, slurmd, slurm-client and munge (22.05) run on this machine with a config
written into a temporary folder (``/etc/slurm`` is never read or touched): munged on its own
socket, ``slurmctld -D`` and ``slurmd -D`` on free localhost ports, ``proctrack/linuxproc``,
no accounting. Every daemon started here is stopped by its PID, whatever happens.

Without accounting ``sacct`` has nothing to answer from, and submitit reads every state as
UNKNOWN (a job killed before writing its result would make it wait forever). Running slurmdbd
would need a MariaDB server; instead ``slurm/bin/sacct`` (put first on ``PATH``) answers
submitit's one query from ``scontrol show job``, which keeps finished jobs for ``MinJobAge``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "munged")
STAND_IN_BIN = Path(__file__).resolve().parent / "slurm" / "bin"
HOW_TO_RUN = ("needs a one-node SLURM: run `make test-slurm` as root on Debian/Ubuntu "
              f"(it installs {' '.join(PACKAGES)} with apt-get)")


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def install_packages() -> str | None:
    """Install the Debian packages when they are missing and this process may; else why not."""
    if not missing_binaries():
        return None
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return HOW_TO_RUN
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            return f"{' '.join(command)} failed: {result.stderr.strip().splitlines()[-1:]}; {HOW_TO_RUN}"
    return None if not missing_binaries() else HOW_TO_RUN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


CONFIG = """\
ClusterName=template-tests
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
LaunchParameters=use_interactive_step
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=30
MinJobAge=3600
InactiveLimit=0
SchedulerParameters=defer_batch=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


class Cluster:
    """munged, slurmctld and slurmd under ``root``; :meth:`env` is what a client command needs."""

    def __init__(self, root: Path, cpus: int = 8) -> None:
        self.root, self.cpus = root, cpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.processes: list[subprocess.Popen] = []

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{STAND_IN_BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.processes.append(subprocess.Popen([_sbin(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env(), start_new_session=True))

    def start(self) -> Cluster:
        for folder in ("munge", "state", "spool"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.root / "munge").chmod(0o700)
        self.conf.write_text(CONFIG.format(host=self.host, root=self.root, cpus=self.cpus,
                                           ctld_port=free_port(), slurmd_port=free_port()), encoding="utf-8")
        munge = self.root / "munge"
        try:
            self._spawn("munged", "-F", "--force", f"--socket={munge}/munge.socket", f"--key-file={key}",
                        f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                        f"--seed-file={munge}/munged.seed")
            self._wait_for(lambda: (munge / "munge.socket").exists(), "munged")
            self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
            self._wait_for(lambda: self._scontrol("ping").returncode == 0, "slurmctld")
            self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.host)
            self._wait_for(self._node_ready, "slurmd")
        except BaseException:
            self.stop()
            raise
        return self

    def _scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scontrol", *args], env=self.env(), capture_output=True, text=True, timeout=30)

    def _node_ready(self) -> bool:
        state = self._scontrol("show", "node", self.host, "-o").stdout
        return "State=IDLE" in state or "State=MIXED" in state or "State=ALLOCATED" in state

    def _wait_for(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{what}: a daemon exited early; see {self.root}/*.log and *.out")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} did not come up within {timeout:.0f} s; see {self.root}/*.log")

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started, newest first, by PID."""
        if self.processes and all(process.poll() is None for process in self.processes):
            subprocess.run(["scancel", "--user=root"], env=self.env(), capture_output=True, timeout=30)
            deadline = time.monotonic() + 45  # KillWait (30 s) and a margin: the jobs' processes end first
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h"], env=self.env(), capture_output=True, text=True, timeout=30).stdout.strip():
                time.sleep(1)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
