"""``gpu_check.sh``'s packages step: every module the check uses imports, and on a GPU, 4-bit kernels run.

Prints one ``imports:`` line (what failed, with why), the torch and GPU in use, and whether bitsandbytes'
CUDA library is the real one (a missing one is swapped for a stand-in that fails at the first 4-bit call).
Exit status 4 when a module does not import.
"""

from __future__ import annotations

import importlib
import sys

MODULES = ["cookiecutter", "hydra", "omegaconf", "hydra_plugins.hydra_submitit_launcher", "submitit", "optuna",
           "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers", "timm", "torchvision",
           "datasets", "trl", "sklearn", "matplotlib", "yaml", "pytest"]


def main() -> None:
    missing = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - every failed import is reported alike
            missing.append(f"{name} ({type(error).__name__}: {error})")
    print("imports: " + ("; ".join(missing) if missing else f"all {len(MODULES)} modules import"))
    import torch

    line = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        line += (f", {torch.cuda.get_device_name(0)}, compute capability {major}.{minor}, "
                 f"native bf16 {torch.cuda.is_bf16_supported(including_emulation=False)}")
    print(line)
    if torch.cuda.is_available() and "bitsandbytes" not in " ".join(missing):
        import bitsandbytes
        import bitsandbytes.functional as bnb_functional

        try:
            weights = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
            packed, state = bnb_functional.quantize_4bit(weights, quant_type="nf4")
            restored = bnb_functional.dequantize_4bit(packed, state)
            error = (restored - weights).abs().mean().item()
            print(f"bitsandbytes {bitsandbytes.__version__}: 4-bit NF4 on the GPU, mean round-trip error {error:.3f}")
        except Exception as failure:  # noqa: BLE001 - the stand-in library raises RuntimeError, others may vary
            # not fatal: the figures without 4-bit still run, and the 4-bit ones report their own failure
            print(f"bitsandbytes {bitsandbytes.__version__}: its CUDA library does not run here "
                  f"(torch.version.cuda {torch.version.cuda}): {type(failure).__name__}: {failure}")
    sys.exit(4 if missing else 0)


if __name__ == "__main__":
    main()
