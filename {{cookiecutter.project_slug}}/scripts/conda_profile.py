"""Edit the PowerShell profiles so that `conda activate` works, and judge the execution policy.

`scripts/setup.ps1` runs this file with the conda installation's own python.exe, so it uses
the standard library only and runs on any Python 3.8+. It changes text files and nothing else:

    python conda_profile.py add --conda C:\\...\\Scripts\\conda.exe --documents <Documents folder>
                                [--edition desktop] [--edition core] [--profile-path FILE] [--dry-run]
    python conda_profile.py remove --documents <Documents folder> [--edition ...] [--profile-path FILE]
    python conda_profile.py policy --edition desktop [--server] [--blocked] MachinePolicy=Undefined ...

Rules the edits follow, whatever the file looked like before:
- what is added starts on a line of its own, after an empty line;
- a file with a byte-order mark keeps its encoding; a file without one stays byte-for-byte
  ASCII if its text is ASCII, otherwise it is written as UTF-8 with a BOM, the one encoding
  both Windows PowerShell 5.1 and PowerShell 7 read the same way;
- a file without a BOM is read as UTF-8 if it decodes strictly, else in the ANSI code page;
- one hook per edition: a hook anywhere PowerShell loads for the user (profile.ps1,
  Microsoft.PowerShell_profile.ps1, files they dot-source, `conda init`'s block) counts,
  unless its conda.exe no longer exists;
- what the old setup.ps1 broke is repaired: its lines glued to the user's last line, and
  UTF-8 lines it appended to an ANSI profile;
- paths are written as single-quoted PowerShell strings, with their quote characters doubled;
- a second run with the same arguments changes nothing.
"""

from __future__ import annotations

import argparse
import codecs
import locale
import logging
import os
import re
import sys
import tempfile
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

# PowerShell ends a single-quoted string at any of these; inside one, each is escaped by doubling it.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
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

    def encoded(self, text: str) -> bytes:
        """``text`` in this file's encoding; UTF-8 with BOM where a BOM-less file would not be ASCII."""
        if self.bom:
            return self.bom + text.encode(self.encoding)
        if text.isascii():
            return text.encode("ascii")
        return codecs.BOM_UTF8 + text.encode("utf-8")

    def appended(self, lines: list[str]) -> str:
        """The text with ``lines`` added on lines of their own, after an empty line."""
        text = self.text
        if text and not text.endswith(("\n", "\r")):
            text += self.newline
        if text.strip() and text.splitlines()[-1].strip():
            text += self.newline
        return text + self.newline.join(lines) + self.newline


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (a crash never leaves half a profile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


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

    def write(self, profile: ProfileText, text: str, plan: str, done: str) -> None:
        data = profile.encoded(text)
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


def hook_lines(conda: str) -> list[str]:
    """The hook region: guarded, so a profile still loads after conda is uninstalled or moved."""
    quoted = ps_quote(conda)
    return [
        REGION_START,
        "if (Test-Path -LiteralPath " + quoted + ") {",
        f"    & {quoted} shell.powershell hook | Out-String | Invoke-Expression",
        "}",
        REGION_END,
    ]


def loader_line(path: Path) -> str:
    quoted = ps_quote(str(path))
    # No format string here: the template engine would read doubled braces as its own.
    return "if (Test-Path -LiteralPath " + quoted + ") { . " + quoted + " }  " + LOADER_MARK


def add_hook(documents: Path, editions: list[str], conda: str, profile_path: Path | None, editor: Editor) -> None:
    """Make `conda activate` work in every edition listed, adding at most one hook per edition."""
    for edition in editions:
        profiles = Profiles(documents, edition, editor)
        loaded = profiles.loaded()
        name = EDITION_NAMES[edition]
        repair(loaded, editor)
        for profile in loaded:
            for gone in dead_hooks(profile.text):
                log.info("%s: %s runs %s, which does not exist; delete that line", name, profile.path, gone)
        holder = next((profile.path for profile in loaded if has_hook(profile.text)), None)
        if holder is not None:
            log.info("%s: the conda hook is already loaded from %s", name, holder)
        elif profile_path is None:
            editor.append(profiles.all_hosts, hook_lines(conda), f"the conda hook for {name}")
        else:
            if not has_hook(editor.read(profile_path).text):
                editor.append(profile_path, hook_lines(conda), "the conda hook")
            if path_key(profile_path) not in {path_key(profile.path) for profile in loaded}:
                editor.append(profiles.all_hosts, [loader_line(profile_path)], f"a line loading {profile_path}")
        for other in profiles.other_hosts_with_hook():
            log.info("%s: %s also holds a conda hook, only for its own host; delete it there", name, other)


def repair(loaded: list[ProfileText], editor: Editor) -> None:
    """Fix what the old setup.ps1 broke in loaded profiles: glued lines, and a hook's file that one edition
    misreads (no BOM, not ASCII): saved as UTF-8 with BOM, text unchanged."""
    for searched in loaded:
        fixed = unglued(searched.text, searched.newline)
        if fixed == searched.text and not (has_hook(fixed) and not searched.bom and not fixed.isascii()):
            continue
        try:
            profile = editor.read(searched.path)
        except ProfileError as error:
            log.info("not repairing %s: %s", searched.path, error)
            continue
        fixed = unglued(profile.text, profile.newline)
        editor.write(
            profile,
            fixed,
            f"repair {profile.path}",
            f"repaired {profile.path} (lines glued together, or an encoding one PowerShell edition misreads)",
        )


def without_additions(text: str) -> str:
    """``text`` without the hook regions and loader lines this script adds."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
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


def remove_hook(documents: Path, editions: list[str], profile_path: Path | None, editor: Editor) -> None:
    """Take out what ``add`` wrote (a `conda init` block or hand-written hook stays)."""
    paths = [Profiles(documents, edition, editor).all_hosts for edition in editions]
    paths += [profile_path] if profile_path is not None else []
    for path in paths:
        profile = editor.read(path)
        text = without_additions(profile.text)
        if text != profile.text:
            editor.write(profile, text, f"remove the conda hook from {path}", f"removed the conda hook from {path}")


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
        if command == "add":
            sub.add_argument("--conda", required=True, help="conda.exe")
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
            add_hook(args.documents, editions, args.conda, args.profile_path, editor)
        else:
            remove_hook(args.documents, editions, args.profile_path, editor)
    except (ProfileError, OSError) as error:
        log.error("conda_profile: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
