"""Where a Hugging Face model or tokenizer comes from: a local folder or a hub id, checked fast."""

from __future__ import annotations

from pathlib import Path

from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.utils import env_flag

HUB_TIMEOUT_S = 10.0


def hub_offline() -> bool:
    """Whether the hub must not be contacted (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return env_flag("HF_HUB_OFFLINE") or env_flag("TRANSFORMERS_OFFLINE")


def looks_like_path(name: str) -> bool:
    """A name that can only be a folder: absolute, relative with ./ ../ ~, or with more than one '/'."""
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or (len(name) > 1 and name[1] == ":")


def resolve_source(name_or_path: str, revision: str | None = None) -> str:
    """Return ``name_or_path`` once it is known to load: a saved folder, a cached or reachable hub id.

    Fails in one line instead of letting the hub client retry for tens of seconds.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise UserError(
                f"model.name_or_path={name} has no config.json: point it at a folder written by "
                "save_pretrained, or at a hub id such as meta-llama/Llama-3.2-1B."
            )
        return str(path)
    if looks_like_path(name) or path.exists():
        raise UserError(
            f"model.name_or_path={name}: no such folder; check the path, or give a hub id "
            "such as meta-llama/Llama-3.2-1B."
        )
    from huggingface_hub import model_info, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except ValueError:
        raise UserError(
            f"model.name_or_path={name} is neither a folder nor a valid hub id (owner/name): check the spelling."
        ) from None
    if isinstance(cached, str):
        return name
    if hub_offline():
        raise UserError(
            f"model.name_or_path={name} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: "
            f"download it once online (hf download {name}), or point it at a local folder."
        )
    try:
        model_info(name, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any hub failure becomes one line
        raise UserError(
            f"model.name_or_path={name} cannot be fetched from the Hugging Face hub "
            f"({type(error).__name__}): check the id, your network and token (hf auth login), "
            "or point it at a local folder."
        ) from None
    return name
