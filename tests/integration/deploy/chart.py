"""Render the chart with the real helm binary and hand back the manifests as dicts."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.tools import ROOT

CHART = ROOT / "charts" / "marco-asr"
RELEASE = "marco"
NAMESPACE = "marco-system"
KUBE_VERSION = "1.35.0"
#: The value sets the chart is tested with: defaults plus every file in the chart's ci/.
VALUE_SETS: dict[str, Path | None] = {
    "default": None,
    **{path.stem.removesuffix("-values"): path for path in sorted((CHART / "ci").glob("*.yaml"))},
}


def helm_template(
    helm: str, values: Path | None = None, sets: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    command = [
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        # No --include-crds: the chart has no crds/, its CRD is a template, and what
        # `helm template` prints by default is what `helm upgrade` applies.
    ]
    if values is not None:
        command += ["--values", str(values)]
    for item in sets:
        command += ["--set", item]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def values_of(values: Path | None) -> dict[str, Any]:
    """The chart's values.yaml with a value set's file merged over it, as Helm merges them."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if values is not None:
        _merge(merged, yaml.safe_load(values.read_text()) or {})
    return merged


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def render(helm: str, values: Path | None = None, sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    result = helm_template(helm, values, sets)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed ({values}, {sets}):\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
