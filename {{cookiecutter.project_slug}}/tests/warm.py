"""Run the package's commands in processes forked from one that has already imported the heavy libraries.

A test that runs ``python -m {{ cookiecutter.package_name }}.train ...`` pays about 4 s of CPU for importing
torch, Hydra, matplotlib and the model libraries before the command starts, and the suite runs about a hundred
commands. :func:`run` forks each command from a server process that imported those libraries once. The
command still gets a process of its own: its pid, working folder, environment, argv, stdout, stderr and
exit code. Its module runs as ``__main__``, as with ``python -m``, and this package is imported afresh in
every command (the server never imports it).

:func:`run` starts a plain interpreter instead on Windows and macOS (no safe fork), when
``{{ cookiecutter.package_name | upper }}_TESTS_COLD=1`` is set, and when the environment differs from the
server's in a variable a library may read as it is imported (:data:`READ_AT_IMPORT`, and those named after
a preloaded library, such as ``TORCH*``).

The server: ``python tests/warm.py <socket>``. It ends when its parent closes its stdin.
"""

from __future__ import annotations

import ast
import atexit
import importlib
import json
import locale
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

PACKAGE = "{{ cookiecutter.package_name }}"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE
COLD = f"{PACKAGE.upper()}_TESTS_COLD"
# Imported once by the server, with the third-party libraries this package's data, model and task code
# imports (:func:`libraries`); what a render lacks is skipped.
PRELOAD = ("numpy", "torch", "torch.distributed", "torch._dynamo", "torchvision", "omegaconf", "hydra", "matplotlib")
# Variables (by prefix) that libraries may read as they are imported, besides those named after a preloaded
# library: a command whose environment differs from the server's in one of these starts a fresh interpreter.
# Others (the trackers', pytest's, this package's, and those libraries set in the test's process as tests
# run) are read when used, in the command itself.
READ_AT_IMPORT = (
    "PYTHON", "HF_", "HUGGINGFACE_", "CUDA", "OMP_", "MKL_", "MPL", "HOME", "XDG_", "TMP", "TEMP", "LANG", "LC_",
    "LD_", "PATH",
)  # fmt: skip
READ_AT_USE = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")  # inductor's caches, set as this package compiles


def imports(source: Path = SOURCE) -> tuple[set[str], set[str]]:
    """The third-party modules of the package's data, model and task code (imported at any depth, none inside a
    ``try`` block anywhere), and the top-level names it leaves to the command: those it imports only in
    ``tracking/`` or inside a ``try`` block (optional ones, whose import may fail, print or set up something of
    the process's own)."""
    task_code: set[str] = set()
    guarded: set[str] = set()
    tracking: set[str] = set()
    elsewhere: set[str] = set()
    for path in source.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_try = {id(node) for block in ast.walk(tree) if isinstance(block, ast.Try) for node in ast.walk(block)}
        part = path.relative_to(source).parts[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            names = [name for name in names if name.split(".")[0] not in {*sys.stdlib_module_names, PACKAGE}]
            tops = {name.split(".")[0] for name in names}
            if id(node) in in_try:
                guarded |= tops
            elif part == "tracking":
                tracking |= tops
            else:
                elsewhere |= tops
                if part in {"data", "models", "tasks"}:
                    task_code |= set(names)
    return {name for name in task_code if name.split(".")[0] not in guarded}, (tracking | guarded) - elsewhere


def libraries(source: Path = SOURCE) -> list[str]:
    """What the server imports besides :data:`PRELOAD`: the third-party modules of the task code."""
    return sorted(imports(source)[0])


def left_to_commands(source: Path = SOURCE) -> list[str]:
    """Modules the server keeps out even where a preloaded library would import them (a tracker that makes a
    temporary folder as it is imported, which the first command to exit would delete for all the others)."""
    return not_preloaded(imports(source)[1])


def not_preloaded(names: set[str]) -> list[str]:
    return sorted(names - {name.split(".")[0] for name in PRELOAD})


# ------------------------------------------------------------------ the test's side
class Server:
    """A running server: its process, socket address and environment."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="warm-"))
        self.address = str(self.folder / "socket")
        self.env = dict(env)
        named = tuple(name.split(".")[0].upper() for name in (*PRELOAD, *libraries()))  # TORCH_LOGS, ...
        self.read_at_import = (*READ_AT_IMPORT, *named)
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), self.address],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the warm-start server did not start")

    def fits(self, env: dict[str, str]) -> bool:
        """Whether a command with ``env`` runs as it would in a fresh interpreter when forked from here."""
        changed = {key for key in env.keys() | self.env.keys() if env.get(key) != self.env.get(key)}
        read_at_import = {key for key in changed if key.startswith(self.read_at_import) and key not in READ_AT_USE}
        return self.process.poll() is None and not read_at_import

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


_servers: list[Server] = []


def server_for(cwd: Path, env: dict[str, str]) -> Server | None:
    """This process's server (started on first use, in ``cwd`` with ``env``), if a command with ``env`` may run
    on it."""
    if sys.platform != "linux" or os.environ.get(COLD) == "1" or env.get(COLD) == "1":
        return None
    if not _servers:
        _servers.append(Server(cwd, env))
        atexit.register(_servers[0].stop)
    return _servers[0] if _servers[0].fits(env) else None


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``command`` in ``cwd`` with ``env``, its output captured as text. ``[sys.executable, "-m", module, ...]``
    (this package's commands, torchrun's launcher) is forked from the server where it may be; anything else,
    and that where it may not, runs as it is."""
    server = server_for(cwd, env) if command[:2] == [sys.executable, "-m"] and len(command) > 2 else None
    if server is None:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return run_on(server, command, cwd, env, timeout)


def run_on(
    server: Server, command: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """``[sys.executable, "-m", module, *args]`` forked from ``server``, as :func:`run` does."""
    module, args = command[2], command[3:]
    with tempfile.TemporaryDirectory(prefix="warm-run-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        request = {"module": module, "args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(server.address)
            connection.sendall(json.dumps(request).encode() + b"\n")
            answer = connection.makefile("rb")
            pid = int(answer.readline() or b"0")
            if not pid:
                raise RuntimeError(f"the warm-start server ended; rerun with {COLD}=1 to use fresh interpreters")
            connection.settimeout(timeout)
            try:
                returncode = int(answer.readline())
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(command, timeout) from None
        encoding = locale.getpreferredencoding(False)
        stdout, stderr = (path.read_text(encoding=encoding, errors="replace") for path in (out, err))
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


# ------------------------------------------------------------------ the server's side
def serve(address: str) -> None:
    """Import :data:`PRELOAD` and the package's :func:`libraries`, then fork one child per request until stdin
    closes."""
    task_code, left = imports()  # the package's source is read once
    kept_out = [name for name in not_preloaded(left) if name not in sys.modules]
    sys.modules.update(dict.fromkeys(kept_out))  # None: a library that tries them finds them missing
    for name in (*PRELOAD, *sorted(task_code)):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - not in this render, or not importable here: the command imports it
            continue
    for name in kept_out:  # importable again, afresh, in each command
        del sys.modules[name]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    waiting = selectors.DefaultSelector()
    waiting.register(listener, selectors.EVENT_READ)
    waiting.register(sys.stdin, selectors.EVENT_READ)
    while True:
        ready = {key.fileobj for key, _ in waiting.select()}
        if sys.stdin in ready:  # the parent closed it, or ended
            return
        connection, _ = listener.accept()
        with connection:
            request = json.loads(connection.makefile("rb").readline())
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                connection.close()
                run_child(request)
            try:
                connection.sendall(f"{pid}\n".encode())
                _, status = os.waitpid(pid, 0)
                connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:  # the test gave up on it (a timeout) and killed it: serve the next one
                continue


def run_child(request: dict[str, Any]) -> None:
    """In the forked child: become ``python -m <module> <args>`` in the request's folder and environment."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        sys.argv = ["-m", *request["args"]]  # runpy puts the module's file first
        sys.path[0] = request["cwd"]  # python -m searches the working folder first
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = exit_code(stop.code)
    except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback on stderr, exit 1
        traceback.print_exc()
    finally:
        try:
            threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter exits: join its threads,
            atexit._run_exitfuncs()  # then the exit handlers (logging's shutdown, the command's own)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def exit_code(code: Any) -> int:
    """The exit status ``sys.exit(code)`` gives: 0 for None, the number, else 1 after printing it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve(sys.argv[1])
