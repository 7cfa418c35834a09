"""Offline stand-in for the API server's CRD validation: defaults, schema, CEL.

The API server applies a CRD's structural defaults, validates the object
against its OpenAPI v3 schema, then evaluates the `x-kubernetes-validations`
CEL rules. No apiserver runs here, so tests do the same three steps with
jsonschema (Draft 4 has OpenAPI 3.0's boolean exclusive bounds) and a real
CEL implementation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cel
import jsonschema
import yaml

CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "asradaptations.asr.marco.dev.yaml"


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def crd_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or load_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(prop, value[name])
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _cel_failures(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        if not cel.evaluate(rule["rule"], {"self": value}):
            # The API server reports a rule's fieldPath, when it has one, as the field.
            failures.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in value and value[name] is not None:
                failures += _cel_failures(prop, value[name], f"{path}.{name}")
    return failures


def validate_against_crd(obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse `obj`; empty when it would accept it."""
    schema = crd_schema()
    obj = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    return _cel_failures(schema, obj, "")
