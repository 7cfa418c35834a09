"""`marco crd`: the CustomResourceDefinition, generated from the pydantic models.

Pydantic writes JSON Schema 2020-12; a CRD wants a structural OpenAPI v3.0
schema: no $ref, nullable instead of null unions, boolean exclusive bounds,
no titles. The conversion is mechanical and lives here, so crds/ is never
edited by hand (a test regenerates it and diffs).
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import yaml
from pydantic import BaseModel

from marco_contract.status import AsrAdaptationStatus
from marco_operator.api import (
    FROZEN_SPEC_MESSAGE,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    NAME_LENGTH_RULE,
    NAME_PATTERN,
    NAME_RULE,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    AsrAdaptationSpec,
    cel,
    frozen_spec_rule,
)
from marco_operator.generated import add_generator

CRD_FILE = f"{PLURAL}.{GROUP}.yaml"

#: `kubectl get asradaptations`: the phase and the Ready condition first, as for built-in
#: kinds; the WERs in percent. `-o wide` adds the priority-1 columns.
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Cycle", "type": "integer", "jsonPath": ".status.cycle"},
    {"name": "LR", "type": "number", "jsonPath": ".status.learningRate"},
    {"name": "WER", "type": "number", "jsonPath": ".status.wer"},
    {"name": "Best WER", "type": "number", "jsonPath": ".status.bestWer"},
    {"name": "Family", "type": "string", "jsonPath": ".status.family", "priority": 1},
    {"name": "Baseline", "type": "number", "jsonPath": ".status.baselineWer", "priority": 1},
    {"name": "Final", "type": "number", "jsonPath": ".status.finalWer", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]

_DROP = {"title", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    return {k: _resolve(v, defs) for k, v in node.items() if k not in _DROP}


def _openapi(node: Any) -> Any:
    """JSON Schema 2020-12 → structural OpenAPI v3.0, bottom-up."""
    if isinstance(node, list):
        return [_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: _openapi(v) for k, v in node.items()}
    for union in ("anyOf", "oneOf"):
        options = node.get(union)
        if options and any(o.get("type") == "null" for o in options):
            rest = [o for o in options if o.get("type") != "null"]
            node.pop(union)
            if len(rest) == 1:
                node = {**rest[0], **node}
            else:
                node[union] = rest
            node["nullable"] = True
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[plain] = node[bound]
            node[bound] = True
    if (
        node.get("x-kubernetes-preserve-unknown-fields")
        and node.get("additionalProperties") is True
    ):
        # An object whose schema is Kubernetes' (a volume source, affinity): kept as written.
        node.pop("additionalProperties")
    if node.get("additionalProperties") is False:
        # Structural schemas forbid it beside properties. The API server prunes unknown
        # fields, or refuses them under fieldValidation=Strict (kubectl's default).
        node.pop("additionalProperties")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None:
        node.pop("default")  # a null default only clutters the schema
    if node.get("type") == "object" and "properties" in node:
        required = set(node.get("required", []))
        for name, prop in node["properties"].items():
            # Objects of defaults get `default: {}`, so the API server fills them in
            # and CEL rules can read e.g. self.profile.enabled on a terse manifest.
            if (
                name not in required
                and prop.get("type") == "object"
                and "properties" in prop
                and not prop.get("nullable")
                and "default" not in prop
            ):
                prop["default"] = {}
    return node


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _openapi(_resolve(raw, raw.get("$defs", {})))


def build_crd() -> dict[str, Any]:
    spec_schema = structural_schema(AsrAdaptationSpec)
    status_schema = structural_schema(AsrAdaptationStatus)
    # kopf keeps its own bookkeeping under status; pruning it would break the operator.
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    root = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [
            cel(f"size(self.metadata.name) <= {MAX_NAME_LENGTH}", NAME_LENGTH_RULE),
            # Its Service and Jobs take it as a prefix, and a Service's name is a DNS-1035
            # label (a CR's own name need only be a DNS-1123 subdomain).
            cel(f"self.metadata.name.matches('{NAME_PATTERN}')", NAME_RULE),
            # A transition rule: it reads the old object's status, so it sits at the root.
            cel(frozen_spec_rule(), FROZEN_SPEC_MESSAGE),
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "marco-asr"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "marco"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `marco crd` from marco_operator/api.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_generator(
        subparsers,
        "crd",
        "write the AsrAdaptation CRD generated from the API",
        render_crd,
        CRD_FILE,
    )
