"""The Hugging Face loader, QLoRA, the text data, the memory report and the LM training run (CPU, offline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.data.common import DataInfo
from {{ cookiecutter.package_name }}.data.hf_source import resolve_source
from {{ cookiecutter.package_name }}.data.text import SAMPLE_CORPUS, TextDataModule, read_documents, train_tokenizer
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.models import footprint
from {{ cookiecutter.package_name }}.models.hf_loader import bnb_config, load_causal_lm, may_offload, resolve_device_map
from {{ cookiecutter.package_name }}.runtime import DTYPES, FROZEN_FROM_FILES, hardware_fallback

from conftest import compose_config, run_module

QUANT = {"none": {"name": "none"}, "8bit": {"name": "8bit"}, "4bit": {"name": "4bit", "double_quant": True}}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama and its tokenizer, written with save_pretrained."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = train_tokenizer(read_documents(SAMPLE_CORPUS), vocab_size=320)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load(folder: Path, dtype: str = "fp32", quantization: str = "none", **kwargs) -> torch.nn.Module:
    options = {"for_training": False, "report": False, "lora": {"enabled": False}, **kwargs}
    return load_causal_lm(name_or_path=str(folder), dtype=dtype, quantization=QUANT[quantization], **options)


def tokens(folder: Path) -> torch.Tensor:
    return torch.randint(4, 300, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_loader_matches_transformers_in_every_precision(tiny_dir: Path, dtype: str) -> None:
    from transformers import AutoModelForCausalLM

    model = load(tiny_dir, dtype)
    assert {p.dtype for p in model.parameters()} == {DTYPES[dtype]}
    direct = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=DTYPES[dtype])
    with torch.no_grad():
        assert torch.equal(model(tokens(tiny_dir)).logits, direct(tokens(tiny_dir)).logits)


@pytest.mark.parametrize(("quantization", "layer"), [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_loader_uses_bitsandbytes_layers(tiny_dir: Path, quantization: str, layer: str) -> None:
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    model = load(tiny_dir, "bf16", quantization)
    projection = model.model.layers[0].self_attn.q_proj
    assert isinstance(projection, getattr(bnb.nn, layer))
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert not isinstance(model.lm_head, getattr(bnb.nn, layer))
    device = model.model.embed_tokens.weight.device  # the trainer's device: this rank's GPU, else the CPU
    direct = AutoModelForCausalLM.from_pretrained(
        tiny_dir,
        dtype=torch.bfloat16,
        device_map={"": str(device)},
        quantization_config=bnb_config(QUANT[quantization], "bf16"),
    )
    with torch.no_grad():
        assert torch.equal(model(tokens(tiny_dir).to(device)).logits, direct(tokens(tiny_dir).to(device)).logits)


def test_training_loads_frozen_weights_in_the_usable_precision(tiny_dir: Path) -> None:
    lora = load_causal_lm(
        name_or_path=str(tiny_dir), dtype="fp16", report=False, lora={"enabled": True, "target_modules": ["q_proj"]}
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = DTYPES[(hardware_fallback("fp16", device) or ("fp16", ""))[0]]  # e.g. fp16 on a CPU becomes bf16
    assert {p.dtype for p in lora.parameters() if not p.requires_grad} == {expected}
    assert {p.dtype for p in lora.parameters() if p.requires_grad} == {torch.float32}
    full = load_causal_lm(name_or_path=str(tiny_dir), dtype="bf16", report=False)
    assert {p.dtype for p in full.parameters()} == {torch.float32}, "full fine-tuning keeps fp32 master weights"


def test_4bit_config_is_nf4_double_quant_in_the_precision_dtype() -> None:
    config = bnb_config(QUANT["4bit"], "fp16")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float16
    assert bnb_config(QUANT["8bit"], "bf16").load_in_8bit and bnb_config(QUANT["none"], "bf16") is None


def test_qlora_lowers_the_loss(tiny_dir: Path) -> None:
    torch.manual_seed(0)
    model = load_causal_lm(
        name_or_path=str(tiny_dir),
        dtype="bf16",
        quantization=QUANT["4bit"],
        report=False,
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    assert getattr(model, FROZEN_FROM_FILES)  # DDP leaves the frozen 4-bit base out of its broadcast
    optimizer = torch.optim.AdamW(trainable, lr=2e-2)
    device = trainable[0].device
    batch = tokens(tiny_dir).to(device)
    losses = []
    for _ in range(6):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert set(model.state_dict()) == {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("dtype", "quantization", "mode"),
    [("fp32", "none", "fp32"), ("bf16", "none", "bf16"), ("bf16", "8bit", "8bit"), ("bf16", "4bit", "4bit")],
)
def test_estimates_within_10_percent_of_measured(tiny_dir: Path, dtype: str, quantization: str, mode: str) -> None:
    report = footprint.build_report(load(tiny_dir, dtype, quantization), "tiny", dtype, quantization)
    measured, estimated = report["loaded"]["bytes"], report["estimated_bytes"][mode]
    assert abs(estimated - measured) <= 0.1 * measured, (mode, estimated, measured)
    assert report["parameters"] == sum(p.numel() for p in load(tiny_dir).parameters())


def test_fit_advice_suggests_a_smaller_mode() -> None:
    estimates = {"fp32": 27e9, "fp16": 13.5e9, "bf16": 13.5e9, "8bit": 7.5e9, "4bit": 3.9e9}
    advice = footprint.fit_advice(estimates, "bf16", int(8e9))
    assert advice.startswith("needs 13.50 GB in bf16, 8.00 GB free: quantization=8bit needs about 7.50 GB")
    assert footprint.fit_advice(estimates, "4bit", int(8e9)).startswith("fits")


def test_fit_advice_does_not_count_the_loaded_model_twice(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Free memory is measured with the model loaded; the estimate includes the model, so add it back."""
    model = load(tiny_dir)
    resident = footprint.resident_bytes(model)
    target = next((device for device in resident if device.startswith("cuda")), "cpu")
    estimate = footprint.estimate_bytes(model.config)[1]["fp32"]
    monkeypatch.setattr(footprint, "free_bytes", lambda device: estimate - resident[target] // 2)
    assert footprint.build_report(model, "tiny", "fp32", "none")["fit"].startswith("fits")


def test_quantized_model_is_never_moved(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bitsandbytes layers are placed by the loader on the trainer's device; the trainer must not .to() them."""
    from {{ cookiecutter.package_name }} import runtime
    from {{ cookiecutter.package_name }}.training.precision import Precision
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    model = load(tiny_dir, "bf16", "4bit", lora={"enabled": True, "target_modules": ["q_proj"]})
    assert getattr(model, runtime.PLACED, False) and not getattr(load(tiny_dir), runtime.PLACED, False)
    trainer = Trainer(precision=Precision("bf16"), output_dir=tmp_path)
    assert {p.device for p in model.parameters()} == {trainer.device}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a quantized model was moved with .to()")

    monkeypatch.setattr(model, "to", refuse)
    assert runtime.place(model, trainer.device) is model  # what Trainer.fit does with the model


def test_device_map_follows_the_trainer_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_device_map(None, quantized=False, device="cuda:1") is None  # the trainer moves it
    assert resolve_device_map(None, quantized=True, device="cpu") == {"": "cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device_map(None, quantized=True, device="cuda:1") == {"": "cuda:1"}
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device_map(None, quantized=True, device="auto") == {"": "cuda:2"}
    assert resolve_device_map(None, quantized=True, device="cuda") == {"": "cuda:2"}
    cfg = compose_config(
        ["task=causal_lm", "data=text", "model=causal_lm", "trainer.device=cuda:1"], output_dir=tmp_path
    )
    assert cfg.model.device == "cuda:1"


def test_ddp_with_a_spread_device_map_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for spread in ("auto", {"model.layers.0": 0, "model.layers.1": 1}):
        with pytest.raises(UserError, match="DDP") as error:
            resolve_device_map(spread, quantized=True)
        assert "\n" not in str(error.value) and "model.device_map=null" in str(error.value)
    assert resolve_device_map({"": "cpu"}, quantized=True) == {"": "cpu"}


def test_offload_keeps_offloaded_modules_unquantized() -> None:
    assert may_offload("auto") and may_offload({"model.layers": 0, "lm_head": "cpu"})
    assert not may_offload(None) and not may_offload("cpu") and not may_offload({"": "cuda:0"})
    assert bnb_config(QUANT["4bit"], "bf16", offload=True).llm_int8_enable_fp32_cpu_offload
    assert bnb_config(QUANT["8bit"], "bf16", offload=True).llm_int8_enable_fp32_cpu_offload
    assert not bnb_config(QUANT["4bit"], "bf16").llm_int8_enable_fp32_cpu_offload


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_gradient_checkpointing_is_on_and_non_reentrant(tiny_dir: Path, quantization: str) -> None:
    """Full fine-tuning used to ignore model.gradient_checkpointing; QLoRA used reentrant checkpointing."""
    lora = {"enabled": quantization != "none", "target_modules": ["q_proj"]}
    model = load_causal_lm(
        name_or_path=str(tiny_dir),
        dtype="bf16",
        quantization=QUANT[quantization],
        report=False,
        lora=lora,
        gradient_checkpointing=True,
    )
    layers = [module for module in model.modules() if type(module).__name__ == "LlamaDecoderLayer"]
    assert layers and all(layer.gradient_checkpointing for layer in layers)
    assert all(layer._gradient_checkpointing_func.keywords == {"use_reentrant": False} for layer in layers)
    model.train()
    batch = tokens(tiny_dir).to(next(model.parameters()).device)
    model(input_ids=batch, labels=batch).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.gpu
def test_4bit_with_cpu_offload_loads_on_a_gpu(tiny_dir: Path) -> None:
    import bitsandbytes as bnb

    device_map = {
        "model.embed_tokens": 0,
        "model.layers.0": 0,
        "model.layers.1": "cpu",
        "model.norm": 0,
        "model.rotary_emb": 0,
        "lm_head": 0,
    }
    model = load(tiny_dir, "bf16", "4bit", device_map=device_map)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert not isinstance(model.model.layers[1].self_attn.q_proj, bnb.nn.Linear4bit)  # offloaded: unquantized
    with torch.no_grad():
        assert torch.isfinite(model(tokens(tiny_dir).to("cuda:0")).logits).all()


@pytest.mark.gpu
def test_qlora_run_resumes_on_the_gpu(tiny_dir: Path, tmp_path: Path) -> None:
    """A 4-bit LoRA run on the GPU, stopped after one epoch, resumed from its last.pt (CPU-mapped) for a second."""
    common = [
        path_override("model.name_or_path", tiny_dir),
        "quantization=4bit",
        "precision=bf16",
        "trainer.device=cuda",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "data.batch_size=4",
        "logger=csv",
        "task=causal_lm",
        "data=text",
        "model=causal_lm",
        path_override("hydra.run.dir", tmp_path),
    ]
    first = run_module("train", "trainer.max_epochs=1", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Training on cuda:0" in first.stderr
    second = run_module("train", "trainer.max_epochs=2", *common)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed from" in second.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 2


def test_offloaded_weights_are_not_counted(tiny_dir: Path) -> None:
    model = load(tiny_dir)
    full = footprint.resident_bytes(model)["cpu"]
    layer = model.model.layers[1]
    moved = sum(p.numel() * p.element_size() for p in layer.parameters())
    layer.to("meta")
    assert footprint.resident_bytes(model)["cpu"] == full - moved


def test_memory_app_writes_memory_json(tiny_dir: Path, tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.memory import memory_report

    cfg = compose_config(
        [path_override("model.name_or_path", tiny_dir), "quantization=8bit", "precision=bf16"],
        output_dir=tmp_path,
        config_name="memory",
    )
    memory_report(cfg)
    report = json.loads((tmp_path / "memory.json").read_text())
    assert set(report) >= {"model", "parameters", "estimated_bytes", "loaded"}
    assert set(report["estimated_bytes"]) == {"fp32", "fp16", "bf16", "8bit", "4bit"}
    assert {"precision", "quantization", "bytes", "device_map"} <= set(report["loaded"])
    assert report["loaded"]["quantization"] == "8bit" and report["loaded"]["bytes"] > 0


def test_text_data_packs_blocks(tiny_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": "one plus two is three. " * 20}) for _ in range(10)))
    data = TextDataModule(path=str(path), tokenizer=str(tiny_dir), block_size=16, batch_size=4)
    info = data.setup()
    batch = next(iter(data.loader("train")))
    assert batch.shape == (4, 16) and batch.dtype == torch.long
    assert info.tokenizer.decode(batch[0]).strip()


def bad_inputs(tiny_dir: Path, tmp_path: Path) -> dict:
    return {
        "hub id offline": (lambda: resolve_source("nobody-here/no-such-model-xyz"), "HF_HUB_OFFLINE"),
        "missing local path": (lambda: resolve_source(str(tmp_path / "missing" / "model")), "no such folder"),
        "folder without a model": (lambda: resolve_source(str(tmp_path)), "config.json"),
        "missing data file": (lambda: TextDataModule(path=str(tmp_path / "none.txt")).setup(), "no such file"),
        "unknown quantization": (lambda: bnb_config({"name": "3bit"}, "bf16"), "quantization"),
        "quantized without LoRA": (
            lambda: load_causal_lm(name_or_path=str(tiny_dir), quantization=QUANT["4bit"], lora={"enabled": False}),
            "LoRA",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "hub id offline",
        "missing local path",
        "folder without a model",
        "missing data file",
        "unknown quantization",
        "quantized without LoRA",
    ],
)
def test_bad_input_gets_one_line(tiny_dir: Path, tmp_path: Path, case: str) -> None:
    action, words = bad_inputs(tiny_dir, tmp_path)[case]
    with pytest.raises(UserError) as error:
        action()
    assert words in str(error.value) and "\n" not in str(error.value)


def test_missing_bitsandbytes_gets_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(UserError, match="needs bitsandbytes.*pip install bitsandbytes"):
        bnb_config(QUANT["4bit"], "bf16")


def test_full_model_result_loads_back(tiny_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from {{ cookiecutter.package_name }}.tasks.causal_lm import CausalLMTask

    task = CausalLMTask()
    task.bind(DataInfo(tokenizer=train_tokenizer(read_documents(SAMPLE_CORPUS), vocab_size=320)))
    model = load(tiny_dir)
    folder = task.save_result(model, tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    again = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(model(tokens(tiny_dir)).logits, again(tokens(tiny_dir)).logits)


def test_qlora_training_from_the_command_line(tiny_dir: Path, tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    run_dir = tmp_path / "run"
    result = run_module(
        "train",
        path_override("model.name_or_path", tiny_dir),
        "quantization=4bit",
        "precision=bf16",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "task.new_tokens=4",
        "data.batch_size=4",
        "logger=csv",
        "task=causal_lm",
        "data=text",
        "model=causal_lm",
        path_override("hydra.run.dir", run_dir),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Memory of" in result.stderr and "LoRA:" in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["test"]["test/perplexity"] > 1
    assert (run_dir / "model" / "adapter_model.safetensors").is_file()
    assert (run_dir / "tables" / "generated_samples.csv").is_file()
    adapter = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert adapter and all("lora_" in key for key in adapter)
    model = AutoPeftModelForCausalLM.from_pretrained(run_dir / "model")
    with torch.no_grad():
        assert torch.isfinite(model(tokens(tiny_dir)).logits).all()


def test_bad_model_path_fails_in_one_line_from_the_command_line(tmp_path: Path) -> None:
    result = run_module(
        "train",
        "model.name_or_path=./no/such/model",
        "task=causal_lm",
        "data=text",
        "model=causal_lm",
        path_override("hydra.run.dir", tmp_path),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "no such folder" in result.stderr


RANDOM_TINY = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "vocab_size": 300,
}


@pytest.mark.parametrize("lora", [None, True], ids=["lora-unset", "lora-asked"])
def test_a_random_init_trains_in_full_unless_lora_is_asked(
    lora: bool | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Frozen random 4-bit weights learn little through adapters: unasked, a random init loads unquantized and
    trains every weight; asked, it keeps QLoRA. Each way says so in one warning, and the saved init is marked."""
    from {{ cookiecutter.package_name }}.models.hf_loader import RANDOM_INIT_NOTE, is_random_init

    with caplog.at_level("WARNING"):
        model = load_causal_lm(
            name_or_path=None,
            config=RANDOM_TINY,
            quantization=QUANT["4bit"],
            dtype="bf16",
            init_dir=str(tmp_path / "random_init"),
            report=False,
            lora={"enabled": lora, "target_modules": ["q_proj"]},
        )
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    quantized = [name for name, module in model.named_modules() if "4bit" in type(module).__name__]
    if lora:
        assert quantized and trainable and all("lora_" in name for name in trainable)
        assert len(warnings) == 1 and "learns little" in warnings[0]
    else:
        assert not quantized and len(trainable) == len(list(model.parameters()))
        assert len(warnings) == 1 and "trains in full" in warnings[0]
    assert (tmp_path / "random_init" / RANDOM_INIT_NOTE).is_file() and is_random_init(tmp_path / "random_init")


def test_the_kernels_community_notice_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import {{ cookiecutter.package_name }}.models.hf_loader  # noqa: F401 - installs the filter

    with caplog.at_level("INFO"):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "not available in the local cache"
        )
    assert [record.levelname for record in caplog.records] == ["INFO"]
    assert "Results are the same" in caplog.records[0].getMessage()


def test_generation_after_a_pass_runs_under_the_precisions_autocast(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The samples logged after testing generate under the precision's autocast, as predict does (fp32 weights
    with flash-attention would otherwise fail after the last epoch; a 7B model would generate in fp32)."""
    from {{ cookiecutter.package_name }}.tasks.causal_lm import CausalLMTask
    from {{ cookiecutter.package_name }}.training.precision import Precision
    from {{ cookiecutter.package_name }}.training.trainer import evaluation_pass

    model = load(tiny_dir)
    task = CausalLMTask(new_tokens=4)
    from transformers import AutoTokenizer

    task.bind(DataInfo(tokenizer=AutoTokenizer.from_pretrained(tiny_dir)))
    seen: list[bool] = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(torch.is_autocast_enabled("cpu")) or generate(**kw))
    cpu = torch.device("cpu")
    evaluation = evaluation_pass(model, task.evaluation("test"), [tokens(tiny_dir)], None, cpu, Precision("bf16"))
    assert evaluation.tables()["generated_samples"][1] and seen == [True]


class _CountedSyncs:
    """Counts the project's host reads of tensors (.item(), int(), float(), bool(), .tolist()) and cross-rank
    agreements. (transformers' own read of an all-ones attention mask, once per forward, is not ours.)"""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import {{ cookiecutter.package_name }}
        from {{ cookiecutter.package_name }}.training import distributed

        self.package = str(Path({{ cookiecutter.package_name }}.__file__).parent)
        self.reads = self.agreements = 0
        for name in ("item", "__int__", "__float__", "__bool__", "tolist"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(original))
        monkeypatch.setattr(distributed, "any_rank", self._agree)

    def _counted(self, original):
        def read(tensor, *args):
            self.reads += sys._getframe(1).f_code.co_filename.startswith(self.package)
            return original(tensor, *args)

        return read

    def _agree(self, flag: bool, device: torch.device) -> bool:
        self.agreements += 1
        return flag


def test_training_steps_read_nothing_back_between_log_steps(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 optimizer steps of answer-only (chat) batches, 2 micro-batches each, logging every 4th: the host reads
    the loss at the 2 log steps only, and the ranks agree (loss finite, stop signals) only there; the label
    count of the chat loss stays on the device and stop signals are not compared at every step."""
    from {{ cookiecutter.package_name }}.tasks.causal_lm import CausalLMTask
    from {{ cookiecutter.package_name }}.training.early_stopping import EarlyStopping
    from {{ cookiecutter.package_name }}.training.precision import Precision
    from {{ cookiecutter.package_name }}.training.state import TrainingState
    from {{ cookiecutter.package_name }}.training.trainer import Trainer

    model = load(tiny_dir).train()
    trainer = Trainer(
        Precision("fp32"),
        tiny_dir / "out",
        accumulate_grad_batches=2,
        log_every_n_steps=4,
        progress_bar=False,
        device="cpu",
    )
    trainer.task, trainer.model = CausalLMTask(), model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer.state = TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=trainer.precision.grad_scaler(),
        early_stopping=EarlyStopping("val/loss", "min"),
        loss_sum=torch.zeros(()),
    )
    ids = tokens(tiny_dir)
    labels = ids.clone()
    labels[:, :12] = -100  # the prompt half: answer tokens only
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}] * 16
    trainer.signals._several = True  # as under DDP: agreeing on stop signals is a collective
    counted = _CountedSyncs(monkeypatch)
    trainer.train_epoch(batches, len(batches))
    assert trainer.state.global_step == 8
    assert (counted.reads, counted.agreements) == (2, 4)  # loss.item() and any_rank(finite), any_rank(stop): x2


def test_bitsandbytes_without_a_cuda_kernel_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CUDA host whose bitsandbytes build lacks the kernel, bitsandbytes swaps in a mock library that raises
    at its first native call: doctor says so, and loading stops in one line naming both versions."""
    import bitsandbytes
    from bitsandbytes import cextension

    from {{ cookiecutter.package_name }}.models.hf_loader import doctor_answer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "usable on a CUDA GPU" in doctor_answer()[1]  # the real (CPU) library
    monkeypatch.setattr(cextension, "lib", cextension.ErrorHandlerMockBNBNativeLibrary("libbitsandbytes_cuda128.so"))
    with pytest.raises(RuntimeError):  # what a user met mid-load before
        cextension.lib.cquantize_blockwise_fp16_nf4()
    answer = doctor_answer()[1]
    assert answer.startswith("NOT usable") and "CUDA 12.8" in answer and bitsandbytes.__version__ in answer
    with pytest.raises(
        UserError, match=rf"bitsandbytes {bitsandbytes.__version__} has no CUDA kernel.*CUDA 12\.8"
    ) as error:
        bnb_config(QUANT["4bit"], "bf16")
    assert "\n" not in str(error.value)


def test_qlora_keeps_embeddings_and_head_in_the_compute_dtype(tiny_dir: Path) -> None:
    """No fp32 casts of the unquantized weights (peft's k-bit preparation would make embeddings, head and so the
    residual stream fp32); the adapters train in fp32; the memory report counts the base as loaded."""
    from transformers import Qwen2Config

    model = load_causal_lm(
        name_or_path=str(tiny_dir),
        dtype="bf16",
        quantization=QUANT["4bit"],
        for_training=True,
        report=False,
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    norms = [p.dtype for name, p in model.named_parameters() if "norm" in name]
    assert norms and set(norms) <= {torch.bfloat16, torch.float32}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # the adapters
    report = footprint.build_report(model, "tiny", "bf16", "4bit")
    base = report["loaded"]["bytes"] - sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    assert abs(report["estimated_bytes"]["4bit"] - base) <= 0.1 * base
    qwen_7b = Qwen2Config(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    kept = footprint.estimate_bytes(qwen_7b, True, footprint.unquantized_bytes("bf16"))[1]["4bit"]
    upcast = footprint.estimate_bytes(qwen_7b, True, 4)[1]["4bit"]
    assert kept < 5.3 * 2**30 and upcast - kept > 2.1e9  # README: about 5.2 GiB; the casts cost 2.2 GB


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_twenty_compiled_lm_steps_equal_eager(tmp_path: Path, lora: bool) -> None:
    """trainer.compile=true compiles each decoder layer; 20 fp32 steps give the eager weights (to 1e-4)."""
    from {{ cookiecutter.package_name }}.train import train

    weights = {}
    for compiled in (False, True):
        overrides = ["experiment=tiny_lm", "logger=csv", "trainer.device=cpu", "precision=fp32", "scheduler=none"]
        overrides += ["trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "trainer.max_epochs=4"]
        overrides += [f"model.lora.enabled={str(lora).lower()}", f"trainer.compile={str(compiled).lower()}"]
        train(compose_config(overrides, output_dir=tmp_path / str(compiled)))
        weights[compiled] = torch.load(tmp_path / str(compiled) / "checkpoints" / "last.pt", weights_only=True)
    assert weights[True]["global_step"] == 20
    assert weights[True]["model"].keys() == weights[False]["model"].keys()
    assert not any("_orig_mod" in key for key in weights[True]["model"])
    for key, value in weights[False]["model"].items():
        torch.testing.assert_close(weights[True]["model"][key], value, atol=1e-4, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_qlora_compiles_on_the_cpu(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """bitsandbytes' 4-bit layers compile inside each block; the adapters still learn."""
    import logging

    from {{ cookiecutter.package_name }}.training.compiling import compile_model

    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    model = load_causal_lm(
        name_or_path=str(tiny_dir), dtype="bf16", quantization=QUANT["4bit"], report=False, lora=lora
    )
    with caplog.at_level(logging.INFO):
        assert compile_model(model, True, torch.device("cpu"))
    assert "2 LlamaDecoderLayer blocks" in caplog.text and "trainer.compile is off" not in caplog.text
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-2)
    batch = tokens(tiny_dir)
    losses = []
    for _ in range(4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_blocks_of_a_transformer_are_its_layers() -> None:
    import transformers

    from {{ cookiecutter.package_name }}.training import compiling

    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2
    )
    model = transformers.LlamaForCausalLM(config)
    assert compiling.blocks(model) == list(model.model.layers)
    assert compiling.blocks(torch.nn.Sequential(torch.nn.Linear(2, 2))) == []
