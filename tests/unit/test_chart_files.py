"""The chart's files without helm: its CRD is the repository's, once, and its README
documents every value with its real default."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.tools import ROOT

CHART = ROOT / "charts" / "marco-asr"
CRD_FILE = "asradaptations.asr.marco.dev.yaml"
# A row of the README's values table: | `name` | `default` | meaning |
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \| (.+) \|$", re.MULTILINE)


def test_the_chart_crd_is_a_copy_of_crds():
    copy = CHART / "files" / CRD_FILE
    assert copy.read_bytes() == (ROOT / "crds" / CRD_FILE).read_bytes(), "run `make chart-crd`"


def test_the_chart_has_no_crds_dir():
    """Helm applies crds/ at install only, and the same CRD there and in templates/
    would be created twice: the install would fail on "already exists"."""
    assert not (CHART / "crds").exists(), (
        "the chart's CRD is templates/crd.yaml reading files/: remove charts/marco-asr/crds/"
        " and run `make chart-crd`"
    )


def leaf_values(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator:
    """(dotted name, default) of every value a user sets: an object is a value of its own
    unless the schema lists its keys (a label map or a selector is one value)."""
    for key, value in values.items():
        node = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in node:
            yield from leaf_values(value, node, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def chart_values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    return dict(leaf_values(values, schema))


def readme_rows() -> dict[str, tuple[str, str]]:
    text = (CHART / "README.md").read_text()
    rows: dict[str, tuple[str, str]] = {}
    for name, default, meaning in ROW.findall(text):
        assert name not in rows, f"{name} twice in the README's values table"
        rows[name] = (default, meaning)
    return rows


def test_the_readme_lists_every_value_and_no_other():
    values, rows = chart_values(), readme_rows()
    assert sorted(set(values) - set(rows)) == [], "values missing from charts/marco-asr/README.md"
    assert sorted(set(rows) - set(values)) == [], "README rows naming no value of values.yaml"


def test_the_readme_defaults_are_the_values_yaml_defaults():
    values, rows = chart_values(), readme_rows()
    wrong = {
        name: (default, values[name])
        for name, (default, _meaning) in rows.items()
        if name in values and yaml.safe_load(default) != values[name]
    }
    assert wrong == {}, "README default (as YAML) differs from values.yaml"


def test_the_leaf_walk_stops_at_maps_the_schema_does_not_list():
    # What the README test relies on, on a small case of its own.
    schema = {"properties": {"a": {"properties": {"b": {}, "labels": {"type": "object"}}}}}
    values = {"a": {"b": 1, "labels": {"x": "1"}}, "c": {}}
    assert dict(leaf_values(values, schema)) == {"a.b": 1, "a.labels": {"x": "1"}, "c": {}}
