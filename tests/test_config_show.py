"""``spikefed config show``: every key described, every choice key with its valid values, for every command.

The rule is checked from the schema's types (an independent reading): a key typed ``str`` (or ``str | None``) is
a name, so it must have a fixed set of valid values; a ``Literal`` key lists exactly its literals.
"""

from __future__ import annotations

import re
import types
import typing

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from spikefed.cli import app
from spikefed.experiment import config as cfg

SCHEMAS = {"run": cfg.RunSettings, "train": cfg.TrainSettings, "convert": cfg.ConvertSettings,
           "regress": cfg.RegressSettings}
#: ``str`` keys that are free text rather than a name from a list (paths, labels); keys of sections that only
#: some branches have are harmless here
FREE_TEXT: set[str] = {"DataSettings.root", "DataSettings.cache_dir", "SensorSettings.name"}


def _sections() -> list[type[BaseModel]]:
    return [c for c in vars(cfg).values() if isinstance(c, type) and issubclass(c, BaseModel)
            and c.__module__ == cfg.__name__ and c.model_fields]


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _literals(annotation: object) -> tuple[str, ...] | None:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    for a in args:
        if typing.get_origin(a) is typing.Literal:
            return tuple(str(v) for v in typing.get_args(a))
    return None


def _is_name(annotation: object) -> bool:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return str in args


@pytest.mark.parametrize("section", _sections(), ids=lambda c: c.__name__)
def test_every_key_has_a_description(section: type[BaseModel]) -> None:
    missing = [k for k, f in section.model_fields.items()
               if not _is_section(f.annotation) and not (f.description or "").strip()]
    assert not missing, f"{section.__name__}: keys without a description: {missing}"


@pytest.mark.parametrize("section", _sections(), ids=lambda c: c.__name__)
def test_every_choice_key_lists_its_values(section: type[BaseModel]) -> None:
    for key, field in section.model_fields.items():
        literals = _literals(field.annotation)
        if literals is not None:
            assert cfg.choices_of(field) == literals, f"{section.__name__}.{key}"
        elif _is_name(field.annotation) and f"{section.__name__}.{key}" not in FREE_TEXT:
            choices = cfg.choices_of(field)
            assert choices, f"{section.__name__}.{key} is a name without a list of valid values"


@pytest.mark.parametrize("command", list(SCHEMAS))
def test_config_show_prints_each_key_with_description_and_values(command: str) -> None:
    result = CliRunner().invoke(app, ["config", "show", "--for", command])
    assert result.exit_code == 0, result.output
    lines, section = {}, ""
    for line in result.output.splitlines():
        m = re.match(r"^( {0,2})([a-z_0-9]+):(.*?)(?:  # (.*))?$", line)
        if m is None:
            continue
        indent, key, _, comment = m.groups()
        if indent:
            lines[f"{section}.{key}"] = comment or ""
        else:
            section = key
            lines[key] = comment or ""
    schema = SCHEMAS[command]
    expected = set()
    for name, field in schema.model_fields.items():
        sub = field.annotation
        keys = [(f"{name}.{k}", f) for k, f in sub.model_fields.items()] if _is_section(sub) else [(name, field)]
        for key, f in keys:
            expected.add(key)
            assert lines.get(key, "").strip(), f"{command}: {key} printed without a description"
            choices = cfg.choices_of(f)
            if choices:
                assert f"[one of: {', '.join(choices)}]" in lines[key], f"{command}: {key} without its values"
    printed = {k for k in lines if "." in k or not _is_section(schema.model_fields[k].annotation)}
    assert printed == expected


def test_a_registered_strategy_is_a_valid_choice() -> None:
    from spikefed.federated.strategies import FedAvg, register_strategy, strategy_names

    field = cfg.FederationSettings.model_fields["strategy"]
    with pytest.raises(Exception, match="valid: fedavg"):
        cfg.FederationSettings(strategy="myavg_show")
    register_strategy("myavg_show", FedAvg)
    try:
        assert "myavg_show" in cfg.choices_of(field) and "myavg_show" in strategy_names()
        assert cfg.FederationSettings(strategy="myavg_show").strategy == "myavg_show"
    finally:
        from spikefed.federated import strategies
        vars(strategies)["_REGISTRY"].pop("myavg_show")
