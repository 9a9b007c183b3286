"""trainer=fsdp for real on 2 (and 4) gloo processes: the same losses as one process on the same global
batch, 1/world of the parameter bytes per rank, sharded checkpoints that resume on the same and on another
number of ranks, LoRA on a sharded base, and evaluate/export of a sharded run in one process.

The runs start real processes (tens of seconds each, mostly importing torch): they are shared by the
tests of this module and marked ``slow``. Every run has the global batch 8 (data.batch_size 8/world)
and 5 steps per epoch; without a schedule (scheduler=none), a run of 2 epochs is the first half of one
of 4, so a resumed run must continue as the uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.models import hf_loader
from {{ cookiecutter.package_name }}.training import fsdp

from conftest import PACKAGE, needs_torchrun, run_command, run_module

pytestmark = needs_torchrun  # most runs here start torchrun

GLOBAL_BATCH = 8
LM = [
    "trainer=fsdp",
    "experiment=tiny_lm",
    "quantization=none",  # also in 4-bit renders: FSDP shards a full-precision base (QLoRA is refused)
    "logger=csv",
    "precision=fp32",
    "scheduler=none",
    "trainer.device=cpu",
    "trainer.progress_bar=false",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
]
HELD = re.compile(r"this rank holds (\d+) of (\d+) parameter bytes")


def train(run: Path, processes: int, *overrides: str) -> Path:
    """Train (or resume, in ``run``) on ``processes`` gloo processes; return the run folder."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    command = [
        sys.executable,
        *launcher,
        "-m",
        f"{PACKAGE}.train",
        *LM,
        f"data.batch_size={GLOBAL_BATCH // processes}",
        path_override("hydra.run.dir", run),
        *overrides,
    ]
    result = run_command(command, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def resumed(source: Path, run: Path, processes: int, epochs: int = 4) -> Path:
    """A copy of ``source`` resumed (resume=auto: its last.dcp) on ``processes`` ranks up to ``epochs``."""
    shutil.copytree(source, run)
    return train(run, processes, f"trainer.max_epochs={epochs}")


def losses(run: Path) -> list[tuple[int, float, float]]:
    with open(run / "metrics.csv", encoding="utf-8") as handle:
        return [(int(row["epoch"]), float(row["train/loss"]), float(row["val/loss"])) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shared runs: 4 epochs (20 steps) on 1 and on 2 ranks, and their first halves."""
    root = tmp_path_factory.mktemp("fsdp")
    return {
        "one": train(root / "one", 1, "trainer.max_epochs=4"),
        "two": train(root / "two", 2, "trainer.max_epochs=4"),
        "two_half": train(root / "two_half", 2, "trainer.max_epochs=2"),
        "one_half": train(root / "one_half", 1, "trainer.max_epochs=2"),
    }


# ------------------------------------------------------------------ fast: blocks, refusals, configs
def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


def test_blocks_are_the_decoder_layers_or_the_named_list() -> None:
    model = tiny_llama()
    blocks = fsdp.find_blocks(model)
    assert blocks == list(model.model.layers)
    assert fsdp.find_blocks(model, "model.layers") == list(model.model.layers)
    assert fsdp.find_blocks(nn.Sequential(nn.Linear(2, 2))) == []
    with pytest.raises(UserError, match="trainer.fsdp.blocks=model.blocks names no module.*model.layers"):
        fsdp.find_blocks(model, "model.blocks")


def test_lora_blocks_are_found_through_the_adapter() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert len(fsdp.find_blocks(model)) == 3
    assert len(fsdp.find_blocks(model, "model.layers")) == 3  # a name inside the base model


def test_quantized_weights_are_refused_in_one_line() -> None:
    """The loader marks a 4-bit/8-bit model (tests/test_quantized_cpu.py checks it); sharding it stops in one line."""
    model = runtime.mark_unshardable(nn.Linear(4, 4), hf_loader.FSDP_REFUSAL)
    with pytest.raises(UserError, match="trainer=ddp with quantization=4bit.*quantization=none"):
        fsdp.Sharding().shard(model, torch.device("cpu"), "fp32")


def test_mixed_precision_casts_parameters_and_reduces_in_fp32() -> None:
    policy = fsdp.mixed_precision("bf16")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert fsdp.mixed_precision("fp32").param_dtype is None


def test_activation_checkpointing_keeps_the_gradients() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    recomputed = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    recomputed.load_state_dict(plain.state_dict())
    fsdp.checkpoint_activations(recomputed)
    inputs = torch.randn(3, 4)
    plain(inputs).sum().backward()
    recomputed(inputs).sum().backward()
    for left, right in zip(plain.parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(left.grad, right.grad)


def test_memory_report_counts_gpus_for_ddp_fsdp_and_offload() -> None:
    """A 7B Llama shape on 80 GiB GPUs: DDP's full copy (16 bytes a parameter) never fits, FSDP halves every
    per-rank figure at 2 ranks and fits there, offload leaves the GPU only the gathered blocks."""
    from transformers import LlamaConfig

    from {{ cookiecutter.package_name }}.models import footprint

    config = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
    )
    report = footprint.training_report(config, gpu_gib=80)
    ddp, fsdp_two = report["per_rank_bytes"]["ddp"]["2"], report["per_rank_bytes"]["fsdp"]["2"]
    offload = report["per_rank_bytes"]["fsdp_offload"]["2"]
    assert ddp["parameters"] + ddp["gradients"] + ddp["optimizer"] == 16 * 6_738_415_616
    for kind in ("parameters", "gradients", "optimizer"):
        assert fsdp_two[kind] == ddp[kind] // 2
    assert offload["gpu"] == offload["gathered"] == fsdp_two["gathered"] > 0
    assert report["gpus_needed"] == {"ddp": None, "fsdp": 2, "fsdp_offload": 1}
    assert footprint.gpus_needed(6_738_415_616, 202_383_360, gpu_gib=24)["fsdp"] == 8


# ------------------------------------------------------------------ slow: real processes
@pytest.mark.slow
def test_two_ranks_train_as_one_process_on_the_same_global_batch(runs: dict[str, Path]) -> None:
    one, two = losses(runs["one"]), losses(runs["two"])
    assert [row[0] for row in two] == [0, 1, 2, 3]  # 4 epochs of 5 steps: 20 steps
    for single, sharded in zip(one, two, strict=True):
        assert sharded == pytest.approx(single, abs=1e-5)
    assert two[-1][1] < two[0][1]  # and it learns


@pytest.mark.slow
def test_each_rank_holds_half_of_the_parameters(runs: dict[str, Path]) -> None:
    for log in ("train.log", "train.rank1.log"):
        held, total = map(int, HELD.search((runs["two"] / log).read_text(encoding="utf-8")).groups())
        assert 0.45 * total <= held <= 0.55 * total


@pytest.mark.slow
def test_sharded_checkpoints_are_folders_every_rank_wrote(runs: dict[str, Path]) -> None:
    checkpoints = runs["two"] / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best.dcp", "last.dcp"]
    last = checkpoints / "last.dcp"
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "trainer_state.pt"} <= {path.name for path in last.iterdir()}
    summary = json.loads((runs["two"] / "summary.json").read_text(encoding="utf-8"))
    assert summary["checkpoints"] == {"best": "checkpoints/best.dcp", "last": "checkpoints/last.dcp"}


@pytest.mark.slow
def test_resume_on_the_same_ranks_is_bit_exact(runs: dict[str, Path], tmp_path: Path) -> None:
    run = resumed(runs["two_half"], tmp_path / "again", 2)
    assert losses(run) == losses(runs["two"])


@pytest.mark.slow
@pytest.mark.parametrize("source, processes", [("two_half", 1), ("one_half", 2)], ids=["2to1", "1to2"])
def test_resume_on_another_number_of_ranks(runs: dict[str, Path], tmp_path: Path, source: str, processes: int) -> None:
    run = resumed(runs[source], tmp_path / "other", processes)
    assert "Resumed from" in (run / "train.log").read_text(encoding="utf-8")
    for continued, uninterrupted in zip(losses(run), losses(runs["two"]), strict=True):
        assert continued == pytest.approx(uninterrupted, abs=1e-5)


@pytest.mark.slow
def test_resume_from_two_ranks_on_four(runs: dict[str, Path], tmp_path: Path) -> None:
    run = resumed(runs["two_half"], tmp_path / "four", 4, epochs=3)
    for continued, uninterrupted in zip(losses(run), losses(runs["two"])[:3], strict=True):
        assert continued == pytest.approx(uninterrupted, abs=1e-5)


@pytest.mark.slow
def test_evaluate_and_export_a_sharded_run_in_one_process(runs: dict[str, Path], tmp_path: Path) -> None:
    """No process group: evaluate gives the test loss the 2 ranks measured; export writes a folder that plain
    transformers loads with the logits of the checkpoint's weights."""
    from transformers import AutoModelForCausalLM

    from {{ cookiecutter.package_name }}.training.sharded_checkpoint import load_model_weights

    run = runs["two"]
    # the 2 ranks tested limit_val_batches=2 batches of 4 each: the first 16 examples, one batch of 8 x 2 here
    batch = f"data.batch_size={GLOBAL_BATCH}"
    result = run_module(
        "evaluate", path_override("run", run), "split=test", batch, path_override("output", tmp_path / "eval")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads((tmp_path / "eval" / "eval.json").read_text(encoding="utf-8"))["metrics"]["test/loss"]
    tested = json.loads((run / "summary.json").read_text(encoding="utf-8"))["test"]["test/loss"]
    assert measured == pytest.approx(tested, abs=1e-5)

    result = run_module("export", path_override("run", run), path_override("output", tmp_path / "export"))
    assert result.returncode == 0, result.stderr[-3000:]
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    trained = AutoModelForCausalLM.from_pretrained(run / "random_init").eval()
    trained.load_state_dict(load_model_weights(run / "checkpoints" / "best.dcp", trained.state_dict()))
    tokens = torch.arange(1, 33).reshape(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(tokens).logits, trained(tokens).logits, rtol=0, atol=1e-5)
        assert not torch.allclose(
            exported(tokens).logits, AutoModelForCausalLM.from_pretrained(run / "random_init")(tokens).logits
        )


@pytest.mark.slow
def test_lora_trains_only_the_adapters_on_a_sharded_base(tmp_path: Path) -> None:
    """LoRA under FSDP: the frozen base is sharded too (half the bytes per rank), the checkpoint holds the
    adapters only (the base reloads from its files, as without FSDP), and the adapters trained."""
    from torch.distributed.checkpoint import FileSystemReader, load

    run = train(tmp_path / "lora", 2, "trainer.max_epochs=1", "model.lora.enabled=true")
    held, total = map(int, HELD.search((run / "train.rank1.log").read_text(encoding="utf-8")).groups())
    assert 0.45 * total <= held <= 0.55 * total
    last = run / "checkpoints" / "last.dcp"
    saved = FileSystemReader(last).read_metadata().state_dict_metadata
    weights = [key for key in saved if key.startswith("model.")]
    assert weights and all(".lora_A." in key or ".lora_B." in key for key in weights)
    adapters = {key: torch.zeros(saved[key].size) for key in weights if ".lora_B." in key}
    load(adapters, checkpoint_id=last, no_dist=True)
    assert all(value.abs().sum() > 0 for value in adapters.values())  # lora_B starts at zero: they trained


@pytest.mark.slow
def test_offload_activation_checkpointing_and_bf16_train(tmp_path: Path) -> None:
    """The options together on 2 ranks: CPU offload, recomputed activations, blocks kept gathered, bf16
    (fp32 where this CPU has no native bf16), clipping on sharded gradients; the loss falls."""
    options = ["trainer.fsdp.cpu_offload=true", "trainer.fsdp.activation_checkpointing=true"]
    options += ["trainer.fsdp.reshard_after_forward=false", "precision=bf16", "trainer.gradient_clip_val=0.5"]
    run = train(tmp_path / "options", 2, "trainer.max_epochs=2", *options)
    rows = losses(run)
    assert rows[-1][1] < rows[0][1]
    assert "(offloaded to the CPU)" in (run / "train.log").read_text(encoding="utf-8")
