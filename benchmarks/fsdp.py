"""FSDP against DDP on N processes: per-rank parameter, gradient and optimizer bytes, and step time.

Renders the causal-LM project, then one ``torchrun --standalone --nproc_per_node=N`` job builds the
same small Llama on every rank twice (seeded alike), once wrapped by the project's DDP
(``training.distributed.wrap``) and once sharded by its FSDP2 (``training.fsdp.Sharding``), and trains
each with AdamW on the same random tokens, alternating, timing steps after a warm-up. The bytes are
what each rank stores: the local shards of parameters, gradients and AdamW's two moments. On the CPU
the processes use gloo; on a machine with N GPUs the same script measures NCCL on the GPUs.

Then the share of ``fit()`` spent outside training epochs (validation, the sharded checkpoints) of a
``trainer=fsdp`` run of the tiny Llama under torchrun, with ``trainer.fsdp.async_save`` false and true,
alternating (``--no-save-share`` skips it).

    python benchmarks/fsdp.py [--nproc 2] [--steps 8] [--repeats 3] [--hidden 256] [--layers 4]

Ends with ``fsdp_bytes_per_rank_ratio=<value> (goal <= 0.55)``: FSDP's per-rank bytes over DDP's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import child_result, offline_env, render, report

GOAL = 0.55

CHILD = r'''
import json, statistics, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from my_experiment import runtime
from my_experiment.training import distributed, fsdp

steps, repeats, hidden, layers = map(int, sys.argv[1:5])
device = runtime.choose_device("auto")
distributed.init_distributed(device)
config = LlamaConfig(vocab_size=2048, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                     num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)

def build(strategy):
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)
    if strategy == "ddp":
        model = distributed.wrap(model, device)
    else:
        model = fsdp.Sharding().shard(model, device, "fp32")
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

def stored(model, optimizer):
    moments = [value for state in optimizer.state.values() for value in state.values() if value.dim() > 0]
    return {"parameters": sum(fsdp.local_bytes(model.parameters())),
            "gradients": sum(fsdp.local_bytes(p.grad for p in model.parameters() if p.grad is not None)),
            "optimizer": sum(fsdp.local_bytes(moments))}

def step(model, optimizer, tokens):
    loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()

generator = torch.Generator().manual_seed(runtime.rank())
tokens = torch.randint(0, config.vocab_size, (4, 128), generator=generator).to(device)
result = {"ddp": [], "fsdp": []}
held = {}
for repeat in range(repeats):
    for strategy in ("ddp", "fsdp") if repeat % 2 == 0 else ("fsdp", "ddp"):
        model, optimizer = build(strategy)
        step(model, optimizer, tokens)  # warm-up; creates the optimizer state
        held[strategy] = stored(model, optimizer)
        optimizer.zero_grad(set_to_none=False)
        distributed.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            step(model, optimizer, tokens)
            optimizer.zero_grad(set_to_none=False)
        distributed.barrier()
        result[strategy].append((time.perf_counter() - start) / steps)
        del model, optimizer
if runtime.rank() == 0:
    print("RESULT " + json.dumps({"bytes": held, "step_s": {k: statistics.median(v) for k, v in result.items()},
                                  "device": str(device)}), flush=True)
distributed.destroy_distributed()
'''

SHARE = r"""
import json, os, time
from my_experiment import runtime
from my_experiment.training.callbacks import Callback


class Share(Callback):
    # rank 0's fit time, and the part of it inside training epochs

    def on_fit_start(self, trainer):
        self.fit, self.epochs = time.perf_counter(), 0.0

    def on_train_epoch_start(self, trainer):
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, metrics):  # an epoch's training has ended just before validation
        self.epochs += self.end - self.start

    def on_train_step_end(self, trainer, loss):
        self.end = time.perf_counter()

    def on_fit_end(self, trainer):
        if runtime.rank() == 0:
            share = 1 - self.epochs / (time.perf_counter() - self.fit)
            with open(os.environ["SHARE_FILE"], "w") as handle:
                json.dump({"share": share}, handle)
"""


def save_share(project: Path, folder: Path, nproc: int, async_save: bool, index: int) -> float:
    """The share of fit() outside training epochs of one trainer=fsdp run on ``nproc`` processes."""
    out = folder / f"share-{async_save}-{index}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "my_experiment.train", "experiment=tiny_lm", "trainer=fsdp", "logger=csv", "precision=fp32",
               f"trainer.fsdp.async_save={str(async_save).lower()}", "trainer.max_epochs=6",
               "trainer.limit_val_batches=1", "trainer.progress_bar=false", "trainer.early_stopping.patience=null",
               "data.batch_size=8", f"hydra.run.dir={folder / f'run-{async_save}-{index}'}",
               "+trainer.callbacks.share._target_=fsdp_share.Share"]
    env = {**offline_env(threads=1), "PYTHONPATH": f"{folder}:{project / 'src'}", "SHARE_FILE": str(out)}
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(out.read_text(encoding="utf-8"))["share"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes (GPUs on a GPU machine)")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per strategy, alternating")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the Llama")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the Llama")
    parser.add_argument("--no-save-share", action="store_true", help="skip the async_save measurement")
    args = parser.parse_args()
    shares: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as temp:
        project = render(Path(temp), task="causal-lm", logger="csv")
        child = Path(temp) / "fsdp_child.py"
        child.write_text(CHILD, encoding="utf-8")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                   str(child), str(args.steps), str(args.repeats), str(args.hidden), str(args.layers)]
        env = {**offline_env(threads=1), "PYTHONPATH": str(project / "src")}
        result = child_result(command, cwd=project, env=env, timeout=1800)
        (Path(temp) / "fsdp_share.py").write_text(SHARE, encoding="utf-8")
        for repeat in range(0 if args.no_save_share else 2):
            for async_save in (False, True) if repeat % 2 == 0 else (True, False):
                shares[async_save].append(save_share(project, Path(temp), args.nproc, async_save, repeat))
    held, step_s = result["bytes"], result["step_s"]
    print(f"{args.nproc} processes on {result['device']}; MB per rank:")
    for kind in ("parameters", "gradients", "optimizer"):
        print(f"  {kind:<11} ddp={held['ddp'][kind] / 1e6:8.2f}  fsdp={held['fsdp'][kind] / 1e6:8.2f}  "
              f"ratio={held['fsdp'][kind] / held['ddp'][kind]:.3f}")
    print(f"step time: ddp={step_s['ddp'] * 1e3:.1f} ms, fsdp={step_s['fsdp'] * 1e3:.1f} ms")
    print(f"fsdp_step_time_ratio={step_s['fsdp'] / step_s['ddp']:.3f} (measured; FSDP trades communication for memory)")
    if shares[False]:
        sync, background = statistics.median(shares[False]), statistics.median(shares[True])
        print(f"fit share outside training epochs: async_save=false {sync:.3f}, true {background:.3f}")
        print(f"fsdp_async_save_outside_share_ratio={background / sync:.3f} (measured; < 1: saving left the loop)")
    total = {name: sum(values.values()) for name, values in held.items()}
    report("fsdp_bytes_per_rank_ratio", total["fsdp"] / total["ddp"], f"goal <= {GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
