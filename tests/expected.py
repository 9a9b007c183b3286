"""The exact set of files a render must contain, written out per option.

Kept apart from post_gen's table on purpose: the two are independent statements of
the same intent, so a mistake in either one fails the render tests.
"""

from __future__ import annotations

COMMON = [
    ".gitattributes",
    ".gitignore",
    ".pre-commit-config.yaml",
    "Makefile",
    "README.md",
    "README.ko.md",
    "pyproject.toml",
    "scripts/setup.sh",
    "scripts/torch_build.py",
    "configs/train.yaml",
    "configs/debug/fast.yaml",
    "configs/debug/overfit.yaml",
    "configs/hydra/default.yaml",
    "configs/logger/csv.yaml",
    "configs/optimizer/adam.yaml",
    "configs/optimizer/adamw.yaml",
    "configs/optimizer/sgd.yaml",
    "configs/paths/default.yaml",
    "configs/precision/bf16.yaml",
    "configs/precision/fp16.yaml",
    "configs/precision/fp32.yaml",
    "configs/scheduler/cosine.yaml",
    "configs/scheduler/none.yaml",
    "configs/scheduler/onecycle.yaml",
    "configs/scheduler/step.yaml",
    "configs/trainer/default.yaml",
    "configs/trainer/ddp.yaml",
    "configs/trainer/fsdp.yaml",
    "configs/hydra/launcher/local.yaml",
    "configs/hydra/launcher/slurm.yaml",
    "configs/hparams_search/optuna.yaml",
    "configs/hydra/sweeper/optuna.yaml",
    "configs/hydra/sweeper/sampler/tpe.yaml",
    "configs/hydra/sweeper/sampler/random.yaml",
    "configs/hydra/sweeper/sampler/grid.yaml",
        "src/{pkg}/compare.py",
    "src/{pkg}/comparison.html",
    "src/hydra_plugins/{pkg}_optuna/__init__.py",
    "src/hydra_plugins/{pkg}_optuna/optuna_sweeper.py",
    "tests/test_sweeps.py",
    "src/{pkg}/__init__.py",
    "src/{pkg}/config/__init__.py",
    "src/{pkg}/config/quoting.py",
    "tests/test_paths.py",
    "src/{pkg}/config/checks.py",
    "src/{pkg}/config/build.py",
    "src/{pkg}/runtime.py",
    "src/{pkg}/errors.py",
    "src/{pkg}/train.py",
    "src/{pkg}/evaluate.py",
    "src/{pkg}/doctor.py",
    "src/{pkg}/inference/run_folder.py",
    "src/{pkg}/config/source.py",
    "src/{pkg}/tracking/provenance.py",
    "tests/test_run_folder.py",
    "tests/test_install.py",
    "setup.py",
    "configs/__init__.py",
    "src/{pkg}/predict.py",
    "src/{pkg}/export.py",
    "src/{pkg}/inference/__init__.py",
    "src/{pkg}/inference/model_card.py",
    "src/{pkg}/inference/model_card.md",
    "src/{pkg}/utils.py",
    "src/{pkg}/config/resolvers.py",
    "src/{pkg}/data/__init__.py",
    "src/{pkg}/data/common.py",
    "src/{pkg}/models/__init__.py",
    "src/{pkg}/tasks/__init__.py",
    "src/{pkg}/tasks/base.py",
    "src/{pkg}/tasks/metrics.py",
    "src/{pkg}/tracking/__init__.py",
    "src/{pkg}/tracking/base.py",
    "src/{pkg}/tracking/csv_logger.py",
    "src/{pkg}/tracking/plots.py",
    "src/{pkg}/tracking/report.py",
    "src/{pkg}/training/__init__.py",
    "src/{pkg}/training/callbacks.py",
    "src/{pkg}/training/checkpoint.py",
    "src/{pkg}/training/fsdp.py",
    "src/{pkg}/training/sharded_checkpoint.py",
    "src/{pkg}/training/early_stopping.py",
    "src/{pkg}/training/state.py",
    "src/{pkg}/training/distributed.py",
    "src/{pkg}/training/precision.py",
    "src/{pkg}/training/schedulers.py",
    "src/{pkg}/training/trainer.py",
    "src/{pkg}/training/cluster.py",
    "src/{pkg}/training/loss_weighting.py",
    "src/{pkg}/training/compiling.py",
    "tests/conftest.py",
    "tests/test_configs.py",
    "tests/test_layers.py",
    "tests/test_portability.py",
    "tests/test_precision.py",
    "tests/test_train.py",
    "tests/test_scaling.py",
    "tests/test_cluster.py",
    "tests/test_compile.py",
    "tests/test_gpu_paths.py",
]

VISION = [
    "configs/task/classification.yaml",
    "configs/data/digits.yaml",
    "configs/data/torchvision.yaml",
    "configs/data/image_folder.yaml",
    "configs/data/fake.yaml",
    "configs/model/mlp.yaml",
    "configs/model/efficientnet.yaml",
    "configs/model/vit.yaml",
    "configs/model/timm.yaml",
    "configs/experiment/mlp.yaml",
    "configs/experiment/vit.yaml",
    "configs/experiment/efficientnet.yaml",
    "src/{pkg}/data/digits.py",
    "src/{pkg}/data/vision.py",
    "src/{pkg}/data/download.py",
    "src/{pkg}/models/mlp.py",
    "src/{pkg}/models/timm_models.py",
    "src/{pkg}/tasks/classification.py",
    "tests/test_vision.py",
    "src/{pkg}/inference/images.py",
    "tests/test_inference_images.py",
]

CAUSAL_LM = [
    "configs/task/causal_lm.yaml",
    "configs/data/text.yaml",
    "configs/model/causal_lm.yaml",
    "configs/quantization/none.yaml",
    "configs/quantization/8bit.yaml",
    "configs/quantization/4bit.yaml",
    "configs/experiment/tiny_lm.yaml",
    "configs/memory.yaml",
    "src/{pkg}/data/text.py",
    "src/{pkg}/data/sample_corpus.txt",
    "src/{pkg}/models/hf_loader.py",
    "src/{pkg}/data/hf_source.py",
    "src/{pkg}/models/footprint.py",
    "src/{pkg}/tasks/causal_lm.py",
    "src/{pkg}/tasks/generation.py",
    "src/{pkg}/memory.py",
    "tests/test_causal_lm.py",
    "tests/test_fsdp.py",
    "src/{pkg}/inference/text.py",
    "tests/test_inference_text.py",
    "examples/prompts.txt",
    "tests/test_quantized_cpu.py",
    "configs/data/chat.yaml",
    "configs/experiment/sft_tiny.yaml",
    "src/{pkg}/data/chat.py",
    "src/{pkg}/data/sample_chat.jsonl",
    "src/{pkg}/inference/chat.py",
    "src/{pkg}/tasks/chat_answers.py",
    "tests/test_chat.py",
    "examples/chat_prompts.jsonl",
]

WANDB = [
    "src/{pkg}/tracking/background.py",
    "src/{pkg}/tracking/tables.py",
    "configs/logger/wandb.yaml",
    "src/{pkg}/tracking/wandb_logger.py",
    "tests/test_wandb.py",
]

MLFLOW = [
    "src/{pkg}/tracking/background.py",
    "src/{pkg}/tracking/tables.py",
    "configs/logger/mlflow.yaml",
    "src/{pkg}/tracking/mlflow_logger.py",
    "src/{pkg}/tracking/mlflow_sync.py",
    "tests/test_mlflow.py",
]

TENSORBOARD = [
    "src/{pkg}/tracking/tables.py",
    "configs/logger/tensorboard.yaml",
    "src/{pkg}/tracking/tensorboard_logger.py",
    "tests/test_tensorboard.py",
]

# answer -> value -> files present only with that value
BY_ANSWER = {
    "task": {"image-classification": VISION, "causal-lm": CAUSAL_LM, "both": VISION + CAUSAL_LM},
    "logger": {"wandb": WANDB, "csv": [], "mlflow": MLFLOW, "tensorboard": TENSORBOARD},
    "license": {"MIT": ["LICENSE"], "Apache-2.0": ["LICENSE"], "BSD-3-Clause": ["LICENSE"], "none": []},
    "env_manager": {"conda": ["environment.yml"], "pip": [], "uv": [".python-version"]},
    "powershell": {"yes": ["setup.cmd", "scripts/setup.ps1", "scripts/tasks.ps1", "scripts/conda_profile.py",
                           "scripts/setup_checks.py", "docs/windows.md", "docs/windows.ko.md"], "no": []},
    "ci": {"github": [".github/workflows/ci.yml", ".github/workflows/template-update.yml", ".github/dependabot.yml"],
           "none": []},
}


# files present only when every listed answer has its value
BY_ANSWERS = [
    ({"powershell": "yes", "ci": "github"}, [".github/workflows/windows-setup.yml"]),
]


def expected_files(answers: dict[str, str], package: str) -> set[str]:
    files = list(COMMON)
    for key, options in BY_ANSWER.items():
        files += options[answers[key]]
    for wanted, paths in BY_ANSWERS:
        if all(answers[key] == value for key, value in wanted.items()):
            files += paths
    return {path.format(pkg=package) for path in files}
