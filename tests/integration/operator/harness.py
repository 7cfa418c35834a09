"""A cluster for the kopf driver without a cluster: kmock's API emulator, the operator in a
background thread, the test as Job controller and kubelet, and a scripted rank-0 trainer.

Threads: the emulator serves on its own event loop, the operator runs on another, and the
test talks to both over HTTP (marco_operator.kube.Kube), as kubectl and the kubelet would.
Objects are changed only through the API, so every change reaches the watch streams.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import jsonpatch
import kmock
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

import marco_contract
import marco_operator
import marco_trainer
from marco_contract.formats import Directive, Evaluation, EvaluationHistory, StageResult
from marco_contract.layout import TRIALS_STAGE
from marco_operator.api import API_VERSION, PLURAL
from marco_operator.kopf_driver import DriverOptions, operate
from marco_operator.kube import Kube, collection_path
from marco_operator.metrics import OperatorMetrics
from marco_operator.names import job_name
from marco_operator.ownership import JOB_UID_LABEL
from marco_operator.policy import Policy
from marco_operator.reconciler import JOB_NAME_LABEL, adaptation_path, control_path
from marco_operator.resources import (
    DIRECTIVE_KEY,
    LABEL_ADAPTATION,
    LABEL_COMPLETION_INDEX,
    LABEL_STAGE,
    LABEL_TRIAL,
    Owner,
    control_configmap,
    endpoint_secret_name,
    labels,
    metadata,
    train_service,
)

NAMESPACE = "asr"
OTHER_NAMESPACE = "elsewhere"
#: The shared PersistentVolumeClaim (ReadWriteMany) every cluster fixture holds and the
#: tests' specs name (test_operator_kopf.make_spec): a cluster run needs one.
SHARED_CLAIM = "asr-data"
#: The harness's own requests (playing kubectl and the Job controller) carry this agent.
TEST_USER_AGENT = "marco-test-harness"
T = TypeVar("T")


def rbac_of_call(method: str, path: str, watch: bool) -> tuple[str, str, str] | None:
    """The (apiGroup, resource, verb) an API request needs, as the API server authorises it;
    None for discovery (/api, /apis/G/V), which every authenticated client may read."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:  # /api/v1/...
        group, rest = "", parts[2:]
    else:  # /apis/group/version/...
        group, rest = (parts[1] if len(parts) > 1 else ""), parts[3:]
    if not rest:
        return None
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]  # drop namespaces/<ns>/ before a namespaced resource
    resource, named = rest[0], len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"  # subresource, e.g. asradaptations/status
    verb = {
        "GET": "watch" if watch else ("get" if named else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return group, resource, verb


_VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}
# (group/version/plural, kind, namespaced, subresources, short names)
_RESOURCES = [
    (f"{API_VERSION}/{PLURAL}", "AsrAdaptation", True, {"status"}, {"asra"}),
    (
        "apiextensions.k8s.io/v1/customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        {"status"},
        {"crd"},
    ),
    ("v1/namespaces", "Namespace", False, {"status"}, {"ns"}),
    ("v1/events", "Event", True, set(), {"ev"}),
    ("v1/pods", "Pod", True, {"status"}, {"po"}),
    ("v1/configmaps", "ConfigMap", True, set(), {"cm"}),
    ("v1/secrets", "Secret", True, set(), set()),
    ("v1/services", "Service", True, {"status"}, {"svc"}),
    ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True, {"status"}, {"pvc"}),
    ("batch/v1/jobs", "Job", True, {"status"}, set()),
    # The gang schedulers' CRDs (spec.resources.gangScheduling), as Volcano and
    # scheduler-plugins install them.
    ("scheduling.volcano.sh/v1beta1/podgroups", "PodGroup", True, {"status"}, {"pg"}),
    ("scheduling.x-k8s.io/v1alpha1/podgroups", "PodGroup", True, {"status"}, set()),
]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: apimachinery's rule for a resource quantity ("4", "32Gi", "500m").
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def job_refusal(job: Mapping[str, Any]) -> kmock.KubernetesError | None:
    """What the API server answers a Job the operator could get wrong from a spec, as it
    answers it: a malformed quantity fails the Job's decoding (400 BadRequest, a message
    that names no field); a mount path twice in one container fails validation (422 Invalid,
    naming the field and value)."""
    pod = job.get("spec", {}).get("template", {}).get("spec", {})
    quantities = [
        value
        for container in pod.get("containers") or []
        for kind in ("requests", "limits")
        for value in ((container.get("resources") or {}).get(kind) or {}).values()
    ]
    quantities += [
        volume["emptyDir"]["sizeLimit"]
        for volume in pod.get("volumes") or []
        if (volume.get("emptyDir") or {}).get("sizeLimit") is not None
    ]
    if any(not QUANTITY.match(str(q)) for q in quantities):
        return kmock.KubernetesError(
            status=400,
            reason="BadRequest",
            message='Job in version "v1" cannot be handled as a Job: quantities must match '
            f"the regular expression '{QUANTITY.pattern}'",
        )
    problems = []
    for i, container in enumerate(pod.get("containers") or []):
        seen: set[str] = set()
        for j, mount in enumerate(container.get("volumeMounts") or []):
            path = mount.get("mountPath")
            if path in seen:
                problems.append(
                    f"spec.template.spec.containers[{i}].volumeMounts[{j}].mountPath: "
                    f'Invalid value: "{path}": must be unique'
                )
            seen.add(path)
    if not problems:
        return None
    listed = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
    name = job.get("metadata", {}).get("name")
    return kmock.KubernetesError(
        status=422, reason="Invalid", message=f'Job.batch "{name}" is invalid: {listed}'
    )


@dataclass
class Fault:
    """A fault the emulator injects into the next `times` requests that match: `method` on a
    path ending with `path`, sent by a client whose user agent starts with `agent` (the
    operator's own client by default: kopf's watches and the harness's writes go through).

    The request is first held until `release` is set (when given), then for `delay` seconds;
    then answered with `status` (a Status body with `reason` and `message`, nothing applied)
    or, when `status` is None, served as usual: a write that lands after its client gave up.
    """

    method: str
    path: str
    status: int | None = None
    reason: str = "InternalError"
    message: str = "injected fault"
    delay: float = 0.0
    release: threading.Event | None = None
    times: int = 1
    agent: str = "marco-operator/"
    #: Set when the first matching request arrives (the fault has fired).
    reached: threading.Event = field(default_factory=threading.Event)
    hits: int = 0

    def matches(self, method: str, path: str, agent: str) -> bool:
        return (
            self.times > 0
            and method == self.method
            and path.rstrip("/").endswith(self.path)
            and agent.startswith(self.agent)
        )


def _selected(request: kmock.Request, obj: Mapping[str, Any]) -> bool:
    """Whether `obj` passes the request's fieldSelector: metadata.name and
    metadata.namespace (= or ==, comma-separated), the fields every kind supports."""
    selector = request.params.get("fieldSelector") or ""
    meta = obj.get("metadata") or {}
    for term in filter(None, selector.split(",")):
        field, _, value = term.replace("==", "=").partition("=")
        known = field in ("metadata.name", "metadata.namespace")
        if known and meta.get(field.split(".")[1]) != value:
            return False
    return True


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server maintains and clients rely on:
    uid, creationTimestamp, resourceVersion (kopf's patches test it), metadata.generation
    (bumped by spec changes, read back as status.observedGeneration), generateName; and a
    watch that starts from the listing's resourceVersion instead of replaying what the
    client just listed (kopf would handle every object twice and race itself)."""

    _versions = itertools.count(1)
    #: Every request served: (method, path, watch, user agent). Tests derive RBAC from it.
    calls: list[tuple[str, str, bool, str]]
    #: Every DELETE: (path, its propagationPolicy, "" when none was given).
    deletions: list[tuple[str, str]]
    #: What /api/v1/namespaces lists (see __call__).
    namespaces: tuple[str, ...] = ()
    #: Creations to refuse, as an admission webhook would: (plural, name) -> the error.
    refusals: dict[tuple[str, str], kmock.KubernetesError]
    #: Event POSTs to fail, by reason: [the error, how many more times] (event_refusals).
    event_refusals: dict[str, list[Any]]
    #: Every Event created: (time.monotonic(), type, reason, message), in order.
    event_log: list[tuple[float, str, str, str]]
    #: Every write of an AsrAdaptation's status: (time.monotonic(), its conditions).
    status_log: list[tuple[float, list[dict[str, Any]]]]
    #: Every write refused for a stale resourceVersion (a JSON patch's test): (method, path).
    conflicts: list[tuple[str, str]]
    #: Faults to inject into requests (EmulatedCluster.inject).
    faults: list[Fault]
    #: Watch events to drop, by plural: the stream ends instead of delivering the event.
    watch_drops: dict[str, int]
    #: Watch requests resuming from a resourceVersion to answer 410 Gone, by plural.
    watch_expiries: dict[str, int]

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock streams a watch untyped (application/octet-stream); client-go, kubectl's
        # library, decodes a watch only as the API server sends it: application/json.
        for reaction in list(self._payloads):
            if getattr(reaction.response, "payload", None) == self._serve_watch:
                _ = reaction << {"Content-Type": "application/json"}

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        agent = raw_request.headers.get("User-Agent", "")
        if raw_request.method == "DELETE":
            policy = raw_request.query.get("propagationPolicy", "")
            self.deletions.append((raw_request.path, policy))
        self.calls.append(
            (
                raw_request.method,
                raw_request.path,
                raw_request.query.get("watch") == "true",
                agent,
            )
        )
        fault = next(
            (f for f in self.faults if f.matches(raw_request.method, raw_request.path, agent)),
            None,
        )
        if fault is not None:
            fault.times -= 1
            fault.hits += 1
            fault.reached.set()
            while fault.release is not None and not fault.release.is_set():
                await asyncio.sleep(0.02)
            await asyncio.sleep(fault.delay)
            if fault.status is not None:
                body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": fault.message,
                        "reason": fault.reason, "code": fault.status}  # fmt: skip
                return aiohttp.web.json_response(body, status=fault.status)
        # kmock 0.8 cannot parse the cluster-wide namespace collection (it expects a namespace
        # after "namespaces/"); kopf lists and watches it when serving named namespaces.
        if raw_request.path.rstrip("/") != "/api/v1/namespaces" or raw_request.method != "GET":
            return await super().__call__(raw_request)
        if raw_request.query.get("watch") != "true":
            items = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                for n in self.namespaces
            ]
            return aiohttp.web.json_response(
                {"kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}
            )
        stream = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await stream.prepare(raw_request)
        while True:  # no namespace ever changes here; the client closes the stream
            await asyncio.sleep(3600)

    async def _serve_list(self, request: kmock.Request) -> Any:
        listing = await super()._serve_list(request)
        # A field selector on name or namespace, as kubectl wait and get NAME -w send it.
        listing["items"] = [o for o in listing["items"] if _selected(request, o)]
        if request.resource is not None:
            # A list says what it lists (kubectl's decoder needs its kind).
            resource = request.resource
            kind = next((i.kind for r, i in self.resources.items() if r == resource), None)
            group, version = resource.group, resource.version
            listing["apiVersion"] = f"{group}/{version}" if group else version
            listing["kind"] = f"{kind or str(resource.plural).capitalize()}List"
        # In key order, as etcd lists them (namespace, then name), not in creation order: a
        # client must not read which of a Job's pods is current from where it is listed.
        listing["items"].sort(
            key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"].get("name", ""))
        )
        versions = [int(o["metadata"].get("resourceVersion", 0)) for o in listing["items"]]
        listing["metadata"]["resourceVersion"] = str(max(versions, default=0))
        return listing

    async def _serve_watch(self, request: kmock.Request) -> Any:
        # Its reaction is chosen: a watch lives as long as its client, and kmock would scan
        # it, with every other one open, for each request that comes meanwhile (_forget).
        self._forget(request)
        since = request.params.get("resourceVersion", "")
        plural = request.resource.plural if request.resource is not None else ""
        if since and self.watch_expiries.get(plural, 0) > 0:
            # The API server no longer holds that version (etcd compacted it): the client
            # must list again. Said as an ERROR event in the stream, as the API server does.
            self.watch_expiries[plural] -= 1
            yield b""
            yield {"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f"too old resource version: {since}", "reason": "Expired",
                "code": 410}}  # fmt: skip
            return
        if request.params.get("sendInitialEvents") == "true":
            # A watch-list (client-go's WatchListClient, on in kubectl since 1.35): the
            # objects as ADDED events, then a bookmark that says the initial list is over,
            # then the changes after it, as the API server streams it.
            listing = await self._serve_list(request)
            since = listing["metadata"]["resourceVersion"]
            yield b""
            for item in listing["items"]:
                yield {"type": "ADDED", "object": item}
            yield {"type": "BOOKMARK", "object": {
                "kind": listing["kind"].removesuffix("List"), "apiVersion": listing["apiVersion"],
                "metadata": {"resourceVersion": since,
                             "annotations": {"k8s.io/initial-events-end": "true"}}}}  # fmt: skip
        async for event in super()._serve_watch(request):
            if (
                since.isdigit()
                and isinstance(event, dict)
                and event.get("type") == "ADDED"
                and int(event["object"]["metadata"].get("resourceVersion", 0)) <= int(since)
            ):
                continue
            if isinstance(event, dict) and not _selected(request, event.get("object") or {}):
                continue
            if isinstance(event, dict) and self.watch_drops.get(plural, 0) > 0:
                self.watch_drops[plural] -= 1
                return  # the connection ends, and this event with it
            yield event

    async def _handle(self, request: kmock.Request) -> Any:
        try:
            return await self._handle_kept(request)
        finally:
            self._forget(request)

    def _forget(self, request: kmock.Request) -> None:
        """Drop a served request from kmock's history (`calls` keeps what the tests read).

        kmock keeps every request for its DSL's assertions, and on each request asks every
        reaction whether it "sees" it by filtering that whole history: O(requests served so
        far) per request, quadratic over a run. At thousands of requests (operator_scale.py)
        the emulator spent half a second per request there. Nothing here reads that history,
        so only the requests being served are kept (a watch until its stream starts).
        """
        kept = self._requests
        for index in range(len(kept) - 1, -1, -1):
            if kept[index] is request:  # by identity: Request compares by content
                del kept[index]
                return

    async def _handle_kept(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.action == kmock.action.CREATE:
            self._admit(request)
            self._stamp_create(request)
        elif request.resource is not None and request.action == kmock.action.DELETE:
            self._check_preconditions(request)
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            self._stamp_update(request)
            if request.resource.plural == PLURAL and request.subresource == "status":
                status = request.data.get("status") if isinstance(request.data, dict) else None
                conditions = (status or {}).get("conditions")
                if conditions is not None:
                    self.status_log.append((time.monotonic(), list(conditions)))
        try:
            answer = await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as error:
            # A stale resourceVersion in a JSON patch's test: the API server's answer is a
            # conflict (the client re-reads and retries), not kmock's generic 500.
            self.conflicts.append((request.method, request.url.path))
            raise kmock.KubernetesError(status=409, reason="Conflict", message=str(error)) from None
        if (
            request.resource is not None
            and request.action == kmock.action.CREATE
            and request.resource.plural == "events"
            and isinstance(request.data, dict)
        ):  # stored (a second Event of the same name is a 409): logged
            data = request.data
            entry = (time.monotonic(), data.get("type", ""), data.get("reason", ""))
            self.event_log.append((*entry, data.get("message", "")))
        return answer

    def _check_preconditions(self, request: kmock.Request) -> None:
        """A DELETE's DeleteOptions.preconditions, as the API server checks them: 409 when the
        object of that name is not the one the client named (kmock ignores them)."""
        options = request.data if isinstance(request.data, dict) else {}
        wanted = (options.get("preconditions") or {}).get("uid")
        key = (request.resource, request.namespace, request.name)
        if wanted is None or key not in self.objects or self.objects[key].deleted:
            return
        stored = self.objects[key]
        actual = (stored.raw.get("metadata") or {}).get("uid")
        if actual != wanted:
            message = (
                f"Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}"
            )
            raise kmock.KubernetesError(status=409, reason="Conflict", message=message)

    def _admit(self, request: kmock.Request) -> None:
        """Refuse what the API server (or an admission webhook) would."""
        if not isinstance(request.data, dict) or request.resource is None:
            return
        plural = request.resource.plural or ""
        name = (request.data.get("metadata") or {}).get("name", "")
        refusal = self.refusals.get((plural, name))
        if refusal is None and plural == "jobs":
            refusal = job_refusal(request.data)
        if refusal is None and plural == "events":
            pending = self.event_refusals.get(request.data.get("reason", ""))
            if pending is not None and pending[1] > 0:
                pending[1] -= 1
                refusal = pending[0]
        if refusal is not None:
            raise refusal

    def _stamp_create(self, request: kmock.Request) -> None:
        if not isinstance(request.data, dict):
            return
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace:
            meta.setdefault("namespace", request.namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1

    def _stamp_update(self, request: kmock.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        current = self.objects[key].raw.get("metadata", {})
        version = str(next(self._versions))
        if isinstance(request.data, dict):
            touches_spec = request.subresource is None and "spec" in request.data
            meta = request.data.setdefault("metadata", {}) or {}
            request.data["metadata"] = meta
            meta["resourceVersion"] = version
            if touches_spec:
                meta["generation"] = int(current.get("generation", 1)) + 1
        elif isinstance(request.data, list):
            touches_spec = request.subresource is None and any(
                str(op.get("path", "")).startswith("/spec") for op in request.data
            )
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            )
            if touches_spec:
                generation = int(current.get("generation", 1)) + 1
                request.data.append(
                    {"op": "add", "path": "/metadata/generation", "value": generation}
                )


class EmulatedCluster:
    """The emulator on a loopback port, served from a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self.calls: list[tuple[str, str, bool, str]] = []
        self.deletions: list[tuple[str, str]] = []
        self.refusals: dict[tuple[str, str], kmock.KubernetesError] = {}
        self.event_refusals: dict[str, list[Any]] = {}
        self.event_log: list[tuple[float, str, str, str]] = []
        self.status_log: list[tuple[float, list[dict[str, Any]]]] = []
        self.conflicts: list[tuple[str, str]] = []
        #: The operator's endpoint key, as the chart's Secret holds it for every operator pod:
        #: an operator started again derives the same tokens.
        self.endpoint_key = uuid.uuid4().hex.encode()
        self.faults: list[Fault] = []
        self.watch_drops: dict[str, int] = {}
        self.watch_expiries: dict[str, int] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)

    def _serve(self) -> None:
        async def main() -> None:
            async with ApiServer() as emulator, kmock.Server(emulator) as server:
                emulator.namespaces = (NAMESPACE, OTHER_NAMESPACE)
                emulator.calls = self.calls
                emulator.deletions = self.deletions
                emulator.refusals = self.refusals
                emulator.event_refusals = self.event_refusals
                emulator.event_log = self.event_log
                emulator.status_log = self.status_log
                emulator.conflicts = self.conflicts
                emulator.faults = self.faults
                emulator.watch_drops = self.watch_drops
                emulator.watch_expiries = self.watch_expiries
                for key, kind, namespaced, subresources, shortnames in _RESOURCES:
                    emulator.resources[key] = kmock.ResourceInfo(
                        kind=kind,
                        singular=kind.lower(),  # kubectl's asradaptation/NAME, job/NAME
                        namespaced=namespaced,
                        verbs=_VERBS,
                        subresources=subresources,
                        shortnames=shortnames,
                    )
                self.url = str(server.url).rstrip("/")
                self._ready.set()
                while not self._stop.is_set():
                    await asyncio.sleep(0.05)

        try:
            asyncio.run(main())
        except BaseException as error:
            self._error = error
            self._ready.set()

    def __enter__(self) -> EmulatedCluster:
        self._thread.start()
        if not self._ready.wait(20) or self._error is not None:
            raise RuntimeError(f"kmock did not start: {self._error!r}")
        self.kube = Kube(self.configuration(), user_agent=TEST_USER_AGENT)
        return self

    def __exit__(self, *_: object) -> None:
        self.kube.close()
        self._stop.set()
        self._thread.join(10)

    def configuration(self) -> client.Configuration:
        return client.Configuration(host=self.url)

    def refuse(self, plural: str, name: str, status: int, reason: str, message: str) -> None:
        """Refuse creating `plural`/`name` until allow(), as an admission webhook would."""
        self.refusals[plural, name] = kmock.KubernetesError(
            status=status, reason=reason, message=message
        )

    def fail_events(self, reason: str, times: int = 1, status: int = 500) -> None:
        """Answer the next `times` POSTs of an Event with this reason with an HTTP `status`
        (500: the API server could not store it), as an overloaded API server would."""
        error = kmock.KubernetesError(
            status=status, reason="InternalError", message="etcdserver: request timed out"
        )
        self.event_refusals[reason] = [error, times]

    def inject(self, fault: Fault) -> Fault:
        """Inject `fault` into the requests that match it, from now on (see Fault)."""
        self.faults.append(fault)
        return fault

    def drop_watches(self, plural: str, events: int = 1, expire: int = 0) -> None:
        """End the watch streams of `plural` at their next `events` events, each lost with its
        connection; answer the next `expire` resumptions (from a resourceVersion) 410 Gone."""
        self.watch_drops[plural] = self.watch_drops.get(plural, 0) + events
        self.watch_expiries[plural] = self.watch_expiries.get(plural, 0) + expire

    def allow(self, plural: str, name: str) -> None:
        self.refusals.pop((plural, name), None)

    def condition_times(self, type_: str, status: str, reason: str) -> list[float]:
        """When each status write setting this condition came (time.monotonic())."""
        return [
            t
            for t, conditions in list(self.status_log)
            if any((c.get("type"), c.get("status"), c.get("reason")) == (type_, status, reason)
                   for c in conditions)
        ]  # fmt: skip

    def event_times(self, type_: str, reason: str) -> list[float]:
        """When each Event of this type and reason was created (time.monotonic())."""
        return [t for t, kind, why, _ in list(self.event_log) if (kind, why) == (type_, reason)]

    def operator_rbac(self) -> set[tuple[str, str, str]]:
        """What the operator's own requests (kopf's and the driver's) needed, so far."""
        needed = {
            rbac_of_call(method, path, watch)
            for method, path, watch, agent in list(self.calls)
            if agent != TEST_USER_AGENT
        }
        return {rule for rule in needed if rule is not None}

    # --- kubectl, in short ------------------------------------------------------------

    def create_claim(
        self,
        name: str,
        access_modes: tuple[str, ...],
        namespace: str = NAMESPACE,
        bound: bool = True,
    ) -> dict[str, Any]:
        """A PersistentVolumeClaim as a user and the PV controller leave it: asking for
        `access_modes`; `bound` to a volume that offers exactly those (status.accessModes),
        else Pending (a WaitForFirstConsumer class binds when a pod uses it)."""
        status: dict[str, Any] = {"phase": "Pending"}
        if bound:
            status = {"phase": "Bound", "accessModes": list(access_modes),
                      "capacity": {"storage": "100Gi"}}  # fmt: skip
        collection = collection_path("v1", "persistentvolumeclaims", namespace)
        self.kube.request("POST", collection, body={
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": list(access_modes),
                     "resources": {"requests": {"storage": "100Gi"}}},
        })  # fmt: skip
        return self.kube.merge_patch(f"{collection}/{name}/status", {"status": status})

    def path(self, api_version: str, plural: str, name: str = "") -> str:
        base = collection_path(api_version, plural, NAMESPACE)
        return f"{base}/{name}" if name else base

    def apply_adaptation(
        self, name: str, spec: Mapping[str, Any], namespace: str = NAMESPACE
    ) -> dict[str, Any]:
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "AsrAdaptation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        path = collection_path(API_VERSION, PLURAL, namespace)
        self.kube.request("POST", path, body=manifest)
        return self.adaptation(name, namespace)

    def adaptation(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        body = self.kube.get(adaptation_path(namespace, name))
        assert body is not None, f"AsrAdaptation {name} is gone"
        return body

    def status(self, name: str) -> dict[str, Any]:
        return self.adaptation(name).get("status") or {}

    def jobs(self, adaptation: str) -> list[dict[str, Any]]:
        return self.kube.list(self.path("batch/v1", "jobs"), {LABEL_ADAPTATION: adaptation})

    def endpoint_token(self, adaptation: str) -> str | None:
        """The token in the adaptation's `<name>-endpoint-<uid>` Secret (what its pods mount)."""
        owner = Owner.from_body(self.adaptation(adaptation))
        secret = self.kube.get(self.path("v1", "secrets", endpoint_secret_name(owner)))
        if secret is None:
            return None
        if "token" in (secret.get("stringData") or {}):
            return str(secret["stringData"]["token"])
        return base64.b64decode(secret["data"]["token"]).decode()

    def job(self, adaptation: str, stage: str) -> dict[str, Any] | None:
        found = [
            j for j in self.jobs(adaptation) if j["metadata"]["labels"].get(LABEL_STAGE) == stage
        ]
        assert len(found) <= 1, f"{len(found)} Jobs for stage {stage}"
        return found[0] if found else None

    def trial_jobs(self, adaptation: str) -> list[dict[str, Any]]:
        """The LR trials' Jobs, in trial order (label asr.marco.dev/trial)."""
        found = [
            j
            for j in self.jobs(adaptation)
            if j["metadata"]["labels"].get(LABEL_STAGE) == TRIALS_STAGE
        ]
        return sorted(found, key=lambda j: int(j["metadata"]["labels"][LABEL_TRIAL]))

    def job_event(self, job: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event about a Job, as the Job controller posts one (`FailedCreate` when the API
        server refuses its pod)."""
        meta = job["metadata"]
        self.kube.request("POST", self.path("v1", "events"), body={
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                         "namespace": NAMESPACE},
            "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                               "namespace": NAMESPACE, "uid": meta["uid"]},
            "type": type_, "reason": reason, "message": message, "count": 1,
            "firstTimestamp": _now(), "lastTimestamp": _now(),
            "source": {"component": "job-controller"},
        })  # fmt: skip

    def events(self, adaptation: str) -> list[dict[str, Any]]:
        events = self.kube.list(self.path("v1", "events"))
        return [e for e in events if e.get("involvedObject", {}).get("name") == adaptation]

    def leave_predecessor(
        self,
        adaptation: str,
        stages: tuple[str, ...] = ("filter",),
        steered: bool = True,
        unlabelled: tuple[str, ...] = (),
        unlabelled_service: bool = False,
    ) -> str:
        """What an earlier AsrAdaptation of this name left, as the operator made it for that
        one (its uid, our names and labels) and no garbage collector removed yet: its stage
        Jobs, and with `steered` its control ConfigMap (a directive of its own) and Service.
        The Jobs of the `unlabelled` stages keep the predecessor's controller reference but
        not our labels (someone removed them): no watch of the operator's selects them, so
        only the 409 of creating that stage's Job, and a read of the Job, reveal them; the
        same for its Service with `unlabelled_service` (the train stage's 409 then).
        Returns the predecessor's uid."""
        old = Owner(name=adaptation, namespace=NAMESPACE, uid=str(uuid.uuid4()))
        for stage in (*stages, *unlabelled):
            meta = metadata(old, job_name(adaptation, stage), stage)
            if stage in unlabelled:
                meta = {key: value for key, value in meta.items() if key != "labels"}
            self.kube.create({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": meta,
                "spec": {"template": {"metadata": {"labels": labels(old, stage)},
                                      "spec": {"containers": []}}},
            })  # fmt: skip
        if steered:
            stale = Directive(cycle=7, learning_rate=0.5, reason="the predecessor's")
            self.kube.create(control_configmap(old, stale))
            service = train_service(old)
            if unlabelled_service:
                del service["metadata"]["labels"]
            self.kube.create(service)
        return old.uid

    def directive(self, adaptation: str) -> Directive | None:
        configmap = self.kube.get(control_path(NAMESPACE, adaptation))
        text = ((configmap or {}).get("data") or {}).get(DIRECTIVE_KEY)
        return Directive.model_validate_json(text) if text else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll until probe() returns something truthy; fail with what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class JobController:
    """What the Job controller and the kubelet would do, on the test's command."""

    def __init__(self, cluster: EmulatedCluster) -> None:
        self.cluster = cluster
        self.kube = cluster.kube

    def wait_job(self, adaptation: str, stage: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_for(
            f"the {stage} Job of {adaptation}", lambda: self.cluster.job(adaptation, stage), timeout
        )

    def wait_trial_jobs(self, adaptation: str, count: int) -> list[dict[str, Any]]:
        return wait_for(
            f"{count} trial Jobs of {adaptation}",
            lambda: (
                (found := self.cluster.trial_jobs(adaptation)) and len(found) == count and found
            ),
        )

    def _pod_name(self, job: str, index: int | None, suffix: str = "") -> str:
        return (f"{job}-{index}" if index is not None else f"{job}-pod") + suffix

    def _indexed(self, job: Mapping[str, Any]) -> bool:
        return job.get("spec", {}).get("completionMode") == "Indexed"

    def start(self, job: Mapping[str, Any], suffix: str = "") -> None:
        """Schedule the Job's pods (all completion indexes of an Indexed Job), running;
        each named `<job>-<index><suffix>` (`<job>-pod<suffix>` when not Indexed). As the
        Job controller, never for a suspended Job (one Kueue has not admitted yet)."""
        name = job["metadata"]["name"]
        current = self.kube.get(self.cluster.path("batch/v1", "jobs", name))
        assert current is not None, f"Job {name} is gone"
        assert not current.get("spec", {}).get("suspend"), f"Job {name} is suspended: no pods"
        spec = job.get("spec", {})
        indexes: list[int | None] = (
            list(range(int(spec.get("parallelism") or spec.get("completions") or 1)))
            if self._indexed(job)
            else [None]
        )
        for index in indexes:
            self.create_pod(job, index, self._pod_name(name, index, suffix))
        self.kube.merge_patch(
            self.cluster.path("batch/v1", "jobs", name) + "/status",
            {"status": {"active": len(indexes), "startTime": _now()}},
        )

    def create_pod(
        self,
        job: Mapping[str, Any],
        index: int | None,
        name: str,
        phase: str = "Running",
        created: str | None = None,
    ) -> str:
        """One pod of the Job, as the Job controller makes it: the template's labels plus
        the Job's own (its name and uid), the template's annotations plus the completion
        index as annotation and label (Kubernetes 1.28+), and the Job as its controller."""
        job_name = job["metadata"]["name"]
        template = job.get("spec", {}).get("template", {})
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels.update({JOB_NAME_LABEL: job_name, "batch.kubernetes.io/job-name": job_name})
        uid = job["metadata"]["uid"]
        labels[JOB_UID_LABEL] = uid
        meta: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid,
                "controller": True, "blockOwnerDeletion": True}],
        }  # fmt: skip
        annotations = dict(template.get("metadata", {}).get("annotations") or {})
        if index is not None:
            labels[LABEL_COMPLETION_INDEX] = str(index)
            annotations[LABEL_COMPLETION_INDEX] = str(index)
        if annotations:
            meta["annotations"] = annotations
        if created is not None:
            meta["creationTimestamp"] = created
        self.kube.request(
            "POST",
            self.cluster.path("v1", "pods"),
            body={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta,
                "spec": template.get("spec", {}),
                "status": {"phase": phase, "podIP": "127.0.0.1"},
            },
        )
        return name

    def admit(self, job: Mapping[str, Any]) -> None:
        """Kueue admits the Job's Workload: it sets the Job's spec.suspend to false, as its
        batch/Job integration does (the Job controller then creates the pods: start())."""
        self.kube.merge_patch(
            self.cluster.path("batch/v1", "jobs", job["metadata"]["name"]),
            {"spec": {"suspend": False}},
        )

    def preempt(self, job: Mapping[str, Any]) -> None:
        """Kueue evicts the Job (preemption): spec.suspend true again; its pods go."""
        name = job["metadata"]["name"]
        self.kube.merge_patch(
            self.cluster.path("batch/v1", "jobs", name), {"spec": {"suspend": True}}
        )
        for pod in self._pods(name) or []:
            self.kube.delete(self.cluster.path("v1", "pods", pod["metadata"]["name"]))
        self.kube.merge_patch(
            self.cluster.path("batch/v1", "jobs", name) + "/status", {"status": {"active": 0}}
        )

    def end_pod(self, name: str, exit_code: int, message: str) -> None:
        """The kubelet's word that one pod's container exited: Succeeded on 0, else Failed."""
        self._end(name, exit_code, message, "Succeeded" if exit_code == 0 else "Failed")

    def _end(self, pod: str, exit_code: int, message: str, phase: str) -> None:
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "finishedAt": _now(),
        }
        self.kube.merge_patch(
            self.cluster.path("v1", "pods", pod) + "/status",
            {"status": {"phase": phase, "containerStatuses": [{
                "name": "stage", "ready": False, "restartCount": 0,
                "state": {"terminated": terminated}}]}},
        )  # fmt: skip

    def _pods(self, job: str) -> list[dict[str, Any]]:
        return self.kube.list(self.cluster.path("v1", "pods"), {JOB_NAME_LABEL: job})

    def _terminate(self, job: str, exit_code: int, message: str, phase: str) -> None:
        pods = self._pods(job) or []
        if not pods:
            raise AssertionError(f"Job {job} has no pods: start() it first")
        for pod in pods:
            self._end(pod["metadata"]["name"], exit_code, message, phase)

    def complete(self, job: Mapping[str, Any], result: StageResult) -> None:
        name = job["metadata"]["name"]
        if not self._pods(name):
            self.start(job)
        self._terminate(name, 0, result.to_termination_message(), "Succeeded")
        self.mark_complete(job)

    def mark_complete(self, job: Mapping[str, Any], failed: int = 0) -> None:
        """The Job controller's verdict: Complete (after `failed` failed tries)."""
        self.kube.merge_patch(
            self.cluster.path("batch/v1", "jobs", job["metadata"]["name"]) + "/status",
            {
                "status": {
                    "active": 0,
                    "failed": failed,
                    "succeeded": 1,
                    "completionTime": _now(),
                    "conditions": [
                        {"type": "Complete", "status": "True", "lastTransitionTime": _now()}
                    ],
                }
            },
        )

    def fail(self, job: Mapping[str, Any], reason: str, message: str, log_tail: str) -> None:
        name = job["metadata"]["name"]
        if not self._pods(name):
            self.start(job)
        self._terminate(name, 1, log_tail, "Failed")
        self.kube.merge_patch(
            self.cluster.path("batch/v1", "jobs", name) + "/status",
            {
                "status": {
                    "active": 0,
                    "failed": 1,
                    "conditions": [
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": reason,
                            "message": message,
                            "lastTransitionTime": _now(),
                        }
                    ],
                }
            },
        )


class ScriptedTrainer:
    """Rank 0 on loopback: serves the evaluation history the test scripts, and applies the
    directive the operator wrote to the control ConfigMap (the file a real rank 0 has mounted).
    Like a real rank 0 in a pod, it answers only the bearer token of the adaptation's Secret."""

    def __init__(
        self,
        cluster: EmulatedCluster,
        adaptation: str,
        eval_every: int = 10,
        long_polls: bool = True,
    ) -> None:
        self.cluster = cluster
        #: Whether it holds a long poll (?after=N&wait=S) as rank 0 does; False: it answers
        #: at once, as a trainer older than the long poll does.
        self.long_polls = long_polls
        self.long_polled = 0  # long polls asked
        self.adaptation = adaptation
        self.eval_every = eval_every
        self.evaluations: list[Evaluation] = []
        self.finished = False
        self.requests = 0
        self.refused = 0  # requests without the adaptation's token
        self._lock = threading.Lock()
        trainer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/v1/evaluations":
                    self.send_error(404)
                    return
                token = trainer.cluster.endpoint_token(trainer.adaptation)
                if token is None or self.headers.get("Authorization") != f"Bearer {token}":
                    trainer.refused += 1
                    self.send_error(401)
                    return
                query = urllib.parse.parse_qs(url.query)
                if trainer.long_polls and "wait" in query:
                    # Rank 0's long poll (marco_trainer.metrics_server): held until more
                    # than `after` evaluations, training finished, or `wait` seconds.
                    trainer.long_polled += 1
                    after, wait = int(query["after"][0]), float(query["wait"][0])
                    deadline = time.monotonic() + wait
                    while time.monotonic() < deadline:
                        with trainer._lock:
                            if len(trainer.evaluations) > after or trainer.finished:
                                break
                        time.sleep(0.02)
                body = trainer.history().model_dump_json().encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rank0", daemon=True
        )

    def __enter__(self) -> ScriptedTrainer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def directive(self) -> Directive | None:
        return self.cluster.directive(self.adaptation)

    def history(self) -> EvaluationHistory:
        with self._lock:
            self.requests += 1
            return EvaluationHistory(
                adaptation=self.adaptation,
                evaluations=list(self.evaluations),
                directive=self.directive(),
                finished=self.finished,
            )

    def evaluate(self, wer: float) -> Evaluation:
        """Record one validation WER, measured under the directive now in force."""
        directive = self.directive()
        assert directive is not None, "rank 0 runs only once the operator wrote a directive"
        with self._lock:
            step = (len(self.evaluations) + 1) * self.eval_every
            evaluation = Evaluation(
                step=step,
                cycle=directive.cycle,
                lr=directive.learning_rate,
                wer=wer,
                loss=1.0 / step,
                time=time.time(),
            )
            self.evaluations.append(evaluation)
        return evaluation


class OperatorRun:
    """`marco operator` in a background thread until stop()."""

    def __init__(
        self,
        cluster: EmulatedCluster,
        trainer_port: int,
        interval: float = 0.3,
        namespaces: tuple[str, ...] = (),
        retry_first: float = 0.2,
        retry_cap: float = 0.8,
        policy: Policy | None = None,
        no_pod_seconds: float | None = None,
    ) -> None:
        self.options = DriverOptions(
            policy=policy or Policy(),
            endpoint_key=cluster.endpoint_key,
            namespaces=namespaces,
            all_namespaces=not namespaces,
            trainer_port=trainer_port,
            trainer_timeout=1.0,
            interval=interval,
            standalone=True,
            retry_first=retry_first,
            retry_cap=retry_cap,
            no_pod_seconds=no_pod_seconds,
        )
        self.cluster = cluster
        self.metrics = OperatorMetrics()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> OperatorRun:
        self._stop = threading.Event()
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(
                    operate(
                        self.options,
                        self.cluster.configuration(),
                        stop_flag=self._stop,
                        ready_flag=ready,
                        metrics=self.metrics,
                    )
                )
            except BaseException as error:
                self._error = error
                ready.set()

        self._thread = threading.Thread(target=run, name="marco-operator", daemon=True)
        self._thread.start()
        if not ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the operator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop within 30 s")
        if self._error is not None:
            raise RuntimeError("the operator crashed") from self._error


class OperatorProcess:
    """`marco operator` as a real process, as a Deployment runs it: killable with SIGKILL."""

    def __init__(self, cluster: EmulatedCluster, trainer_port: int, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
        }))  # fmt: skip
        self.log = workdir / "operator.log"
        self.endpoint_key = workdir / "endpoint-key"
        self.endpoint_key.write_bytes(cluster.endpoint_key)
        self.trainer_port = trainer_port
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness = ""

    def start(self) -> OperatorProcess:
        port = free_port()
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        roots = [
            str(Path(m.__file__).resolve().parents[1])
            for m in (marco_contract, marco_operator, marco_trainer)
        ]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([*roots, os.environ.get("PYTHONPATH", "")]),
            MARCO_METRICS_PORT=str(self.metrics_port),
            MARCO_ENDPOINT_KEY_FILE=str(self.endpoint_key),
        )
        command = [
            sys.executable, "-m", "marco_operator", "operator", "--all-namespaces",
            "--standalone", "--interval", "0.3", "--trainer-port", str(self.trainer_port),
            "--trainer-timeout", "1", "--kubeconfig", str(self.kubeconfig),
            "--liveness", self.liveness,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for("the operator's liveness endpoint", self.alive, timeout=30)
        return self

    def alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"operator exited {self.process.returncode}: {self.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(self.liveness, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _samples(self, name: str, labels: Mapping[str, str]) -> list[float]:
        """Samples from the process's /metrics, scraped as Prometheus would."""
        with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
            text = response.read().decode()
        return [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]

    def metric(self, name: str, labels: Mapping[str, str]) -> float | None:
        found = self._samples(name, labels)
        assert len(found) <= 1, f"{name}{dict(labels)} matches {len(found)} series"
        return found[0] if found else None

    def metric_sum(self, name: str) -> float:
        return sum(self._samples(name, {}))

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as an OOM kill or a lost node would do it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_operator(
    cluster: EmulatedCluster, trainer_port: int, interval: float = 0.3
) -> Iterator[OperatorRun]:
    run = OperatorRun(cluster, trainer_port, interval).start()
    try:
        yield run
    finally:
        run.stop()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
