"""The GPU figures of ``gpu_check.sh``, one per command, each ending in a ``name=value (goal)`` line.

- ``bf16``: training steps/s of a transformer block (4 encoder layers, d=2048, seq 1024, batch 8)
  under the project's ``Precision``: bf16 autocast against fp32 with TF32 off (goal >= 2.0) and
  against fp32 with TF32 on, as ``precision.allow_tf32=true`` runs it (reported); 10 warm-up and
  50 timed steps each.
- ``memory``: a 7B-shaped Llama saved in bf16, loaded 4-bit (NF4, double quantization) through the
  project's loader; resident weight bytes (tensors counted) and the allocator's peak during the load
  (``max_memory_allocated``), each against its fp32 size. Goal <= 0.17 (tensors).
- ``qlora``: QLoRA tokens/s of the project's Trainer against ``transformers.Trainer`` on the same
  4-bit model, LoRA, data, optimizer, schedule, clipping and bf16 autocast; the two run interleaved,
  3 times each, and the medians are compared. Goal >= 1.0.
- ``spill``: a 4-bit Llama that does not fit the ``max_memory`` given, loaded with ``device_map=auto``
  and then with the dict ``auto`` chose: which layers landed where, and as which class (transformers
  keeps unquantized only the CPU modules a dict names). Goal: 0 quantized layers on the CPU with the dict.

Usage: python benchmarks/gpu_figures.py [bf16|memory|qlora|spill] [--project <render>] (without CUDA: skipped).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import interleaved, render, report

WARMUP, TIMED = 10, 50


def import_project(project: str | None) -> None:
    """Make the rendered package importable: a given render, or a fresh causal-LM render."""
    if project:
        sys.path.insert(0, str(Path(project) / "src"))
    else:
        render(task="causal-lm", quantization="4bit", precision="bf16", logger="csv")


def synchronized_time() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


# ------------------------------------------------------------------ bf16 against fp32
def block_steps_per_second(name: str, allow_tf32: bool = False) -> float:
    from my_experiment.training.precision import Precision

    precision = Precision(name, allow_tf32=allow_tf32).resolve(torch.device("cuda", 0))
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=2048, nhead=16, dim_feedforward=8192, batch_first=True,
                                             norm_first=True, dropout=0.0)
    model = torch.nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = precision.grad_scaler()
    inputs = torch.randn(8, 1024, 2048, device="cuda")

    def step() -> None:
        with precision.autocast():
            loss = model(inputs).float().pow(2).mean()
        scaler.scale(loss).backward()
        precision.optimizer_step(scaler, optimizer)
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP):
        step()
    start = synchronized_time()
    for _ in range(TIMED):
        step()
    rate = TIMED / (synchronized_time() - start)
    print(f"{precision.name}: {rate:.2f} steps/s (TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")
    return rate


def bf16_figure() -> None:
    from my_experiment.runtime import bf16_supported

    if not bf16_supported(torch.device("cuda", 0)):
        print("this GPU has no native bfloat16 (compute capability < 8.0): the trainer would use fp16")
    fp32 = block_steps_per_second("fp32")
    tf32 = block_steps_per_second("fp32", allow_tf32=True)
    bf16 = block_steps_per_second("bf16")
    report("bf16_vs_fp32_steps_ratio", bf16 / fp32, "goal >= 2.0; 4 x d2048 encoder, seq 1024, batch 8, TF32 off")
    report("bf16_vs_fp32_tf32_steps_ratio", bf16 / tf32, "reported; fp32 as precision.allow_tf32=true runs it")
    report("fp32_tf32_vs_fp32_steps_ratio", tf32 / fp32, "reported; what TF32 alone gives")


# ------------------------------------------------------------------ a 7B model in 4 bits
def llama_7b_config() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       tie_word_embeddings=False)


def save_random(config: Any, folder: Path, device: str = "cuda") -> None:
    """A randomly initialised model in bf16, built on the GPU (fast) and saved with save_pretrained."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def memory_figure() -> None:
    from my_experiment.models import footprint
    from my_experiment.models.hf_loader import load_causal_lm

    config = llama_7b_config()
    with tempfile.TemporaryDirectory(prefix="llama7b-") as folder:
        start = time.perf_counter()
        save_random(config, Path(folder))
        saved = time.perf_counter()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        model = load_causal_lm(name_or_path=folder, dtype="bf16", quantization={"name": "4bit", "double_quant": True},
                               for_training=False, report=False, lora={"enabled": False})
        resident = sum(footprint.resident_bytes(model).values())
        allocated, peak = torch.cuda.memory_allocated() - before, torch.cuda.max_memory_allocated() - before
        print(f"saved in {saved - start:.0f} s, loaded 4-bit in {time.perf_counter() - saved:.0f} s; "
              f"CUDA allocated {allocated / 1e9:.2f} GB after the load, peak {peak / 1e9:.2f} GB during it")
    parameters, estimates = footprint.estimate_bytes(config)
    print(f"{parameters / 1e9:.2f}B parameters: resident {resident / 1e9:.2f} GB, "
          f"fp32 {estimates['fp32'] / 1e9:.2f} GB")
    report("llama7b_4bit_vs_fp32_bytes", resident / estimates["fp32"], "goal <= 0.17; tensors counted")
    report("llama7b_4bit_allocated_vs_fp32_bytes", allocated / estimates["fp32"], "reported; the CUDA allocator")
    report("llama7b_4bit_load_peak_vs_fp32_bytes", peak / estimates["fp32"], "reported; max_memory_allocated")


# ------------------------------------------------------------------ QLoRA: the project's Trainer vs transformers'
REPEATS = 3
SEQ, BATCH, STEPS, LORA = 512, 8, 30, {"r": 16, "alpha": 32, "dropout": 0.0,
                                      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def qlora_model(folder: str) -> torch.nn.Module:
    from my_experiment.models.hf_loader import load_causal_lm

    torch.manual_seed(0)
    return load_causal_lm(name_or_path=folder, dtype="bf16", quantization={"name": "4bit", "double_quant": True},
                          report=False, lora=LORA)


def token_blocks(vocab: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(4, vocab, (SEQ,), generator=generator) for _ in range(BATCH * (STEPS + 2))]


def tokens_per_second(stamps: list[float]) -> float:
    """From step-end times: the steps after the warm-up, in tokens per second."""
    timed = stamps[WARMUP:]
    return (len(timed) - 1) * BATCH * SEQ / (timed[-1] - timed[0])


def project_trainer(folder: str, blocks: list[torch.Tensor]) -> float:
    from my_experiment.data.common import DataInfo, DataModule
    from my_experiment.tasks.causal_lm import CausalLMTask
    from my_experiment.training.callbacks import Callback
    from my_experiment.training.precision import Precision
    from my_experiment.training.schedulers import cosine
    from my_experiment.training.trainer import Trainer

    class Blocks(DataModule):
        def setup(self) -> DataInfo:
            self.train_set, self.val_set, self.test_set = blocks, blocks[:BATCH], blocks[:BATCH]
            self.info = DataInfo()
            return self.info

    class StepClock(Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_step_end(self, trainer: Any, loss: torch.Tensor) -> None:
            self.stamps.append(synchronized_time())

    clock = StepClock()
    data = Blocks(batch_size=BATCH, num_workers=0)
    data.setup()
    task = CausalLMTask()
    task.bind(data.info)
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(precision=Precision("bf16"), output_dir=output, callbacks=[clock],
                          max_epochs=1, max_steps=STEPS, gradient_clip_val=1.0, log_every_n_steps=10,
                          limit_val_batches=1, progress_bar=False, early_stopping={"patience": None})
        trainer.fit(qlora_model(folder), task, data, functools.partial(torch.optim.AdamW, lr=2e-4),
                    functools.partial(cosine))
    return tokens_per_second(clock.stamps)


def hf_trainer(folder: str, blocks: list[torch.Tensor]) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.stamps.append(synchronized_time())

    clock = StepClock()
    examples = [{"input_ids": block, "labels": block} for block in blocks]
    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(output_dir=output, per_device_train_batch_size=BATCH, max_steps=STEPS,
                                 learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.01,
                                 optim="adamw_torch", max_grad_norm=1.0, bf16=True, logging_steps=10**6,
                                 save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                                 remove_unused_columns=False, dataloader_num_workers=0, seed=0)
        Trainer(model=qlora_model(folder), args=args, train_dataset=examples, callbacks=[clock]).train()
    return tokens_per_second(clock.stamps)


def qlora_figure() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False)
    blocks = token_blocks(config.vocab_size)
    with tempfile.TemporaryDirectory(prefix="llama1b-") as folder:
        save_random(config, Path(folder))

        def measured(run: Any) -> float:
            rate = run(folder, blocks)
            torch.cuda.empty_cache()
            print(f"  {run.__name__}: {rate:.0f} tokens/s", flush=True)
            return rate

        medians = interleaved({"ours": lambda: measured(project_trainer), "theirs": lambda: measured(hf_trainer)},
                              REPEATS)
    print(f"QLoRA, 1B-shaped Llama, seq {SEQ}, batch {BATCH}, median of {REPEATS} interleaved runs: "
          f"project Trainer {medians['ours']:.0f} tokens/s, transformers.Trainer {medians['theirs']:.0f} tokens/s")
    report("qlora_trainer_vs_hf_tokens_ratio", medians["ours"] / medians["theirs"], "goal >= 1.0; medians")


# ------------------------------------------------------------------ 4-bit layers spilled to the CPU
def placement(model: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """Each Linear-like module of the base model: (device of its weight, class name)."""
    found = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None:
            found[name] = (str(weight.device), type(module).__name__)
    return found


def summarize(found: dict[str, tuple[str, str]]) -> int:
    """Print runs of layers by (device, class); return how many quantized Linear layers sit off the GPU."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, where in found.items():
        groups.setdefault(where, []).append(name)
    for (device, kind), names in sorted(groups.items()):
        print(f"  {device:<7} {kind:<12} {len(names):>3} layers, e.g. {', '.join(names[:2])}")
    return sum(1 for device, kind in found.values() if not device.startswith("cuda") and kind != "Linear")


def spill_figure() -> None:
    from my_experiment.models.hf_loader import load_causal_lm
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=False)
    budget = {"0": "150MiB", "cpu": "16GiB"}  # about half of the 4-bit model: the rest must spill
    with tempfile.TemporaryDirectory(prefix="llama-spill-") as folder:
        save_random(config, Path(folder))
        common = {"name_or_path": folder, "dtype": "bf16", "quantization": {"name": "4bit"}, "max_memory": budget,
                  "for_training": False, "report": False, "lora": {"enabled": False}}
        model = load_causal_lm(device_map="auto", **common)
        device_map = dict(model.hf_device_map)
        print(f"device_map=auto, max_memory={budget}: {len(set(device_map.values()))} device(s)")
        named_auto = summarize(placement(model))
        del model
        torch.cuda.empty_cache()
        if set(map(str, device_map.values())) <= {"0", "cuda:0"}:
            print("nothing spilled: lower the GPU budget")
        model = load_causal_lm(device_map=device_map, **common)
        print("the same placement as a dict:")
        named_dict = summarize(placement(model))
    report("spill_auto_quantized_layers_off_gpu", named_auto, "reported; the loader warns when auto may spill")
    report("spill_dict_quantized_layers_off_gpu", named_dict, "goal = 0")


FIGURES = {"bf16": bf16_figure, "memory": memory_figure, "qlora": qlora_figure, "spill": spill_figure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", nargs="?", choices=sorted(FIGURES), help="one figure (default: all)")
    parser.add_argument("--project", help="a rendered project (default: render one)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_figures: no CUDA device visible; skipped.")
        return
    import_project(args.project)
    for name in [args.figure] if args.figure else sorted(FIGURES):
        FIGURES[name]()


if __name__ == "__main__":
    main()
