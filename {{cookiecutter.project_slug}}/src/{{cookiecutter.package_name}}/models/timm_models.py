"""Any timm image model (EfficientNet, ViT, ResNet, ...) sized by the data's metadata.

``pretrained=true`` loads weights from the Hugging Face cache when they are there and
downloads them otherwise; without a connection it stops at once with one line instead
of letting the hub retry for most of a minute.
"""

from __future__ import annotations

import logging
from typing import Any

import timm
from torch import nn

from {{ cookiecutter.package_name }}.data.common import DataInfo
from {{ cookiecutter.package_name }}.data.download import reachable
from {{ cookiecutter.package_name }}.errors import FRACTION, UserError, at_least, check_arguments, first_line
from {{ cookiecutter.package_name }}.utils import env_flag

log = logging.getLogger(__name__)
HUB_URL = "https://huggingface.co"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def cached_weights(hub_id: str) -> str | None:
    """The local path of ``hub_id``'s weights in the Hugging Face cache, if they are there."""
    from huggingface_hub import try_to_load_from_cache

    for filename in WEIGHT_FILES:
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return path
    return None


def pretrained_source(name: str) -> dict[str, Any]:
    """``create_model`` arguments that load ``name``'s weights, failing fast when they cannot be had."""
    config = timm.models.get_pretrained_cfg(name)
    if config is None or not (config.hf_hub_id or config.url):
        raise UserError(f"timm has no pretrained weights for model.name={name}: set model.pretrained=false.")
    if config.hf_hub_id:
        local = cached_weights(config.hf_hub_id)
        if local:
            return {"pretrained_cfg_overlay": {"file": local}}
        if env_flag("HF_HUB_OFFLINE"):
            raise UserError(
                f"pretrained weights for {name} ({config.hf_hub_id}) are not in the Hugging Face "
                "cache and HF_HUB_OFFLINE=1 forbids downloading them: run once online, "
                "or set model.pretrained=false."
            )
    url = config.url[0] if isinstance(config.url, tuple) else config.url  # timm may pair a URL with a file name
    source = HUB_URL if config.hf_hub_id else str(url)
    if not reachable(source):
        raise UserError(
            f"cannot reach {source} to fetch pretrained weights for {name}: connect to the internet, "
            "set HF_HUB_OFFLINE=1 to use only cached weights, or set model.pretrained=false."
        )
    return {}


RULES = {"img_size": at_least(1, optional=True), "drop_rate": FRACTION}  # what model.* accepts


def timm_model(
    data: DataInfo,
    name: str,
    pretrained: bool = False,
    in_chans: int | None = None,
    img_size: int | None = None,
    drop_rate: float = 0.0,
    kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """``timm.create_model(name)`` with ``num_classes`` and ``in_chans`` from ``data``.

    ``in_chans`` and ``img_size`` here are what the model asks of the data (the data
    configs read them); the data's metadata then sizes the model. Models with a fixed
    input size (ViTs) are built for ``data.img_size``. ``kwargs`` go to timm as they are.
    """
    check_arguments("model", RULES, {"img_size": img_size, "drop_rate": drop_rate})
    if not timm.is_model(name):
        similar = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise UserError(
            f"model.name={name} is not a timm model; e.g. {', '.join(similar) or 'resnet18'} (see timm.list_models())."
        )
    if in_chans is not None and data.in_chans is not None and in_chans != data.in_chans:
        log.warning(
            "model.in_chans=%d but this data set gives %d channels (it does not read model.in_chans): "
            "building %s for %d.",
            in_chans,
            data.in_chans,
            name,
            data.in_chans,
        )
    extra = dict(kwargs or {})
    config = timm.models.get_pretrained_cfg(name)
    if config is not None and config.fixed_input_size and data.img_size:
        extra.setdefault("img_size", data.img_size)
    if pretrained:
        extra.update(pretrained_source(name))
    try:
        model = timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=data.num_classes,
            in_chans=data.in_chans or 3,
            drop_rate=drop_rate,
            **extra,
        )
    except (RuntimeError, OSError) as error:
        if not pretrained:
            raise
        raise UserError(
            f"could not load pretrained weights for {name} ({first_line(error)[:200]}): "
            "remove model.kwargs that change the architecture, or set model.pretrained=false."
        ) from None
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch and data.img_size and data.img_size % patch[0]:
        raise UserError(
            f"images of {data.img_size}x{data.img_size} do not split into {patch[0]}x{patch[0]} "
            "patches: set model.img_size (the data resizes to it) or model.kwargs.patch_size."
        )
    return model
