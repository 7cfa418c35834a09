"""Builders of the child objects of an AsrAdaptation: Jobs, a Service, a ConfigMap, a Secret.

Pure: spec and identity in, manifest dicts out. Names are deterministic
(`<name>-<stage>`: names.job_name, as the local driver names its processes) so
creation is idempotent: a second reconcile finds the object instead of making
another.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from marco_contract.exit_codes import NOT_RETRIABLE
from marco_contract.formats import Directive
from marco_contract.layout import Layout, output_path
from marco_contract.results import TERMINATION_LOG_ENV
from marco_operator.api import API_VERSION, KIND, VOLUME_CLAIM_RULE, AsrAdaptationSpec
from marco_operator.names import job_name
from marco_operator.overrides import apply_overrides
from marco_operator.plan import GPU_STAGES, TOKEN_ENV, StageCommand, hub_token_used

MANAGED_BY = "marco-asr"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_ADAPTATION = "asr.marco.dev/adaptation"
LABEL_STAGE = "asr.marco.dev/stage"
#: The index of an LR trial's Job (stage "trials"), which core reads back.
LABEL_TRIAL = "asr.marco.dev/trial"
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: Kueue's batch/Job integration: a Job with this label is queued in the named LocalQueue,
#: and runs once Kueue admits it by setting `spec.suspend` to false.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: Gang scheduling (api.GangSchedulingSpec): each scheduler's PodGroup API, and how a pod
#: says which PodGroup it belongs to (Volcano: an annotation; coscheduling: a label).
POD_GROUP_API = {
    "volcano": "scheduling.volcano.sh/v1beta1",
    "coscheduling": "scheduling.x-k8s.io/v1alpha1",
}
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
COSCHEDULING_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"

DATA_VOLUME = "data"
OUTPUT_VOLUME = "output"
CONTROL_VOLUME = "control"
CONTROL_MOUNT = "/etc/marco/control"
DIRECTIVE_KEY = "directive.json"
ENDPOINT_VOLUME = "endpoint"
ENDPOINT_MOUNT = "/etc/marco/endpoint"
TOKEN_KEY = "token"
RENDEZVOUS_PORT = 29500
#: Rank 0's /metrics (Prometheus, no token) and its /v1/evaluations (the operator, a token).
METRICS_PORT = 9400
API_PORT = 9401
TERMINATION_LOG = "/dev/termination-log"
#: The stage container's name, which the podFailurePolicy's exit-code rule names.
TRAINER_CONTAINER = "trainer"
TRAINER_UID = 1000
HOME = "/home/marco"
#: The writable places of a stage container, whose root filesystem is read-only: where every
#: stage of a `marco run` under strace wrote outside its volumes (torchrun's torchelastic_*
#: and torch's torchinductor_* under /tmp; the Hugging Face, fontconfig and matplotlib
#: caches under ~/.cache, matplotlib's config too once MPLCONFIGDIR points there). The
#: Hugging Face cache is not scratch: HF_HOME is on the output volume (plan.stage_env).
SCRATCH_MOUNTS = {"tmp": "/tmp", "cache": f"{HOME}/.cache"}


@dataclass(frozen=True)
class Owner:
    """Identity of the AsrAdaptation that owns the children."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta.get("namespace", "default"), uid=meta["uid"])


def control_configmap_name(owner: Owner) -> str:
    return f"{owner.name}-control"


def train_service_name(owner: Owner) -> str:
    return f"{owner.name}-train"


def pod_group_name(owner: Owner) -> str:
    """The train Job's PodGroup: named for the stage (another kind than the Service)."""
    return f"{owner.name}-train"


def endpoint_secret_name(owner: Owner) -> str:
    """Named for the adaptation's uid too: the token is the uid's, so a predecessor's
    Secret of the same adaptation name (not yet collected) is never mounted by mistake."""
    return f"{owner.name}-endpoint-{owner.uid.replace('-', '')[:12]}"


def labels(owner: Owner, stage: str | None = None, trial: int | None = None) -> dict[str, str]:
    result = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ADAPTATION: owner.name}
    if stage:
        result[LABEL_STAGE] = stage
    if trial is not None:
        result[LABEL_TRIAL] = str(trial)
    return result


def metadata(
    owner: Owner, name: str, stage: str | None = None, trial: int | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, stage, trial),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def cluster_layout(spec: AsrAdaptationSpec, name: str) -> Layout:
    """Paths as a stage pod of adaptation `name` sees them."""
    directory = output_path(spec.output.path, name)
    output_root = f"{spec.output.mount_path.rstrip('/')}/{directory}"
    return Layout(
        data_mount=spec.data.mount_path,
        data_root=spec.data.mount_path,
        output_root=output_root,
        control_file=f"{CONTROL_MOUNT}/{DIRECTIVE_KEY}",
        endpoint_host="0.0.0.0",  # the pod IP: the operator and Prometheus come from outside
        api_port=API_PORT,
        api_token_file=f"{ENDPOINT_MOUNT}/{TOKEN_KEY}",
    )


def control_configmap(owner: Owner, directive: Directive) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, control_configmap_name(owner), "train"),
        "data": {DIRECTIVE_KEY: directive.model_dump_json()},
    }


def endpoint_secret(owner: Owner, token: str) -> dict[str, Any]:
    """The bearer token rank 0 asks for on its API port (`endpoint_auth.endpoint_token`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, endpoint_secret_name(owner), "train"),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def train_service(owner: Owner) -> dict[str, Any]:
    """Headless Service: stable DNS for pod 0 (the c10d rendezvous host)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, train_service_name(owner), "train"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels(owner, "train"),
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
                {"name": "api", "port": API_PORT, "targetPort": API_PORT},
            ],
        },
    }


def gang_scheduled(spec: AsrAdaptationSpec, command: StageCommand) -> bool:
    """Whether the stage's pods must be placed all at once: the torchrun Job over several
    nodes, whose rendezvous waits for every node (a node's pod placed alone holds its GPUs
    idle until the others come, or for ever). Sharded stages' pods work alone, one shard
    each: placing some of them is progress, so they are never gang-scheduled."""
    gang = spec.resources.gang_scheduling
    return gang is not None and command.distributed and spec.resources.nodes > 1


def pod_group(spec: AsrAdaptationSpec, owner: Owner) -> dict[str, Any]:
    """The train Job's PodGroup for the spec's gang scheduler: every node's pod, or none
    (minMember = nodes). Created before the Job, owned by the adaptation (deleted with it)."""
    gang = spec.resources.gang_scheduling
    if gang is None:
        raise ValueError("pod_group: spec.resources.gangScheduling is not set")
    group_spec: dict[str, Any] = {"minMember": spec.resources.nodes}
    if gang.scheduler == "volcano" and spec.resources.priority_class_name:
        # Volcano orders and preempts gangs by the PodGroup's priority, not its pods'.
        group_spec["priorityClassName"] = spec.resources.priority_class_name
    return {
        "apiVersion": POD_GROUP_API[gang.scheduler],
        "kind": "PodGroup",
        "metadata": metadata(owner, pod_group_name(owner), "train"),
        "spec": group_spec,
    }


def _join_gang(template: dict[str, Any], spec: AsrAdaptationSpec, owner: Owner) -> None:
    """Make a pod template's pods members of the train PodGroup, placed by its scheduler."""
    gang = spec.resources.gang_scheduling
    assert gang is not None
    template["spec"]["schedulerName"] = gang.pod_scheduler()
    meta = template["metadata"]
    if gang.scheduler == "volcano":
        meta.setdefault("annotations", {})[VOLCANO_GROUP_ANNOTATION] = pod_group_name(owner)
    else:
        meta["labels"][COSCHEDULING_GROUP_LABEL] = pod_group_name(owner)


def pod_failure_policy() -> dict[str, Any]:
    """Which pod failures count against the Job's retries. First match wins: a pod the
    cluster took away (preemption, eviction, a node drain, a spot reclaim: the pod's
    DisruptionTarget condition) is replaced without spending a retry; a trainer that exited
    with a code retrying cannot fix (marco_contract.exit_codes) fails the Job at once;
    anything else (a crash, an OOM kill) is counted."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": list(NOT_RETRIABLE),
                },
            },
        ]
    }


def per_index_backoff(backoff_limit: int) -> dict[str, Any]:
    """An Indexed Job's retries, counted per index: a shard or a node that keeps failing
    spends its own `backoff_limit`, not its neighbours'. The Job-wide backoffLimit is left
    out (its default, 2^31-1, once backoffLimitPerIndex is set): it would cap the indexes'
    retries together again. No failed index is tolerated (maxFailedIndexes 0): torchrun
    needs every node, and the stage after a sharded one reads every shard (a missing
    profile shard biases the profile, a missing augment shard drops data unsaid)."""
    return {"backoffLimitPerIndex": backoff_limit, "maxFailedIndexes": 0}


def torchrun_command(spec: AsrAdaptationSpec, owner: Owner, args: list[str]) -> list[str]:
    nodes = spec.resources.nodes
    procs = max(1, spec.resources.gpus_per_node)
    endpoint = f"{job_name(owner.name, 'train')}-0.{train_service_name(owner)}:{RENDEZVOUS_PORT}"
    torchrun = [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc-per-node={procs}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={owner.uid}",
        # A worker that dies (or a node whose pod is replaced) costs a restart of all the
        # workers from checkpoints/last, not the pod: the agents re-rendezvous and go on.
        f"--max-restarts={spec.resources.max_restarts}",
        "--no-python",
        "marco-trainer",
        *args,
    ]
    # The pod's own index decides which node it is; c10d only needs the endpoint.
    return ["sh", "-c", "exec " + shlex.join(torchrun)]


def _container_resources(spec: AsrAdaptationSpec, stage: str) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, str] = {"memory": res.memory}
    if stage in GPU_STAGES and res.gpus_per_node > 0:
        gpus = str(res.gpus_per_node if stage == "train" else 1)
        requests[res.gpu_resource_name] = gpus
        limits[res.gpu_resource_name] = gpus
    return {"requests": requests, "limits": limits}


def _volumes(spec: AsrAdaptationSpec, owner: Owner, stage: str) -> tuple[list, list]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    data_claim = spec.data.volume_claim
    if not data_claim:
        # Core refuses such a spec first (api.cluster_problem); a pod without the shared
        # volume would write its results where no later stage can read them.
        raise ValueError(f"spec.data.volumeClaim: {VOLUME_CLAIM_RULE}")
    output_claim = spec.output.volume_claim or data_claim
    volumes.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": data_claim}})
    mounts.append({"name": DATA_VOLUME, "mountPath": spec.data.mount_path})
    if output_claim != data_claim:
        volumes.append(
            {"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": output_claim}}
        )
        mounts.append({"name": OUTPUT_VOLUME, "mountPath": spec.output.mount_path})
    else:
        # One shared volume, mounted twice: the outputs under output.mountPath.
        mounts.append({"name": DATA_VOLUME, "mountPath": spec.output.mount_path})
    for volume, path in SCRATCH_MOUNTS.items():
        volumes.append({"name": volume, "emptyDir": {}})
        mounts.append({"name": volume, "mountPath": path})
    if stage == "train":
        volumes.append(
            {"name": CONTROL_VOLUME, "configMap": {"name": control_configmap_name(owner)}}
        )
        mounts.append({"name": CONTROL_VOLUME, "mountPath": CONTROL_MOUNT, "readOnly": True})
        secret = {"secretName": endpoint_secret_name(owner), "defaultMode": 0o440}
        volumes.append({"name": ENDPOINT_VOLUME, "secret": secret})
        mounts.append({"name": ENDPOINT_VOLUME, "mountPath": ENDPOINT_MOUNT, "readOnly": True})
        shm = {"medium": "Memory", "sizeLimit": spec.resources.shared_memory}
        volumes.append({"name": "shm", "emptyDir": shm})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    return volumes, mounts


def stage_job(
    spec: AsrAdaptationSpec, owner: Owner, command: StageCommand, queue: str | None = None
) -> dict[str, Any]:
    """The Job that runs one stage: Indexed for sharded stages and for torchrun. With a Kueue
    `queue`, created suspended and labelled for it: Kueue unsuspends it on admission (and
    its activeDeadlineSeconds counts from then: the Job controller resets startTime)."""
    res = spec.resources
    stage = command.stage
    name = job_name(owner.name, stage, command.trial)
    volumes, mounts = _volumes(spec, owner, stage)
    completions = res.nodes if command.distributed else command.shards
    if command.distributed:
        container_command = torchrun_command(spec, owner, command.args)
    else:
        container_command = ["marco-trainer", *command.args]
    env: list[dict[str, Any]] = [
        {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
        {"name": "MARCO_NUM_SHARDS", "value": str(completions)},
        *({"name": key, "value": value} for key, value in command.env.items()),
        {"name": "MPLCONFIGDIR", "value": f"{HOME}/.cache/matplotlib"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    token = spec.model.token_secret
    if token is not None and hub_token_used(spec, stage):
        # A reference, never the value: the token stays in its Secret and out of the Job.
        ref = {"name": token.name, "key": token.key}
        env.append({"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": ref}})
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": res.image,
        "imagePullPolicy": res.image_pull_policy,
        "command": container_command,
        "env": env,
        "resources": _container_resources(spec, stage),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
        },
    }
    if command.distributed:
        container["ports"] = [
            {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
            {"name": "api", "containerPort": API_PORT},
        ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            # The kubelet re-owns a volume only when its root is not already fsGroup's:
            # a shared volume of checkpoints and models is walked once, not by every pod.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if res.node_selector:
        pod_spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in res.tolerations
        ]
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    if res.service_account_name:
        pod_spec["serviceAccountName"] = res.service_account_name
    if command.distributed:
        pod_spec["subdomain"] = train_service_name(owner)
    job_spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        "backoffLimit": res.backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        # Counted from the Job's start, waiting pods included: a pod that never starts
        # fails its stage (DeadlineExceeded) instead of hanging it.
        "activeDeadlineSeconds": res.stage_deadline_seconds.of(stage),
        "template": {
            "metadata": {"labels": labels(owner, stage, command.trial)},
            "spec": pod_spec,
        },
    }
    # The platform's overlay last, over everything above (trials and every torchrun pod too).
    job_spec["template"] = apply_overrides(job_spec["template"], spec.pod_template_overrides, stage)
    if gang_scheduled(spec, command):
        # After the overlay: an override's label or annotation must not take a pod out of
        # its gang (the scheduler would wait for a member that never comes).
        _join_gang(job_spec["template"], spec, owner)
    if completions > 1 or command.distributed:
        job_spec["completionMode"] = "Indexed"
        del job_spec["backoffLimit"]
        job_spec.update(per_index_backoff(res.backoff_limit))
    meta = metadata(owner, name, stage, command.trial)
    if queue is not None:
        # Suspended from its creation, so that no pod starts before Kueue admits it (Kueue's
        # webhook would suspend it too, but a cluster may run without it in front).
        job_spec["suspend"] = True
        meta["labels"][QUEUE_LABEL] = queue
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": job_spec,
    }
