"""``trainer.compile=true`` against eager, measured side by side in one run (CPU, fp32).

1. Steady-state training steps/s, compiled / eager, of the tiny LM (``experiment=tiny_lm``: a
   2-layer, 64-wide Llama on 16 x 64 tokens; goal >= 1.5) and of the digits MLP (reported). Both
   models start from the same weights; each is built by the project's own builders and compiled by
   ``training.compiling.compile_model`` (the tiny LM per decoder layer), then their steps (forward,
   backward, AdamW) are timed in alternating rounds and the medians compared.
2. Compile time of the tiny LM's first step, cold (an empty cache folder) and warm (a second process
   on the same folder, as a second run of the same config is), minus an eager first step; goal: warm
   <= 0.25 x cold.

Usage: python benchmarks/compile.py [--threads N] (default 1 torch thread per process).
On a GPU (bf16, QLoRA) nothing measures it yet: gpu_check.sh's step caps fill its budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import child_result, interleaved, offline_env, render, report

ROUNDS, STEPS_PER_ROUND = 7, 5


def build(kind: str, root: Path):
    """(model, batches, loss function) for ``lm`` or ``mlp``, from the rendered project's builders."""
    import torch

    torch.manual_seed(0)
    if kind == "lm":
        from my_experiment.data.text import TextDataModule
        from my_experiment.models.hf_loader import load_causal_lm
        from my_experiment.tasks.causal_lm import CausalLMTask

        data = TextDataModule(batch_size=16, block_size=64, num_workers=0, seed=0)
        info = data.setup()
        config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
                  "tie_word_embeddings": True}
        model = load_causal_lm(data=info, config=config, init_dir=str(root / "init"), report=False,
                               lora={"enabled": False})
        task = CausalLMTask()
    else:
        from my_experiment.data.digits import DigitsDataModule
        from my_experiment.models.mlp import MLP
        from my_experiment.tasks.classification import ClassificationTask

        data = DigitsDataModule(batch_size=64, num_workers=0, seed=0)
        info = data.setup()
        model = MLP(info)
        task = ClassificationTask()
    task.bind(info)
    loader = data.loader("train")
    batches = [batch for _, batch in zip(range(STEPS_PER_ROUND), loader, strict=False)]
    return model, batches, task.training_loss


def stepper(model, batches, loss_of):
    """A function running one training step per batch (forward, backward, AdamW) and returning seconds."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def steps() -> float:
        start = time.perf_counter()
        for batch in batches:
            loss_of(model, batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / len(batches)

    return steps


def compiled_vs_eager(kind: str, root: Path) -> tuple[float, float]:
    """Median seconds per step, eager and compiled, measured in alternating rounds."""
    import torch
    from my_experiment.training.compiling import compile_model

    eager_model, batches, loss_of = build(kind, root)
    compiled_model = copy.deepcopy(eager_model)
    assert compile_model(compiled_model, True, torch.device("cpu"))
    candidates = {"eager": stepper(eager_model, batches, loss_of)}
    candidates["compiled"] = stepper(compiled_model, batches, loss_of)
    for run in candidates.values():  # the compile, and warm-up
        run()
        run()
    medians = interleaved(candidates, ROUNDS)
    return medians["eager"], medians["compiled"]


def first_step_child(root: Path) -> None:
    """In a child process: seconds of the tiny LM's first compiled step minus its first eager step."""
    import torch
    from my_experiment.training.compiling import compile_model

    model, batches, loss_of = build("lm", root)
    eager_first = stepper(copy.deepcopy(model), batches[:1], loss_of)()
    compile_model(model, True, torch.device("cpu"))
    compiled_first = stepper(model, batches[:1], loss_of)()
    print("RESULT " + json.dumps({"compile_s": compiled_first - eager_first}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default=None)
    parser.add_argument("--project", default=None)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path(args.project) / "src"))
        import torch

        torch.set_num_threads(args.threads)
        first_step_child(Path(args.child))
        return
    project = render(logger="csv", task="both")
    work = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    env = {**offline_env(args.threads), "TORCHINDUCTOR_CACHE_DIR": str(work / "cache")}
    command = [sys.executable, __file__, "--threads", str(args.threads), "--project", str(project), "--child"]
    cold = child_result([*command, str(work / "cold")], Path(__file__).parent, env, timeout=1800)["compile_s"]
    warm = child_result([*command, str(work / "warm")], Path(__file__).parent, env, timeout=1800)["compile_s"]

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "cache")
    import torch

    torch.set_num_threads(args.threads)
    timings = {kind: compiled_vs_eager(kind, work / kind) for kind in ("mlp", "lm")}
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; cache {work / 'cache'}")
    for kind, (eager, compiled) in timings.items():
        print(f"{kind}: eager {eager * 1000:.1f} ms/step, compiled {compiled * 1000:.1f} ms/step")
    print(f"tiny LM first-step compile: cold {cold:.1f} s, warm {warm:.1f} s")
    report("digits_mlp_compiled_vs_eager_steps_ratio", timings["mlp"][0] / timings["mlp"][1], "reported")
    report("tiny_lm_cold_compile_s", cold, "reported")
    report("tiny_lm_warm_compile_s", warm, "reported")
    report("tiny_lm_warm_vs_cold_compile_ratio", warm / cold, "goal <= 0.25")
    report("tiny_lm_compiled_vs_eager_steps_ratio", timings["lm"][0] / timings["lm"][1], "goal >= 1.5")


if __name__ == "__main__":
    main()
