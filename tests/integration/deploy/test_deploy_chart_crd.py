"""The chart's CRD lifecycle with the real helm binary: the CRD is a template (so `helm
upgrade` updates it), the repository's crds/ verbatim, kept at uninstall, switchable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.integration.deploy import chart
from tests.integration.deploy.chart import KUBE_VERSION, NAMESPACE, RELEASE, ROOT, of_kind, render

CRD_FILE = "asradaptations.asr.marco.dev.yaml"
KEEP = {"helm.sh/resource-policy": "keep"}


def repository_crd() -> dict:
    return yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())


def crds_of(manifests: list[dict]) -> list[dict]:
    return of_kind(manifests, "CustomResourceDefinition")


def test_the_rendered_crd_is_the_repository_crd_kept_at_uninstall(helm):
    repo = repository_crd()
    (crd,) = crds_of(render(helm))
    assert (crd["apiVersion"], crd["kind"]) == (repo["apiVersion"], repo["kind"])
    assert crd["metadata"]["name"] == repo["metadata"]["name"]
    # Byte for byte would fail on the chart's labels; the spec must be equal as data (a
    # round trip through fromYaml/toYaml would not be: PyYAML reads its 1e-12 as a string).
    assert crd["spec"] == repo["spec"]
    assert repo["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["metadata"]["annotations"] == KEEP
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


def test_the_crd_is_rendered_without_include_crds_as_helm_upgrade_applies_it(helm):
    """The CRD is in the release's manifest, which Helm applies at every upgrade and
    tracks (crds/ is in no manifest); `--skip-crds`, which drops crds/, leaves it there."""
    result = subprocess.run(
        [helm, "install", RELEASE, str(chart.CHART), "--dry-run=client", "--skip-crds",
         "--namespace", NAMESPACE],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = result.stdout.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]
    (crd,) = crds_of([doc for doc in yaml.safe_load_all(manifest) if doc])
    assert crd["spec"] == repository_crd()["spec"]


@pytest.mark.parametrize(
    ("sets", "installed", "annotations"),
    [
        (["crds.install=false"], False, None),
        (["crds.install=false", "crds.keep=false"], False, None),
        (["crds.keep=false"], True, {}),
        (["crds.install=true", "crds.keep=true"], True, KEEP),
    ],
)
def test_crd_values_switch_the_crd_and_its_keep_policy(helm, sets, installed, annotations):
    manifests = render(helm, sets=sets)
    crds = crds_of(manifests)
    assert len(crds) == (1 if installed else 0)
    for crd in crds:
        assert crd["metadata"].get("annotations", {}) == annotations
        assert crd["spec"] == repository_crd()["spec"]
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no schema in kubernetes-validate; test_deploy_chart_render checks them
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def _notes(helm: str, *sets: str) -> str:
    command = [helm, "install", RELEASE, str(chart.CHART), "--dry-run=client", "-n", NAMESPACE]
    for item in sets:
        command += ["--set", item]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_tell_a_release_without_the_crd_to_apply_it(helm):
    apply = f"kubectl apply --server-side -f crds/{CRD_FILE}"
    assert apply in _notes(helm, "crds.install=false")
    assert apply not in _notes(helm)


@pytest.mark.parametrize(("sets", "field"), [(["crds.install=yes"], "install"),
                                             (["crds.kept=true"], "kept")])  # fmt: skip
def test_schema_refuses_a_bad_crd_value_naming_it(helm, sets, field):
    result = chart.helm_template(helm, sets=sets)
    assert result.returncode != 0, f"{sets} was accepted"
    assert field in result.stderr, result.stderr


def _schema_property(crd: dict, name: str) -> dict | None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"].get(name)


def test_an_upgrade_renders_the_changed_crd(helm, tmp_path, monkeypatch):
    """Install a chart, change its CRD as a new version would (`make crd` then
    `make chart-crd`), render the upgrade: the new schema is in what Helm applies."""
    copy = tmp_path / "marco-asr"
    shutil.copytree(chart.CHART, copy)
    monkeypatch.setattr(chart, "CHART", Path(copy))
    installed = subprocess.run(
        [helm, "install", RELEASE, str(copy), "--dry-run=client", "--namespace", NAMESPACE],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    (before,) = crds_of(list(yaml.safe_load_all(installed.stdout.split("MANIFEST:", 1)[1]
                                                .split("NOTES:", 1)[0])))  # fmt: skip
    assert _schema_property(before, "comment") is None

    # The new version: a new optional field and a new printer column, written as the
    # generator writes the file (a header comment, then the YAML).
    changed = repository_crd()
    version = changed["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["comment"] = {
        "type": "string",
        "maxLength": 256,
    }
    version["additionalPrinterColumns"].append(
        {"name": "Comment", "type": "string", "jsonPath": ".spec.comment", "priority": 1}
    )
    (copy / "files" / CRD_FILE).write_text(
        "# Generated by `marco crd` from marco_operator/api.py. Do not edit.\n"
        + yaml.safe_dump(changed, sort_keys=False)
    )
    upgraded = subprocess.run(
        [helm, "template", RELEASE, str(copy), "--is-upgrade", "--namespace", NAMESPACE,
         "--kube-version", KUBE_VERSION],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    (after,) = crds_of([doc for doc in yaml.safe_load_all(upgraded.stdout) if doc])
    assert _schema_property(after, "comment") == {"type": "string", "maxLength": 256}
    assert after["spec"] == changed["spec"] != before["spec"]
    assert after["metadata"]["annotations"] == KEEP
    kubernetes_validate.validate(after, KUBE_VERSION, strict=True)


def test_a_chart_without_its_crd_file_says_what_to_run(helm, tmp_path):
    copy = tmp_path / "marco-asr"
    shutil.copytree(chart.CHART, copy)
    (copy / "files" / CRD_FILE).unlink()
    result = subprocess.run(
        [helm, "template", RELEASE, str(copy), "--kube-version", KUBE_VERSION],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "make chart-crd" in result.stderr


def test_make_chart_crd_copies_into_files_and_make_crd_refreshes_the_copy(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "crds").mkdir()
    source = tmp_path / "crds" / CRD_FILE
    source.write_text("# a changed CRD\n")
    result = subprocess.run(
        ["make", "chart-crd"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "charts/marco-asr/files" / CRD_FILE).read_bytes() == source.read_bytes()
    assert not (tmp_path / "charts/marco-asr/crds").exists()
    plan = subprocess.run(
        ["make", "-n", "crd"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    assert "marco crd --output crds/" in plan
    assert plan.index("marco crd") < plan.index(f"cp crds/{CRD_FILE} charts/marco-asr/files/")
