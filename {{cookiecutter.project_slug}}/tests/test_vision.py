"""Image data sets, timm models, schedulers, early stopping and checkpoints, all offline and small."""

from __future__ import annotations

import csv
import json
import math
import socket
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from {{ cookiecutter.package_name }}.config.quoting import path_override
from {{ cookiecutter.package_name }}.errors import UserError
from {{ cookiecutter.package_name }}.train import train

from conftest import CONFIG_DIR, compose_config, resolved, run_module


def vision_options(group: str, *modules: str) -> list[str]:
    """Options of ``group`` whose ``_target_`` is in one of the vision ``modules`` (a ``both`` render has LM ones too)."""
    options = []
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        target = yaml.safe_load(path.read_text(encoding="utf-8")).get("_target_", "")
        if any(f".{module}." in target for module in modules):
            options.append(path.stem)
    return options


MODELS = vision_options("model", "models.mlp", "models.timm_models")
DATA = vision_options("data", "data.digits", "data.vision")
EXPERIMENTS = sorted(
    path.stem
    for path in (CONFIG_DIR / "experiment").glob("*.yaml")
    if "override /model" in path.read_text(encoding="utf-8") and path.stem in MODELS
)
QUICK = [
    "logger=csv",
    "precision=fp32",
    "trainer.device=cpu",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
]
TINY_FAKE = [
    "data=fake",
    "data.native_size=16",
    "data.num_samples=16",
    "data.num_test=4",
    "data.batch_size=4",
    "data.val_fraction=0.25",
]


def run_train(tmp_path: Path, *overrides: str) -> tuple[float | None, dict, list[dict]]:
    """Train in-process; return the best value, summary.json and the metrics.csv rows."""
    cfg = compose_config([*QUICK, *overrides], output_dir=tmp_path)
    best = train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", encoding="utf-8")))
    return best, summary, rows


@pytest.mark.parametrize("model", MODELS)
def test_model_trains_two_steps_and_its_checkpoint_reloads(model: str, tmp_path: Path) -> None:
    best, summary, rows = run_train(
        tmp_path, f"model={model}", *TINY_FAKE, "trainer.max_steps=2", "trainer.limit_val_batches=1"
    )
    assert summary["global_step"] == 2 and len(rows) == 1
    assert math.isfinite(float(rows[0]["train/loss"])) and best == pytest.approx(summary["best"]["value"])

    # A fresh model loaded from best.pt reproduces the test metrics the trainer reported.
    cfg = compose_config([*QUICK, f"model={model}", *TINY_FAKE], output_dir=tmp_path)
    datamodule = instantiate(cfg.data)
    info = datamodule.setup()
    fresh = instantiate(cfg.model, data=info)
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    fresh.load_state_dict(state["model"])
    fresh.eval()
    images, labels = next(iter(datamodule.loader("test")))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(fresh(images), labels).item()
    assert loss == pytest.approx(summary["test"]["test/loss"], rel=1e-4)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_data_model_pair_composes(data: str, model: str, tmp_path: Path) -> None:
    cfg = compose_config([f"data={data}", f"model={model}"], output_dir=tmp_path)
    config = resolved(cfg)
    if "channels" in config["data"]:  # the data set takes its shape from what the model asks
        assert config["data"]["channels"] == config["model"].get("in_chans")
        assert config["data"]["img_size"] == config["model"].get("img_size")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_is_a_model_recipe_and_keeps_the_data(experiment: str, tmp_path: Path) -> None:
    recipe = yaml.safe_load((CONFIG_DIR / "experiment" / f"{experiment}.yaml").read_text(encoding="utf-8"))
    model = next(entry["override /model"] for entry in recipe["defaults"] if "override /model" in entry)
    cfg = compose_config([f"experiment={experiment}", "data=torchvision", "data.dataset=cifar10"], output_dir=tmp_path)
    assert cfg.data.dataset == "cifar10"
    assert cfg.model._target_ == compose_config([f"model={model}"], output_dir=tmp_path).model._target_
    assert cfg.optimizer.lr == recipe["optimizer"]["lr"]


def test_gray_images_become_rgb_of_the_model_size(tmp_path: Path) -> None:
    cfg = compose_config(
        ["data=fake", "data.native_channels=1", "data.native_size=12", "model=efficientnet", "model.img_size=20"],
        output_dir=tmp_path,
    )
    datamodule = instantiate(cfg.data)
    info = datamodule.setup()
    image, _ = datamodule.dataset("train")[0]
    assert (info.in_chans, info.img_size) == (3, 20) and image.shape == (3, 20, 20)
    assert torch.equal(image[0], image[2])


def test_splits_are_seeded_and_subset_fraction_applies(tmp_path: Path) -> None:
    def train_indices(*overrides: str) -> list[int]:
        datamodule = instantiate(compose_config(["data=fake", *overrides], output_dir=tmp_path).data)
        datamodule.setup()
        return list(datamodule.train_set.dataset.indices)

    assert train_indices("seed=1") == train_indices("seed=1") != train_indices("seed=2")
    assert len(train_indices("data.subset_fraction=0.5")) == len(train_indices()) // 2


def test_image_folder_trains_on_generated_pngs(tmp_path: Path) -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(8):
            pixels = (torch.rand(20 + index, 24, 3, generator=generator) * 80 + 150 * label).byte().numpy()
            image = Image.fromarray(pixels)
            (image.convert("L") if index % 2 else image).save(tmp_path / "images" / name / f"{index}.png")
    overrides = [
        "data=image_folder",
        path_override("data.root", tmp_path / "images"),
        "data.native_size=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "model=mlp",
    ]
    datamodule = instantiate(compose_config(overrides, output_dir=tmp_path).data)
    info = datamodule.setup()
    assert info.class_names == ["cat", "dog"] and (info.in_chans, info.img_size) == (3, 16)
    _, summary, rows = run_train(tmp_path / "run", *overrides, "trainer.max_epochs=2")
    assert len(rows) == 2
    # cats are dark and dogs bright: two epochs separate them
    assert summary["test"]["test/acc"] == 1.0 and summary["test"]["test/f1"] == 1.0


def test_image_folder_splits_are_stratified_and_thin_ones_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from PIL import Image

    sizes = {"bird": 3, "cat": 30, "dog": 30}  # the test split cannot hold a bird (10% of 3 rounds to 0)
    for name, count in sizes.items():
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (8, 8), (index, 0, 0)).save(tmp_path / "images" / name / f"{index}.png")
    overrides = [
        "data=image_folder",
        path_override("data.root", tmp_path / "images"),
        "data.native_size=8",
        "model=mlp",
        "data.test_fraction=0.1",
        "data.val_fraction=0.2",
    ]
    datamodule = instantiate(compose_config(overrides, output_dir=tmp_path).data)
    with caplog.at_level("WARNING"):
        datamodule.setup()
    full = datamodule.train_set.dataset.dataset.dataset  # Transformed(Subset(Subset(ImageFolder)))
    rest = datamodule.train_set.dataset.dataset

    def counts(dataset) -> list[int]:
        labels = (
            [full.targets[rest.indices[index]] for index in dataset.dataset.indices]
            if dataset is not datamodule.test_set
            else [full.targets[index] for index in dataset.dataset.dataset.indices]
        )
        return [labels.count(label) for label in range(3)]

    assert counts(datamodule.test_set) == [0, 3, 3]
    assert counts(datamodule.val_set) == [1, 5, 5]  # 20% of each class's 3 and 27
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "the test split (6 examples) has no bird" in warnings[0]


def test_missing_image_folder_fails_in_one_line(tmp_path: Path) -> None:
    datamodule = instantiate(
        compose_config(["data=image_folder", path_override("data.root", tmp_path / "nope")], output_dir=tmp_path).data
    )
    with pytest.raises(UserError, match="data.root="):
        datamodule.setup()


def test_offline_mnist_fails_fast_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    datamodule = instantiate(
        compose_config(
            ["data=torchvision", "data.dataset=mnist", path_override("paths.data_dir", tmp_path)], output_dir=tmp_path
        ).data
    )
    with pytest.raises(UserError) as error:
        datamodule.setup()
    message = str(error.value)
    assert "\n" not in message and "MNIST" in message and "https://" in message and str(tmp_path) in message


def test_missing_data_set_gives_one_line_without_traceback(tmp_path: Path) -> None:
    result = run_module(
        "train",
        "data=torchvision",
        "data.dataset=cifar10",
        "data.download=false",
        path_override("paths.data_dir", tmp_path),
        path_override("hydra.run.dir", tmp_path / "run"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "CIFAR-10 is not in" in result.stderr and "cs.toronto.edu" in result.stderr


def test_pretrained_weights_offline_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from {{ cookiecutter.package_name }}.data.common import DataInfo
    from {{ cookiecutter.package_name }}.models import timm_models

    monkeypatch.setattr(timm_models, "cached_weights", lambda hub_id: None)  # an empty cache
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        timm_models.timm_model(DataInfo(num_classes=3, in_chans=3, img_size=32), "efficientnet_b0", pretrained=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(timm_models, "reachable", lambda url, timeout=3.0: False)
    with pytest.raises(UserError, match="cannot reach"):
        timm_models.timm_model(DataInfo(num_classes=3, in_chans=3, img_size=32), "efficientnet_b0", pretrained=True)


def early_stop_epoch(values: list[float], patience: int, min_delta: float, mode: str) -> int | None:
    """After how many epochs early stopping should stop, given each epoch's monitored value (None: never)."""
    sign = 1 if mode == "max" else -1
    best, bad = None, 0
    for epoch, value in enumerate(values):
        if best is None or sign * (value - best) > min_delta:
            best, bad = value, 0
        else:
            bad += 1
        if bad >= patience:
            return epoch + 1
    return None


@pytest.mark.parametrize(
    ("min_delta", "monitor", "mode", "patience"),
    [(1e9, "val/f1", "max", 2), (1e9, "val/loss", "min", 1), (0.0, "val/loss", "min", 1)],
)
def test_early_stopping_stops_at_the_right_epoch(
    min_delta: float, monitor: str, mode: str, patience: int, tmp_path: Path
) -> None:
    _, summary, rows = run_train(
        tmp_path,
        "model=mlp",
        *TINY_FAKE,
        "optimizer.lr=0.05",
        "scheduler=none",
        f"task.monitor={monitor}",
        f"task.mode={mode}",
        "trainer.max_epochs=6",
        f"trainer.early_stopping.patience={patience}",
        f"trainer.early_stopping.min_delta={min_delta}",
    )
    values = [float(row[monitor]) for row in rows]
    if min_delta > 1:  # nothing can improve on the first epoch
        assert len(rows) == patience + 1 and summary["stopped_early"] and summary["best"]["epoch"] == 0
    stop = early_stop_epoch(values, patience, min_delta, mode)
    # patience running out on the last epoch stops nothing: not stopped_early
    assert (len(rows), summary["stopped_early"]) == ((stop, True) if stop and stop < 6 else (6, False))
    if min_delta == 0:
        assert summary["best"]["epoch"] == (values.index(max(values) if mode == "max" else min(values)))


def learning_rates(name: str, total_steps: int, steps_per_epoch: int, *overrides: str, lr: float = 0.1) -> list[float]:
    cfg = compose_config([f"scheduler={name}", *overrides])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_step_schedule_follows_its_formula() -> None:
    rates = learning_rates("step", 24, 4, "scheduler.step_size=2", "scheduler.gamma=0.5", "scheduler.warmup_steps=3")
    assert rates[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert rates[3:] == pytest.approx([0.1 * 0.5 ** ((step - 3) // 8) for step in range(3, 24)])  # after warmup


@pytest.mark.parametrize(("anneal", "warmup"), [("cos", 0), ("linear", 0), ("cos", 5)])
def test_onecycle_schedule_matches_torch(anneal: str, warmup: int) -> None:
    rates = learning_rates("onecycle", 20, 5, f"scheduler.anneal_strategy={anneal}", f"scheduler.warmup_steps={warmup}")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=20, anneal_strategy=anneal, pct_start=warmup / 20 if warmup else 0.3
    )
    expected = []
    for _ in range(20):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert rates == pytest.approx(expected)
    assert max(rates) == pytest.approx(0.1) and rates[0] == pytest.approx(0.1 / 25)


def test_cosine_and_constant_warm_up_linearly() -> None:
    for name in ("cosine", "none"):
        rates = learning_rates(name, 10, 5, "scheduler.warmup_steps=4")
        assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_take_weight_decay(optimizer: str) -> None:
    cfg = compose_config([f"optimizer={optimizer}", "optimizer.weight_decay=0.1"])
    built = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    assert built.param_groups[0]["weight_decay"] == 0.1
    if optimizer == "sgd":
        assert built.param_groups[0]["momentum"] == 0.9 and built.param_groups[0]["nesterov"]


def test_image_models_check_their_own_values() -> None:
    """A model's options are its builder's to check: one line naming the config key, as for any other value."""
    from {{ cookiecutter.package_name }}.data.common import DataInfo
    from {{ cookiecutter.package_name }}.errors import UserError
    from {{ cookiecutter.package_name }}.models.mlp import MLP
    from {{ cookiecutter.package_name }}.models.timm_models import timm_model

    data = DataInfo(num_classes=3, in_chans=1, img_size=8)
    with pytest.raises(
        UserError, match=r"^model\.dropout=1\.5 is not accepted: model\.dropout must be a number in \[0, 1\)"
    ):
        MLP(data, dropout=1.5)
    with pytest.raises(UserError, match=r"^model\.img_size=0 is not accepted"):
        timm_model(data, "resnet18", img_size=0)
    assert isinstance(MLP(data, dropout=0.5), torch.nn.Module)
