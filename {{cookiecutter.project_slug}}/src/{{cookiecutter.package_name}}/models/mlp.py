"""A multilayer perceptron over flattened images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from {{ cookiecutter.package_name }}.data.common import DataInfo
from {{ cookiecutter.package_name }}.errors import FRACTION, check_value


class MLP(nn.Sequential):
    """Flatten -> [Linear -> ReLU -> Dropout] x len(hidden_dims) -> Linear."""

    def __init__(self, data: DataInfo, hidden_dims: Sequence[int] = (128, 64), dropout: float = 0.1):
        check_value("model.dropout", dropout, FRACTION)
        in_features = (data.in_chans or 1) * (data.img_size or 1) ** 2
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden_dims:
            layers += [nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout)]
            in_features = width
        assert data.num_classes is not None, "an MLP classifies: the data gives num_classes"
        layers.append(nn.Linear(in_features, data.num_classes))
        super().__init__(*layers)
