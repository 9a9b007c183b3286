"""Checks of the command line and the composed config, run before anything is built.

- :func:`check_overrides`: a key or option that does not exist (``trainer.max_epoch=3``, ``optimizer=adamm``)
  is one line naming the nearest valid ones, before torch loads.
- :func:`check_config`: a bad value stops the run with one line that names the key and what it accepts, e.g.
  ``data.batch_size=0 is not accepted: data.batch_size must be an integer >= 1.``. Each owner states what its
  values accept in a torch-free table (``data/rules.py``, ``tasks/rules.py``, ``training/rules.py``) and checks
  them itself when built; this check runs those tables over the whole config first, before torch loads. Then
  :func:`check_fit`: the task, the data and the model must be for the same job (``model=causal_lm`` on
  ``data=digits`` is one line).
- :func:`check_targets`: a key that a node's ``_target_`` does not take (``+optimizer.learning_rate=0.01``)
  is one line naming the arguments it takes.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from typing import Any

from omegaconf import DictConfig, OmegaConf

from {{ cookiecutter.package_name }}.config import source as config_source
from {{ cookiecutter.package_name }}.data import rules as data_rules
from {{ cookiecutter.package_name }}.errors import Rule, Rules, UserError, check_value, did_you_mean, first_line, unknown_key
from {{ cookiecutter.package_name }}.tasks import rules as task_rules
from {{ cookiecutter.package_name }}.training import rules as training_rules

# The run's own values; every other value is its owner's, in the owner's torch-free table. A model's
# values (model.dropout, ...) and a data module's own (data.block_size) are checked by the
# model's or data module's builder, as it is built.
RUN: Rules = {"seed": Rule(int)}
OWNERS: dict[str, Rules] = {
    "": RUN,
    "data": data_rules.DATA,
    "task": task_rules.TASK,
    "trainer": training_rules.TRAINER,
    "optimizer": training_rules.OPTIMIZER,
    "scheduler": training_rules.SCHEDULER,
}

_ABSENT = object()


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line :class:`UserError` for the first value in ``cfg`` that its owner's rule rejects (keys a
    config does not have are skipped), or for a task, data and model that do not fit together."""
    for node, rules in OWNERS.items():
        for name, rule in rules.items():
            key = f"{node}.{name}" if node else name
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
            if value is not _ABSENT:
                check_value(key, value, rule)
    check_fit(cfg)


# What the task, data and model options are for, by the module (in this package) of their ``_target_``.
# A new option's module goes here (e.g. a chat data module: "text"); targets outside the table are not checked.
PURPOSE_OF_MODULE: dict[str, str] = {
    "tasks.classification": "image",
    "data.digits": "image",
    "data.vision": "image",
    "models.mlp": "image",
    "models.timm_models": "image",
    "tasks.causal_lm": "text",
    "data.text": "text",
    "data.chat": "text",
    "tasks.dpo": "text",
    "data.preference": "text",
    "models.hf_loader": "text",
}
# Each purpose: its name in messages, and the options that pick task, data and model for it together.
PURPOSES: dict[str, tuple[str, str]] = {
    "image": ("image classification", "task=classification data=digits model=mlp"),
    "text": ("a language model", "experiment=tiny_lm (it sets task, data and model)"),
}
FIT_GROUPS = ("task", "data", "model")


def purpose_of(target: Any) -> str | None:
    """``image`` or ``text`` for a ``_target_`` of this package listed in :data:`PURPOSE_OF_MODULE`, else None."""
    module = str(target or "").removeprefix("{{ cookiecutter.package_name }}.").rpartition(".")[0]
    return PURPOSE_OF_MODULE.get(module)


def hydra_choices() -> dict[str, str]:
    """The option picked in each config group (``{"model": "mlp", ...}``) inside a Hydra app, else empty."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {str(key): str(value) for key, value in HydraConfig.get().runtime.choices.items() if value is not None}


def check_fit(cfg: DictConfig, choices: dict[str, str] | None = None) -> None:
    """Raise one line when the task, data and model options are for different jobs, naming what to pick."""
    choices = hydra_choices() if choices is None else choices
    purposes = {
        group: purpose
        for group in FIT_GROUPS
        if (purpose := purpose_of(OmegaConf.select(cfg, f"{group}._target_", default=None)))
    }
    counts = Counter(purposes.values())
    if len(counts) < 2:
        return
    # the odd ones out are the minority; on a tie (data and model alone) the model says what is meant
    wanted = max(counts, key=lambda purpose: (counts[purpose], purposes.get("model") == purpose))
    odd = [group for group, purpose in purposes.items() if purpose != wanted]
    rest = [group for group in purposes if group not in odd]

    def named(groups: list[str]) -> str:
        return " and ".join(
            f"{group}={choices.get(group) or cfg[group]['_target_'].rpartition('.')[2]}" for group in groups
        )

    odd_purpose = purposes[odd[0]]
    fixes = "; for ".join(f"{PURPOSES[purpose][0]} use {PURPOSES[purpose][1]}" for purpose in (odd_purpose, wanted))
    raise UserError(
        f"{named(odd)} {'is' if len(odd) == 1 else 'are'} for {PURPOSES[odd_purpose][0]}, but "
        f"{named(rest)} {'is' if len(rest) == 1 else 'are'} for {PURPOSES[wanted][0]}: for {fixes}."
    )


HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
HYDRA_FLAGS = {"--resolve", "--run", "-r", "--multirun", "-m"}


def plain_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a Hydra command line (sweeps cut to their first value); None where a check is not
    meaningful (``--help``, another config folder or name, ``--info``, an override Hydra itself will refuse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip_next = True
        elif arg in HYDRA_FLAGS or arg.split("=", 1)[0] in HYDRA_FLAGS_WITH_VALUE:
            continue
        elif arg.startswith("-"):
            return None
        else:
            overrides.append(arg)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None
    plain: list[str] = []
    for override in parsed:
        if not override.is_sweep_override():
            plain.append(str(override.input_line))
            continue
        try:
            plain.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        except Exception:  # noqa: BLE001 - an interval or other sweep with no first value: left to Hydra
            continue
    return plain


def check_overrides(config_name: str, argv: list[str]) -> None:
    """Compose ``config_name`` with ``argv``'s overrides as the entry point will, before torch loads; raise one
    line for a key the config lacks or an option a group lacks. Other problems are left to Hydra's own run."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    overrides = plain_overrides(argv)
    if not overrides:
        return
    try:
        config_source.compose(config_name, overrides)
    except MissingConfigException as error:
        raise missing_option(error) from None
    except ConfigCompositionException as error:
        found = re.search(r"Could not (?:override|append to|delete from) '([^']+)'", str(error))
        if not found:
            return
        key = found.group(1)
        others = [item for item in overrides if item.lstrip("+~").split("=", 1)[0] != key]
        try:
            base = config_source.compose(config_name, others)
        except Exception:  # noqa: BLE001 - another override is wrong too: suggest from nothing
            base = OmegaConf.create({})
        raise unknown_key(
            key, config_source.nearest_keys(base, key), "a key of the config", f"A new key needs a +: +{key}=..."
        ) from None
    except Exception:  # noqa: BLE001 - a bad value or a missing plugin: Hydra's run reports it
        return


def missing_option(error: Exception) -> UserError:
    """One line for ``group=option`` where the group has no such option (or there is no such group)."""
    missing = str(getattr(error, "missing_cfg_file", "") or "")
    options = [str(option) for option in (getattr(error, "options", None) or [])]
    group, _, option = missing.rpartition("/")
    if not group:
        return UserError(first_line(error))
    if not options and group in config_source.config_groups():  # one option of a list (logger=[csv,mlflw])
        options = config_source.group_options(group)
    if not options:
        return unknown_key(group, config_source.config_groups(), "a config group")
    return UserError(
        f"{group}={option} is not an option of {group}:{did_you_mean(option, options)} "
        f"The options are {', '.join(sorted(options))}."
    )


def target_arguments(target: str) -> list[str] | None:
    """The keyword arguments ``target`` takes; None when it takes any (``**kwargs``) or cannot be read."""
    from hydra.utils import get_object

    try:
        signature = inspect.signature(get_object(target))
    except Exception:  # noqa: BLE001 - a target that does not import fails in instantiate with its own message
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in signature.parameters.values()):
        return None
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind is not inspect.Parameter.VAR_POSITIONAL and name != "self"
    ]


def check_targets(cfg: DictConfig) -> None:
    """Raise one line for a key of a top-level node that its ``_target_`` does not take (imports the targets)."""
    for name, node in cfg.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        arguments = target_arguments(str(node["_target_"]))
        if arguments is None:
            continue
        for key in node:
            if str(key).startswith("_") or key in arguments:
                continue
            raise UserError(
                f"{name!s}.{key!s} is not an argument of {node['_target_']}:"
                f"{did_you_mean(str(key), arguments) or ' check the spelling.'} "
                f"It takes {', '.join(arguments)}."
            )
