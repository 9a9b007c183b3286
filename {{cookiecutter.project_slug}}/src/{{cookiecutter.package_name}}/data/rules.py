"""What the data modules' shared arguments accept (``data.*``); torch-free, so that the entry points check a
config with it before torch loads. :class:`~{{ cookiecutter.package_name }}.data.common.DataModule` and each data
module check their own arguments with it as they are built."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.errors import FRACTION, Rule, Rules, at_least

DATA: Rules = {
    "batch_size": at_least(1),
    "num_workers": at_least(0, optional=True),
    "val_fraction": FRACTION,
    "test_fraction": FRACTION,
    "subset_fraction": Rule(float, low=0.0, high=1.0, low_open=True),  # (0, 1]
}
