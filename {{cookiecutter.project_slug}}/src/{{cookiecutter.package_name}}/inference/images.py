"""Image classification after training: predict on image files, export weights (safetensors, ONNX)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from {{ cookiecutter.package_name }}.errors import UserError

log = logging.getLogger(__name__)
PROGRESS_AFTER = 3  # batches: a progress bar for longer inputs
# What the model card says of an export (see model_card.py).
CARD = {
    "kind": "An image classifier",
    "library": "pytorch",
    "tag": "image-classification",
    "usage": "`model.safetensors` holds the weights and `model_config.json` the model config, the input shape "
    "and the class names; `model.onnx`, where exported, runs in onnxruntime (input `images`, output "
    "`logits`).",
}
PREDICT_OPTIONS = {"top_k": 3}
PREDICT_HELP = """\
  image classification: input= is an image or a folder of images (recursive, any format PIL reads)
  top_k=3               how many classes to list per image
                        (writes predictions.csv: path, predicted class, probability, top-k)
"""
EXPORT_OPTIONS = {"format": "safetensors"}
EXPORT_HELP = """\
  format=safetensors|onnx
                        image classification: safetensors weights + model_config.json, and with
                        onnx also model.onnx (needs the onnx package: the `onnx` extra)
"""
FORMATS = ("safetensors", "onnx")


def load_options(folder: Path, config: Any, precision: Any) -> dict[str, Any]:
    """An image classifier is built as it was trained: no extra builder arguments."""
    return {}


def export_overrides(
    config: Any, options: dict[str, Any], overrides: list[str]
) -> tuple[list[str], dict[str, Any], str | None]:
    """Check ``format=``; the export loads the run as it was trained."""
    if str(options["format"]) not in FORMATS:
        raise UserError(f"format={options['format']}: choose {' or '.join(FORMATS)}.")
    return overrides, {}, None


def card_details(run: Any) -> str:
    return ""


def find_files(path: Path) -> list[Path]:
    """``path`` itself, or every file below the folder ``path`` (recursive, hidden files skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"input={path}: no such file or folder; give an image or a folder of images.")
    files = sorted(
        file
        for file in path.rglob("*")
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )
    if not files:
        raise UserError(f"input={path} holds no images: give a folder with image files (PNG, JPEG, ...).")
    return files


class ImageFiles(Dataset):
    """Image files opened with PIL and preprocessed by the run's data module; unreadable ones yield None."""

    def __init__(self, files: list[Path], preprocess: Any) -> None:
        self.files, self.preprocess = files, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.files[index]) as image:
                return index, self.preprocess(image)
        except (UnidentifiedImageError, OSError, ValueError):
            return index, None


def collate(items: list[tuple[int, torch.Tensor | None]]) -> tuple[list[int], list[int], torch.Tensor | None]:
    """(indices read, indices unreadable, the stacked images of the readable ones)."""
    good = [(index, image) for index, image in items if image is not None]
    bad = [index for index, image in items if image is None]
    return [index for index, _ in good], bad, torch.stack([image for _, image in good]) if good else None


@torch.no_grad()
def predict(run: Any, source: Path, output: Path, options: dict[str, Any]) -> Path:
    """Write ``predictions.csv`` (path, predicted class, its probability, the ``top_k``) for the images at ``source``."""
    top_k = int(options.get("top_k") or 3)
    files = find_files(source)
    names = run.task.class_names
    batch_size = int(run.config.data.get("batch_size", 64))
    loader = DataLoader(ImageFiles(files, run.datamodule.preprocess), batch_size=batch_size, collate_fn=collate)
    rows, unreadable = [], []
    for indices, bad, images in tqdm(loader, desc="predict", disable=len(loader) <= PROGRESS_AFTER):
        unreadable += [files[index] for index in bad]
        if images is None:
            continue
        with run.precision.autocast():
            probabilities = run.model(images.to(run.device)).float().softmax(1).cpu()
        values, classes = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        for index, top_values, top_classes in zip(indices, values.tolist(), classes.tolist(), strict=True):
            ranked = ";".join(f"{names[c]}:{v:.4f}" for c, v in zip(top_classes, top_values, strict=True))
            rows.append([str(files[index]), names[top_classes[0]], f"{top_values[0]:.6f}", ranked])
    if unreadable:
        log.warning("Skipped %d unreadable file(s): %s", len(unreadable), ", ".join(map(str, unreadable)))
    if not rows:
        raise UserError(f"input={source} holds no readable images: give PNG, JPEG or other files PIL can open.")
    path = output / "predictions.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "predicted", "probability", f"top{top_k}"])
        writer.writerows(rows)
    log.info("Predicted %d image(s): %s", len(rows), path)
    return path


def build_config(run: Any) -> dict[str, Any]:
    """What rebuilding the model needs: the model config and the data's metadata (shape, classes)."""
    from omegaconf import OmegaConf

    info = run.info
    return {
        "model": OmegaConf.to_container(run.config.model, resolve=True),
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "img_size": info.img_size,
        "class_names": list(info.class_names),
    }


def input_example(run: Any) -> torch.Tensor:
    """One preprocessed example of the run's test split, with a batch dimension."""
    image = run.datamodule.dataset("test")[0][0]
    return image.unsqueeze(0).to(run.device)


def export(run: Any, output: Path, options: dict[str, Any]) -> list[Path]:
    """``model.safetensors`` and ``model_config.json``; with ``format=onnx`` also ``model.onnx``."""
    from safetensors.torch import save_file

    fmt = str(options.get("format") or "safetensors")
    model: nn.Module = run.model
    weights = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    written = [output / "model.safetensors", output / "model_config.json"]
    save_file(weights, str(written[0]), metadata={"format": "pt"})
    written[1].write_text(json.dumps(build_config(run), indent=2) + "\n", encoding="utf-8")
    if fmt == "onnx":
        written.append(export_onnx(model, input_example(run), output / "model.onnx"))
    elif fmt != "safetensors":
        raise UserError(f"format={fmt}: image classifiers export as safetensors or onnx.")
    return written


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The model as ONNX with a dynamic batch dimension (input ``images``, output ``logits``)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError(
            "format=onnx needs the onnx package: pip install onnx onnxscript "
            "(or pip install -e '.[onnx]'), or use format=safetensors."
        ) from None
    model = model.float().cpu().eval()
    torch.onnx.export(
        model,
        (example.float().cpu(),),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path
