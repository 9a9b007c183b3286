"""4-bit models on every CPU: bitsandbytes' CPU repacking, native bf16 and CUDA, each forced both ways.

On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights for a fused kernel at its
first eval-mode forward without grad. The ``cpu_repacking`` fixture forces that decision whatever
this CPU has. Where the CPU lacks the fused kernel, the real packer still runs (on a copy, so its
shape checks apply) and the layer keeps its unpacked weights for the unfused kernel.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }} import runtime
from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.data.text import SAMPLE_CORPUS, read_documents, train_tokenizer
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.models.hf_loader import (
    FSDP_REFUSAL,
    limit_cpu_repacking,
    load_causal_lm,
    resolve_device_map,
)
from {{ cookiecutter.package_name }}.runtime import usable_precision
from {{ cookiecutter.package_name }}.train import train

from conftest import compose_config

bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")

# Layers of the odd model below that bitsandbytes' CPU packer cannot take: k/v project to 16
# features (not a multiple of 32), gate/up to 100, and down reads 100 (not whole 64-value blocks).
UNPACKABLE = {"self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
PACKABLE = {"self_attn.q_proj", "self_attn.o_proj"}
LAYERS = 2
LM = ["task=causal_lm", "data=text", "model=causal_lm", "quantization=4bit", "precision=bf16", "logger=csv"]


def host_repacks() -> bool:
    """Whether this bitsandbytes repacks 4-bit weights on this CPU (AVX512-BF16 and the fused kernel)."""
    return bool(getattr(bnb_modules, "has_avx512bf16", lambda: False)())


HOST_BRANCH = "host-repacks" if host_repacks() else "host-does-not-repack"


@pytest.fixture(params=[True, False], ids=["repacking-on", "repacking-off"])
def cpu_repacking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, list[tuple]]:
    """Force new ``Linear4bit`` layers to repack (or not); return the flag and the shapes the packer got."""
    forced = request.param
    if forced and not hasattr(bnb_modules, "_convert_weight_packed_for_cpu"):
        pytest.skip("this bitsandbytes does not repack 4-bit weights on CPUs")
    packed: list[tuple] = []
    real_pack = getattr(bnb_modules, "_convert_weight_packed_for_cpu", None)
    native = host_repacks()

    def pack(weight: torch.Tensor, state, *args, **kwargs):
        packed.append(tuple(state.shape))
        if native:
            return real_pack(weight, state, *args, **kwargs)
        real_pack(weight.clone(), copy.deepcopy(state), *args, **kwargs)
        return weight, state

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: forced, raising=False)
    if real_pack is not None:
        monkeypatch.setattr(bnb_modules, "_convert_weight_packed_for_cpu", pack)
    return forced, packed


@pytest.fixture(scope="module")
def odd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with layers the CPU packer cannot take, written with save_pretrained."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = tmp_path_factory.mktemp("odd_llama")
    tokenizer = train_tokenizer(read_documents(SAMPLE_CORPUS), vocab_size=300)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=100,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def names(suffixes: set[str]) -> set[str]:
    return {f"model.layers.{index}.{suffix}" for index in range(LAYERS) for suffix in suffixes}


def repacking_flags(model: torch.nn.Module) -> dict[str, bool]:
    """``support_avx512bf16_for_cpu`` of each 4-bit layer, by its name in the base model."""
    return {
        name.removeprefix("base_model.model.").removesuffix(".base_layer"): layer.support_avx512bf16_for_cpu
        for name, layer in model.named_modules()
        if isinstance(layer, bnb_modules.Linear4bit)
    }


def tokens() -> torch.Tensor:
    return torch.randint(4, 250, (2, 16), generator=torch.Generator().manual_seed(1))


def repacking_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "CPU repacking is off" in record.getMessage()]


def test_inference_repacks_only_the_layers_the_packer_takes(
    odd_dir: Path, cpu_repacking, caplog: pytest.LogCaptureFixture
) -> None:
    forced, packed = cpu_repacking
    with caplog.at_level(logging.INFO):
        model = load_causal_lm(
            name_or_path=str(odd_dir),
            dtype="bf16",
            quantization={"name": "4bit"},
            for_training=False,
            report=False,
            lora={"enabled": False},
        )
    flags = repacking_flags(model)
    assert set(flags) == names(UNPACKABLE | PACKABLE)
    assert {name for name, on in flags.items() if on} == (names(PACKABLE) if forced else set())
    lines = repacking_lines(caplog)
    if forced:
        assert len(lines) == 1 and f"{len(names(UNPACKABLE))} of {len(flags)} 4-bit layers" in lines[0]
    else:
        assert not lines
    with torch.no_grad():
        model.train()  # no repacking while training: the reference output of the unfused kernel
        reference = model(tokens()).logits.float()
        model.eval()
        logits = model(tokens()).logits.float()
    assert packed if forced else not packed
    assert all(rows % 32 == 0 for rows, _ in packed), packed
    torch.testing.assert_close(logits, reference, rtol=0.05, atol=0.05)


def test_training_keeps_every_4bit_layer_unpacked(
    odd_dir: Path, cpu_repacking, caplog: pytest.LogCaptureFixture
) -> None:
    """A packed layer passes no gradient: validation between training steps must not freeze the adapters."""
    forced, packed = cpu_repacking
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        model = load_causal_lm(
            name_or_path=str(odd_dir),
            dtype="bf16",
            quantization={"name": "4bit"},
            report=False,
            lora={"r": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "o_proj"]},
        )
    assert not any(repacking_flags(model).values())
    assert len(repacking_lines(caplog)) == (1 if forced else 0)
    assert runtime.unshardable_reason(model) == FSDP_REFUSAL  # trainer=fsdp refuses it in one line
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):  # train, validate, train: the second backward reaches every adapter
        model.train()
        optimizer.zero_grad()
        model(input_ids=tokens(), labels=tokens()).loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            model(tokens())
    assert not packed
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("cpu_repacking", [True], ids=["repacking-on"], indirect=True)
@pytest.mark.parametrize("source", ["odd-model", "default-tiny-config"])
def test_a_4bit_run_trains_and_evaluates_under_forced_repacking(
    odd_dir: Path, cpu_repacking, source: str, tmp_path: Path
) -> None:
    # a random init trains in full unless LoRA is asked for: ask, so that it loads in 4 bits
    model = [path_override("model.name_or_path", odd_dir)] if source == "odd-model" else ["model.lora.enabled=true"]
    cfg = compose_config([*LM, *model, "debug=fast", "trainer.max_steps=3", "task.new_tokens=4"], output_dir=tmp_path)
    best = train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert best is not None and math.isfinite(best) and summary["global_step"] == 3
    assert math.isfinite(summary["test"]["test/loss"])


@pytest.mark.parametrize("branch", [HOST_BRANCH])
def test_this_cpu_takes_its_own_repacking_branch(odd_dir: Path, branch: str) -> None:
    """Unforced: the real hardware path, named in the test id."""
    model = load_causal_lm(
        name_or_path=str(odd_dir),
        dtype="bf16",
        quantization={"name": "4bit"},
        for_training=False,
        report=False,
        lora={"enabled": False},
    )
    flags = repacking_flags(model)
    assert {name for name, on in flags.items() if on} == (names(PACKABLE) if branch == "host-repacks" else set())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(tokens()).logits).all()


def test_layers_without_the_repacking_attribute_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    """A bitsandbytes that does not repack has no ``support_avx512bf16_for_cpu``: nothing to turn off."""
    layer = bnb_modules.Linear4bit(64, 100)
    if hasattr(layer, "support_avx512bf16_for_cpu"):
        del layer.support_avx512bf16_for_cpu
    model = torch.nn.Sequential(layer, torch.nn.Linear(100, 3))
    with caplog.at_level(logging.INFO):
        assert limit_cpu_repacking(model, for_training=True) == []
        assert limit_cpu_repacking(model, for_training=False) == []
    assert not repacking_lines(caplog) and not hasattr(layer, "support_avx512bf16_for_cpu")


def test_repacking_is_turned_off_quietly_for_layers_on_a_gpu(caplog: pytest.LogCaptureFixture) -> None:
    """QLoRA on a GPU host whose CPU has AVX512-BF16: the layers sit on the GPU, where the fused CPU kernel never
    runs, so turning its repacking off says nothing (the meta device stands in for CUDA here)."""
    layers = [bnb_modules.Linear4bit(64, 64) for _ in range(2)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = True
    layers[1].weight = torch.nn.Parameter(torch.empty(64, 64, device="meta"), requires_grad=False)  # off the CPU
    with caplog.at_level(logging.INFO):
        assert limit_cpu_repacking(torch.nn.Sequential(layers[1]), for_training=True) == ["0"]
        assert not repacking_lines(caplog) and not layers[1].support_avx512bf16_for_cpu
        layers[1].support_avx512bf16_for_cpu = True
        assert limit_cpu_repacking(torch.nn.Sequential(*layers), for_training=True) == ["0", "1"]
    assert repacking_lines(caplog) == [
        "bitsandbytes CPU repacking is off for 1 of 2 4-bit layers (0): "
        "a packed layer passes no gradient, and validation would pack it."
    ]


def test_device_map_auto_that_fits_one_gpu_does_not_warn_of_a_spill(caplog: pytest.LogCaptureFixture) -> None:
    """The spill warning follows the map the model was loaded with: all on cuda:0 is no spill."""
    from {{ cookiecutter.package_name }}.models.hf_loader import warn_quantized_spill

    assert not warn_quantized_spill("auto", "4bit", {"": 0}) and not caplog.text
    assert not warn_quantized_spill("auto", "4bit", {"model.embed_tokens": 0, "model.layers": 0, "lm_head": 0})
    assert not caplog.text
    assert warn_quantized_spill("auto", "4bit", {"model.layers.0": 0, "model.layers.1": "cpu"})
    assert "stay 4bit there" in caplog.text


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_frozen_weights_load_in_the_precision_this_kind_of_cpu_runs(
    odd_dir: Path, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from {{ cookiecutter.package_name }} import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    assert usable_precision("bf16") == usable_precision("fp16") == ("bf16" if native else "fp32")
    model = load_causal_lm(
        name_or_path=str(odd_dir), dtype="bf16", report=False, lora={"enabled": True, "target_modules": ["q_proj"]}
    )
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {expected}


@pytest.mark.parametrize("cuda", [True, False], ids=["cuda", "no-cuda"])
def test_device_map_and_dtype_follow_cuda(cuda: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }} import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: device.type != "cuda")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    device_map = resolve_device_map(None, quantized=True)
    assert str(device_map[""]).startswith("cuda" if cuda else "cpu")
    assert resolve_device_map(None, quantized=False) is None
    assert usable_precision("bf16") == ("fp16" if cuda else "bf16")  # a GPU without bf16 computes in fp16
    if cuda:
        assert resolve_device_map("cuda", quantized=True) == "cuda"
    else:
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device_map("cuda", quantized=True)


def test_memory_report_of_qlora_training_sees_no_fp32_casts(odd_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QLoRA training keeps embeddings, norms and the head in bf16 (no k-bit preparation casts): the report's
    estimate counts them at 2 bytes and matches what is loaded."""
    from {{ cookiecutter.package_name }} import runtime
    from {{ cookiecutter.package_name }}.models import footprint

    reports: list[dict] = []
    monkeypatch.setattr(footprint, "log_report", reports.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)  # loaded in bf16
    model = load_causal_lm(
        name_or_path=str(odd_dir),
        dtype="bf16",
        quantization={"name": "4bit"},
        lora={"r": 4, "target_modules": ["q_proj"]},
    )
    parameters = {id(p): p for p in model.parameters()}.values()
    assert torch.float32 not in {p.dtype for p in parameters if not p.requires_grad}  # no casts
    (report,) = reports
    base = report["loaded"]["bytes"] - sum(p.numel() * p.element_size() for p in parameters if p.requires_grad)
    assert base >= sum(p.numel() * p.element_size() for p in parameters if not p.requires_grad)
    assert abs(report["estimated_bytes"]["4bit"] - base) <= 0.1 * base  # unquantized parameters at 2 bytes


def test_export_of_a_4bit_run_merges_on_the_cpu_where_a_gpu_is_visible(
    odd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unquantized base may not fit the GPU the 4-bit run trained on: the merge happens on the CPU."""
    from omegaconf import OmegaConf

    from {{ cookiecutter.package_name }} import export, runtime

    run = tmp_path / "run"
    # pretrained weights from disk load in 4 bits with LoRA (QLoRA); a random init would train in full
    overrides = [
        *LM,
        path_override("model.name_or_path", odd_dir),
        "debug=fast",
        "trainer.max_steps=2",
        "task.new_tokens=4",
    ]
    cfg = compose_config([*overrides, "trainer.device=cpu"], output_dir=run)
    train(cfg)
    assert (run / "model" / "adapter_config.json").is_file()  # the run trained a LoRA adapter on 4-bit weights
    saved = compose_config([*overrides, "trainer.device=auto"])  # as a run on a GPU saves it (.hydra/config.yaml)
    (run / ".hydra").mkdir()
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    placed: list[str] = []
    real_place = runtime.place
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU "visible"; any use of it fails here
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(runtime, "place", lambda model, device: placed.append(str(device)) or real_place(model, device))
    handlers = list(logging.getLogger().handlers)
    try:
        output = export.export([path_override("run", run), path_override("output", tmp_path / "export")])
    finally:
        for handler in set(logging.getLogger().handlers) - set(handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    assert placed == ["cpu"]
    log = (output / "export.log").read_text(encoding="utf-8")
    assert "reloaded unquantized on the CPU" in log and "Peak memory of the export" in log
    assert (output / "model.safetensors").is_file() and not (output / "adapter_config.json").exists()


def test_gradient_checkpointing_under_the_older_transformers_name() -> None:
    from {{ cookiecutter.package_name }}.models.hf_loader import enable_gradient_checkpointing

    class OlderModel(torch.nn.Module):  # a transformers release without activation_checkpointing_enable
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict) -> None:
            self.options = gradient_checkpointing_kwargs

    model = OlderModel()
    enable_gradient_checkpointing(model)
    assert model.options == {"use_reentrant": False}


def test_a_full_fine_tune_is_not_loaded_quantized() -> None:
    """Its checkpoint holds every weight in full precision: a 4-bit base with LoRA keys would reject it."""
    from omegaconf import OmegaConf

    from {{ cookiecutter.package_name }}.inference.text import inference_options

    saved = OmegaConf.create({"quantization": {"name": "none"}, "model": {"lora": {"enabled": None}}})
    asked = OmegaConf.create({"quantization": {"name": "4bit"}, "model": {"lora": {"enabled": None}}})
    with pytest.raises(UserError, match="fine-tuned the whole model: leave out quantization=4bit") as error:
        inference_options(saved, asked)
    assert "\n" not in str(error.value)
    assert inference_options(asked, asked) == {"for_training": False}  # a QLoRA run: no fp32 training casts
    assert inference_options(saved, saved) == {}


def test_a_named_device_map_that_spills_a_quantized_model_warns(caplog: pytest.LogCaptureFixture) -> None:
    """transformers keeps unquantized only the CPU modules a dict names: what ``auto`` spills stays 4-bit."""
    from {{ cookiecutter.package_name }}.models.hf_loader import warn_quantized_spill

    assert warn_quantized_spill("auto", "4bit") and "stay 4bit there" in caplog.text
    assert not warn_quantized_spill({"model": 0, "lm_head": "cpu"}, "4bit")  # named: kept unquantized
    assert not warn_quantized_spill("auto", "none") and not warn_quantized_spill("cuda:0", "8bit")
