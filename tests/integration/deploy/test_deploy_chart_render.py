"""The Helm chart with the real helm binary: lint, render, validate, refuse bad values."""

from __future__ import annotations

import json
import shutil
import subprocess

import kubernetes_validate
import pytest

from marco_operator.dashboard import render_dashboard
from marco_operator.resources import (
    LABEL_MANAGED_BY,
    LABEL_STAGE,
    MANAGED_BY,
    Owner,
    labels,
)
from tests.integration.deploy.chart import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    helm_template,
    of_kind,
    one,
    render,
)

MONITOR_KINDS = {"PodMonitor", "ServiceMonitor"}


def test_value_sets_cover_the_modes():
    assert {"default", "namespaced", "cluster-wide", "monitoring"} <= set(VALUE_SETS)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_passes(helm, name):
    command = [helm, "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    if VALUE_SETS[name] is not None:
        command += ["--values", str(VALUE_SETS[name])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_manifest_is_valid(helm, name):
    manifests = render(helm, VALUE_SETS[name])
    kinds = {m["kind"] for m in manifests}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole"} <= kinds
    for manifest in manifests:
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] in MONITOR_KINDS:
            _check_monitor(manifest)
            continue
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {where} is invalid: {error.message} at {list(error.path)}")


def _check_monitor(manifest):
    """prometheus-operator objects: their schemas are not in kubernetes-validate."""
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["metadata"]["namespace"] == NAMESPACE
    spec = manifest["spec"]
    assert spec["selector"]["matchLabels"], "a monitor without a selector scrapes everything"
    endpoints_key = "podMetricsEndpoints" if manifest["kind"] == "PodMonitor" else "endpoints"
    assert set(spec) <= {"selector", "namespaceSelector", endpoints_key}
    for endpoint in spec[endpoints_key]:
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert endpoint["interval"][-1] in "smh"


def test_chart_crd_is_the_repository_crd(helm):
    repo_crd = ROOT / "crds" / "asradaptations.asr.marco.dev.yaml"
    chart_crd = CHART / "crds" / repo_crd.name
    assert chart_crd.read_bytes() == repo_crd.read_bytes(), "run `make chart-crd`"
    assert [p.name for p in (CHART / "crds").iterdir()] == [repo_crd.name]
    crd = one(render(helm), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "asradaptations.asr.marco.dev"


def test_committed_dashboard_is_in_the_configmap(helm):
    configmap = next(
        m for m in of_kind(render(helm), "ConfigMap") if m["metadata"]["name"].endswith("dashboard")
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["marco-asr.json"]) == json.loads(render_dashboard())


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        (["watch.scope=everywhere"], "scope"),
        (["watch.scope=namespaced"], "namespaces"),
        (["operator.metricsPort=70000"], "metricsPort"),
        (["watch.scope=namespaced", "watch.namespaces={Bad_Name}"], "namespaces"),
        (["metrics.podMonitor.interval=soon"], "interval"),
        (["image.pullPolicy=Sometimes"], "pullPolicy"),
        (["operatorr.healthPort=8080"], "operatorr"),
        (["kueue.defaultQueueName=Team_GPUs"], "defaultQueueName"),
    ],
)
def test_schema_refuses_a_bad_value_naming_the_field(helm, sets, field):
    result = helm_template(helm, sets=sets)
    assert result.returncode != 0, f"{sets} was accepted"
    assert field in result.stderr, result.stderr


def test_several_replicas_need_peering(helm):
    result = helm_template(helm, sets=["replicaCount=2"])
    assert result.returncode != 0
    assert "peering.enabled" in result.stderr
    deployment = one(render(helm, VALUE_SETS["peering"]), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def _operator(manifests):
    deployment = one(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def test_operator_pod_is_locked_down(helm):
    deployment, container = _operator(render(helm))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_probes_hit_the_liveness_endpoint_the_operator_is_told_to_serve(helm):
    _, container = _operator(render(helm, sets=["operator.healthPort=8181"]))
    args = container["args"]
    assert args[args.index("--liveness") + 1] == "http://0.0.0.0:8181/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and ports[get["port"]] == 8181


def test_cluster_wide_operator_serves_all_namespaces_standalone(helm):
    _, container = _operator(render(helm, VALUE_SETS["cluster-wide"]))
    args = container["args"]
    assert "--all-namespaces" in args and "--namespace" not in args
    assert "--standalone" in args and "--peering" not in args
    assert container["image"] == "registry.example.com/marco-asr/operator:0.1.0-rc1"


def test_namespaced_operator_serves_only_its_namespaces(helm):
    _, container = _operator(render(helm, VALUE_SETS["namespaced"]))
    args = container["args"]
    assert "--all-namespaces" not in args
    served = [args[i + 1] for i, arg in enumerate(args) if arg == "--namespace"]
    assert served == ["asr-team-a", "asr-team-b"]


def test_peering_replaces_standalone(helm):
    _, container = _operator(render(helm, VALUE_SETS["peering"]))
    args = container["args"]
    assert "--standalone" not in args
    assert args[args.index("--peering") + 1] == "marco-asr"


def test_metrics_service_reaches_the_operator_metrics_port(helm):
    manifests = render(helm, sets=["operator.metricsPort=9191"])
    deployment, container = _operator(manifests)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MARCO_METRICS_PORT"] == "9191"
    service = next(m for m in of_kind(manifests, "Service") if "metrics" in m["metadata"]["name"])
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9191 and port["name"] == "metrics"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]] == 9191
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_monitors_are_off_by_default(helm):
    kinds = {m["kind"] for m in render(helm)}
    assert not kinds & MONITOR_KINDS


def test_monitors_select_the_operator_and_the_training_pods(helm):
    manifests = render(helm, VALUE_SETS["monitoring"])
    service_monitor = one(manifests, "ServiceMonitor")
    service = next(m for m in of_kind(manifests, "Service") if "metrics" in m["metadata"]["name"])
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    pod_monitor = one(manifests, "PodMonitor")
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    assert selector == {LABEL_MANAGED_BY: MANAGED_BY, LABEL_STAGE: "train"}
    # The labels and port name the operator really gives training pods.
    train_labels = labels(Owner(name="whisper", namespace="asr", uid="u"), "train")
    assert selector.items() <= train_labels.items()
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "10s"
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    configmap = next(
        m for m in of_kind(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]
    )
    assert configmap["metadata"]["namespace"] == "monitoring"


def test_trainer_service_account_has_no_token(helm):
    manifests = render(helm, VALUE_SETS["namespaced"])
    trainers = [
        m for m in of_kind(manifests, "ServiceAccount") if m["metadata"]["name"].endswith("trainer")
    ]
    assert sorted(m["metadata"]["namespace"] for m in trainers) == ["asr-team-a", "asr-team-b"]
    assert all(m["automountServiceAccountToken"] is False for m in trainers)
    default = render(helm)
    (trainer,) = [
        m for m in of_kind(default, "ServiceAccount") if "trainer" in m["metadata"]["name"]
    ]
    assert trainer["metadata"]["namespace"] == NAMESPACE


def test_notes_tell_the_user_what_to_apply_next(helm):
    result = subprocess.run(
        [helm, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply -f examples/" in notes
    assert "kubectl get asra" in notes and "-w" in notes
    assert f"{RELEASE}-marco-asr-trainer" in notes


def test_make_chart_crd_copies_and_make_crd_refreshes_the_copy(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "crds").mkdir()
    source = tmp_path / "crds" / "asradaptations.asr.marco.dev.yaml"
    source.write_text("# a changed CRD\n")
    result = subprocess.run(
        ["make", "chart-crd"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "charts/marco-asr/crds" / source.name).read_bytes() == source.read_bytes()
    plan = subprocess.run(
        ["make", "-n", "crd"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    assert "marco crd --output crds/" in plan
    assert plan.index("marco crd") < plan.index(f"cp crds/{source.name} charts/marco-asr/crds/")


@pytest.mark.parametrize(("name", "queue"), [("default", None), ("cluster-wide", "team-gpus")])
def test_the_default_kueue_queue_reaches_the_operator(helm, name, queue):
    """kueue.defaultQueueName → $MARCO_DEFAULT_QUEUE_NAME → the operator's default queue, as
    its own command line reads it (empty: none)."""
    from marco_operator.cli import build_parser
    from marco_operator.kopf_driver import DEFAULT_QUEUE_ENV, default_queue_of

    _, container = _operator(render(helm, VALUE_SETS[name]))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    args = build_parser().parse_args(["operator", *container["args"]])
    assert default_queue_of(args, env) == queue
    assert env[DEFAULT_QUEUE_ENV] == (queue or "")
