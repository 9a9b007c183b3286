"""What setup.ps1 asks conda and Windows before it installs, read in Python where it can be tested.

`scripts/setup.ps1` runs this file (standard library only, any Python 3.8+) and prints or raises
what it answers. Each command prints one JSON object in ASCII (non-ASCII characters escaped), so a
Korean path reaches PowerShell intact whatever the console's code page:

    python setup_checks.py tos --conda C:\\...\\Scripts\\conda.exe
        {"checked": true, "pending": [...], "rejected": [...], "message": "..." or null}
    python setup_checks.py env-prefix --conda C:\\...\\Scripts\\conda.exe --name my-experiment
        {"prefix": "C:\\...\\envs\\my-experiment" or null}
    python setup_checks.py location --project C:\\...\\my-experiment --site-packages C:\\...\\Lib\\site-packages
                                    [--onedrive C:\\Users\\me\\OneDrive] [--long-paths 0|1]
        {"warnings": [...]}

conda is run here, not in PowerShell: `conda tos` draws a table 80 columns wide when piped (the
channel URLs are cut) whose Version column is a date in every row, so only its ``--json`` output
can tell an accepted channel from a pending one.
"""

from __future__ import annotations

import argparse
import json
import locale
import ntpath
import os
import subprocess
import sys

# The longest path inside the torch wheel, relative to site-packages (torch 2.x on Windows).
TORCH_LONGEST_PATH = 119
MAX_PATH = 260  # Windows' limit for a path, its terminating NUL included, unless LongPathsEnabled is 1
FIX_LONG_PATHS = (
    "New-ItemProperty -Path HKLM:\\SYSTEM\\CurrentControlSet\\Control\\FileSystem -Name LongPathsEnabled "
    "-Value 1 -PropertyType DWORD -Force   # in PowerShell as administrator, then sign out and in"
)


def run_conda(conda: str, *args: str) -> tuple[int, str]:
    """(exit code, stdout) of ``conda args``; its Python writes UTF-8, whatever the console's code page."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
    try:
        result = subprocess.run([conda, *args], capture_output=True, env=env, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        return 1, str(error)
    try:
        text = result.stdout.decode("utf-8")
    except UnicodeDecodeError:
        text = result.stdout.decode(locale.getpreferredencoding(False), errors="replace")
    return result.returncode, text


def json_document(text: str) -> object | None:
    """The JSON object in ``text`` (lines printed before it skipped), or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(text[start:])[0]
    except ValueError:
        return None


def terms_of_service(returncode: int, output: str, conda: str) -> dict:
    """The verdict on `conda tos --json`: which channels wait for their terms (none accepted or rejected yet,
    or updated since they were accepted), which were rejected, and the message that stops setup.

    Per channel the plugin prints null (the channel has no terms, e.g. conda-forge), the terms as published
    (not accepted yet: no ``tos_accepted``), or the local record with ``tos_accepted`` and ``outdated``."""
    channels = json_document(output) if returncode == 0 else None
    if not isinstance(channels, dict) or "exception_name" in channels:
        return {"checked": False, "pending": [], "rejected": [], "message": None}  # no plugin: nothing to accept
    pending, rejected = [], []
    for url, terms in channels.items():
        if not isinstance(terms, dict):
            continue
        if terms.get("outdated") or "tos_accepted" not in terms:
            pending.append(url.rstrip("/"))
        elif terms["tos_accepted"] is not True:
            rejected.append(url.rstrip("/"))
    quoted = "'" + conda.replace("'", "''") + "'"
    accept = [f"& {quoted} tos accept --override-channels --channel {url}" for url in pending + rejected]
    message = None
    if pending or rejected:
        waiting = (
            f"conda's channels {', '.join(pending)} wait for their terms of service to be accepted" if pending else ""
        )
        refused = f"the terms of service of {', '.join(rejected)} were rejected on this PC" if rejected else ""
        message = (
            "; ".join(part for part in (waiting, refused) if part)
            + f". Read them (& {quoted} tos view) and accept, then rerun:\n  "
            + "\n  ".join(accept)
            + "\nor install Miniforge (conda-forge only, no terms to accept) and rerun with -CondaPath."
        )
    return {"checked": True, "pending": pending, "rejected": rejected, "message": message}


def windows_key(path: str) -> str:
    """A Windows path in a form that compares equal however it was written (case, separators, a trailing \\)."""
    return ntpath.normcase(ntpath.normpath(path.replace("/", "\\"))).rstrip("\\")


def env_prefix(envs_output: str, dirs_output: str, conda: str, name: str) -> str | None:
    """The env named ``name`` of this conda (in one of its envs_dirs or <root>\\envs), never a namesake of
    another install that `conda env list` also shows."""
    envs = json_document(envs_output)
    if not isinstance(envs, dict):
        raise ValueError("conda env list --json printed no JSON")
    config = json_document(dirs_output)
    dirs = list(config.get("envs_dirs") or []) if isinstance(config, dict) else []
    dirs.append(ntpath.join(ntpath.dirname(ntpath.dirname(conda)), "envs"))
    for folder in dirs:
        wanted = windows_key(ntpath.join(folder, name))
        for prefix in envs.get("envs") or []:
            if windows_key(prefix) == wanted:
                return prefix
    return None


def inside(path: str, folder: str) -> bool:
    path, folder = windows_key(path), windows_key(folder)
    return path == folder or path.startswith(folder + "\\")


def location_warnings(project: str, site_packages: str, onedrive: list[str], long_paths: bool) -> list[str]:
    """One line per problem the project's folder will cause: OneDrive syncing it, and paths too long for
    Windows when LongPathsEnabled is off."""
    warnings = []
    synced = next((folder for folder in onedrive if folder and inside(project, folder)), None)
    if synced is None:
        synced = next((part for part in windows_key(project).split("\\") if part.startswith("onedrive")), None)
    if synced is not None:
        warnings.append(
            f"this project is inside OneDrive ({synced}): OneDrive uploads .venv, outputs and checkpoints "
            "(gigabytes) and locks files while it does, so installs fail with WinError 5 or 32; move the "
            "project to a folder OneDrive does not sync, e.g. C:\\dev, and run setup again"
        )
    longest = len(site_packages.rstrip("\\")) + 1 + TORCH_LONGEST_PATH
    if not long_paths and longest >= MAX_PATH:
        warnings.append(
            f"Windows long paths are off (LongPathsEnabled), and PyTorch's files would need {longest} characters "
            f"under {site_packages} (the limit is {MAX_PATH - 1}): move the project to a shorter folder, "
            f"e.g. C:\\dev, or turn long paths on: {FIX_LONG_PATHS}"
        )
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tos = commands.add_parser("tos", help="channels whose terms of service wait (conda tos --json)")
    tos.add_argument("--conda", required=True)
    prefix = commands.add_parser("env-prefix", help="the prefix of this conda's env NAME (conda env list --json)")
    prefix.add_argument("--conda", required=True)
    prefix.add_argument("--name", required=True)
    where = commands.add_parser("location", help="OneDrive and long-path warnings for the project folder")
    where.add_argument("--project", required=True)
    where.add_argument("--site-packages", required=True, help="where the environment's packages will go")
    where.add_argument("--onedrive", action="append", default=[], help="a OneDrive folder (%%OneDrive%% & co.)")
    where.add_argument("--long-paths", type=int, default=0, help="LongPathsEnabled's value (missing: 0)")
    args = parser.parse_args(argv)

    if args.command == "tos":
        answer = terms_of_service(*run_conda(args.conda, "tos", "--json"), args.conda)
    elif args.command == "env-prefix":
        code, envs = run_conda(args.conda, "env", "list", "--json")
        if code != 0:
            sys.stderr.write(f"setup_checks: '{args.conda} env list --json' failed with exit code {code}\n")
            return 1
        dirs = run_conda(args.conda, "config", "--show", "envs_dirs", "--json")[1]
        try:
            answer = {"prefix": env_prefix(envs, dirs, args.conda, args.name)}
        except ValueError as error:
            sys.stderr.write(f"setup_checks: {error}\n")
            return 1
    else:
        answer = {"warnings": location_warnings(args.project, args.site_packages, args.onedrive, args.long_paths == 1)}
    sys.stdout.write(json.dumps(answer, ensure_ascii=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
