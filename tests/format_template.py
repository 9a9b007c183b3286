"""Run ``ruff format`` on the template's Python files, through a render.

The template's files hold Jinja names (``{{ cookiecutter.package_name }}``), so ruff cannot read
them as they are. This renders every file once with placeholder names, formats the render with
the rendered project's own settings, and writes each formatted file back with the names restored.
Files with other Jinja (a ``{% if %}`` line, an answer's value) are only checked: fix those by hand.

    python tests/format_template.py           # rewrite the template's Python files
    python tests/format_template.py --check   # list the files that would change; exit 1 if any
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
SOURCE = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
# Every answer that keeps a file (task=both, PowerShell, CI), with names found nowhere else; one render per
# tracker, since each logger answer keeps its own tracker's files.
ANSWERS = {"task": "both", "logger": "wandb", "powershell": "yes", "ci": "github",
           "project_slug": "zzslug-fmt", "package_name": "zzpkg_fmt"}
LOGGERS = ("wandb", "mlflow", "tensorboard")
NAMES = {
    "zzpkg_fmt": "{{ cookiecutter.package_name }}",
    "ZZPKG_FMT": "{{ cookiecutter.package_name | upper }}",
    "zzslug-fmt": "{{ cookiecutter.project_slug }}",
}
KNOWN_JINJA = re.compile(r"\{\{ cookiecutter\.(package_name|package_name \| upper|project_slug) \}\}")


def template_path(rendered: Path, project: Path) -> Path:
    """The template file a rendered file came from."""
    relative = rendered.relative_to(project).as_posix()
    relative = relative.replace("zzpkg_fmt", "{{cookiecutter.package_name}}")
    return SOURCE / relative


def restore_names(text: str) -> str:
    for placeholder, jinja in NAMES.items():
        text = text.replace(placeholder, jinja)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    args = parser.parse_args(argv)
    changed: list[Path] = []
    by_hand: list[Path] = []
    for logger in LOGGERS:
        with tempfile.TemporaryDirectory(prefix="format-template-") as out:
            answers = {**ANSWERS, "logger": logger}
            project = Path(cookiecutter(str(TEMPLATE_DIR), no_input=True, extra_context=answers, output_dir=out))
            before = {path: path.read_text(encoding="utf-8") for path in project.rglob("*.py")}
            subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", "--no-cache", "."], cwd=project,
                           check=True)
            for rendered, text in sorted(before.items()):
                formatted = rendered.read_text(encoding="utf-8")
                source = template_path(rendered, project)
                if formatted == text or source in changed or source in by_hand:
                    continue
                original = source.read_text(encoding="utf-8")
                formatted = restore_names(formatted)
                if "{%" in original or "{{" in KNOWN_JINJA.sub("", original):
                    by_hand.append(source)
                    continue
                changed.append(source)
                if not args.check:
                    source.write_text(formatted, encoding="utf-8")
    for path in by_hand:
        print(f"needs formatting by hand (other Jinja in it): {path.relative_to(TEMPLATE_DIR)}")
    for path in changed:
        print(f"{'would reformat' if args.check else 'reformatted'}: {path.relative_to(TEMPLATE_DIR)}")
    return 1 if by_hand or (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
