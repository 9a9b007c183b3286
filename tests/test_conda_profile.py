"""The rendered scripts/conda_profile.py on real profile files in a fake Documents folder.

setup.ps1 hands the profile editing and the execution-policy verdict to this helper because
PowerShell does not run here; every case from the Windows issue is exercised on real bytes.
"""

from __future__ import annotations

import base64
import codecs
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

POWERSHELL = tree_sitter.Language(tree_sitter_powershell.language())
CONDA = r"C:\Users\me\miniconda3\Scripts\conda.exe"
KOREAN_CONDA = r"C:\Users\김철수\miniconda3\Scripts\conda.exe"
FIX_POLICY = "Set-ExecutionPolicy -Scope CurrentUser RemoteSigned"
FIX_BLOCKED = "Get-ChildItem -Recurse | Unblock-File"
PC = "DESKTOP-KIM"  # %COMPUTERNAME% of the PC the helper runs on, unless a test names another


@pytest.fixture(scope="module")
def helper(render) -> Path:
    return render(powershell="yes") / "scripts" / "conda_profile.py"


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    return tmp_path / "Documents"


def run(helper: Path, *args: str, expect: int = 0, computer: str = PC) -> str:
    result = subprocess.run([sys.executable, str(helper), *args], capture_output=True, text=True, timeout=60,
                            encoding="utf-8", env={**os.environ, "COMPUTERNAME": computer})
    assert result.returncode == expect, result.stdout + result.stderr
    return result.stdout


def add(helper: Path, documents: Path, *extra: str, conda: str = CONDA, expect: int = 0, computer: str = PC) -> str:
    return run(helper, "add", "--documents", str(documents), "--conda", conda, "--code-page", "949", *extra,
               expect=expect, computer=computer)


def profile(documents: Path, edition: str = "WindowsPowerShell", name: str = "profile.ps1") -> Path:
    return documents / edition / name


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def parse(data: bytes) -> tree_sitter.Node:
    """The tree-sitter PowerShell parse of a profile (BOM removed); fails on any syntax error."""
    data = data.removeprefix(codecs.BOM_UTF8)
    root = tree_sitter.Parser(POWERSHELL).parse(data).root_node
    stack = [root] if data.strip() else []  # the parser calls an empty file an error; PowerShell does not
    while stack:
        node = stack.pop()
        assert not (node.is_error or node.is_missing), f"{node.type} at line {node.start_point[0] + 1}"
        stack.extend(node.children)
    return root


def nodes(root: tree_sitter.Node, kind: str) -> list[tree_sitter.Node]:
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == kind:
            found.append(node)
        stack.extend(reversed(node.children))
    return found


def invocations(data: bytes, folder: Path | None = None) -> list[tuple[str, str]]:
    """(operator, path) of every `& 'path'` and `. 'path'` in a profile, the path unquoted as PowerShell does
    ($PSScriptRoot, the profile's ``folder``, filled in)."""
    calls = []
    for command in nodes(parse(data), "command"):
        operator = next((child for child in command.children if child.type == "command_invokation_operator"), None)
        name = next((child for child in command.children if child.type == "command_name_expr"), None)
        if operator is None or name is None:
            continue
        literal = name.text.decode("utf-8")
        if folder is not None and literal.startswith('"$PSScriptRoot\\'):
            literal = '"' + str(folder / literal[len('"$PSScriptRoot\\'):-1]) + '"'
        assert literal[:1] in "'\"" and literal[-1:] == literal[:1] and "$" not in literal, literal
        value = literal[1:-1].replace("''", "'") if literal[0] == "'" else literal[1:-1]
        calls.append((operator.text.decode(), value))
    return calls


def hooks_in(path: Path) -> list[str]:
    """The conda.exe paths a profile runs the hook of: its own, then those of the files it dot-sources."""
    found = []
    for operator, target in invocations(path.read_bytes(), path.parent):
        if operator == "&":
            found.append(target)
        elif Path(target).is_file():
            found += hooks_in(Path(target))
    return found


def hook_file(folder: Path) -> Path:
    return folder / "conda-hook.ps1"


def test_hook_starts_on_a_new_line_after_a_last_line_without_newline(helper: Path, documents: Path) -> None:
    target = write(profile(documents), b"Import-Module posh-git")
    add(helper, documents, "--edition", "desktop")
    data = target.read_bytes()
    assert data.startswith(b"Import-Module posh-git\r\n")
    commands = nodes(parse(data), "command")
    assert commands[0].text == b"Import-Module posh-git"  # the user's line is still a statement of its own
    assert hooks_in(target) == [CONDA]


@pytest.mark.parametrize(("bom", "encoding"), [(b"", "ascii"), (codecs.BOM_UTF8, "utf-8"),
                                               (codecs.BOM_UTF16_LE, "utf-16-le"),  # 5.1's `>` and Out-File
                                               (codecs.BOM_UTF16_BE, "utf-16-be")])
def test_an_ascii_addition_keeps_the_encoding(helper: Path, documents: Path, bom: bytes, encoding: str) -> None:
    original = "Set-Alias ll Get-ChildItem\r\n"
    target = write(profile(documents), bom + original.encode(encoding))
    add(helper, documents, "--edition", "desktop")
    data = target.read_bytes()
    assert data.startswith(bom + original.encode(encoding))
    text = data[len(bom):].decode(encoding)
    assert text.startswith(original) and "conda-hook.ps1" in text
    if not encoding.startswith("utf-16"):
        assert hooks_in(target) == [CONDA]


def test_a_korean_conda_path_goes_into_a_utf8_hook_file_and_the_profile_gets_ascii(helper: Path,
                                                                                 documents: Path) -> None:
    target = write(profile(documents), b"Set-Alias ll Get-ChildItem")  # ASCII, no BOM
    add(helper, documents, "--edition", "desktop", conda=KOREAN_CONDA)
    data = target.read_bytes()
    assert data.startswith(b"Set-Alias ll Get-ChildItem\r\n") and data.isascii()
    hook = hook_file(target.parent).read_bytes()
    assert hook.startswith(codecs.BOM_UTF8)  # Windows PowerShell 5.1 reads it as UTF-8, not as cp949
    assert KOREAN_CONDA.encode() in hook and hooks_in(target) == [KOREAN_CONDA]
    fresh = profile(documents, "PowerShell")  # a new profile gets the same treatment
    add(helper, documents, "--edition", "core", conda=KOREAN_CONDA)
    assert fresh.read_bytes().isascii() and hooks_in(fresh) == [KOREAN_CONDA]


# A cp949 profile whose bytes are also valid UTF-8 (캡처 is Game Bar's Captures folder): nothing can tell its
# encoding, so nothing may re-encode it.
AMBIGUOUS = 'function cap { Set-Location "$HOME\\Videos\\캡처" }'.encode("cp949")


@pytest.mark.parametrize("original", [
    "# 김철수의 프로필\r\nSet-Location D:\\작업".encode("cp949"),  # cp949, not valid UTF-8
    AMBIGUOUS,
    AMBIGUOUS + b"\r\n",
    codecs.BOM_UTF8 + "# 프로필\r\nSet-Location D:\\작업\r\n".encode(),
    "# 프로필\r\n".encode("utf-16-le"),
])
def test_every_byte_of_the_users_profile_stays_as_it_was(helper: Path, documents: Path, tmp_path: Path,
                                                         original: bytes) -> None:
    if original == AMBIGUOUS:
        assert original.decode("utf-8") != original.decode("cp949")  # the case the issue found
    elif original.startswith(b"#"):
        with pytest.raises(UnicodeDecodeError):
            original.decode("utf-8")
    original = codecs.BOM_UTF16_LE + original if original.startswith("#".encode("utf-16-le")) else original
    target = write(profile(documents), original)
    add(helper, documents, "--edition", "desktop", conda=KOREAN_CONDA)
    data = target.read_bytes()
    assert data.startswith(original)
    added = data[len(original):]
    if not original.startswith(codecs.BOM_UTF16_LE):
        assert added.isascii() and added.count(b"\n") <= 3, added  # line breaks and the one loader line
        assert hooks_in(target) == [KOREAN_CONDA]
    run(helper, "remove", "--documents", str(documents), "--edition", "desktop", "--code-page", "949")
    # add put a line break after a last line without one; undo cannot tell it was not there
    newline = "\r\n".encode("utf-16-le" if original.startswith(codecs.BOM_UTF16_LE) else "ascii")
    restored = original if original.endswith(newline) else original + newline
    assert target.read_bytes() == restored and not hook_file(target.parent).exists()


def test_a_symlinked_profile_stays_a_symlink(helper: Path, documents: Path, tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "profile.ps1", b"Import-Module posh-git\r\n")
    link = profile(documents)
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    add(helper, documents, "--edition", "desktop")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_bytes().startswith(b"Import-Module posh-git\r\n") and hooks_in(link) == [CONDA]
    run(helper, "remove", "--documents", str(documents), "--edition", "desktop", "--code-page", "949")
    assert link.is_symlink() and real.read_bytes() == b"Import-Module posh-git\r\n"


def test_undo_needs_no_conda(helper: Path, documents: Path, tmp_path: Path) -> None:
    """remove reads no conda path, and a hook whose conda.exe is gone is removed all the same."""
    gone = tmp_path / "miniconda3" / "Scripts" / "conda.exe"
    target = write(profile(documents), b"Import-Module posh-git\r\n")
    add(helper, documents, "--edition", "desktop", conda=str(gone))
    assert hooks_in(target) == [str(gone)]
    usage = run(helper, "remove", "--help")
    assert "[--conda CONDA]" in usage  # optional: this PC's conda, if it is still there
    run(helper, "remove", "--documents", str(documents), "--edition", "desktop", "--code-page", "949")
    assert target.read_bytes() == b"Import-Module posh-git\r\n" and not hook_file(target.parent).exists()


def test_a_synced_profile_keeps_another_pcs_conda(helper: Path, documents: Path, tmp_path: Path) -> None:
    """OneDrive syncs Documents: the hook file of PC A names A's conda, missing on PC B; B's is added beside it."""
    there = write(tmp_path / "miniconda3" / "Scripts" / "conda.exe", b"")
    other_pc = str(tmp_path / "jane" / "anaconda3" / "Scripts" / "conda.exe")  # absolute, missing here
    target = write(profile(documents), b"")
    add(helper, documents, "--edition", "desktop", conda=other_pc)
    output = add(helper, documents, "--edition", "desktop", conda=str(there))
    assert "another PC" in output and "OneDrive" in output
    assert hooks_in(target) == [other_pc, str(there)]
    assert target.read_bytes().count(b"conda-hook.ps1") == 2  # one line: Test-Path, then dot-source
    before = snapshot(tmp_path)
    add(helper, documents, "--edition", "desktop", conda=str(there))
    assert snapshot(tmp_path) == before


def test_the_hook_skips_empty_output_as_conda_init_does(helper: Path, documents: Path) -> None:
    add(helper, documents, "--edition", "desktop")
    text = hook_file(profile(documents).parent).read_text(encoding="utf-8-sig")
    assert "shell.powershell hook | Out-String | ?{$_} | Invoke-Expression" in text
    parse(hook_file(profile(documents).parent).read_bytes())


def test_a_profile_in_neither_utf8_nor_the_code_page_is_left_alone(helper: Path, documents: Path) -> None:
    target = write(profile(documents), b"# \x80\xff\x80\xff")  # invalid UTF-8 and invalid cp949
    output = add(helper, documents, "--edition", "desktop", expect=1)
    assert "UTF-8 with BOM" in output and output.count("\n") == 1
    assert target.read_bytes() == b"# \x80\xff\x80\xff"


def test_an_undecodable_file_that_is_only_searched_does_not_stop_the_edit(helper: Path, documents: Path) -> None:
    write(profile(documents, name="Microsoft.PowerShell_profile.ps1"), b"# \x80\xff\x80\xff\r\nSet-Alias ll ls\r\n")
    add(helper, documents, "--edition", "desktop")
    assert hooks_in(profile(documents)) == [CONDA]


OLD_HOOK = '& "{}" shell.powershell hook | Out-String | Invoke-Expression'  # what the old setup.ps1 wrote


def test_lines_the_old_setup_ps1_glued_on_are_moved_to_their_own_lines(helper: Path, documents: Path,
                                                                      tmp_path: Path) -> None:
    custom = tmp_path / "custom.ps1"
    write(custom, OLD_HOOK.format(CONDA).encode())
    console = write(profile(documents, name="Microsoft.PowerShell_profile.ps1"),
                    f"Import-Module posh-git. '{custom}'\r\n".encode())
    target = write(profile(documents), f"Set-Alias ll Get-ChildItem{OLD_HOOK.format(CONDA)}".encode())
    add(helper, documents, "--edition", "desktop")
    assert target.read_bytes() == f"Set-Alias ll Get-ChildItem\r\n{OLD_HOOK.format(CONDA)}".encode()
    assert console.read_bytes() == f"Import-Module posh-git\r\n. '{custom}'\r\n".encode()
    assert nodes(parse(target.read_bytes()), "command")[0].text == b"Set-Alias ll Get-ChildItem"
    assert hooks_in(target) == [CONDA] and (".", str(custom)) in invocations(console.read_bytes())
    first = snapshot(tmp_path)
    add(helper, documents, "--edition", "desktop")
    assert snapshot(tmp_path) == first


def test_an_old_utf8_hook_in_a_cp949_profile_is_replaced_by_the_hook_file(helper: Path, documents: Path) -> None:
    # Add-Content -Encoding UTF8 appended the hook's UTF-8 bytes to a cp949 profile: 5.1 misread the path.
    mine = "# 김철수의 프로필\r\nSet-Location D:\\작업\r\n".encode("cp949")
    hook = OLD_HOOK.format(KOREAN_CONDA) + "\r\n"
    target = write(profile(documents), mine + hook.encode("utf-8"))
    add(helper, documents, "--edition", "desktop", conda=KOREAN_CONDA)
    data = target.read_bytes()
    assert data.startswith(mine) and data[len(mine):].isascii()  # the user's bytes as they were; the old line out
    assert hooks_in(target) == [KOREAN_CONDA]


def test_a_hook_whose_conda_is_gone_does_not_count(helper: Path, documents: Path, tmp_path: Path) -> None:
    gone, there = tmp_path / "anaconda3" / "Scripts" / "conda.exe", write(tmp_path / "conda.exe", b"")
    target = write(profile(documents), (OLD_HOOK.format(gone) + "\r\n").encode())
    output = add(helper, documents, "--edition", "desktop", conda=str(there))
    assert f"{gone}, which does not exist on this PC" in output and "OneDrive" in output
    assert hooks_in(target) == [str(gone), str(there)]
    before = snapshot(tmp_path)
    add(helper, documents, "--edition", "desktop", conda=str(there))
    assert snapshot(tmp_path) == before


CONDA_INIT = (
    "#region conda initialize\r\n"
    "# !! Contents within this block are managed by 'conda init' !!\r\n"
    'If (Test-Path "C:\\Users\\me\\anaconda3\\Scripts\\conda.exe") {\r\n'
    '    (& "C:\\Users\\me\\anaconda3\\Scripts\\conda.exe" "shell.powershell" "hook") | Out-String | ?{$_} | '
    "Invoke-Expression\r\n"
    "}\r\n"
    "#endregion\r\n"
)


@pytest.mark.parametrize("name", ["profile.ps1", "Microsoft.PowerShell_profile.ps1"])
def test_an_existing_conda_init_block_counts(helper: Path, documents: Path, name: str) -> None:
    write(profile(documents, name=name), CONDA_INIT.encode())
    before = snapshot(documents)
    output = add(helper, documents, "--edition", "desktop")
    assert snapshot(documents) == before
    assert "already loaded from" in output and name in output


def test_a_commented_out_hook_does_not_count(helper: Path, documents: Path) -> None:
    target = write(profile(documents), f"# & '{CONDA}' shell.powershell hook | Out-String | Invoke-Expression\r\n"
                                       "<#\r\n& conda.exe shell.powershell hook\r\n#>\r\n".encode())
    add(helper, documents, "--edition", "desktop")
    assert hooks_in(target) == [CONDA]


def test_a_hook_in_a_dot_sourced_file_counts(helper: Path, documents: Path) -> None:
    write(profile(documents), b'. "$PSScriptRoot\\conda-setup.ps1"\r\n')
    write(documents / "WindowsPowerShell" / "conda-setup.ps1", f"& '{CONDA}' shell.powershell hook | Out-String | "
                                                               "Invoke-Expression".encode())
    before = snapshot(documents)
    add(helper, documents, "--edition", "desktop")
    assert snapshot(documents) == before


def test_each_edition_gets_its_own_all_hosts_profile(helper: Path, documents: Path) -> None:
    output = add(helper, documents)
    for folder in ("WindowsPowerShell", "PowerShell"):
        assert hooks_in(profile(documents, folder)) == [CONDA], output
    assert not profile(documents, name="Microsoft.PowerShell_profile.ps1").exists()


def test_profile_path_twice_then_a_plain_run_add_nothing(helper: Path, documents: Path, tmp_path: Path) -> None:
    custom = tmp_path / "D drive" / "it's profiles" / "Microsoft.PowerShell_profile.ps1"
    write(profile(documents), b"Import-Module posh-git")
    add(helper, documents, "--profile-path", str(custom))
    first = snapshot(tmp_path)
    assert hooks_in(custom) == [CONDA]
    for folder in ("WindowsPowerShell", "PowerShell"):
        data = profile(documents, folder).read_bytes()
        assert (".", str(custom)) in invocations(data) and hooks_in(profile(documents, folder)) == [CONDA]
    add(helper, documents, "--profile-path", str(custom))
    add(helper, documents)
    assert snapshot(tmp_path) == first


def test_a_standard_profile_hook_is_not_duplicated_by_profile_path(helper: Path, documents: Path,
                                                                   tmp_path: Path) -> None:
    add(helper, documents, "--edition", "desktop")
    before = snapshot(tmp_path)
    output = add(helper, documents, "--edition", "desktop", "--profile-path", str(tmp_path / "custom.ps1"))
    assert snapshot(tmp_path) == before and "already loaded" in output


@pytest.mark.parametrize("quote", ["'", "\u2019"])
def test_apostrophes_in_paths_are_quoted(helper: Path, documents: Path, tmp_path: Path, quote: str) -> None:
    conda = rf"C:\Users\O{quote}Brien\miniconda3\Scripts\conda.exe"
    custom = tmp_path / f"Jo{quote}s profiles" / "conda.ps1"
    add(helper, documents, "--edition", "desktop", "--profile-path", str(custom), conda=conda)
    data = profile(documents).read_bytes()
    assert f"O{quote}{quote}Brien".encode() in hook_file(custom.parent).read_bytes()
    assert data.isascii()
    if quote == "'":  # the parser knows the ASCII apostrophe; PowerShell treats all four alike
        assert hooks_in(custom) == [conda]
        assert (".", str(custom)) in invocations(data) and f"Jo{quote}{quote}s profiles".encode() in data
        assert hooks_in(profile(documents)) == [conda]
    else:  # a non-ASCII path into a profile without a BOM: base64, so the line is ASCII
        encoded = re.search(rb"FromBase64String\('([^']*)'\)", data)
        assert encoded and base64.b64decode(encoded[1]).decode() == str(custom)
    before = snapshot(tmp_path)
    add(helper, documents, "--edition", "desktop")  # the loader line is read back: nothing added
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("start", [b"", b"Import-Module posh-git", "# 프로필\n".encode("cp949"),
                                   codecs.BOM_UTF8 + "# 프로필\r\n".encode(), CONDA_INIT.encode()[:60]])
def test_running_twice_gives_the_same_bytes(helper: Path, documents: Path, tmp_path: Path, start: bytes) -> None:
    write(profile(documents), start)
    write(profile(documents, "PowerShell", "Microsoft.PowerShell_profile.ps1"), start)
    add(helper, documents, conda=KOREAN_CONDA)
    first = snapshot(tmp_path)
    add(helper, documents, conda=KOREAN_CONDA)
    assert snapshot(tmp_path) == first
    for path in documents.rglob("profile.ps1"):  # the files written to (UTF-8 with BOM or ASCII)
        parse(path.read_bytes())


def test_lf_files_stay_lf(helper: Path, documents: Path) -> None:
    target = write(profile(documents), b"Import-Module posh-git\n")
    add(helper, documents, "--edition", "desktop")
    assert b"\r" not in target.read_bytes()


def test_dry_run_writes_nothing(helper: Path, documents: Path, tmp_path: Path) -> None:
    write(profile(documents), b"Import-Module posh-git")
    before = snapshot(tmp_path)
    output = add(helper, documents, "--dry-run", "--profile-path", str(tmp_path / "custom.ps1"))
    assert snapshot(tmp_path) == before and output.count("[dry run] would add") == 3


def test_remove_takes_out_only_what_add_wrote(helper: Path, documents: Path, tmp_path: Path) -> None:
    target = write(profile(documents), b"Import-Module posh-git\r\n" + CONDA_INIT.encode())
    core = profile(documents, "PowerShell")
    custom = tmp_path / "custom.ps1"
    add(helper, documents, "--profile-path", str(custom))
    assert hooks_in(core) == [CONDA] and custom.is_file()
    run(helper, "remove", "--documents", str(documents), "--profile-path", str(custom), "--code-page", "949")
    assert target.read_bytes() == b"Import-Module posh-git\r\n" + CONDA_INIT.encode()  # conda init's block stays
    assert core.read_bytes() == b"" and hooks_in(custom) == [] and not hook_file(custom.parent).exists()
    target.write_bytes(b"Import-Module posh-git\r\n")
    add(helper, documents)
    run(helper, "remove", "--documents", str(documents), "--code-page", "949")
    assert target.read_bytes() == b"Import-Module posh-git\r\n" and core.read_bytes() == b""


UNDEFINED = {scope: "Undefined" for scope in ("MachinePolicy", "UserPolicy", "Process", "CurrentUser",
                                               "LocalMachine")}


def policy(helper: Path, edition: str, *flags: str, **scopes: str) -> list[str]:
    pairs = [f"{scope}={value}" for scope, value in {**UNDEFINED, **scopes}.items()]
    return run(helper, "policy", "--edition", edition, *flags, *pairs).splitlines()


def test_undefined_policies_mean_the_editions_default(helper: Path) -> None:
    (warning,) = policy(helper, "desktop")  # Windows PowerShell 5.1 on client Windows: Restricted
    assert "Restricted" in warning and warning.endswith(FIX_POLICY)
    assert policy(helper, "desktop", "--server") == []  # Windows Server: RemoteSigned
    assert policy(helper, "core") == []  # PowerShell 7 on Windows: RemoteSigned


def test_the_process_scope_is_not_what_the_next_window_gets(helper: Path) -> None:
    (warning,) = policy(helper, "desktop", Process="Bypass", LocalMachine="Restricted")
    assert "Restricted" in warning and warning.endswith(FIX_POLICY)


def test_scopes_apply_in_precedence_order(helper: Path) -> None:
    assert policy(helper, "desktop", CurrentUser="RemoteSigned", LocalMachine="Restricted") == []
    (warning,) = policy(helper, "core", CurrentUser="AllSigned", LocalMachine="RemoteSigned")
    assert "AllSigned" in warning and warning.endswith(FIX_POLICY)
    (warning,) = policy(helper, "desktop", MachinePolicy="AllSigned", CurrentUser="RemoteSigned")
    assert "Group Policy" in warning and FIX_POLICY not in warning  # the user cannot override it
    (warning,) = policy(helper, "desktop", UserPolicy="Restricted", CurrentUser="Bypass")
    assert "Group Policy" in warning


def test_downloaded_files_get_the_unblock_fix(helper: Path) -> None:
    (warning,) = policy(helper, "core", "--blocked")
    assert warning.endswith(FIX_BLOCKED) and "not digitally signed" in warning
    assert policy(helper, "core", "--blocked", CurrentUser="Bypass") == []
    assert len(policy(helper, "desktop", "--blocked")) == 2  # Restricted and blocked: both fixes


def test_the_windows_page_shows_what_the_helper_writes_and_both_fixes(render, documents: Path) -> None:
    project = render(powershell="yes")
    add(project / "scripts" / "conda_profile.py", documents, "--edition", "desktop")
    page = project / "docs" / "windows.md"
    text = page.read_text(encoding="utf-8")
    for written in (profile(documents), hook_file(profile(documents).parent)):
        assert written.read_text(encoding="utf-8-sig").replace("\r\n", "\n").strip() in text, written.name
    for needed in ("profile.ps1", "-UndoProfile", FIX_POLICY, FIX_BLOCKED.replace("|", "\\|"), "Group Policy",
                   "conda tos accept", "7.5", "C:\\miniconda3", "OneDrive"):
        assert needed in text, needed
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "(docs/windows.md)" in readme and "(docs/windows.ko.md)" in (project / "README.ko.md").read_text("utf-8")


# ------------------------------------------------------------------ one PC's undo on a shared Documents folder
def test_undo_takes_out_only_this_pcs_conda(helper: Path, documents: Path, tmp_path: Path) -> None:
    """OneDrive shares Documents between PCs: -UndoProfile on one PC leaves the other PCs' hooks and the line
    that loads them; the last PC's undo removes both."""
    laptop = str(tmp_path / "laptop" / "miniconda3" / "Scripts" / "conda.exe")
    desktop = write(tmp_path / "desktop" / "miniconda3" / "Scripts" / "conda.exe", b"")
    target = write(profile(documents), b"Import-Module posh-git\r\n")
    add(helper, documents, "--edition", "desktop", conda=laptop, computer="LAPTOP-KIM")
    add(helper, documents, "--edition", "desktop", conda=str(desktop), computer="DESKTOP-KIM")
    hooks = hook_file(target.parent)
    assert "# PCs: LAPTOP-KIM" in hooks.read_text("utf-8-sig") and "# PCs: DESKTOP-KIM" in hooks.read_text("utf-8-sig")
    parse(hooks.read_bytes())
    output = run(helper, "remove", "--documents", str(documents), "--edition", "desktop", "--code-page", "949",
                 computer="LAPTOP-KIM")
    assert "LAPTOP-KIM" in output and "DESKTOP-KIM" in output
    assert hooks_in(target) == [str(desktop)] and "LAPTOP" not in hooks.read_text("utf-8-sig")
    run(helper, "remove", "--documents", str(documents), "--edition", "desktop", "--code-page", "949",
        computer="DESKTOP-KIM")
    assert target.read_bytes() == b"Import-Module posh-git\r\n" and not hooks.exists()


def test_two_pcs_with_the_same_conda_path_each_keep_it(helper: Path, documents: Path, tmp_path: Path) -> None:
    """Both PCs installed to C:\\miniconda3: the second PC is marked on the same branch, so the first PC's undo
    leaves it working."""
    conda = str(write(tmp_path / "miniconda3" / "Scripts" / "conda.exe", b""))
    target = write(profile(documents), b"")
    add(helper, documents, "--edition", "desktop", conda=conda, computer="LAPTOP-KIM")
    add(helper, documents, "--edition", "desktop", conda=conda, computer="DESKTOP-KIM")
    assert "# PCs: LAPTOP-KIM, DESKTOP-KIM" in hook_file(target.parent).read_text("utf-8-sig")
    run(helper, "remove", "--documents", str(documents), "--edition", "desktop", computer="LAPTOP-KIM")
    assert hooks_in(target) == [conda]


def test_an_older_hook_file_without_pcs_loses_only_this_pcs_conda(helper: Path, documents: Path,
                                                                   tmp_path: Path) -> None:
    """A conda-hook.ps1 from before PCs were marked: this PC's branch is the conda given or one that exists
    here; another PC's (missing here) stays."""
    mine = str(write(tmp_path / "miniconda3" / "Scripts" / "conda.exe", b""))
    theirs = str(tmp_path / "jane" / "anaconda3" / "Scripts" / "conda.exe")
    lines = ["# conda hook for PowerShell, written by scripts\\setup.ps1 (setup.ps1 -UndoProfile removes it)"]
    for number, conda in enumerate((theirs, mine)):
        lines += [("if" if number == 0 else "} elseif") + f" (Test-Path -LiteralPath '{conda}') {{",
                  f"    & '{conda}' shell.powershell hook | Out-String | ?{{$_}} | Invoke-Expression"]
    write(hook_file(profile(documents).parent), codecs.BOM_UTF8 + ("\r\n".join([*lines, "}"]) + "\r\n").encode())
    target = write(profile(documents), b'if (Test-Path -LiteralPath "$PSScriptRoot\\conda-hook.ps1") { . '
                   b'"$PSScriptRoot\\conda-hook.ps1" }  # conda hook file (added by scripts\\setup.ps1; delete this '
                   b'line to undo)\r\n')
    run(helper, "remove", "--documents", str(documents), "--edition", "desktop")
    assert hooks_in(target) == [theirs]


# ------------------------------------------------------------------ a profile another program holds
def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked(winerror: int) -> PermissionError:
    error = PermissionError(13, "The process cannot access the file because it is being used by another process")
    error.winerror = winerror  # what Windows sets; the attribute exists only there
    return error


@pytest.mark.parametrize("winerror", [5, 32])
def test_a_locked_profile_is_retried_with_backoff(helper: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  winerror: int) -> None:
    module = load_module(helper)
    replace, calls, delays = module.os.replace, [], []

    def flaky(source: str, target: str) -> None:
        calls.append(target)
        if len(calls) <= 3:  # OneDrive holds it for three tries
            raise locked(winerror)
        replace(source, target)

    monkeypatch.setattr(module.os, "replace", flaky)
    monkeypatch.setattr(module.time, "sleep", delays.append)
    target = write(tmp_path / "profile.ps1", b"old\r\n")
    module.write_bytes(target, b"new\r\n")
    assert target.read_bytes() == b"new\r\n" and len(calls) == 4
    assert delays == list(module.RETRY_DELAYS[:3]) and delays == sorted(delays)  # backoff: each wait longer
    assert [path.name for path in tmp_path.iterdir()] == ["profile.ps1"]  # no temporary file left behind


def test_a_profile_that_stays_locked_names_controlled_folder_access(helper: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_module(helper)
    delays: list[float] = []
    monkeypatch.setattr(module.os, "replace", lambda source, target: (_ for _ in ()).throw(locked(5)))
    monkeypatch.setattr(module.time, "sleep", delays.append)
    target = write(tmp_path / "profile.ps1", b"old\r\n")
    with pytest.raises(module.ProfileError) as error:
        module.write_bytes(target, b"new\r\n")
    message = str(error.value)
    assert "Controlled Folder Access" in message and "OneDrive" in message and "\n" not in message
    assert delays == list(module.RETRY_DELAYS) and 3 < sum(delays) < 10
    assert target.read_bytes() == b"old\r\n" and [path.name for path in tmp_path.iterdir()] == ["profile.ps1"]


def test_a_permission_error_that_is_no_lock_is_not_retried(helper: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_module(helper)
    delays: list[float] = []
    monkeypatch.setattr(module.os, "replace", lambda source, target: (_ for _ in ()).throw(PermissionError(13, "no")))
    monkeypatch.setattr(module.time, "sleep", delays.append)
    with pytest.raises(PermissionError):
        module.write_bytes(write(tmp_path / "profile.ps1", b"old\r\n"), b"new\r\n")
    assert delays == []


# ------------------------------------------------------------------ setup_checks.py: conda's output, the folder
DATA = Path(__file__).parent / "data" / "conda"
MINICONDA = r"C:\Miniconda\Scripts\conda.exe"


@pytest.fixture(scope="module")
def checks(render) -> Path:
    return render(powershell="yes") / "scripts" / "setup_checks.py"


def recorded(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "code", "pending", "rejected"), [
    ("tos_accepted.json", 0, [], []),
    ("tos_pending.json", 0, ["https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r"], []),
    ("tos_outdated_rejected.json", 0, ["https://repo.anaconda.com/pkgs/main"], ["https://repo.anaconda.com/pkgs/r"]),
    ("tos_none.json", 0, [], []),
])
def test_terms_of_service_from_conda_tos_json(checks: Path, name: str, code: int, pending: list[str],
                                              rejected: list[str]) -> None:
    verdict = load_module(checks).terms_of_service(code, recorded(name), MINICONDA)
    assert verdict["checked"] and verdict["pending"] == pending and verdict["rejected"] == rejected
    if not pending + rejected:
        assert verdict["message"] is None
        return
    message = verdict["message"]
    for url in pending + rejected:  # the whole URL, never cut at 80 columns
        assert f"& '{MINICONDA}' tos accept --override-channels --channel {url}" in message
    assert "Miniforge" in message and "tos view" in message
    assert ("rejected" in message) == bool(rejected) and ("wait" in message) == bool(pending)


@pytest.mark.parametrize(("name", "code"), [("tos_missing.json", 1), ("tos_missing_argparse.txt", 2)])
def test_a_conda_without_the_terms_plugin_is_not_checked(checks: Path, name: str, code: int) -> None:
    verdict = load_module(checks).terms_of_service(code, recorded(name), MINICONDA)
    assert verdict == {"checked": False, "pending": [], "rejected": [], "message": None}


FAKE_CONDA = """#!/usr/bin/env bash
# Prints what the real conda printed for these arguments (tests/data/conda), with its exit code.
case "$*" in
    "tos --json") cat "$TOS_OUTPUT"; exit "${TOS_EXIT:-0}" ;;
    "env list --json") cat "$DATA/env_list.json" ;;
    "config --show envs_dirs --json") cat "$DATA/envs_dirs.json" ;;
    *) echo "unexpected: $*" >&2; exit 9 ;;
esac
"""


def fake_conda(tmp_path: Path) -> Path:
    conda = tmp_path / "conda"
    conda.write_text(FAKE_CONDA, encoding="utf-8")
    conda.chmod(0o755)
    return conda


def run_checks(checks: Path, *args: str, **env: str) -> dict:
    result = subprocess.run([sys.executable, str(checks), *args], capture_output=True, timeout=60,
                            env={**os.environ, "DATA": str(DATA), **env})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.isascii() and result.stdout.count(b"\n") == 1  # one ASCII line, whatever the code page
    return json.loads(result.stdout)


def test_setup_checks_runs_conda_tos_itself(checks: Path, tmp_path: Path) -> None:
    conda = str(fake_conda(tmp_path))
    answer = run_checks(checks, "tos", "--conda", conda, TOS_OUTPUT=str(DATA / "tos_pending.json"))
    assert answer["pending"] == ["https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r"]
    assert answer["message"].count("tos accept") == 2
    missing = run_checks(checks, "tos", "--conda", conda, TOS_OUTPUT=str(DATA / "tos_missing_argparse.txt"),
                         TOS_EXIT="2")
    assert missing["checked"] is False


def test_env_prefix_is_this_condas_env_and_survives_a_korean_path(checks: Path, tmp_path: Path) -> None:
    """conda env list shows every install's envs: the one under this conda's envs_dirs is the answer (a Korean
    user's C:\\Users\\김철수\\.conda\\envs), never D:\\anaconda3's namesake; JSON keeps the Hangul intact."""
    module = load_module(checks)
    envs, dirs = recorded("env_list.json"), recorded("envs_dirs.json")
    assert module.env_prefix(envs, dirs, MINICONDA, "my-experiment") == r"C:\Users\김철수\.conda\envs\my-experiment"
    assert module.env_prefix(envs, dirs, MINICONDA, "MY-EXPERIMENT") == r"C:\Users\김철수\.conda\envs\my-experiment"
    assert module.env_prefix(envs, "", MINICONDA, "other") == r"C:\Miniconda\envs\other"  # <root>\envs by itself
    assert module.env_prefix(envs, "", r"D:\anaconda3\Scripts\conda.exe", "other") is None  # Miniconda's
    assert module.env_prefix(envs, "", r"D:\anaconda3\Scripts\conda.exe", "my-experiment") == \
        r"D:\anaconda3\envs\my-experiment"
    answer = run_checks(checks, "env-prefix", "--conda", str(fake_conda(tmp_path)), "--name", "my-experiment")
    assert answer == {"prefix": r"C:\Users\김철수\.conda\envs\my-experiment"}


ONEDRIVE = r"C:\Users\김철수\OneDrive - 서울대학교"


@pytest.mark.parametrize(("project", "onedrive", "warned"), [
    (ONEDRIVE + r"\문서\GitHub\my-experiment", [ONEDRIVE], True),
    (r"c:\users\김철수\onedrive - 서울대학교\Desktop\my-experiment", [ONEDRIVE], True),  # case does not matter
    (r"C:\Users\김철수\OneDrive\Documents\my-experiment", [], True),  # %OneDrive% unset: the folder's name
    (r"C:\dev\my-experiment", [ONEDRIVE], False),
    (r"C:\Users\김철수\OneDriveBackup-notes\x", [r"C:\Users\김철수\OneDrive"], True),
])
def test_a_project_inside_onedrive_is_warned_about(checks: Path, project: str, onedrive: list[str],
                                                  warned: bool) -> None:
    warnings = load_module(checks).location_warnings(project, project + r"\.venv\Lib\site-packages", onedrive, True)
    assert len(warnings) == int(warned)
    if warned:
        assert "OneDrive" in warnings[0] and "WinError 5 or 32" in warnings[0] and "C:\\dev" in warnings[0]


def test_paths_too_long_for_windows_are_warned_about_before_installing(checks: Path) -> None:
    module = load_module(checks)
    short = r"C:\dev\my-experiment\.venv\Lib\site-packages"
    deep = "C:\\Users\\김철수\\" + "\\".join(["research-projects-2026"] * 4) + r"\my-experiment\.venv\Lib\site-packages"
    assert len(deep) + 1 + module.TORCH_LONGEST_PATH >= module.MAX_PATH > len(short) + 1 + module.TORCH_LONGEST_PATH
    assert module.location_warnings(r"C:\dev\my-experiment", short, [], False) == []
    (warning,) = module.location_warnings(deep, deep, [], False)
    assert "LongPathsEnabled" in warning and str(len(deep) + 1 + module.TORCH_LONGEST_PATH) in warning
    assert module.location_warnings(deep, deep, [], True) == []  # long paths on: no limit to warn about
    answer = run_checks(checks, "location", "--project", deep, "--site-packages", deep, "--onedrive", ONEDRIVE)
    assert len(answer["warnings"]) == 1 and "\\uae40" not in answer["warnings"][0] and "김철수" in answer["warnings"][0]
