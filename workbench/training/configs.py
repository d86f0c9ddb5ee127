"""Reading training configs: YAML (or a dict) into the config class its `trainer:` names. The one registry of
trainer kinds is `CONFIGS` here.

    trainer: rlp
    model: gemma3-270m
    max_steps: 20
    G: 4
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import WorkbenchError
from workbench.training.config import TrainConfig
from workbench.training.ntp_config import NTPConfig
from workbench.training.rlp_config import RLPConfig
from workbench.training.warmstart_config import WarmStartConfig

CONFIGS: dict[str, type[TrainConfig]] = {"rlp": RLPConfig, "ntp": NTPConfig, "warmstart": WarmStartConfig}


def config_classes() -> dict[str, type[TrainConfig]]:
    """The trainer kinds and their config classes (a copy of `CONFIGS`)."""
    return dict(CONFIGS)


class _ConfigLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true/false. PyYAML follows YAML 1.1, where a bare yes/no/on/off is a
    boolean too, so `mixed_precision: no` would arrive as False (boolean fields still accept those words)."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_BOOL_WORDS = {"yes": True, "on": True, "no": False, "off": False}


def read_yaml(text: str) -> Any:
    """Parse config YAML (files and `--set` values) with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_ConfigLoader)


def override_value(name: str, text: str) -> Any:
    """A `--set FIELD VALUE` value: the raw text for a text field (`--set run_name 2026`, `--set mixed_precision no`
    stay text), YAML for the others (numbers, booleans, lists, null)."""
    types = {str(f.type) for cls in config_classes().values() for f in fields(cls) if f.name == name}
    if types and types <= {"str", "str | None"} and not (text in ("null", "~") and "str | None" in types):
        return text
    try:
        return read_yaml(text)
    except yaml.YAMLError as exc:
        raise WorkbenchError(f"--set {name}: not a valid YAML value: {text!r}") from exc


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build and validate the config a dict describes; unknown keys are an error, not a silent typo."""
    if not isinstance(data, dict):
        raise WorkbenchError(f"{source}: expected a mapping of field: value, got {type(data).__name__}")
    kind = data.get("trainer")
    classes = config_classes()
    if kind not in classes:
        raise WorkbenchError(f"{source}: 'trainer' must be one of {', '.join(classes)}, got {kind!r}")
    cls = classes[kind]
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise WorkbenchError(
            f"{source}: unknown field(s) {', '.join(unknown)} for trainer {kind}; see --help-config {kind}"
        )
    values = {}
    for name, value in data.items():
        values[name] = _coerce(name, value, known[name], source)
    return cls(**values).validate()


def _coerce(name: str, value: Any, f: dataclasses.Field, source: str) -> Any:
    """YAML reads 1e-6 as a string; accept numbers written either way, and reject wrong types plainly."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value is None:
        return value
    if default is None:
        if "float" in str(f.type) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                raise WorkbenchError(f"{source}: {name} must be a number or null, got {value!r}") from None
        return value
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            raise WorkbenchError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{source}: {name} must be a number, got {value!r}") from None
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise WorkbenchError(f"{source}: {name} must be an integer, got {value!r}")
        return value
    if isinstance(default, str) and isinstance(value, list) and "list" in str(f.type):
        return value  # a field typed `str | list[str]` (report_to)
    if isinstance(default, str) and not isinstance(value, str):
        raise WorkbenchError(f"{source}: {name} must be a string, got {value!r}")
    return value


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, else relative to the repository root (notebooks run in notebooks/)."""
    path = Path(path).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    in_repo = Path(__file__).resolve().parents[2] / path
    return in_repo if in_repo.is_file() else path


def read_config_file(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(resolved path, its YAML mapping), with one-line errors for a missing file or bad YAML."""
    path = resolve_config_path(path)
    if not path.is_file():
        raise WorkbenchError(f"config file {path} not found")
    try:
        data = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise WorkbenchError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: expected a mapping of field: value, got {type(data).__name__}")
    return path, data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (plus optional overrides, e.g. from a notebook's parameters)."""
    path, data = read_config_file(path)
    if overrides:
        data = {**data, **overrides}
    return config_from_dict(data, str(path))
