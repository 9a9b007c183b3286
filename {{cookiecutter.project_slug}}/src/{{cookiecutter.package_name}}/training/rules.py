"""What the trainer, the optimizer and the schedulers accept (``trainer.*``, ``optimizer.*``, ``scheduler.*``).

Torch-free, so that the entry points check a config with it before torch loads; the trainer and the
schedulers check their own arguments with it as they are built, and the trainer the optimizer's.
"""

from __future__ import annotations

from {{ cookiecutter.package_name }}.errors import FLAG, FRACTION, Rule, Rules, above, at_least

COMPILE_OPTIONS = ("mode", "dynamic", "fullgraph", "backend")

TRAINER: Rules = {
    "max_epochs": at_least(1),
    "max_steps": at_least(-1),
    "accumulate_grad_batches": at_least(1),
    "gradient_clip_val": above(0.0, optional=True),
    "limit_train_batches": at_least(1, optional=True),
    "limit_val_batches": at_least(1, optional=True),
    "overfit_batches": at_least(0),
    "log_every_n_steps": at_least(1),
    "early_stopping.patience": at_least(1, optional=True),
    "early_stopping.min_delta": at_least(0.0, float),
    "deterministic": FLAG,
    "progress_bar": FLAG,
    "distributed": FLAG,
    "fsdp.reshard_after_forward": FLAG,
    "fsdp.cpu_offload": FLAG,
    "fsdp.activation_checkpointing": FLAG,
    "fsdp.async_save": FLAG,
    "compile": Rule(dict, choices=COMPILE_OPTIONS),
    "compile.mode": Rule(
        str, optional=True, choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    ),
    "compile.dynamic": Rule(bool, optional=True),
    "compile.fullgraph": FLAG,
    "compile.backend": Rule(str),
}

OPTIMIZER: Rules = {
    "lr": above(0.0),
    "weight_decay": at_least(0.0, float),
    "momentum": FRACTION,
}

SCHEDULER: Rules = {
    "warmup_steps": at_least(0),
    "step_size": at_least(1),
    "gamma": above(0.0),
    "pct_start": Rule(float, low=0.0, high=1.0, low_open=True, high_open=True),
    "min_lr_ratio": Rule(float, low=0.0, high=1.0),
}
