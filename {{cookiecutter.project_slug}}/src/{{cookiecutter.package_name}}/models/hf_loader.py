"""Load a causal LM with transformers: dtype, 8-/4-bit bitsandbytes, device_map, offload, LoRA/QLoRA.

``model.name_or_path`` is a hub id or a folder written by ``save_pretrained``; when it
is null, a small model is initialised at random from ``model.config`` (offline).
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from {{ cookiecutter.package_name }}.data.common import DataInfo
from {{ cookiecutter.package_name }}.data.hf_source import resolve_source
from {{ cookiecutter.package_name }}.errors import FRACTION, UserError, at_least, check_value, first_line
from {{ cookiecutter.package_name }}.models import footprint
from {{ cookiecutter.package_name }}.runtime import (
    DTYPES,
    FROZEN_FROM_FILES,
    choose_device,
    is_main_process,
    launched_distributed,
    mark_placed,
    mark_unshardable,
    usable_precision,
    world_size,
)

log = logging.getLogger(__name__)

QUANTIZED = {"8bit", "4bit"}
# FSDP2 cannot shard bitsandbytes' packed 4-bit/8-bit weights (these parameter classes).
PACKED_WEIGHTS = {"Params4bit", "Int8Params"}
FSDP_REFUSAL = (
    "trainer=fsdp cannot shard a 4-bit/8-bit (QLoRA) model: use trainer=ddp with quantization=4bit "
    "(QLoRA on every GPU), or quantization=none precision=bf16 for LoRA on a sharded bf16 base."
)
LORA_RULES = {"r": at_least(1), "dropout": FRACTION}  # what model.lora.* accepts
CPU_PACK_BLOCK = 32  # bitsandbytes' fused CPU 4-bit kernel packs out_features in blocks of this size


class KernelNotice(logging.Filter):
    """bitsandbytes warns, on CPUs with AVX512-BF16, that its optional fused 4-bit kernel from the Hub's
    ``kernels-community`` did not load; that reads like a failure and is not one: one info line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "kernels-community" not in record.getMessage():
            return True
        log.info(
            "bitsandbytes uses its built-in 4-bit CPU kernel: the optional faster one (the Hub's "
            "kernels-community, `pip install kernels`) is not in the local cache. Results are the same."
        )
        return False


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(KernelNotice())


def quantization_name(quantization: Any) -> str:
    """``none``, ``8bit`` or ``4bit`` from a quantization config node (or a plain string)."""
    name = quantization.get("name", "none") if hasattr(quantization, "get") else quantization
    name = "none" if name in (None, False) else str(name)
    if name not in QUANTIZED | {"none"}:
        raise UserError(f"quantization {name!r} is unknown: use quantization=none, 8bit or 4bit.")
    return name


def missing_cuda_kernel() -> str | None:
    """Why bitsandbytes cannot run on this CUDA GPU, or None.

    Without a native library for this torch's CUDA, bitsandbytes swaps in a mock that raises a RuntimeError
    at the first native call (mid-load or mid-training); this reads the swap at import time instead.
    """
    if not torch.cuda.is_available():
        return None
    import bitsandbytes
    from bitsandbytes import cextension

    mock = getattr(cextension, "ErrorHandlerMockBNBNativeLibrary", None)
    if mock is None or not isinstance(getattr(cextension, "lib", None), mock):
        return None
    return (
        f"bitsandbytes {bitsandbytes.__version__} has no CUDA kernel for this torch (CUDA {torch.version.cuda}): "
        "pip install -U bitsandbytes for a build that matches it, or use quantization=none"
    )


def require_bitsandbytes(name: str) -> None:
    """Fail in one line when ``quantization`` needs bitsandbytes and it is not installed or has no CUDA kernel."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(
            f"quantization={name} needs bitsandbytes, which is not installed: "
            "pip install bitsandbytes (or pip install -e '.[quant]'), or use quantization=none."
        ) from None
    problem = missing_cuda_kernel()
    if problem:
        raise UserError(f"quantization={name}: {problem}.")


def doctor_answer() -> tuple[str, str]:
    """For ``doctor``: whether 8-/4-bit loading can work here."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes?", "not installed: quantization=8bit|4bit needs `pip install bitsandbytes`"
    try:
        import bitsandbytes
    except Exception as error:  # noqa: BLE001 - any import failure is the answer
        return (
            "bitsandbytes?",
            f"installed but does not import ({type(error).__name__}: {first_line(error)[:120]})",
        )
    problem = missing_cuda_kernel()
    if problem:
        return "bitsandbytes?", f"NOT usable: {problem}"
    where = "a CUDA GPU" if torch.cuda.is_available() else "the CPU only (slow; 4-bit training wants a CUDA GPU)"
    return "bitsandbytes?", f"{bitsandbytes.__version__}, usable on {where}"


def bnb_config(quantization: Any, dtype: str, offload: bool = False) -> Any:
    """The ``BitsAndBytesConfig`` for ``quantization`` (None for ``none``); 4-bit computes in ``dtype``.

    ``offload``: some modules may land on the CPU or disk (``device_map=auto``); they stay unquantized
    there (bitsandbytes' ``llm_int8_enable_fp32_cpu_offload``), without which loading fails.
    """
    name = quantization_name(quantization)
    if name == "none":
        return None
    require_bitsandbytes(name)
    from transformers import BitsAndBytesConfig

    options = dict(quantization) if hasattr(quantization, "items") else {}
    if name == "8bit":
        # bitsandbytes logs "inputs will be cast to float16" at every 8-bit matmul: keep its errors only.
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        return BitsAndBytesConfig(
            load_in_8bit=True,
            llm_int8_threshold=float(options.get("llm_int8_threshold", 6.0)),
            llm_int8_enable_fp32_cpu_offload=offload,
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        llm_int8_enable_fp32_cpu_offload=offload,
        bnb_4bit_quant_type=options.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(options.get("double_quant", True)),
        bnb_4bit_compute_dtype=DTYPES[dtype],
    )


def model_config(
    name_or_path: str | None,
    config: dict[str, Any] | None,
    tokenizer: Any = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """The transformers config of the model to load: the saved one, or one built from ``config``."""
    from transformers import AutoConfig

    if not names_no_weights(name_or_path):
        return AutoConfig.from_pretrained(
            resolve_source(str(name_or_path), revision), revision=revision, trust_remote_code=trust_remote_code
        )
    options = dict(config or {})
    model_type = options.pop("model_type", "llama")
    if tokenizer is not None:
        options.setdefault("vocab_size", len(tokenizer))
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(tokenizer, key, None) is not None:
                options.setdefault(key, getattr(tokenizer, key))
    return AutoConfig.for_model(model_type, **options)


RANDOM_INIT_NOTE = "RANDOM_INIT.txt"  # marks a folder of random weights (a run's random_init/)
RANDOM_INIT_TEXT = (
    "The randomly initialised weights (and the tokenizer) this run started from, written because\n"
    "model.name_or_path was null. evaluate, predict and export load them to rebuild the model before\n"
    "they read checkpoints/; keep this folder with the run.\n"
)


def names_no_weights(name_or_path: Any) -> bool:
    """True for ``model.name_or_path=null``: the model starts from random weights made here."""
    return name_or_path in (None, "", "null")


def is_random_init(name_or_path: Any) -> bool:
    """True for ``name_or_path=null`` (a random init) and for a run's saved ``random_init/`` folder."""
    return names_no_weights(name_or_path) or (Path(str(name_or_path)) / RANDOM_INIT_NOTE).is_file()


def plan_random_training(quant: str, use_lora: bool | None) -> tuple[str, bool]:
    """How a random init trains: in full and unquantized unless LoRA is asked for (frozen random weights,
    4- or 8-bit ones above all, learn little through adapters alone); either way with one warning if quantized."""
    if use_lora:
        if quant in QUANTIZED:
            log.warning(
                "A random model quantized to %s learns little: its random weights stay frozen and only "
                "the LoRA adapters train. Drop model.lora.enabled=true to train it in full, or quantize a "
                "pretrained model (model.name_or_path=...).",
                quant,
            )
        return quant, True
    if quant in QUANTIZED:
        log.warning(
            "quantization=%s is not applied to a random init (model.name_or_path=null): frozen random "
            "weights would learn little through LoRA alone, so it trains in full. Quantize a pretrained "
            "model instead, or set model.lora.enabled=true to force QLoRA.",
            quant,
        )
    return "none", False


def random_init(config: dict[str, Any], tokenizer: Any, folder: Path) -> str:
    """Save a randomly initialised model (and its tokenizer) to ``folder``; return the folder."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(model_config(None, config, tokenizer))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    (folder / RANDOM_INIT_NOTE).write_text(RANDOM_INIT_TEXT, encoding="utf-8")
    log.info(
        "Initialised a random %s model (%.2fM parameters) in %s.",
        model.config.model_type,
        sum(p.numel() for p in model.parameters()) / 1e6,
        folder,
    )
    return str(folder)


def shared_random_init(config: dict[str, Any], tokenizer: Any, folder: Path) -> str:
    """:func:`random_init` on rank 0 only; under torchrun the other ranks wait, then load the same weights."""
    together = world_size() > 1 and torch.distributed.is_initialized()
    if together:
        shared = [str(folder)]
        torch.distributed.broadcast_object_list(shared, src=0)  # init_dir=null: rank 0's temporary folder
        folder = Path(shared[0])
    if is_main_process():
        random_init(config, tokenizer, folder)
    if together:
        torch.distributed.barrier()
    return str(folder)


def resolve_device_map(device_map: Any, quantized: bool, device: torch.device | str = "auto") -> Any:
    """``auto``/``cpu``/``cuda``/a dict, as given; quantized models need one, so null maps all to ``device``.

    ``device`` is the trainer's (``trainer.device``: ``auto`` is this rank's GPU, else the CPU), so
    the loader and the trainer agree on where a model that must not be moved lives.
    """
    if device_map in (None, "null", "none"):
        if not quantized:
            return None
        return {"": str(choose_device(str(device)))}
    if isinstance(device_map, str) and device_map.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device_map={device_map} but no CUDA GPU is visible: use model.device_map=cpu or auto.")
    if launched_distributed() and not _single_device(device_map):
        raise UserError(
            f"model.device_map={device_map} spreads one model over several devices, which DDP cannot "
            "wrap: with trainer=ddp leave model.device_map=null (each rank loads to its own GPU)."
        )
    if hasattr(device_map, "items"):
        return dict(device_map)
    return device_map


def _single_device(device_map: Any) -> bool:
    """True for ``cpu``/``cuda:1``/``{"": "cuda:0"}``-like maps; False for ``auto``, ``balanced``, split dicts."""
    if hasattr(device_map, "items"):
        return len({str(value) for value in dict(device_map).values()}) == 1
    return str(device_map).split(":")[0] in {"cpu", "cuda", "mps", "xpu"} or str(device_map).isdigit()


def may_offload(device_map: Any) -> bool:
    """Whether a device map may put weights on the CPU or disk beside the GPU (``auto``, or a dict saying so)."""
    if device_map is None or _single_device(device_map):
        return False
    if hasattr(device_map, "items"):
        return bool({str(value) for value in dict(device_map).values()} & {"cpu", "disk"})
    return True  # auto/balanced/sequential: accelerate spills what does not fit


def warn_quantized_spill(device_map: Any, quantization: str, placed: Mapping[str, Any] | None = None) -> bool:
    """Warn (and return True) when a named device map (``auto``...) spilled layers of a quantized model.

    transformers picks the modules to keep unquantized from the device map's CPU and disk entries before
    it expands a named map, so layers that ``auto`` spills stay 8-/4-bit on the CPU. Only a dict that
    names the spilled modules keeps them unquantized there (``llm_int8_enable_fp32_cpu_offload``).
    ``placed``: the map the model was loaded with (``hf_device_map``); one that puts everything on GPUs
    (the model fits) spilled nothing, so nothing is said.
    """
    if quantization not in QUANTIZED or not isinstance(device_map, str) or not may_offload(device_map):
        return False
    if placed is not None and not {str(value) for value in placed.values()} & {"cpu", "disk"}:
        return False
    log.warning(
        "model.device_map=%s with quantization=%s: layers it spills to the CPU stay %s there (transformers "
        "chooses the unquantized modules before it expands %s); to keep them unquantized set model.device_map "
        "in a config file to a dict of module name: device that names the CPU's modules.",
        device_map,
        quantization,
        quantization,
        device_map,
    )
    return True


def max_memory_map(max_memory: Any) -> dict[Any, str] | None:
    """``{"0": "10GiB", "cpu": "30GiB"}`` with GPU indices as ints, as accelerate expects."""
    if not max_memory:
        return None
    return {int(key) if str(key).isdigit() else str(key): str(value) for key, value in dict(max_memory).items()}


def cpu_packable(layer: Any) -> bool:
    """Whether bitsandbytes' CPU packer takes this 4-bit layer: out_features in blocks of 32 and
    in_features in whole quantization blocks (it reshapes the per-block scales to rows)."""
    weight = getattr(layer, "weight", None)
    blocksize = getattr(getattr(weight, "quant_state", None), "blocksize", None) or getattr(weight, "blocksize", 64)
    return layer.out_features % CPU_PACK_BLOCK == 0 and layer.in_features % blocksize == 0


def limit_cpu_repacking(model: nn.Module, for_training: bool) -> list[str]:
    """Turn bitsandbytes' CPU weight repacking off where it would break ``model``; return those layers' names.

    On a CPU with AVX512-BF16, a ``Linear4bit`` whose ``support_avx512bf16_for_cpu`` is set repacks its
    weights for a fused kernel the first time it runs in eval mode without grad, and stays packed. The
    packer fails on shapes :func:`cpu_packable` rejects, and a packed layer passes no gradient: the first
    validation would freeze every adapter behind it. So a model loaded for training keeps all its 4-bit
    layers unpacked; for inference only those the packer cannot take. Without the attribute
    (bitsandbytes that does not repack) nothing changes.
    """
    layers = {
        name: layer for name, layer in model.named_modules() if getattr(layer, "support_avx512bf16_for_cpu", False)
    }
    names = [name for name, layer in layers.items() if for_training or not cpu_packable(layer)]
    for name in names:
        layers[name].support_avx512bf16_for_cpu = False
    on_cpu = [
        name
        for name in names
        if getattr(layers[name], "weight", None) is not None and layers[name].weight.device.type == "cpu"
    ]
    if on_cpu:  # on a GPU host (QLoRA on CUDA) the fused CPU kernel never runs: nothing worth saying
        shown = ", ".join(on_cpu[:3]) + (f" and {len(on_cpu) - 3} more" if len(on_cpu) > 3 else "")
        reason = (
            "a packed layer passes no gradient, and validation would pack it"
            if for_training
            else f"out_features is not a multiple of {CPU_PACK_BLOCK} or in_features not whole quantization blocks"
        )
        log.info(
            "bitsandbytes CPU repacking is off for %d of %d 4-bit layers (%s): %s.",
            len(on_cpu),
            len(layers),
            shown,
            reason,
        )
    return names


def keep_trainable_state_only(model: nn.Module) -> None:
    """Make ``state_dict``/``load_state_dict`` cover only trainable weights (the adapters).

    Checkpoints of a LoRA model then hold megabytes, not the frozen (possibly quantized) base.
    """
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}

    def drop_frozen(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
        for key in list(state):
            if key[len(prefix) :] not in trainable:
                del state[key]

    def allow_missing_frozen(module: nn.Module, incompatible: Any) -> None:
        incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if key in trainable]

    model.register_state_dict_post_hook(drop_frozen)
    model.register_load_state_dict_post_hook(allow_missing_frozen)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass; non-reentrant, which needs no input gradients.

    transformers releases that predate ``activation_checkpointing_enable`` have only the older name.
    """
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def freeze_quantized_base(model: nn.Module) -> None:
    """Prepare a k-bit model for LoRA: freeze every base weight, casting nothing.

    peft's ``prepare_model_for_kbit_training`` also casts every unquantized weight to fp32: the embeddings
    and output head (+2.2 GB for Qwen2.5-7B) and so the whole residual stream. Here they stay in the compute
    dtype, as TRL's SFT trainer keeps them; the adapters peft adds train in fp32.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def add_lora(model: nn.Module, lora: dict[str, Any], quantized: bool, gradient_checkpointing: bool) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (over a frozen base, in its compute dtype, when quantized)."""
    from peft import LoraConfig, get_peft_model

    if quantized:
        freeze_quantized_base(model)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    targets = lora.get("target_modules") or "all-linear"
    config = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=list(targets) if not isinstance(targets, str) else targets,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as error:
        raise UserError(
            f"LoRA could not be attached ({first_line(error)}): set model.lora.target_modules "
            "to Linear layer names of this model, e.g. [q_proj, v_proj]."
        ) from None
    keep_trainable_state_only(model)
    setattr(model, FROZEN_FROM_FILES, True)  # every rank loads the same base: DDP need not broadcast it
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA: %d of %d parameters train (%.2f%%).", trainable, total, 100 * trainable / max(1, total))
    return model


def load_causal_lm(
    data: DataInfo | None = None,
    name_or_path: str | None = None,
    config: dict[str, Any] | None = None,
    revision: str | None = None,
    dtype: str = "fp32",
    quantization: Any = None,
    device_map: Any = None,
    offload_folder: str | None = None,
    max_memory: dict[str, str] | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    init_dir: str | None = None,
    device: str = "auto",
    for_training: bool = True,
    report: bool = True,
) -> nn.Module:
    """Load (or randomly initialise) a causal LM as configured; see ``configs/model/causal_lm.yaml``."""
    if dtype not in DTYPES:
        raise UserError(f"model.dtype={dtype!r} is unknown: use fp32, fp16 or bf16.")
    dtype = usable_precision(dtype, choose_device(str(device))) if for_training else dtype
    quant = quantization_name(quantization)
    lora = dict(lora or {})
    for name, rule in LORA_RULES.items():
        if name in lora:
            check_value(f"model.lora.{name}", lora[name], rule)
    use_lora = lora.get("enabled")
    if for_training and is_random_init(name_or_path):
        quant, use_lora = plan_random_training(quant, use_lora)
        quantization = None if quant == "none" else quantization
    use_lora = quant in QUANTIZED if use_lora is None else bool(use_lora)
    if quant in QUANTIZED and for_training and not use_lora:
        raise UserError(
            f"quantization={quant} weights cannot be trained directly: keep model.lora.enabled=true "
            "(QLoRA) or use quantization=none."
        )
    quantization_config = bnb_config(quantization, dtype, offload=may_offload(device_map))
    tokenizer = data.tokenizer if data is not None else None
    if names_no_weights(name_or_path):
        folder = Path(init_dir) if init_dir else Path(tempfile.mkdtemp(prefix="random_init_"))
        source = shared_random_init(config or {}, tokenizer, folder)
    else:
        source = resolve_source(str(name_or_path), revision)

    weights = dtype
    if for_training and not use_lora and dtype != "fp32":
        log.info("Full fine-tuning keeps float32 master weights; precision=%s applies through autocast.", dtype)
        weights = "fp32"
    kwargs: dict[str, Any] = {
        "dtype": DTYPES[weights],
        "trust_remote_code": trust_remote_code,
        "device_map": resolve_device_map(device_map, quant in QUANTIZED, device),
    }
    optional = {
        "revision": revision,
        "quantization_config": quantization_config,
        "offload_folder": offload_folder,
        "max_memory": max_memory_map(max_memory),
        "attn_implementation": attn_implementation,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})

    from transformers import AutoModelForCausalLM

    try:
        model: nn.Module = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise UserError(
            f"model.name_or_path={source} could not be loaded ({first_line(error)}): check the model "
            "options (dtype, device_map, offload_folder, quantization)."
        ) from None
    warn_quantized_spill(device_map, quant, getattr(model, "hf_device_map", None))
    limit_cpu_repacking(model, for_training)
    prepare_kbit = quant in QUANTIZED and for_training  # a frozen base for the adapters
    if use_lora:
        model = add_lora(model, lora, prepare_kbit, gradient_checkpointing)
    elif gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if report:  # after LoRA: its adapters are part of what training holds
        double_quant = bool(dict(quantization).get("double_quant", True)) if hasattr(quantization, "items") else True
        footprint.log_report(
            footprint.build_report(
                model,
                str(name_or_path or source),
                weights,
                quant,
                double_quant,
            )
        )
    if any(type(parameter).__name__ in PACKED_WEIGHTS for parameter in model.parameters()):
        mark_unshardable(model, FSDP_REFUSAL)
    if quant in QUANTIZED or not (kwargs["device_map"] is None or _single_device(kwargs["device_map"])):
        mark_placed(model)  # bitsandbytes layers and device-mapped models must not be moved with .to()
    return model
