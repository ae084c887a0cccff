"""Config validation against schemas/config.schema.yaml with messages that name the key (e.g. `c4.train_groups`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from workflow_scripts.core.errors import PipelineInputError


def _with_defaults(validator_class):
    """A validator that also fills `default:` values into the config, as snakemake.utils.validate does."""
    set_props = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, sub["default"])
        yield from set_props(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": fill_defaults})


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Raise PipelineInputError listing every invalid key; fill defaults in place when valid."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            if err.validator == "additionalProperties":
                unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
                keys = ", ".join(_key([*err.absolute_path, k]) for k in unknown)
                lines.append(f"unknown config key {keys}")
            elif err.validator == "required":
                lines.append(f"config {_key(err.absolute_path)}: {err.message}")
            else:
                lines.append(f"config key {_key(err.absolute_path)}: {err.message}")
        raise PipelineInputError(f"invalid config ({schema_path}):\n  " + "\n  ".join(lines))
    _with_defaults(Draft202012Validator)(schema).validate(config)
