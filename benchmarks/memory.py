"""Weight footprint of each precision/quantization, relative to fp32, through the rendered loader.

Renders a causal-LM project, saves a random Llama (hidden 1024, 4 layers, ~56M parameters)
and loads it with the project's loader in fp32, fp16, bf16, 8bit and 4bit; the footprint
is what is resident (the project's ``footprint.resident_bytes``). Ends with
``name=value (goal)`` lines. ``--device cuda`` measures on a GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from common import render

log = logging.getLogger("benchmarks")
GOALS = {"fp16": 0.51, "bf16": 0.51, "8bit": 0.29, "4bit": 0.17}
MODES = [("fp32", "fp32", "none"), ("fp16", "fp16", "none"), ("bf16", "bf16", "none"), ("8bit", "bf16", "8bit"),
         ("4bit", "bf16", "4bit")]


def render_package(folder: Path) -> str:
    render(folder, task="causal-lm", logger="csv", quantization="4bit")
    return "my_experiment"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import importlib

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    with tempfile.TemporaryDirectory() as scratch:
        package = render_package(Path(scratch))
        loader = importlib.import_module(f"{package}.models.hf_loader")
        footprint = importlib.import_module(f"{package}.models.footprint")
        config = LlamaConfig(vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                             num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=True)
        model_dir = Path(scratch) / "llama"
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
        parameters, estimates = footprint.estimate_bytes(config)
        measured = {}
        for mode, dtype, quantization in MODES:
            model = loader.load_causal_lm(name_or_path=str(model_dir), dtype=dtype, quantization={"name": quantization},
                                          device_map={"": args.device}, for_training=False, report=False,
                                          lora={"enabled": False})
            measured[mode] = sum(footprint.resident_bytes(model).values())
            del model
            log.warning("%-5s resident %8.1f MB, estimated %8.1f MB", mode, measured[mode] / 1e6,
                            estimates[mode] / 1e6)
    log.warning("random Llama: %.1fM parameters on %s", parameters / 1e6, args.device)
    failed = False
    for mode, goal in GOALS.items():
        ratio = measured[mode] / measured["fp32"]
        failed |= ratio > goal
        sys.stdout.write(f"memory_ratio_{mode}={ratio:.3f} (goal <= {goal})\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
