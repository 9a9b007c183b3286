"""``init_from=<run folder>``: start from what an earlier run saved (e.g. DPO after SFT).

The run's ``model/`` folder (written by training: the full model, or LoRA adapters, with the tokenizer
and its chat template) becomes ``model.name_or_path`` (and so the tokenizer, ``data.tokenizer``
follows it). Adapters are merged into their base once, into ``<this run>/init_from/``, so that the
new run starts from (and DPO's reference is) the earlier run's result. :func:`chain` is what
``provenance.json`` records: this start, and the runs the earlier one started from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from {{ cookiecutter.package_name }}.errors import UserError

log = logging.getLogger(__name__)

MERGED = "init_from"  # the folder of merged weights in the new run's folder


def saved_model(given: Any) -> Path:
    """The ``model/`` folder of the run ``given``, or one line saying why it is not there."""
    folder = Path(str(given)).expanduser()
    if not (folder / ".hydra" / "config.yaml").is_file():
        raise UserError(
            f"init_from={given} is not a run folder (it has no .hydra/config.yaml): give the folder of a "
            "finished training run, e.g. init_from=outputs/sft_tiny."
        )
    if not (folder / "model").is_dir():
        raise UserError(
            f"init_from={given} has no model/ folder, which a training run writes when it completes: "
            "finish that run (resume=auto), or start from another."
        )
    return folder.resolve() / "model"


def merge_adapters(adapters: Path, target: Path, dtype: str) -> None:
    """Load the adapters' base, merge the adapters into it and save the result (and the tokenizer) to ``target``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from {{ cookiecutter.package_name }}.runtime import DTYPES

    base_path = json.loads((adapters / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=DTYPES.get(dtype, DTYPES["fp32"]))
    merged = PeftModel.from_pretrained(base, adapters).merge_and_unload()
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(adapters).save_pretrained(target)
    log.info("Merged the LoRA adapters of %s into %s: %s.", adapters.parent, base_path, target)


def apply(cfg: DictConfig, output_dir: Path, merge: bool = True) -> list[dict[str, Any]]:
    """Point ``model.name_or_path`` at the start ``init_from`` names (merging adapters when ``merge``; rank 0
    merges, the others wait); return the chain of runs, empty without ``init_from``."""
    given = cfg.get("init_from")
    if not given:
        return []
    model = saved_model(given)
    source, weights = model, "the full model"
    if (model / "adapter_config.json").is_file():
        source, weights = Path(output_dir) / MERGED, "its LoRA adapters merged into their base"
        if merge:
            import torch

            from {{ cookiecutter.package_name }} import runtime

            if runtime.is_main_process() and not (source / "config.json").is_file():
                merge_adapters(model, source, str(cfg.model.get("dtype", "fp32")))
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()  # the other ranks load what rank 0 merged
        elif not (source / "config.json").is_file():
            raise UserError(f"{source} (the merged start of this run) is missing: keep the run folder whole.")
    with open_dict(cfg):
        cfg.model.name_or_path = str(source)
        cfg.model.revision = None
    log.info("Starting from %s: %s (%s).", model.parent, weights, source)
    return chain(model.parent, weights)


def chain(run: Path, weights: str) -> list[dict[str, Any]]:
    """This start and the earlier run's own chain, from its ``provenance.json``."""
    try:
        record = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    link = {
        "run": str(run),
        "weights": weights,
        "command": (record.get("command") or {}).get("overrides"),
        "commit": (record.get("git") or {}).get("commit"),
        "started_at": record.get("started_at"),
        "status": record.get("status"),
    }
    return [link, *record.get("init_from", [])]
