"""Weight memory report: ``python -m {{ cookiecutter.package_name }}.memory [overrides]``.

Estimates the weight memory of the configured model in fp32/fp16/bf16/8bit/4bit from
its config, loads it as configured, measures what is resident (offloaded weights count
nothing), checks the fit against free memory, answers how many GPUs of ``gpu_gib`` a full fine-tune
needs with DDP, FSDP and FSDP with CPU offload, and writes ``memory.json``. Torch loads after the
config checks, so that a mistyped key answers at once.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import {{ cookiecutter.package_name }}.config.resolvers  # noqa: F401 - registers ${rank_suffix:} and the others
from {{ cookiecutter.package_name }}.config import quoting
from {{ cookiecutter.package_name }}.config import source as config_source
from {{ cookiecutter.package_name }}.config.build import build_run
from {{ cookiecutter.package_name }}.config.checks import check_config, check_overrides, check_targets
from {{ cookiecutter.package_name }}.errors import exit_on_user_error

log = logging.getLogger(__name__)


def memory_report(cfg: DictConfig) -> dict[str, Any]:
    """Load the model of ``cfg`` for inference and return its report (also written to memory.json)."""
    check_config(cfg)
    from {{ cookiecutter.package_name }}.models import footprint  # torch loads from here on
    from {{ cookiecutter.package_name }}.models.hf_loader import model_config, quantization_name

    check_targets(cfg)

    def estimate(info: Any) -> None:
        model_cfg = cfg.model
        config = model_config(
            model_cfg.name_or_path, model_cfg.config, info.tokenizer, model_cfg.revision, model_cfg.trust_remote_code
        )
        parameters, estimates = footprint.estimate_bytes(
            config, bool(cfg.quantization.get("double_quant", True)), footprint.unquantized_bytes(str(cfg.model.dtype))
        )
        log.info(
            "Before loading: %.1fM parameters; estimated MB %s",
            parameters / 1e6,
            {mode: round(value / 1e6, 1) for mode, value in estimates.items()},
        )

    options = {"for_training": False, "report": False, "lora": {"enabled": False}}
    model = build_run(cfg, options, before_model=estimate).model
    precision, quantization = str(cfg.model.dtype), quantization_name(cfg.quantization)
    double_quant = bool(cfg.quantization.get("double_quant", True))
    report = footprint.build_report(
        model, str(cfg.model.name_or_path or "random init"), precision, quantization, double_quant
    )
    report["training"] = footprint.training_report(config, float(cfg.gpu_gib), 4 if precision == "fp32" else 2)
    footprint.log_report(report)
    footprint.log_training_report(report["training"])
    output = Path(cfg.paths.output_dir) / "memory.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("Wrote %s", output)
    return report


@hydra.main(version_base="1.3", config_path=config_source.config_path(), config_name="memory")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    memory_report(cfg)


def cli() -> None:
    """``python -m {{ cookiecutter.package_name }}.memory`` and the console script: adds the user config folders of
    ``${{ cookiecutter.package_name | upper }}_CONFIG_PATH`` to Hydra's search path."""
    sys.argv[1:] = exit_on_user_error(quoting.quote_paths)(sys.argv[1:])  # hydra.run.dir=~/실험 as typed
    sys.argv[1:] = config_source.user_search_path(sys.argv[1:])
    exit_on_user_error(check_overrides)("memory", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
