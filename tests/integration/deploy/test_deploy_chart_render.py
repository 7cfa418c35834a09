"""The Helm chart with the real helm binary: lint, render, validate, refuse bad values."""

from __future__ import annotations

import json
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from marco_operator.api import parse_spec
from marco_operator.dashboard import render_dashboard
from marco_operator.plan import stage_command, trial_command
from marco_operator.resources import (
    LABEL_COMPLETION_INDEX,
    LABEL_MANAGED_BY,
    LABEL_STAGE,
    MANAGED_BY,
    Owner,
    cluster_layout,
    stage_job,
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
    values_of,
)

MONITOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


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
    assert {"Deployment", "ServiceAccount", "ClusterRole"} <= kinds
    crd_expected = values_of(VALUE_SETS[name])["crds"]["install"]
    assert ("CustomResourceDefinition" in kinds) == crd_expected
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
    if manifest["kind"] == "PrometheusRule":
        # promtool checks the expressions (test_deploy_alerts); here the object's shape.
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) == {"name", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert rule["alert"] and rule["expr"] and rule["labels"]["severity"]
        return
    assert spec["selector"]["matchLabels"], "a monitor without a selector scrapes everything"
    endpoints_key = "podMetricsEndpoints" if manifest["kind"] == "PodMonitor" else "endpoints"
    assert set(spec) <= {"selector", "namespaceSelector", endpoints_key}
    for endpoint in spec[endpoints_key]:
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert endpoint["interval"][-1] in "smh"


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
        (["metrics.prometheusRule.trainingStalled.minutes=0"], "minutes"),
        (["metrics.prometheusRule.noEvaluation.minutes=soon"], "minutes"),
        (["metrics.prometheusRule.operatorErrors.perSecond=-1"], "perSecond"),
        (["metrics.prometheusRule.trainerDown.for=a-while"], "for"),
        (["metrics.prometheusRule.trainerDown.severity=page"], "severity"),
        (["metrics.prometheusRule.targetDown.for=5m"], "targetDown"),
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
    # fsGroup set: the kubelet re-owns volumes only when their root is not fsGroup's.
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
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
    assert selector == {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_STAGE: "train",
        LABEL_COMPLETION_INDEX: "0",
    }
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "10s"
    relabel = {r.get("targetLabel"): r for r in endpoint["relabelings"]}
    # The job the MarcoTrainerTargetDown alert selects.
    assert relabel["job"]["replacement"] == "marco-trainer"
    rule = one(manifests, "PrometheusRule")
    (down,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if "up{" in r["expr"]]
    assert 'job="marco-trainer"' in down["expr"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    configmap = next(
        m for m in of_kind(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]
    )
    assert configmap["metadata"]["namespace"] == "monitoring"


def _pods_of(job):
    """The pods Kubernetes makes of a Job: one per completion index, labelled with it
    when the Job is Indexed (batch.kubernetes.io/job-completion-index, Kubernetes 1.28+)."""
    spec = job["spec"]
    template = spec["template"]
    indexed = spec.get("completionMode") == "Indexed"
    return [
        {**template["metadata"]["labels"], **({LABEL_COMPLETION_INDEX: str(i)} if indexed else {})}
        for i in range(spec["completions"])
    ], template["spec"]["containers"][0]


def _serves_metrics(container) -> bool:
    command = " ".join(container["command"])
    ports = {p["name"] for p in container.get("ports", [])}
    match = re.search(r"--metrics-port'? '?(\d+)", command)
    return "metrics" in ports and match is not None and int(match.group(1)) > 0


def test_pod_monitor_selects_exactly_the_pods_that_serve_metrics(helm):
    """Rank 0 of a multi-node train Job serves; its other nodes and every LR trial do not."""
    selector = one(render(helm, VALUE_SETS["monitoring"]), "PodMonitor")["spec"]["selector"]
    data = yaml.safe_load((ROOT / "examples" / "whisper-large-v3-telephony.yaml").read_text())
    data["spec"]["resources"]["nodes"] = 3
    data["spec"]["trials"] = {"enabled": True, "count": 2}
    spec = parse_spec(data["spec"])
    owner = Owner(name="whisper", namespace="asr", uid="u")
    layout = cluster_layout(spec, owner.name)
    train = stage_command(
        spec, "train", layout, name=owner.name, family="encoder-decoder", learning_rate=1e-6
    )
    jobs = [stage_job(spec, owner, train)] + [
        stage_job(
            spec,
            owner,
            trial_command(spec, layout, i, 1e-6, name=owner.name, family="encoder-decoder"),
        )
        for i in range(2)
    ]
    selected, serving = [], []
    for job in jobs:
        pods, container = _pods_of(job)
        for pod in pods:
            if selector["matchLabels"].items() <= pod.items():
                selected.append((job["metadata"]["name"], pod.get(LABEL_COMPLETION_INDEX)))
            # Rank 0 is the pod of index 0: torchrun's node rank 0 runs there.
            if _serves_metrics(container) and pod.get(LABEL_COMPLETION_INDEX) == "0":
                serving.append((job["metadata"]["name"], pod.get(LABEL_COMPLETION_INDEX)))
    assert selected == serving == [(jobs[0]["metadata"]["name"], "0")]


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
