"""The Korean READMEs stay in step with the English ones: the same commands in their code blocks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_render import MATRIX

from conftest import DEFAULTS, TEMPLATE_DIR

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELLS = {"bash", "sh", "shell", "console", "powershell", "pwsh", "ps1", "bat", "cmd"}


def commands(markdown: str) -> set[str]:
    """Each command line of the shell code blocks, with comments dropped and continuations joined."""
    found = set()
    for language, body in FENCE.findall(markdown):
        if language.lower() not in SHELLS:
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                found.add(" ".join(line.split()))
    return found


def heading_levels(markdown: str) -> list[int]:
    """The level of each Markdown heading outside code blocks, in order."""
    prose = FENCE.sub("", markdown)
    return [len(match) for match in re.findall(r"^(#{1,6}) ", prose, re.MULTILINE)]


def assert_same_commands(english: Path, korean: Path) -> None:
    assert korean.is_file(), f"{korean.name} is missing beside {english.name}"
    ours, theirs = commands(english.read_text(encoding="utf-8")), commands(korean.read_text(encoding="utf-8"))
    assert ours, f"no commands found in {english}"
    assert ours == theirs, (f"only in {english.name}: {sorted(ours - theirs)}; "
                            f"only in {korean.name}: {sorted(theirs - ours)}")
    levels = [heading_levels(path.read_text(encoding="utf-8")) for path in (english, korean)]
    assert levels[0] == levels[1], f"{korean.name} has other sections than {english.name}: {levels}"


def test_commands_ignore_comments_and_join_continuations() -> None:
    text = "```bash\nrun a  # one\n# a comment line\nrun b \\\n    --flag\n```\n```\nnot a command\n```\n"
    assert commands(text) == {"run a", "run b --flag"}
    assert commands(text.replace("run a", "run c")) != commands(text)
    assert heading_levels("# a\n## b\n```bash\n# not a heading\n```\n### c\n") == [1, 2, 3]


def test_template_readmes_show_the_same_commands() -> None:
    assert_same_commands(TEMPLATE_DIR / "README.md", TEMPLATE_DIR / "README.ko.md")


def test_template_readmes_link_each_other_and_list_every_prompt() -> None:
    english = (TEMPLATE_DIR / "README.md").read_text(encoding="utf-8")
    korean = (TEMPLATE_DIR / "README.ko.md").read_text(encoding="utf-8")
    assert "(README.ko.md)" in english.split("\n## ")[0] and "(README.md)" in korean.split("\n## ")[0]
    prompts = [key for key in DEFAULTS if not key.startswith("_")]
    for name, text in (("README.md", english), ("README.ko.md", korean)):
        missing = [key for key in prompts if f"`{key}`" not in text]
        assert not missing, f"{name} does not describe the prompts {missing}"


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_rendered_readmes_show_the_same_commands(render, name: str) -> None:
    project = render(**MATRIX[name])
    assert_same_commands(project / "README.md", project / "README.ko.md")
    english = (project / "README.md").read_text(encoding="utf-8")
    korean = (project / "README.ko.md").read_text(encoding="utf-8")
    assert "README.ko.md" in english and "(README.md)" in korean
    assert "Keep your project up to date" in english and "프로젝트를 최신 상태로 유지하기" in korean


def test_rendered_windows_pages_show_the_same_commands(render) -> None:
    docs = render(powershell="yes") / "docs"
    assert_same_commands(docs / "windows.md", docs / "windows.ko.md")
    assert "(windows.ko.md)" in (docs / "windows.md").read_text(encoding="utf-8")
    assert "(windows.md)" in (docs / "windows.ko.md").read_text(encoding="utf-8")
