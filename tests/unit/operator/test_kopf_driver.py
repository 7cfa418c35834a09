"""The kopf driver's pure edges: CLI, credentials, merge patches, reading pods and Jobs."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from marco_contract.formats import StageResult
from marco_operator.cli import build_parser, main
from marco_operator.kopf_driver import (
    OWN_CHILD_SECONDS,
    DriverOptions,
    build_registry,
    connection_info,
    settings_for,
    wait_seconds,
    with_own_children,
    with_own_status,
)
from marco_operator.kube import collection_path, load_configuration, manifest_collection_path
from marco_operator.metrics import OperatorMetrics
from marco_operator.reconciler import (
    Children,
    Pass,
    _job_state,
    _lead_pod,
    _termination_result,
    event_manifest,
    merged,
)


def test_operator_cli_defaults() -> None:
    args = build_parser().parse_args(["operator", "--all-namespaces"])
    assert (args.trainer_port, args.interval, args.liveness) == (9401, 10.0, None)
    args = build_parser().parse_args(["operator", "-n", "a", "-n", "b", "--interval", "0.5"])
    assert (args.namespace, args.interval) == (["a", "b"], 0.5)


def test_operator_cli_takes_the_flags_the_chart_passes() -> None:
    liveness = ["--liveness", "http://0.0.0.0:8181/healthz"]
    args = build_parser().parse_args(["operator", *liveness, "--all-namespaces", "--standalone"])
    assert (args.all_namespaces, args.standalone, args.peering) == (True, True, None)
    args = build_parser().parse_args(["operator", *liveness, "-n", "a", "--peering", "marco-asr"])
    assert (args.namespace, args.standalone, args.peering) == (["a"], False, "marco-asr")
    assert args.liveness == "http://0.0.0.0:8181/healthz"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-A", "--standalone", "--peering", "x"])


def test_operator_cli_needs_a_scope_and_only_one(capsys) -> None:
    with pytest.raises(SystemExit, match=r"--namespace NS .* or --all-namespaces"):
        main(["operator"])
    with pytest.raises(SystemExit) as exited:
        main(["operator", "-n", "a", "--all-namespaces"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--interval", "0", "must be more than 0 seconds"),
        ("--trainer-timeout", "soon", "is not a number of seconds"),
        ("--trainer-port", "70000", "port must be in 1..65535"),
    ],
)
def test_operator_cli_refuses_bad_numbers_naming_the_flag(capsys, flag, value, message) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-A", flag, value])
    err = capsys.readouterr().err
    assert flag in err and message in err


def test_kopf_logs_in_with_the_client_configuration() -> None:
    configuration = client.Configuration(host="https://10.0.0.1:6443")
    configuration.api_key["BearerToken"] = "Bearer s3cret"
    configuration.ssl_ca_cert = "/run/ca.crt"
    info = connection_info(configuration)
    assert (info.server, info.scheme, info.token) == ("https://10.0.0.1:6443", "Bearer", "s3cret")
    assert (info.ca_path, info.insecure) == ("/run/ca.crt", False)


def test_an_explicit_kubeconfig_is_used(tmp_path) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1234"}}],
        "users": [{"name": "u", "user": {"token": "t0k"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))  # fmt: skip
    configuration = load_configuration(str(path))
    assert configuration.host == "http://127.0.0.1:1234"
    assert connection_info(configuration).token == "t0k"


def test_paths_of_core_and_group_resources() -> None:
    assert collection_path("v1", "configmaps", "ns") == "/api/v1/namespaces/ns/configmaps"
    assert collection_path("batch/v1", "jobs", None) == "/apis/batch/v1/jobs"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "x"}}
    assert manifest_collection_path(job) == "/apis/batch/v1/namespaces/x/jobs"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "x"}}
    assert manifest_collection_path(service) == "/api/v1/namespaces/x/services"
    group = {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
             "metadata": {"namespace": "x"}}  # fmt: skip
    assert (
        manifest_collection_path(group)
        == "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/x/podgroups"
    )


def test_a_kind_the_operator_does_not_create_has_no_guessed_path() -> None:
    # "ingresss" would be the old kind + "s" guess: a 404 far from its cause.
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {}}
    with pytest.raises(
        ValueError, match=r"kind 'Ingress'.*ConfigMap, Event, Job, PodGroup, Secret, Service"
    ):
        manifest_collection_path(ingress)


def test_merge_patch_semantics_match_the_api_server() -> None:
    current = {"phase": "Training", "stop": {"reason": "r"}, "stages": {"a": {"wer": 1.0}}}
    patch = {"phase": "Failed", "stop": None, "stages": {"a": {"wer": None, "state": "Failed"}}}
    assert merged(current, patch) == {"phase": "Failed", "stages": {"a": {"state": "Failed"}}}
    assert merged(current, {"phase": "Training"}) == current
    assert merged({"cycles": [1, 2]}, {"cycles": [3]}) == {"cycles": [3]}


def _pod(name: str, index: str | None = None) -> dict:
    labels = {"job-name": "x-train"}
    if index is not None:
        labels["batch.kubernetes.io/job-completion-index"] = index
    return {"metadata": {"name": name, "labels": labels}, "status": {}}


def test_rank_zero_is_completion_index_zero() -> None:
    assert _lead_pod([_pod("a", "1"), _pod("b", "0"), _pod("c", "2")])["metadata"]["name"] == "b"
    assert _lead_pod([_pod("a", "1")]) is None
    assert _lead_pod([_pod("solo")])["metadata"]["name"] == "solo"
    assert _lead_pod([]) is None


def _try(name: str, created: str, phase: str | None, index: str | None = None, **meta) -> dict:
    pod = _pod(name, index)
    pod["metadata"].update(creationTimestamp=created, **meta)
    if index is not None:  # the annotation alone, as before Kubernetes 1.28
        del pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        pod["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": index}
    pod["status"] = {"phase": phase} if phase else {}
    return pod


def test_rank_zero_is_the_live_pod_of_index_zero_whatever_the_order() -> None:
    failed = _try("x-train-0-zz", "2025-01-01T00:00:00Z", "Failed", "0")
    going = _try("x-train-0-yy", "2025-01-01T00:01:00Z", "Running", "0",
                 deletionTimestamp="2025-01-01T00:02:00Z")  # fmt: skip
    live = _try("x-train-0-aa", "2025-01-01T00:02:00Z", "Running", "0")
    other = _try("x-train-1-bb", "2025-01-01T00:03:00Z", "Running", "1")
    for pods in ([failed, going, live, other], [other, live, going, failed]):
        assert _lead_pod(pods) is live
    assert _lead_pod([failed, going, other]) is None


def test_a_finished_job_s_result_is_its_succeeded_try() -> None:
    result = StageResult(stage="baseline", wer=55.0)
    failed = _try("x-baseline-zz", "2025-01-01T00:00:00Z", "Failed")
    failed["status"]["containerStatuses"] = [
        {"state": {"terminated": {"exitCode": 1, "message": "Traceback"}}}
    ]
    retry = _try("x-baseline-aa", "2025-01-01T00:01:00Z", "Succeeded")
    retry["status"]["containerStatuses"] = [
        {"state": {"terminated": {"exitCode": 0, "message": result.to_termination_message()}}}
    ]
    job = {
        "metadata": {"name": "x-baseline", "labels": {"asr.marco.dev/stage": "baseline"}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    for pods in ([failed, retry], [retry, failed]):
        for pod in pods:
            pod["metadata"]["labels"]["job-name"] = "x-baseline"
        assert _job_state(job, pods).result == result


def test_termination_message_is_a_stage_result_or_nothing() -> None:
    result = StageResult(stage="baseline", wer=12.5, family="llm")
    pod = {"status": {"containerStatuses": [
        {"state": {"terminated": {"exitCode": 0, "message": result.to_termination_message()}}}
    ]}}  # fmt: skip
    assert _termination_result(pod, "j") == result
    crashed = {"status": {"containerStatuses": [
        {"state": {"terminated": {"exitCode": 1, "message": "Traceback ... KeyError"}}}
    ]}}  # fmt: skip
    assert _termination_result(crashed, "j") is None


def test_job_state_reads_conditions_and_suspension() -> None:
    job = {
        "metadata": {"name": "x-filter", "labels": {"asr.marco.dev/stage": "filter"}},
        "spec": {"suspend": True},
        "status": {"active": 0, "conditions": [
            {"type": "Complete", "status": "False"},
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "late"},
        ]},
    }  # fmt: skip
    state = _job_state(job, [])
    assert (state.stage, state.complete, state.failed, state.suspended) == (
        "filter", False, True, True,
    )  # fmt: skip
    assert state.failure_reason == "DeadlineExceeded: late"


def test_events_are_named_uniquely_and_point_at_the_adaptation() -> None:
    body = {"metadata": {"name": "a", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}}
    first, second = (event_manifest(body, "Normal", "PhaseChanged", "x") for _ in range(2))
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["involvedObject"]["uid"] == "u-1"
    assert first["involvedObject"]["kind"] == "AsrAdaptation"


def test_a_finished_job_takes_its_result_from_its_own_lead_pod() -> None:
    job = {
        "metadata": {"name": "x-baseline", "labels": {"asr.marco.dev/stage": "baseline"}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    ours, other = StageResult(stage="baseline", wer=12.5), StageResult(stage="filter")

    def pod(job_name: str, result: StageResult) -> dict:
        terminated = {"exitCode": 0, "message": result.to_termination_message()}
        return {
            "metadata": {"name": f"{job_name}-pod", "labels": {"job-name": job_name}},
            "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
        }

    # The index holds every stage pod of the adaptation; only x-baseline's counts.
    state = _job_state(job, [pod("x-filter", other), pod("x-baseline", ours)])
    assert (state.complete, state.result) == (True, ours)
    assert _job_state(job, [pod("x-filter", other)]).result is None


@pytest.mark.parametrize(
    ("done", "interval", "expected"),
    [
        (Pass(phase="Training", requeue_after=10.0), 0.3, 0.3),  # the driver's ceiling
        (Pass(phase="Training", requeue_after=2.0), 30.0, 2.0),  # core's requeue, sooner
        (Pass(phase="Filtering", requeue_after=None), 30.0, 30.0),  # nothing asked: resync
        (Pass(phase="Succeeded", settled=True), 30.0, None),  # settled: events only
        (Pass(phase=None), 30.0, None),  # gone
        (Pass(phase="Training", retry_after=8.0), 0.3, 8.0),  # failed: its backoff, uncapped
    ],
)
def test_a_loop_sleeps_until_core_s_requeue_within_the_interval(done, interval, expected) -> None:
    assert wait_seconds(done, interval) == expected
    if done.phase is not None and not done.settled and done.retry_after is None:
        # A follower on rank 0 stands in for the timed pass: events (its own) alone.
        assert wait_seconds(done, interval, followed=True) is None


@pytest.mark.parametrize(
    "done",
    [
        Pass(phase="Training", requeue_after=10.0, stopping=True),  # the grace period's clock
        Pass(phase="Training", retry_after=8.0),  # a failed pass: its backoff
    ],
)
def test_a_follower_does_not_stand_in_for_a_stop_s_clock_or_a_backoff(done) -> None:
    assert wait_seconds(done, 0.3, followed=True) == wait_seconds(done, 0.3) is not None


def test_the_default_queue_is_the_flag_else_the_environment_and_a_bad_one_is_refused():
    from marco_operator.kopf_driver import DEFAULT_QUEUE_ENV, default_queue_of

    def parsed(*flags: str):
        return build_parser().parse_args(["operator", "-A", *flags])

    env = {DEFAULT_QUEUE_ENV: "from-env"}
    assert default_queue_of(parsed("--default-queue-name", "from-flag"), env) == "from-flag"
    assert default_queue_of(parsed(), env) == "from-env"
    assert default_queue_of(parsed(), {}) is None
    assert default_queue_of(parsed(), {DEFAULT_QUEUE_ENV: ""}) is None
    with pytest.raises(SystemExit, match=r"\$MARCO_DEFAULT_QUEUE_NAME: queueName must be"):
        default_queue_of(parsed(), {DEFAULT_QUEUE_ENV: "GPU_Queue"})
    with pytest.raises(SystemExit, match=r"--default-queue-name: .*'-bad'"):
        default_queue_of(parsed("--default-queue-name=-bad"), {})


def test_nothing_reads_the_diff_base_the_operator_leaves_empty() -> None:
    """settings_for gives kopf an empty essence of every object (NoDiffBase): right only while
    no handler reads a diff, i.e. no change handler (on.create/update/field/delete...) and
    no daemon that idles until a change. Adding either must fail here first."""
    import kopf

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    registry = build_registry(DriverOptions(), configuration, OperatorMetrics())
    assert list(registry._changing.get_all_handlers()) == []
    daemons = list(registry._spawning.get_all_handlers())
    assert [d.id.rsplit(".", 1)[-1] for d in daemons] == ["adaptation"]
    assert all(getattr(d, "idle", None) is None for d in daemons)
    storage = settings_for(DriverOptions()).persistence.diffbase_storage
    body = kopf.Body({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"s": 1}})
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None  # nothing stored under kopf's key either


def test_a_pass_decides_on_the_status_the_driver_last_wrote_not_an_older_echo() -> None:
    """Only the operator writes the status: its last accepted write stands in for a watch
    that has not brought it back yet; the spec and annotations stay the watch's."""
    stale = {
        "metadata": {"uid": "u1", "resourceVersion": "5", "annotations": {"a": "b"}},
        "spec": {"model": {"source": "/m"}},
        "status": {"phase": "Evaluating"},
    }
    written = {"phase": "Succeeded", "observedGeneration": 1}
    body = with_own_status(dict(stale), ("u1", written))
    assert body["status"] == written and body["status"] is not written  # a copy
    assert (body["metadata"], body["spec"]) == (stale["metadata"], stale["spec"])
    # An adaptation created again under the name (another uid) keeps its own status.
    assert with_own_status(dict(stale), ("u0", written))["status"] == {"phase": "Evaluating"}
    assert with_own_status(dict(stale), None) == stale


def test_the_children_s_watches_ask_the_api_server_for_the_operator_s_objects_only() -> None:
    """Jobs, pods, ConfigMaps and Services are watched with the managed-by label selector,
    filtered by the API server; the AsrAdaptations are watched whole."""
    import kopf

    from marco_operator.api import GROUP, PLURAL, VERSION
    from marco_operator.resources import LABEL_MANAGED_BY, MANAGED_BY

    selectors = settings_for(DriverOptions()).watching.label_selectors
    for group, plural in (("batch", "jobs"), ("", "pods"), ("", "configmaps"), ("", "services")):
        assert selectors.collect(kopf.Resource(group, "v1", plural)) == [
            f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        ]
    assert selectors.collect(kopf.Resource(GROUP, VERSION, PLURAL)) == []
    assert selectors.collect(kopf.Resource("", "v1", "secrets")) == []


def _child(kind: str, name: str, uid: str = "u-1") -> dict:
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": [
        {"kind": "AsrAdaptation", "name": "a", "uid": uid, "controller": True}]}}  # fmt: skip


def test_a_pass_finds_what_its_predecessor_created_until_the_watch_shows_it() -> None:
    filter_job, profile_job = _child("Job", "a-filter"), _child("Job", "a-profile")
    control = _child("ConfigMap", "a-control")
    created = {
        ("jobs", "a-profile"): (100.0, profile_job),  # the watch has not brought it yet
        ("configmaps", "a-control"): (100.0, control),
        ("jobs", "a-filter"): (90.0, {**filter_job, "status": {}}),  # shown by the watch
    }
    watched = Children(jobs=(filter_job,), pods=({"metadata": {"name": "a-filter-x"}},))
    found, kept = with_own_children(watched, created, 101.0, "u-1")
    assert found.jobs == (filter_job, profile_job)  # the watch's copy, not the created one
    assert found.configmaps == (control,) and found.pods == watched.pods
    assert set(kept) == {("jobs", "a-profile"), ("configmaps", "a-control")}
    # Past OWN_CHILD_SECONDS the watch is the truth, even where it shows nothing.
    found, kept = with_own_children(Children(), kept, 100.0 + OWN_CHILD_SECONDS + 1, "u-1")
    assert found == Children() and kept == {}


def test_children_created_for_a_deleted_namesake_are_not_found() -> None:
    created = {("jobs", "a-filter"): (100.0, _child("Job", "a-filter", uid="old"))}
    found, kept = with_own_children(Children(), created, 101.0, "new")
    assert found.jobs == () and kept == {}
