"""Validate every answer before anything is written; report all problems at once.

Stdlib only. The answers arrive as JSON data (Jinja's ``tojson`` escapes quotes),
never as Python code. Answers with a list of choices need no check here: cookiecutter
rejects a value outside ``cookiecutter.json``'s list before this hook runs.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

ANSWERS = json.loads(r'''{{ cookiecutter | tojson }}''')

SLUG_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
PACKAGE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WANDB_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
YEAR_RE = re.compile(r"^[0-9]{4}(?:-[0-9]{4})?$")

# Top-level modules the rendered project imports (or that pytest and Hydra load);
# a package with one of these names would shadow it.
THIRD_PARTY_IMPORTS = {
    "torch", "torchvision", "timm", "hydra", "omegaconf", "wandb", "mlflow", "tensorboard", "transformers",
    "peft", "bitsandbytes", "accelerate", "datasets", "tokenizers", "safetensors",
    "numpy", "sklearn", "matplotlib", "tqdm", "yaml", "pytest", "optuna",
    "submitit", "test", "tests", "src", "configs", "conftest", "setuptools",
}

def _stdlib_names() -> set[str]:
    return set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)


def check_slug(slug: str) -> list[str]:
    if SLUG_RE.match(slug):
        return []
    return [
        f"project_slug {slug!r} is not a valid folder/distribution name: use lowercase "
        "letters and digits joined by single hyphens (e.g. 'my-experiment')."
    ]


def check_package(name: str) -> list[str]:
    if not PACKAGE_RE.match(name) or not name.isidentifier():
        return [
            f"package_name {name!r} is not a valid Python identifier: use lowercase letters, "
            "digits and underscores, not starting with a digit (e.g. 'my_experiment')."
        ]
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return [f"package_name {name!r} is a Python keyword: choose another, e.g. '{name}_exp'."]
    if name in THIRD_PARTY_IMPORTS or name in _stdlib_names():
        return [
            f"package_name {name!r} would shadow the module '{name}' that the project imports: "
            f"choose another, e.g. '{name}_exp'."
        ]
    return []


def check_email(email: str) -> list[str]:
    if not email or EMAIL_RE.match(email):
        return []
    return [f"author_email {email!r} is not an email address: use name@example.org or leave it empty."]


def check_year(year: str) -> list[str]:
    if YEAR_RE.match(year):
        return []
    return [f"copyright_year {year!r} is not a year: use four digits (e.g. 2025) or a range (2023-2025)."]


def check_wandb(answers: dict) -> list[str]:
    problems = []
    project, entity = answers.get("wandb_project", ""), answers.get("wandb_entity", "")
    if not WANDB_NAME_RE.match(project):
        problems.append(
            f"wandb_project {project!r} is not a valid W&B project name: use up to 128 letters, "
            "digits, '-', '_' or '.'."
        )
    if entity and not WANDB_NAME_RE.match(entity):
        problems.append(
            f"wandb_entity {entity!r} is not a valid W&B entity: use letters, digits, '-', '_' "
            "or '.', or leave it empty for your default entity."
        )
    return problems


def check_combinations(answers: dict) -> list[str]:
    if answers.get("task") == "image-classification" and answers.get("quantization") != "none":
        return [
            f"quantization={answers.get('quantization')} applies to Hugging Face language models, "
            "but task=image-classification has none: choose task=causal-lm or task=both, "
            "or quantization=none."
        ]
    return []


def validate(answers: dict) -> list[str]:
    """Return every problem found in ``answers`` (empty when all is well)."""
    return [
        *check_slug(answers.get("project_slug", "")),
        *check_package(answers.get("package_name", "")),
        *check_email(answers.get("author_email", "")),
        *check_year(str(answers.get("copyright_year", ""))),
        *check_wandb(answers),
        *check_combinations(answers),
    ]


def main() -> int:
    problems = validate(ANSWERS)
    if not problems:
        return 0
    lines = [f"Cannot generate the project: {len(problems)} problem(s) in your answers:"]
    lines += [f"  - {problem}" for problem in problems]
    lines.append("Nothing was written. Run cookiecutter again with corrected answers.")
    sys.stderr.write("\n".join(lines) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
