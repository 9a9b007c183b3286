"""Edit the PowerShell profiles so that `conda activate` works, and judge the execution policy.

`scripts/setup.ps1` runs this file with the conda installation's own python.exe, so it uses
the standard library only and runs on any Python 3.8+. It changes text files and nothing else:

    python conda_profile.py add --conda C:\\...\\Scripts\\conda.exe --documents <Documents folder>
                                [--edition desktop] [--edition core] [--profile-path FILE] [--dry-run]
    python conda_profile.py remove --documents <Documents folder> [--edition ...] [--profile-path FILE]
                                   [--conda C:\\...\\Scripts\\conda.exe] [--computer NAME]
    python conda_profile.py policy --edition desktop [--server] [--blocked] MachinePolicy=Undefined ...

Rules the edits follow, whatever the file looked like before:
- the user's bytes are never re-encoded: every byte outside the lines added or taken out stays
  as it was (a cp949 profile that happens to be valid UTF-8 included);
- the hook itself lives in its own file, conda-hook.ps1, beside the profile that loads it: written
  whole, UTF-8 with a BOM (the one encoding both Windows PowerShell 5.1 and PowerShell 7 read the
  same way), so a Korean conda path is read right; the profile gets one ASCII line that dot-sources
  it; what is added starts on a line of its own, after an empty line;
- a file without a BOM is read as UTF-8 if it decodes strictly, else in the ANSI code page (for
  searching only; edits work on its bytes);
- a symlinked profile (dotfiles) stays a symlink: the edit goes to its target;
- one hook per edition: a hook anywhere PowerShell loads for the user (profile.ps1,
  Microsoft.PowerShell_profile.ps1, files they dot-source, `conda init`'s block) counts,
  unless its conda.exe no longer exists;
- what the old setup.ps1 broke is repaired: its lines glued to the user's last line, and
  UTF-8 hook lines it appended to an ANSI profile (taken out; the hook file replaces them);
- a hook whose conda.exe is missing here is kept: with a OneDrive-synced Documents folder it may
  be another PC's conda; conda-hook.ps1 holds one guarded hook per conda it was given, each marked
  with the PCs (computer names) that use it, and `remove` takes out only this PC's mark (the file
  and the profile's line go once no PC is left);
- a file that OneDrive, an antivirus or Controlled Folder Access holds (WinError 5 or 32) is retried
  with backoff for a few seconds; then the error names them;
- paths are written as single-quoted PowerShell strings, with their quote characters doubled;
- a second run with the same arguments changes nothing.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import locale
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("conda_profile")

# Profile folders under Documents, per edition.
EDITION_FOLDERS = {"desktop": "WindowsPowerShell", "core": "PowerShell"}
EDITION_NAMES = {"desktop": "Windows PowerShell 5.1", "core": "PowerShell 7"}
EDITION_EXES = {"desktop": "powershell", "core": "pwsh"}
ALL_HOSTS = "profile.ps1"  # $PROFILE.CurrentUserAllHosts
CONSOLE_HOST = "Microsoft.PowerShell_profile.ps1"  # $PROFILE.CurrentUserCurrentHost of the console

REGION_START = "#region conda hook (added by scripts\\setup.ps1; delete this region to undo)"
REGION_END = "#endregion conda hook"
LOADER_MARK = "# conda hook file (added by scripts\\setup.ps1; delete this line to undo)"
WHERE_NOT_EMPTY = "?" + "{$_}"  # split so the template engine does not see a brace pair
HOOK_FILE = "conda-hook.ps1"  # beside the profile that loads it
HOOK_FILE_START = "# conda hook for PowerShell, written by scripts\\setup.ps1"
HOOK_FILE_MARK = HOOK_FILE_START + " (setup.ps1 -UndoProfile takes out this PC's mark)"
PCS_MARK = "  # PCs: "  # after a branch's opening brace: the computers that use that conda
# The one line a profile gets: ASCII whatever the paths are ($PSScriptRoot is the profile's own folder).
HOOK_FILE_LINE = (
    'if (Test-Path -LiteralPath "$PSScriptRoot\\'
    + HOOK_FILE
    + '") { . "$PSScriptRoot\\'
    + HOOK_FILE
    + '" }  '
    + LOADER_MARK
)
# A loader line for a non-ASCII -ProfilePath in a file without a BOM: the path base64-encoded, so the line is ASCII.
ENCODED_PATH = re.compile(r"FromBase64String\('([A-Za-z0-9+/=]*)'\)")
# What the old setup.ps1 appended: its hook line as it wrote it.
OLD_HOOK_LINE = re.compile(
    rb'^& "[^"\r\n]+" shell\.powershell hook \| Out-String \| Invoke-Expression[ \t]*(?:\r\n|\n|\r)?$'
)

# PowerShell ends a single-quoted string at any of these; inside one, each is escaped by doubling it.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# A branch of conda-hook.ps1: `if (Test-Path -LiteralPath '<conda.exe>') {  # PCs: A, B` (older files: no PCs).
HOOK_BRANCH = re.compile(
    r"^\s*(?:\}\s*else)?if \(Test-Path -LiteralPath (?P<path>'(?:[^'\u2018\u2019\u201a\u201b]|['\u2018\u2019\u201a\u201b]{2})*')\)"
    r"\s*\{(?:\s*# PCs:(?P<pcs>[^\r\n]*))?\s*$",
    re.MULTILINE,
)
# Windows' errors for a file another program holds (32, a sharing violation) or guards (5, access denied):
# OneDrive while it uploads, an antivirus while it scans, Controlled Folder Access always.
LOCKED = {5, 32}
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # seconds; about 6 in all
# The quoted conda.exe right before the hook call, e.g. & "C:\...\conda.exe" "shell.powershell" "hook".
HOOK_PATH = re.compile(r"""["']([^"'\r\n]+)["']\s*\)?\s*["']?shell\.powershell""", re.IGNORECASE)
HOOK_CALL = re.compile(r"""shell\.powershell['"]?\s+['"]?hook""", re.IGNORECASE)
# `conda init`'s block, up to its #endregion (its hook line is matched by HOOK_CALL in every version
# seen; the block counts by itself too, in case a version words the call differently).
CONDA_INIT_REGION = re.compile(
    r"^\s*#region\s+conda\s+initialize[^\n]*\n(.*?)^\s*#endregion", re.IGNORECASE | re.MULTILINE | re.DOTALL
)
# What the old setup.ps1 appended without starting a new line, glued to the user's last line:
# its hook line, and its line loading a -ProfilePath file.
GLUED = re.compile(
    r"""^(?P<before>[^\r\n#]*[^\s;{|(])"""
    r"""(?P<added>& "[^"\r\n]+" shell\.powershell hook \| Out-String \| Invoke-Expression|\. '[^'\r\n]+\.ps1')"""
    r"""(?=[ \t]*(?:\r?\n|\Z))""",
    re.MULTILINE,
)
BLOCK_COMMENT = re.compile(r"<#.*?#>", re.DOTALL)
DOT_SOURCE = re.compile(
    r"""(?:^|[;{])\s*\.\s+(?P<path>'(?:[^'\u2018\u2019\u201a\u201b]|['\u2018\u2019\u201a\u201b]{2})*'"""
    r"""|"[^"`]*"|[^\s'";{}()|&]+)""",
    re.MULTILINE,
)
VARIABLE = re.compile(r"\$(?:\{env:(?P<braced>\w+)\}|env:(?P<env>\w+)|(?P<name>PSScriptRoot|HOME)\b)", re.IGNORECASE)
BOMS = (  # UTF-32 LE first: its BOM starts with UTF-16 LE's
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Execution policies: scopes in precedence order (Process is this window only and is skipped).
SCOPES = ("MachinePolicy", "UserPolicy", "CurrentUser", "LocalMachine")
GROUP_POLICY_SCOPES = ("MachinePolicy", "UserPolicy")
FIX_POLICY = "Set-ExecutionPolicy -Scope CurrentUser RemoteSigned"
FIX_BLOCKED = "Get-ChildItem -Recurse | Unblock-File"


class ProfileError(Exception):
    """A profile this script cannot read or write safely; the message says what to do."""


def ps_quote(text: str) -> str:
    """``text`` as a PowerShell single-quoted string."""
    return "'" + "".join(char * 2 if char in SINGLE_QUOTES else char for char in text) + "'"


def ps_unquote(token: str) -> str:
    """The value of a single- or double-quoted PowerShell string token, or of a bare word."""
    if token[:1] in SINGLE_QUOTES and len(token) >= 2:
        return re.sub(f"([{SINGLE_QUOTES}])[{SINGLE_QUOTES}]", r"\1", token[1:-1])
    if token[:1] == '"' and len(token) >= 2:
        return token[1:-1]
    return token


def ansi_code_page() -> int:
    """The code page Windows PowerShell 5.1 reads files without a BOM in (the system ANSI code page)."""
    if sys.platform == "win32":
        import ctypes

        return int(ctypes.windll.kernel32.GetACP())
    encoding = codecs.lookup(locale.getpreferredencoding(False)).name
    return 65001 if encoding == "utf-8" else int(re.sub(r"\D", "", encoding) or 1252)


def code_page_codec(code_page: int) -> str:
    return "utf-8" if code_page == 65001 else f"cp{code_page}"


def decode_lines(data: bytes, codec: str) -> str:
    """``data`` in ``codec``, except lines that are UTF-8 with a character beyond U+07FF."""
    lines = []
    for line in data.splitlines(keepends=True):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        lines.append(text if any(ord(char) > 0x7FF for char in text) else line.decode(codec))
    return "".join(lines)


class ProfileText:
    """A profile's text and how it was encoded, so that it can be written back the same way."""

    def __init__(self, path: Path, code_page: int, data: bytes | None = None, strict: bool = True) -> None:
        self.path = path
        self.exists = data is not None or path.is_file()
        if data is None:
            data = path.read_bytes() if self.exists else b""
        self.original = data
        self.bom, self.encoding = b"", ""
        for bom, encoding in BOMS:
            if data.startswith(bom):
                self.bom, self.encoding = bom, encoding
                break
        self.text = self.decode(data[len(self.bom) :], code_page, strict)
        # Keep LF-only files LF; everything else gets Windows' CRLF.
        self.newline = "\n" if ("\n" in self.text and "\r\n" not in self.text) else "\r\n"

    def decode(self, data: bytes, code_page: int, strict: bool) -> str:
        """The text: in the BOM's encoding; without a BOM strict UTF-8, else the ANSI code page.

        In the code-page case, a line that is valid UTF-8 with a character of three bytes or more
        (Hangul, Kanji: never produced by ANSI text in practice) is read as UTF-8: the old setup.ps1
        appended UTF-8 lines to ANSI profiles. Not ``strict`` (a file only searched, never written):
        undecodable bytes become U+FFFD.
        """
        codecs_to_try = [self.encoding] if self.bom else ["utf-8", code_page_codec(code_page)]
        for codec in codecs_to_try:
            try:
                return data.decode(codec) if codec == codecs_to_try[0] else decode_lines(data, codec)
            except (UnicodeDecodeError, LookupError):
                continue
        if not strict:
            return data.decode("utf-8", errors="replace")
        raise ProfileError(
            f"{self.path} is not valid {' or '.join(codecs_to_try)}; save it as 'UTF-8 with BOM' and rerun"
        )

    @property
    def wide(self) -> bool:
        """UTF-16 or UTF-32: edited as text (which round-trips exactly), not as bytes."""
        return self.encoding.startswith("utf-16") or self.encoding.startswith("utf-32")

    def view(self) -> str:
        """The file as a string to edit: one character per byte (latin-1) unless it is UTF-16/32. Edits that
        only add or take out ASCII lines then leave every other byte, in any ASCII-compatible encoding, alone."""
        body = self.original[len(self.bom) :]
        return self.text if self.wide else body.decode("latin-1")

    def from_view(self, view: str) -> bytes:
        return self.bom + view.encode(self.encoding if self.wide else "latin-1")

    def appended(self, lines: list[str]) -> bytes:
        """The file's bytes with ``lines`` added on lines of their own, after an empty line. In a file without a
        BOM the lines must be ASCII (their bytes are the same whatever encoding each edition reads it in)."""
        if not (self.bom or all(line.isascii() for line in lines)):
            raise ProfileError(f"{self.path}: would add non-ASCII text to a file without a BOM (a bug: please report)")
        view = self.view()
        if view and not view.endswith(("\n", "\r")):
            view += self.newline
        if view.strip() and lines_of(view)[-1].strip():
            view += self.newline
        return self.from_view(view + self.newline.join(lines) + self.newline)


def lines_of(view: str) -> list[str]:
    """The lines of a byte view, each with its line break; only CR and LF end a line (PowerShell's rule)."""
    return re.findall(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$", view)


def with_retries(action, path: Path):
    """``action()``, tried again with backoff while Windows says another program holds or guards ``path``
    (WinError 5 or 32); then a ProfileError that names the usual holders and what to do."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return action()
        except PermissionError as error:
            if getattr(error, "winerror", None) not in LOCKED:
                raise
            if delay is None:
                raise ProfileError(
                    f"{path} stays locked ({error}): OneDrive, an antivirus or Controlled Folder Access "
                    "(Windows Security > Ransomware protection) holds or guards it. Pause OneDrive syncing, or "
                    "allow python.exe under Ransomware protection > Allow an app through Controlled folder access, "
                    "then rerun"
                ) from error
            log.debug("%s is locked (%s); trying again in %.1f s", path, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (a crash never leaves half a profile); a symlink stays a
    symlink: its target is replaced. A locked file is retried (``with_retries``)."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)

    def replace() -> None:
        handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, path)
        except OSError:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    with_retries(replace, path)


def code_only(text: str) -> list[str]:
    """The lines of ``text`` without comments (block comments and # to the end of a line)."""
    text = BLOCK_COMMENT.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    return [line for line in text.splitlines() if not line.lstrip().startswith("#")]


def dead_hooks(text: str) -> list[str]:
    """conda.exe paths of hook lines in ``text`` that are absolute here and do not exist (conda moved away)."""
    paths = (match.group(1) for line in code_only(text) for match in [HOOK_PATH.search(line)] if match)
    return [path for path in paths if os.path.isabs(path) and not os.path.exists(path)]


def has_hook(text: str) -> bool:
    """Whether ``text`` runs conda's PowerShell hook: a hook line (whose conda.exe is not known to be gone),
    or a `conda init` block with code in it."""
    lines = code_only(text)
    dead = set(dead_hooks(text))
    for line in lines:
        match = HOOK_CALL.search(line)
        path = HOOK_PATH.search(line)
        if match and not (path and path.group(1) in dead):
            return True
    return any(code_only(block) and not dead_hooks(block) for block in CONDA_INIT_REGION.findall(text))


def unglued(text: str, newline: str) -> str:
    """``text`` with each line the old setup.ps1 glued to the line before it moved onto a line of its own."""
    return GLUED.sub(lambda match: match.group("before") + newline + match.group("added"), text)


def path_key(path: Path | str) -> str:
    """A comparable form of a Windows path (case and separators do not matter)."""
    return os.path.normpath(str(path).replace("\\", "/")).replace("\\", "/").casefold()


def dot_sourced(text: str, folder: Path) -> list[Path]:
    """Files ``text`` dot-sources whose names do not depend on anything but $PSScriptRoot, $HOME, $env:X."""
    found = []
    for line in code_only(text):
        encoded = ENCODED_PATH.search(line)
        if encoded:
            found.append(Path(base64.b64decode(encoded.group(1)).decode("utf-8")))
            continue
        for match in DOT_SOURCE.finditer(line):
            token = match.group("path")
            value = ps_unquote(token)
            if token[:1] not in SINGLE_QUOTES:
                value = expand(value, folder)
                if value is None:
                    continue
            if value:
                found.append(Path(value.replace("\\", os.sep)) if os.sep != "\\" else Path(value))
    return found


def expand(value: str, folder: Path) -> str | None:
    """``value`` with the variables a profile can rely on replaced; None if others remain."""

    def replace(match: re.Match) -> str:
        name = match.group("braced") or match.group("env")
        if name:
            return os.environ.get(name, "")
        if match.group("name").lower() == "psscriptroot":
            return str(folder)
        return os.environ.get("USERPROFILE") or os.environ.get("HOME", "")

    expanded = VARIABLE.sub(replace, value)
    return None if "$" in expanded else expanded


class Editor:
    """Reads and writes profiles; in a dry run it keeps what it would write in memory and reports it."""

    def __init__(self, code_page: int, dry_run: bool) -> None:
        self.code_page = code_page
        self.dry_run = dry_run
        self.pending: dict[str, bytes] = {}

    def read(self, path: Path, strict: bool = True) -> ProfileText:
        return ProfileText(path, self.code_page, self.pending.get(path_key(path)), strict)

    def exists(self, path: Path) -> bool:
        return path_key(path) in self.pending or path.is_file()

    def append(self, path: Path, lines: list[str], what: str) -> None:
        profile = self.read(path)
        self.write(profile, profile.appended(lines), f"add {what} to {path}", f"added {what} to {path}")

    def edit(self, profile: ProfileText, change, plan: str, done: str) -> None:
        """Apply ``change`` (str -> str, adding or taking out ASCII only) to the file's byte view."""
        self.write(profile, profile.from_view(change(profile.view())), plan, done)

    def delete(self, path: Path) -> None:
        if self.dry_run:
            log.info("[dry run] would delete %s", path)
            return
        with_retries(path.unlink, path)
        log.info("deleted %s", path)

    def write(self, profile: ProfileText, data: bytes, plan: str, done: str) -> None:
        if profile.exists and data == profile.original:
            return
        if self.dry_run:
            self.pending[path_key(profile.path)] = data
            log.info("[dry run] would %s", plan)
            return
        write_bytes(profile.path, data)
        log.info("%s", done)


class Profiles:
    """The profile files of one edition, and every file they load."""

    def __init__(self, documents: Path, edition: str, editor: Editor) -> None:
        self.folder = documents / EDITION_FOLDERS[edition]
        self.editor = editor
        self.all_hosts = self.folder / ALL_HOSTS

    def loaded(self) -> list[ProfileText]:
        """The console's profiles and what they dot-source, each once, in load order."""
        pending = [self.all_hosts, self.folder / CONSOLE_HOST]
        seen: set[str] = set()
        files: list[ProfileText] = []
        while pending:
            path = pending.pop(0)
            key = path_key(path)
            if key in seen or not self.editor.exists(path):
                continue
            seen.add(key)
            profile = self.editor.read(path, strict=False)
            files.append(profile)
            for target in dot_sourced(profile.text, path.parent):
                pending.append(target if target.is_absolute() else path.parent / target)
        return files

    def other_hosts_with_hook(self) -> list[Path]:
        """Host-specific profiles (VS Code, ISE) that hold a hook the console never loads."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*_profile.ps1")):
            if path.name.lower() != CONSOLE_HOST.lower() and has_hook(self.editor.read(path, strict=False).text):
                found.append(path)
        return found


def hook_file_text(entries: list[tuple[str, list[str]]]) -> str:
    """conda-hook.ps1: the first conda of ``entries`` (conda.exe, the PCs that use it) that exists here runs
    conda's hook (one Documents folder synced by OneDrive serves PCs whose conda is in different places).
    ``?{$_}`` as in conda init: a conda that prints nothing must not make Invoke-Expression fail in every window."""
    lines = [HOOK_FILE_MARK]
    for number, (conda, computers) in enumerate(entries):
        quoted = ps_quote(conda)
        mark = PCS_MARK + ", ".join(computers) if computers else ""
        lines.append(("if" if number == 0 else "} elseif") + " (Test-Path -LiteralPath " + quoted + ") {" + mark)
        lines.append(
            "    & " + quoted + " shell.powershell hook | Out-String | " + WHERE_NOT_EMPTY + " | Invoke-Expression"
        )
    lines.append("}")
    return "\r\n".join(lines) + "\r\n"


def loader_line(path: Path, ascii_only: bool) -> str:
    """The line that dot-sources ``path``: readable, or (a non-ASCII path going into a file without a BOM)
    with the path base64-encoded, so that the line is ASCII and reads the same in both editions."""
    text = str(path)
    if text.isascii() or not ascii_only:
        quoted = ps_quote(text)
        # No format string here: the template engine would read doubled braces as its own.
        return "if (Test-Path -LiteralPath " + quoted + ") { . " + quoted + " }  " + LOADER_MARK
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return (
        "$condaHookProfile = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('" + encoded + "')); "
        "if (Test-Path -LiteralPath $condaHookProfile) { . $condaHookProfile }; "
        "Remove-Variable condaHookProfile  " + LOADER_MARK
    )


def is_hook_file(profile: ProfileText) -> bool:
    return profile.exists and profile.text.lstrip("\ufeff").startswith(HOOK_FILE_START)


def hook_entries(text: str) -> list[tuple[str, list[str]]]:
    """(conda.exe, the PCs that use it) of each branch of a conda-hook.ps1, in order (older files name no PCs)."""
    entries = []
    for match in HOOK_BRANCH.finditer(text):
        computers = [name.strip() for name in (match.group("pcs") or "").split(",") if name.strip()]
        entries.append((ps_unquote(match.group("path")), computers))
    return entries


def this_computer() -> str:
    return os.environ.get("COMPUTERNAME") or platform.node() or "this-pc"


def write_hook_entries(current: ProfileText, entries: list[tuple[str, list[str]]], editor: Editor) -> None:
    data = codecs.BOM_UTF8 + hook_file_text(entries).encode("utf-8")
    editor.write(current, data, f"write {current.path}", f"wrote {current.path}")


def write_hook_file(folder: Path, conda: str, computer: str, editor: Editor) -> Path:
    """conda-hook.ps1 in ``folder`` with ``conda`` in it, marked as used by ``computer`` (the condas and
    marks it held before are kept)."""
    path = folder / HOOK_FILE
    current = editor.read(path, strict=False)
    if current.exists and not is_hook_file(current):
        raise ProfileError(f"{path} exists and was not written by setup.ps1; rename it and rerun")
    entries = hook_entries(current.text)
    for existing, computers in entries:
        if path_key(existing) == path_key(conda):
            if computer.casefold() not in (name.casefold() for name in computers):
                computers.append(computer)
            break
    else:
        entries.append((conda, [computer]))
    write_hook_entries(current, entries, editor)
    return path


def add_line(target: Path, line: str, editor: Editor, what: str) -> None:
    """Add ``line`` to ``target`` unless it is there already."""
    if line not in (existing.strip() for existing in editor.read(target, strict=False).text.splitlines()):
        editor.append(target, [line], what)


def add_hook(
    documents: Path, editions: list[str], conda: str, profile_path: Path | None, computer: str, editor: Editor
) -> None:
    """Make `conda activate` work in every edition listed, adding at most one hook per edition; this PC
    (``computer``) is marked in the conda-hook.ps1 that serves it."""
    for edition in editions:
        profiles = Profiles(documents, edition, editor)
        loaded = profiles.loaded()
        name = EDITION_NAMES[edition]
        if repair(loaded, editor):
            loaded = profiles.loaded()
        for profile in loaded:
            for gone in dead_hooks(profile.text):
                log.info(
                    "%s: %s runs %s, which does not exist on this PC; delete that line, unless your Documents "
                    "folder is synced (OneDrive) and it is another PC's conda",
                    name,
                    profile.path,
                    gone,
                )
        holder = next((profile.path for profile in loaded if has_hook(profile.text)), None)
        if holder is not None:
            log.info("%s: the conda hook is already loaded from %s", name, holder)
            for profile in loaded:  # another PC's hook file with this conda in it: mark this PC as a user too
                if is_hook_file(profile) and path_key(conda) in (
                    path_key(exe) for exe, _ in hook_entries(profile.text)
                ):
                    write_hook_file(profile.path.parent, conda, computer, editor)
        else:
            paths = {path_key(profile.path) for profile in loaded}
            target = profile_path if profile_path is not None else profiles.all_hosts
            editor.read(target)  # one that cannot be read safely stops here, before anything is written
            hook_file = write_hook_file(target.parent, conda, computer, editor)
            if path_key(hook_file) not in paths:
                add_line(target, HOOK_FILE_LINE, editor, f"a line loading {hook_file}")
            if profile_path is not None and path_key(profile_path) not in paths:
                line = loader_line(profile_path, ascii_only=not editor.read(profiles.all_hosts).bom)
                add_line(profiles.all_hosts, line, editor, f"a line loading {profile_path}")
        for other in profiles.other_hosts_with_hook():
            log.info("%s: %s also holds a conda hook, only for its own host; delete it there", name, other)


def repair(loaded: list[ProfileText], editor: Editor) -> bool:
    """Fix what the old setup.ps1 broke in loaded profiles: its lines glued to the line before (a line break
    put in), and its UTF-8 hook lines in a file without a BOM that is not ASCII, which one edition misreads
    (taken out: the hook file takes their place). Returns whether anything changed."""
    changed = False
    for searched in loaded:
        if searched.wide or not searched.exists:
            continue

        def fixed(view: str, profile: ProfileText = searched) -> str:
            view = unglued(view, profile.newline)
            if profile.bom or view.isascii():
                return view
            lines = lines_of(view)
            kept = [line for line in lines if not (OLD_HOOK_LINE.match(line.encode("latin-1")) and not line.isascii())]
            return "".join(kept)

        if fixed(searched.view()) == searched.view():
            continue
        editor.edit(
            searched,
            fixed,
            f"repair {searched.path}",
            f"repaired {searched.path} (lines glued together, or a hook line one PowerShell edition misreads)",
        )
        changed = True
    return changed


def without_additions(view: str) -> str:
    """``view`` without the hook regions (of older versions) and loader lines this script adds."""
    kept: list[str] = []
    inside = False
    for line in lines_of(view):
        stripped = line.strip()
        if inside:
            inside = stripped != REGION_END
        elif stripped == REGION_START or stripped.endswith(LOADER_MARK):
            inside = stripped == REGION_START
            if kept and not kept[-1].strip():
                kept.pop()  # the empty line `add` put before it
        else:
            kept.append(line)
    return "".join(kept)


def other_pcs_entries(
    entries: list[tuple[str, list[str]]], conda: str | None, computer: str
) -> list[tuple[str, list[str]]]:
    """``entries`` without ``computer``'s mark. A branch of an older file names no PCs: it is this PC's when its
    conda is the one given (``conda``) or exists here, else another PC's."""
    kept = []
    for exe, computers in entries:
        if not computers:
            mine = (conda is not None and path_key(exe) == path_key(conda)) or os.path.exists(exe)
            if not mine:
                kept.append((exe, computers))
            continue
        others = [name for name in computers if name.casefold() != computer.casefold()]
        if others:
            kept.append((exe, others))
    return kept


def remove_hook(
    documents: Path, editions: list[str], profile_path: Path | None, conda: str | None, computer: str, editor: Editor
) -> None:
    """Take out what ``add`` wrote for this PC (``computer``); a `conda init` block or hand-written hook stays.
    Other PCs that share the Documents folder (OneDrive) keep their hooks, and then the profiles keep the line
    that loads them. Needs no conda."""
    paths = [Profiles(documents, edition, editor).all_hosts for edition in editions]
    paths += [profile_path] if profile_path is not None else []
    shared = []
    for hook_file in dict.fromkeys(path.parent / HOOK_FILE for path in paths):
        current = editor.read(hook_file, strict=False)
        if not is_hook_file(current):
            continue
        kept = other_pcs_entries(hook_entries(current.text), conda, computer)
        if not kept:
            editor.delete(hook_file)
            continue
        shared.append(hook_file)
        write_hook_entries(current, kept, editor)
        others = sorted({name for _, computers in kept for name in computers}) or ["a PC it does not name"]
        log.info(
            "%s: took out %s; kept the hook of %s, which share this Documents folder",
            hook_file,
            computer,
            ", ".join(others),
        )
    if shared:
        return  # the profiles are shared too: their line loads the other PCs' hooks
    for path in paths:
        profile = editor.read(path, strict=False)
        if profile.exists and without_additions(profile.view()) != profile.view():
            editor.edit(
                profile, without_additions, f"remove the conda hook from {path}", f"removed the conda hook from {path}"
            )


def parse_scopes(pairs: list[str]) -> dict[str, str]:
    """`Scope=Policy` pairs (from `Get-ExecutionPolicy -List`) as a dict."""
    scopes = {}
    for pair in pairs:
        scope, _, policy = pair.partition("=")
        scopes[scope.strip()] = policy.strip()
    return scopes


def next_window_policy(scopes: dict[str, str], edition: str, server: bool) -> tuple[str, str]:
    """(policy, where it comes from) for a new window: the Process scope does not carry over."""
    for scope in SCOPES:
        policy = scopes.get(scope, "Undefined")
        if policy not in ("", "Undefined", "Default"):
            return policy, scope
    default = "RemoteSigned" if edition == "core" or server else "Restricted"
    return default, "default"


def policy_warnings(scopes: dict[str, str], edition: str, server: bool, blocked: bool) -> list[str]:
    """One line per problem the next window will have, each with its fix."""
    policy, scope = next_window_policy(scopes, edition, server)
    name, exe = EDITION_NAMES[edition], EDITION_EXES[edition]
    where = "the default" if scope == "default" else f"scope {scope}"
    warnings = []
    if policy in ("Restricted", "AllSigned"):
        if scope in GROUP_POLICY_SCOPES:
            warnings.append(
                f"{name}: Group Policy sets the execution policy to {policy}, so your profile will not load "
                "and `conda activate` will not work there; ask your administrator, or use the Anaconda Prompt"
            )
        else:
            warnings.append(
                f"{name}: execution policy {policy} ({where}) stops your profile from loading; "
                f"run once in {exe}: {FIX_POLICY}"
            )
    if blocked and policy != "Bypass":
        warnings.append(
            f"{name}: this project's files are marked as downloaded (a ZIP), so PowerShell refuses them "
            f"('is not digitally signed') or asks before each run; run in the project folder: {FIX_BLOCKED}"
        )
    return warnings


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("add", "remove"):
        sub = commands.add_parser(command)
        sub.add_argument("--documents", type=Path, required=True, help="the Documents folder (may be OneDrive's)")
        sub.add_argument("--edition", action="append", choices=sorted(EDITION_FOLDERS), help="default: both")
        sub.add_argument("--profile-path", type=Path, help="a file to hold the hook, loaded from profile.ps1")
        sub.add_argument("--code-page", type=int, help="ANSI code page of BOM-less files (default: the system's)")
        sub.add_argument("--dry-run", action="store_true")
        sub.add_argument("--computer", default=this_computer(), help="this PC's name (default: %%COMPUTERNAME%%)")
        sub.add_argument("--conda", required=command == "add", help="conda.exe (remove: this PC's, if still there)")
    policy = commands.add_parser("policy")
    policy.add_argument("--edition", choices=sorted(EDITION_FOLDERS), required=True)
    policy.add_argument("--server", action="store_true", help="Windows Server (5.1 defaults to RemoteSigned)")
    policy.add_argument("--blocked", action="store_true", help="the project's files carry a Zone.Identifier")
    policy.add_argument("scopes", nargs="*", help="Scope=Policy pairs from Get-ExecutionPolicy -List")
    args = parser.parse_args(argv)

    if args.command == "policy":
        for warning in policy_warnings(parse_scopes(args.scopes), args.edition, args.server, args.blocked):
            log.info("%s", warning)
        return 0
    editions = args.edition or sorted(EDITION_FOLDERS, reverse=True)
    editor = Editor(args.code_page or ansi_code_page(), args.dry_run)
    try:
        if args.command == "add":
            add_hook(args.documents, editions, args.conda, args.profile_path, args.computer, editor)
        else:
            remove_hook(args.documents, editions, args.profile_path, args.conda, args.computer, editor)
    except (ProfileError, OSError) as error:
        log.error("conda_profile: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
