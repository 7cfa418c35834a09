"""Offline stand-in for the API server's CRD validation: defaults, schema, CEL.

The API server applies a CRD's structural defaults, validates the object
against its OpenAPI v3 schema, then evaluates the `x-kubernetes-validations`
CEL rules. No apiserver runs here, so tests do the same three steps with
jsonschema (Draft 4 has OpenAPI 3.0's boolean exclusive bounds) and a real
CEL implementation.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import cel
import jsonschema
import yaml

CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "asradaptations.asr.marco.dev.yaml"


def load_crd() -> dict[str, Any]:
    # A fresh copy each time (callers may edit it), parsed once per version of the file.
    return copy.deepcopy(_parsed(CRD_PATH.read_text()))


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


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


def prune(schema: dict[str, Any], value: Any) -> Any:
    """`value` without the fields its schema does not declare (the API server's pruning)."""
    if isinstance(value, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return value
        return {
            name: prune(schema["properties"][name], item)
            for name, item in value.items()
            if name in schema["properties"]
        }
    if isinstance(value, list) and "items" in schema:
        return [prune(schema["items"], item) for item in value]
    return value


def as_cel_reads(schema: dict[str, Any], value: Any) -> Any:
    """`value` with its `number` fields as doubles: the API server hands CEL a number
    written as 1 as 1.0 (CEL adds no int to a double, nor multiplies them)."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: as_cel_reads(props[k], v) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [as_cel_reads(schema["items"], item) for item in value]
    return value


def _go_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    """OpenAPI's `pattern` as the API server reads it: Go's RE2, where `$` ends the text
    (Python's `$` also matches before a final newline, so "32Gi\\n" would pass)."""
    if isinstance(instance, str) and not re.search(_END_ANCHOR.sub(r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


#: An unescaped `$` outside a character class (the spec's patterns hold no `[$]`).
_END_ANCHOR = re.compile(r"(?<!\\)\$")
#: RFC 3339's date-time (section 5.6), which the API server checks for `format: date-time`:
#: a full date, T, a time with optional fractions, and an offset (Z or ±hh:mm).
RFC3339_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z"
)


def _format(validator: Any, format_: str, instance: Any, schema: dict[str, Any]) -> Any:
    """OpenAPI's `format`, for the formats the CRD uses (the API server checks them)."""
    if (
        format_ == "date-time"
        and isinstance(instance, str)
        and not RFC3339_DATE_TIME.match(instance)
    ):
        yield jsonschema.ValidationError(f"{instance!r} is not an RFC 3339 date-time")


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": _go_pattern, "format": _format}
)


def _cel_failures(schema: dict[str, Any], value: Any, path: str, old: Any = None) -> list[str]:
    """The rules `value` breaks. A transition rule (one reading `oldSelf`) runs only on an
    update, and only where the old object had a value, as the API server runs it."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        bindings = {"self": value, "oldSelf": old} if transition else {"self": value}
        if not cel.evaluate(rule["rule"], bindings):
            # The API server reports a rule's fieldPath, when it has one, as the field.
            failures.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in value and value[name] is not None:
                before = old.get(name) if isinstance(old, dict) else None
                failures += _cel_failures(prop, value[name], f"{path}.{name}", before)
    if isinstance(value, list) and "items" in schema:
        # Each item's own rules, reported at its index as the API server reports them. No
        # transition rule sits in a list item, so no old item is matched to a new one.
        for i, item in enumerate(value):
            if item is not None:
                failures += _cel_failures(schema["items"], item, f"{path}[{i}]")
    return failures


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The fields of `value` its schema does not declare: what the API server prunes, or,
    asked for `fieldValidation=Strict` (kubectl's default), refuses as `unknown field`.
    An object without declared properties (metadata) or marked
    x-kubernetes-preserve-unknown-fields (status) keeps whatever it holds."""
    found = []
    if isinstance(value, dict) and "properties" in schema:
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for name, item in value.items():
            if name in schema["properties"]:
                found += unknown_fields(schema["properties"][name], item, f"{path}.{name}")
            elif not preserve:
                found.append(f"{path}.{name}".lstrip("."))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]")
    return found


def validate_against_crd(
    obj: dict[str, Any], field_validation: str = "Strict", old: dict[str, Any] | None = None
) -> list[str]:
    """Every reason the API server would refuse `obj`; empty when it would accept it.

    `field_validation` is the request's fieldValidation: Strict (what kubectl sends since
    1.27) refuses unknown fields; Warn (the server's default for a client that sends
    none) and Ignore prune them, and the object is judged without them. `old`: the object
    as stored, for an update (transition rules compare with it); None for a create."""
    schema = crd_schema()
    if old is not None:
        old = as_cel_reads(schema, apply_defaults(schema, prune(schema, copy.deepcopy(old))))
    unknown = unknown_fields(schema, obj)
    if unknown and field_validation == "Strict":
        return [f'unknown field "{name}"' for name in unknown]
    obj = apply_defaults(schema, prune(schema, copy.deepcopy(obj)))
    validator = _Validator(schema)
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    return _cel_failures(schema, as_cel_reads(schema, obj), "", old)
