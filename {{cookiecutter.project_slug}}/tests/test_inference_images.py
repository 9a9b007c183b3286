"""Predict on image files and export an image classifier, from a training run's folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from {{ cookiecutter.package_name }}.config.quoting import path_override

from conftest import run_module


@pytest.fixture(scope="module")
def image_run(smoke_run: Path) -> Path:
    """The smoke run (digits, MLP), checked to be an image classifier."""
    config = (smoke_run / ".hydra" / "config.yaml").read_text(encoding="utf-8")
    if "classification" not in config:
        pytest.skip("the default run of this project is not an image classifier")
    return smoke_run


def write_images(data, folder: Path, count: int = 12) -> tuple[list[Path], torch.Tensor]:
    """The first test images of the run's digits as 8-bit PNGs (half in a subfolder), and their tensors."""
    from PIL import Image

    images = torch.stack([data.test_set[index][0] for index in range(count)])
    raw = (images * data.std + data.mean).clamp(0, 16) / 16 * 255
    paths = []
    for index, pixels in enumerate(raw):
        path = folder / ("nested" if index % 2 else "") / f"digit{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[0].round().to(torch.uint8).numpy()).save(path)
        paths.append(path)
    return paths, images


def test_predict_a_folder_with_the_runs_preprocessing(image_run: Path, tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.inference.run_folder import load_run

    run = load_run(image_run, [])
    if type(run.datamodule).__name__ != "DigitsDataModule":
        pytest.skip("the default run does not train on the digits")
    paths, images = write_images(run.datamodule, tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image at all")
    output = tmp_path / "out"
    result = run_module(
        "predict",
        path_override("run", image_run),
        path_override("input", tmp_path / "images"),
        "top_k=3",
        path_override("output", output),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.png" in result.stderr and "Skipped 1 unreadable" in result.stderr
    rows = list(csv.DictReader(open(output / "predictions.csv", encoding="utf-8")))
    assert sorted(row["path"] for row in rows) == sorted(str(path) for path in paths)
    with torch.no_grad():
        expected = run.model(images).argmax(1).tolist()
    names = run.task.class_names
    by_path = {row["path"]: row for row in rows}
    agree = [by_path[str(path)]["predicted"] == names[label] for path, label in zip(paths, expected, strict=True)]
    assert sum(agree) >= 0.9 * len(agree)  # 8-bit PNGs round the pixels a little
    for row in rows:
        ranked = [item.split(":") for item in row["top3"].split(";")]
        probabilities = [float(value) for _, value in ranked]
        assert len(ranked) == 3 and ranked[0][0] == row["predicted"] and probabilities == sorted(probabilities)[::-1]
        assert float(row["probability"]) == pytest.approx(probabilities[0], abs=1e-4)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda folder: folder.mkdir(), "holds no images"),
        (lambda folder: (folder.mkdir(), (folder / "a.png").write_bytes(b"x")), "no readable images"),
    ],
)
def test_predict_without_images_fails_in_one_line(image_run: Path, tmp_path: Path, make, named: str) -> None:
    make(tmp_path / "in")
    result = run_module(
        "predict",
        path_override("run", image_run),
        path_override("input", tmp_path / "in"),
        path_override("output", tmp_path / "out"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and named in result.stderr


def test_checkpoint_of_another_model_fails_in_one_line(image_run: Path, tmp_path: Path) -> None:
    result = run_module(
        "evaluate", path_override("run", image_run), "model.hidden_dims=[16]", path_override("output", tmp_path)
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "does not fit" in result.stderr and "weight" in result.stderr


def test_export_safetensors_and_onnx_match_pytorch(image_run: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from safetensors.torch import load_file

    from {{ cookiecutter.package_name }}.data.common import DataInfo
    from {{ cookiecutter.package_name }}.inference.run_folder import load_run
    from {{ cookiecutter.package_name }}.models.mlp import MLP

    result = run_module("export", path_override("run", image_run), "format=onnx", path_override("output", tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads((tmp_path / "model_config.json").read_text(encoding="utf-8"))
    options = {key: value for key, value in built["model"].items() if key != "_target_"}
    info = DataInfo(
        num_classes=built["num_classes"],
        in_chans=built["in_chans"],
        img_size=built["img_size"],
        class_names=built["class_names"],
    )
    rebuilt = MLP(info, **options).eval()
    rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"))
    run = load_run(image_run, [])
    images = torch.stack([run.datamodule.test_set[index][0] for index in range(16)])
    with torch.no_grad():
        reference = run.model.float()(images)
        assert torch.equal(rebuilt(images), reference)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    np.testing.assert_allclose(logits, reference.numpy(), atol=1e-4, rtol=0)
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "## Metrics" in card and "test/acc" in card and "debug=fast" in card and "$" not in card


def test_export_refuses_merge_lora_for_an_image_classifier(image_run: Path, tmp_path: Path) -> None:
    result = run_module("export", path_override("run", image_run), "merge_lora=true", path_override("output", tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "merge_lora" in result.stderr
