"""`marco operator`: the cluster driver. kopf wiring only; every decision is core.reconcile's.

Level-triggered, the way kopf intends it: a daemon per AsrAdaptation that is
not settled (`when=`; finished and invalid ones have none and cost nothing)
runs passes (reconciler.reconcile_pass) on the body kopf's watch delivers, with
the adaptation's Jobs, pods, ConfigMaps and Services from kopf indexes instead
of listings. It sleeps
until an event of the adaptation, its Jobs or their pods wakes it, or core's
requeue_after (at most `--interval`) passes. While training, a follower long-polls
rank 0 (rank0_watch) and wakes the loop when an evaluation comes, so a decision
follows an evaluation within a round trip rather than at the next interval; it then
stands in for the timed passes (wait_seconds) until a stop is in force. One
loop per adaptation, and an asyncio lock around each pass, keep passes over one
adaptation in sequence. The wake-up flags, the locks, the followers and the phase
gauge's tally, and the last status written, are all it keeps in memory, rebuilt
from the watches and the next pass after a restart: a restart loses neither a
decision nor a child.

Core's status goes out through the driver's own client, not through kopf's
`patch`: kopf applies a daemon's patch only when the daemon returns, and this
one returns only when kopf stops it. A pass decides on the watch's body with
the status the loop last wrote (with_own_status: only the operator writes it),
so none decides on a status older than its predecessor's, however far behind
the watch runs; the echo of its own write wakes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from marco_operator.api import queue_name_problem
from marco_operator.core import NOT_ALLOWED, RETRY_CAP, RETRY_FIRST
from marco_operator.endpoint_auth import load_key
from marco_operator.ownership import controller_of
from marco_operator.policy import Policy, listed
from marco_operator.rank0 import TRAINER_STARTUP_SECONDS, TRAINER_TIMEOUT_SECONDS
from marco_operator.resources import API_PORT, LABEL_MANAGED_BY, MANAGED_BY

if TYPE_CHECKING:
    import aiohttp
    import kopf
    from kubernetes import client

    from marco_operator import reconciler
    from marco_operator.metrics import OperatorMetrics

logger = logging.getLogger(__name__)

#: The environment variable the chart sets from kueue.defaultQueueName (--default-queue-name).
DEFAULT_QUEUE_ENV = "MARCO_DEFAULT_QUEUE_NAME"

#: Seconds a new daemon waits for the watch to bring kopf's finalizer (kopf's default
#: `persistence.consistency_timeout`); past it, the first pass goes ahead.
CONSISTENCY_TIMEOUT = 5.0

#: Status writes whose echo is awaited, at most, per adaptation (a relisting watch may skip
#: some; forgetting them costs one pass each).
MAX_UNECHOED = 16

#: Threads that run passes (each blocks one on the API server and rank 0), and the API
#: client's connections to go with them. asyncio's default pool has cpu_count + 4 threads
#: (6 on 2 cores): at hundreds of adaptations, passes queued behind each other for seconds.
PASS_THREADS = 32

#: kopf's finalizer on each AsrAdaptation with a daemon (settings.persistence.finalizer,
#: left at kopf's default): it stops the daemon before the object goes.
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"

#: The label every object the operator makes carries, as a label selector.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

#: The kinds kopf keeps an index of, (group, plural): the operator's children by
#: adaptation. Each plural is also the reconciler.Children field the index fills.
INDEXED = (("batch", "jobs"), ("", "pods"), ("", "configmaps"), ("", "services"))


def index_id(plural: str) -> str:
    """The id kopf knows an index by, and the keyword it hands the daemon."""
    return f"stage_{plural}"


@dataclass(frozen=True)
class DriverOptions:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    trainer_port: int = API_PORT
    trainer_timeout: float = TRAINER_TIMEOUT_SECONDS
    #: None: made at start (endpoint_auth.load_key with no file).
    endpoint_key: bytes | None = field(default=None, repr=False)
    policy: Policy = field(default_factory=Policy)
    interval: float = 10.0
    liveness_endpoint: str | None = None
    standalone: bool = False
    peering_name: str | None = None
    metrics_port: int | None = None  # None: no /metrics server (tests run several operators)
    #: Backoff after failed passes (core.retry_delay): the first wait, and the longest.
    retry_first: float = RETRY_FIRST
    retry_cap: float = RETRY_CAP
    #: Seconds a running stage Job may have no pod before its Events are read; None:
    #: reconciler.NO_POD_SECONDS.
    no_pod_seconds: float | None = None
    #: Seconds a started rank 0 may refuse connections before a pass counts it as an error.
    trainer_startup_seconds: float = TRAINER_STARTUP_SECONDS
    #: Kueue LocalQueue of the stage Jobs of an adaptation without spec.queueName; None:
    #: such Jobs are not queued.
    default_queue_name: str | None = None


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration the reconciler uses."""
    import kopf

    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, token = None, None
    if header:
        parts = header.split(" ", 1)
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def wait_seconds(done: reconciler.Pass, interval: float, followed: bool = False) -> float | None:
    """How long an adaptation's loop sleeps when no watch event wakes it.

    Core's requeue_after, but never longer than `interval`, the driver's ceiling (a
    resync should an event be missed); None, waiting for events alone, once the status is
    settled: the `when` filter then stops the loop, or a spec edit wakes it. After a
    failed pass, its backoff, which may exceed `interval` (the loop then lets only a spec
    edit cut it short).

    None too while a follower watches rank 0 (`followed`) and no stop is in force: what a
    timed pass would find then, the follower reports (an evaluation, the end of training,
    rank 0 unreadable) and the Job and pod watches the rest, so an adaptation that trains
    and has nothing new costs no request. A stop in force runs on the clock (its grace
    period), so it keeps the timed passes.
    """
    if done.retry_after is not None:
        return done.retry_after
    if done.settled or done.phase is None:
        return None
    if followed and not done.stopping:
        return None
    if done.requeue_after is None:
        return interval
    return min(done.requeue_after, interval)


async def _wait(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float | None) -> None:
    """Until `wake` is set, the daemon is told to stop, or `timeout` seconds pass."""
    waiters = {
        asyncio.ensure_future(wake.wait()),
        asyncio.ensure_future(_stop_requested(stopped)),
    }
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _stop_requested(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()


@dataclass
class _Tracked:
    """What the driver keeps per adaptation, all rebuilt from the watches after a restart."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)  # anything of it changed
    #: What set `wake` since the pass began: the resourceVersion an adaptation event
    #: delivered, None for anything else (a child, the follower).
    woken_by: list[str | None] = field(default_factory=list)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)  # a body of its own came
    edited: asyncio.Event = field(default_factory=asyncio.Event)  # a new generation came
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    seen_version: str | None = None  # resourceVersion of the latest body the watch delivered
    seen_generation: int | None = None  # metadata.generation of that body
    failures: int = 0  # failed passes in a row; the backoff grows with it
    follower: asyncio.Task[None] | None = None  # long-polls rank 0 while training
    followed: str | None = None  # the rank 0 URL it follows
    #: (uid, status) of this driver's last status write, as the API server answered it
    #: (with_own_status).
    own_status: tuple[str, Mapping[str, Any]] | None = None
    #: resourceVersions of status writes of this driver the watch has not delivered yet.
    unechoed: set[str] = field(default_factory=set)
    #: The directive ConfigMap's resourceVersion as the last pass left it: while the
    #: watch's copy has it, a pass reads no ConfigMap (reconciler.observe).
    configmap_version: str | None = None
    #: Children the passes created that the watch has not shown yet: (plural, name) ->
    #: (when, the object as created). See with_own_children.
    created: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = field(default_factory=dict)


def with_own_status(
    body: dict[str, Any], own: tuple[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The body a pass decides on: the watch's, with the status this driver last wrote.

    Only the operator writes an AsrAdaptation's status (RBAC: the status subresource is
    its alone; a retry is asked for by annotation), so its last accepted write is the
    status, whether the watch has brought it back yet or not. Under load the watch runs
    seconds behind; a pass on the older body would decide again what its predecessor had,
    repeat its Events and write it again (at 500 adaptations, a settled status written
    twice made kopf's removal of its finalizer a 409). So a pass needs no wait for its
    predecessor's write to come back. The rest of the body (spec, annotations) is the
    watch's. Another adaptation of the name (another uid) is not touched.
    """
    if own is None or own[0] != (body.get("metadata") or {}).get("uid"):
        return body
    return {**body, "status": copy.deepcopy(dict(own[1]))}


#: How long a created child stands in for the watch's view of it. Past this the watch,
#: seconds behind at worst under load (benchmarks/README.md), is the truth again: a child
#: created and gone before the watch saw it is then found gone.
OWN_CHILD_SECONDS = 30.0


def with_own_children(
    found: reconciler.Children,
    created: Mapping[tuple[str, str], tuple[float, Mapping[str, Any]]],
    now: float,
    uid: str | None,
) -> tuple[reconciler.Children, dict[tuple[str, str], tuple[float, Mapping[str, Any]]]]:
    """What a pass finds: the watch's children, plus those the driver's passes created
    for the adaptation of `uid` that the watch has not shown yet; and which of those to
    keep remembering.

    A pass that ran before the watch brought the Job its predecessor created would find
    no Job for a running stage and create it again: a 409 and a GET to see whose, and its
    StageStarted Event again (a 409 too). At 500 adaptations moving at once that was a
    fifth of the operator's requests. Once the watch shows an object of the name (or after
    OWN_CHILD_SECONDS), the watch's view is the truth.
    """
    if not created:  # most passes: nothing created that the watch has not shown
        return found, {}
    from marco_operator.kube import PLURALS
    from marco_operator.reconciler import REMEMBERED_KINDS, named

    lists: dict[str, list[Mapping[str, Any]]] = {
        PLURALS[kind]: list(getattr(found, PLURALS[kind])) for kind in REMEMBERED_KINDS
    }
    kept: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}
    for (plural, name), (at, obj) in created.items():
        shown = named(lists[plural], name) is not None
        ours = (controller_of(obj) or {}).get("uid") == uid  # not a deleted namesake's
        if shown or not ours or now - at > OWN_CHILD_SECONDS:
            continue
        lists[plural].append(obj)
        kept[plural, name] = (at, obj)
    return replace(found, **{plural: tuple(objs) for plural, objs in lists.items()}), kept


def _remember_children(state: _Tracked, done: reconciler.Pass, now: float) -> None:
    from marco_operator.kube import PLURALS

    for kind, name in done.deleted:
        state.created.pop((PLURALS[kind], name), None)
    for obj in done.created:
        state.created[PLURALS[obj["kind"]], obj["metadata"]["name"]] = (now, obj)


def _remember_status(state: _Tracked, body: Mapping[str, Any], done: reconciler.Pass) -> None:
    """Keep the status a pass wrote. A failed pass that could not say so either may have
    written one whose answer was lost: from then on the watch's body is the status."""
    uid = (body.get("metadata") or {}).get("uid")
    if done.written_version is not None and done.written_version != state.seen_version:
        if len(state.unechoed) >= MAX_UNECHOED:  # echoes a relisting watch skipped
            state.unechoed.clear()
        state.unechoed.add(done.written_version)
    if done.written_status is not None and uid:
        state.own_status = (uid, done.written_status)
    elif done.retry_after is not None:
        state.own_status = None


def build_registry(
    options: DriverOptions, configuration: client.Configuration, metrics: OperatorMetrics
) -> kopf.OperatorRegistry:
    import kopf

    from marco_operator import reconciler
    from marco_operator.api import GROUP, PLURAL, VERSION
    from marco_operator.core import retry_delay, settled
    from marco_operator.kube import Kube
    from marco_operator.resources import LABEL_ADAPTATION

    registry = kopf.OperatorRegistry()
    kube = Kube(configuration)
    pass_options = reconciler.Options(
        trainer_port=options.trainer_port,
        trainer_timeout=options.trainer_timeout,
        endpoint_key=options.endpoint_key or load_key(),
        policy=options.policy,
        no_pod_seconds=(
            reconciler.NO_POD_SECONDS if options.no_pod_seconds is None else options.no_pod_seconds
        ),
        trainer_startup_seconds=options.trainer_startup_seconds,
        default_queue_name=options.default_queue_name,
    )
    managed = {LABEL_MANAGED_BY: MANAGED_BY}
    tracked: defaultdict[tuple[str, str], _Tracked] = defaultdict(_Tracked)
    sessions: list[aiohttp.ClientSession] = []  # the followers' one HTTP session, once made
    phases: dict[str, str] = {}  # for the phase gauge only; rebuilt from the watch
    loops: set[tuple[str, str]] = set()  # adaptations whose daemon runs, for its gauge

    def set_phase(namespace: str, name: str, phase: str | None) -> None:
        key = f"{namespace}/{name}"
        if phases.get(key) == phase:
            # Unchanged (every pass and every event of an adaptation says its phase): the
            # gauge recounts all adaptations, 3 % of the operator's time at 500 when redone.
            return
        if phase is None:
            del phases[key]
        else:
            phases[key] = phase
        metrics.observe_phases(phases)

    async def reconcile(
        namespace: str, name: str, body: kopf.Body, found: reconciler.Children
    ) -> reconciler.Pass:
        """One pass, in a worker thread (the client and rank 0's HTTP are synchronous).

        A pass that fails is said (reconciler.report_failure: a Warning Event and the
        Reconciled condition) and the next waits core.retry_delay: 1 s, doubling with
        each failure in a row up to 5 min, back to none after a pass that goes through.
        """
        state = tracked[namespace, name]
        snapshot = with_own_status(
            {key: copy.deepcopy(value) for key, value in body.items()}, state.own_status
        )
        async with state.lock:
            started = time.monotonic()
            try:
                done = await asyncio.to_thread(
                    reconciler.reconcile_pass,
                    kube,
                    snapshot,
                    found,
                    pass_options,
                    state.configmap_version,
                )
            except Exception as error:
                state.configmap_version = None  # it may have written one and lost the answer
                state.failures += 1
                delay = retry_delay(state.failures, options.retry_first, options.retry_cap)
                logger.exception(
                    "reconcile of %s/%s failed (%d in a row); next in %g s",
                    namespace,
                    name,
                    state.failures,
                    delay,
                )
                metrics.observe_error(_error_kind(error))
                metrics.observe_reconcile(time.monotonic() - started, ok=False)
                written = await asyncio.to_thread(
                    reconciler.report_failure, kube, snapshot, error, state.failures, delay
                )
                phase = (snapshot.get("status") or {}).get("phase")
                failed = reconciler.Pass(
                    phase=phase, retry_after=delay, **reconciler.what_was_written(written)
                )
                _remember_status(state, snapshot, failed)
                return failed
        state.failures = 0
        state.configmap_version = done.configmap_version
        _remember_children(state, done, time.monotonic())
        _remember_status(state, snapshot, done)
        metrics.observe_reconcile(time.monotonic() - started, ok=True)
        metrics.observe_events(done.events)
        for kind in done.errors:
            metrics.observe_error(kind)
        if any(event.reason == "InvalidSpec" for event in done.events):
            metrics.observe_error("invalid-spec")
        if any(event.reason == NOT_ALLOWED for event in done.events):
            metrics.observe_error("not-allowed")
        set_phase(namespace, name, done.phase)
        return done

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    # In-memory views of the operator's Jobs and their pods, kept by kopf's watches and
    # keyed by (namespace, adaptation): a pass reads them instead of listing. The pods carry
    # the Job template's labels, so the same label selects them. Not copied: each watch event
    # brings a body of its own, which replaces the last in the index and which nothing
    # changes (a pass only reads it); a deep copy of every Job and pod event was the largest
    # share of the operator's CPU at 200 adaptations.
    #
    # This and the event handlers below are coroutines although they never wait: kopf runs a
    # plain function in its thread pool (a hop to a thread and back for every watch event,
    # six threads on two cores, queued behind each other at hundreds of adaptations), and a
    # coroutine on its event loop, the thread an asyncio.Event is meant to be set from.
    async def by_adaptation(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> Any:
        parent = labels.get(LABEL_ADAPTATION)
        return {(namespace, parent): dict(body)} if parent and namespace else None

    # One indexing function, registered for each kind under the ids the daemon reads. The
    # ConfigMaps and Services (the directive's and the rendezvous', a handful of events per
    # adaptation) tell a pass whether one exists and whose, so that it reads none before the
    # train stage and never the Service.
    for group, plural in INDEXED:
        kopf.index(group, "v1", plural, id=index_id(plural), labels=managed, registry=registry)(
            by_adaptation
        )

    def not_settled(body: kopf.Body, **_: Any) -> bool:
        return not settled(body)

    # One loop per adaptation that has work left. Once its status is settled (terminal, or
    # an invalid spec, for this generation) the filter stops matching and kopf stops the
    # daemon: a finished adaptation costs nothing. A spec edit (a new generation) matches
    # again and kopf starts a new one. The daemon never returns by itself: kopf would not
    # restart one that did.
    @kopf.daemon(GROUP, VERSION, PLURAL, when=not_settled, registry=registry)
    async def adaptation(
        namespace: str | None,
        name: str,
        body: kopf.Body,
        stopped: kopf.DaemonStopped,
        **kwargs: Any,
    ) -> None:
        # kopf hands each index in as a keyword named by its id.
        indexes: dict[str, kopf.Index] = {plural: kwargs[index_id(plural)] for _, plural in INDEXED}
        # kopf types namespace as optional for cluster-scoped kinds; AsrAdaptation is not.
        assert namespace is not None
        key = (namespace, name)
        state = tracked[key]
        loops.add(key)
        metrics.observe_loops(len(loops))
        try:
            await _until_finalized(state, body, stopped)
            while not stopped:
                state.wake.clear()
                state.woken_by.clear()
                found, state.created = with_own_children(
                    reconciler.Children(
                        **{plural: tuple(index.get(key, ())) for plural, index in indexes.items()}
                    ),
                    state.created,
                    time.monotonic(),
                    body.get("metadata", {}).get("uid"),
                )
                state.edited.clear()
                done = await reconcile(namespace, name, body, found)
                _follow(state, body, done)
                passed = time.monotonic()
                if done.written_version is not None and all(
                    by == done.written_version for by in state.woken_by
                ):
                    # Only the echo of its own status write came during the pass: the next
                    # pass would see what this one decided on (and read rank 0 for nothing).
                    state.wake.clear()
                followed = state.follower is not None and not state.follower.done()
                timeout = wait_seconds(done, options.interval, followed)
                if done.retry_after is not None and timeout is not None:
                    # Backing off: what wakes a loop (its own status write, pod churn) would
                    # repeat the failure at once; a spec edit may be the fix, and ends it.
                    left = timeout - (time.monotonic() - passed)
                    await _wait(state.edited, stopped, max(0.0, left))
                else:
                    await _wait(state.wake, stopped, timeout)
        finally:
            _unfollow(state)
            loops.discard(key)
            metrics.observe_loops(len(loops))

    def _follow(state: _Tracked, body: kopf.Body, done: reconciler.Pass) -> None:
        """Keep one follower on the rank 0 the pass read, none when no train pod runs."""
        url = done.rank0_url
        if url is None or url != state.followed:
            _unfollow(state)
        if url is None or state.follower is not None:
            return
        import aiohttp

        from marco_operator import rank0_watch
        from marco_operator.resources import Owner

        if not sessions:
            # No connection limit: each follower holds one connection for its long poll.
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))

        def wake() -> None:
            _wake(state)

        state.followed = url
        state.follower = asyncio.create_task(
            rank0_watch.follow(
                sessions[0],
                url,
                pass_options.token(Owner.from_body(dict(body))),
                done.evaluations_seen or 0,
                wake,
                interval=options.interval,
                timeout=options.trainer_timeout,
            )
        )
        state.follower.add_done_callback(_said_if_failed)

    def _unfollow(state: _Tracked) -> None:
        if state.follower is not None:
            state.follower.cancel()
        state.follower, state.followed = None, None

    async def _until_finalized(
        state: _Tracked, body: kopf.Body, stopped: kopf.DaemonStopped
    ) -> None:
        """Before a new daemon's first pass, wait for the watch to bring kopf's finalizer.

        kopf starts the daemon and then adds its finalizer in a patch of its own, tested
        against the resourceVersion it saw: a status write landing first fails that patch
        (409), and kopf stops handling the adaptation's events for a second before it tries
        again (at 500 adaptations created at once, a dozen did). Past the consistency timeout
        the pass goes ahead (a deleted adaptation, or a kopf that adds none).
        """
        deadline = time.monotonic() + CONSISTENCY_TIMEOUT
        while not stopped:
            state.delivered.clear()  # before the check: a delivery after it still wakes us
            if FINALIZER in (body.get("metadata", {}).get("finalizers") or ()):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await _wait(state.delivered, stopped, left)

    def wake(namespace: str | None, name: str | None) -> None:
        if namespace and name:
            _wake(tracked[namespace, name])

    @kopf.on.event("batch", "v1", "jobs", labels=managed, registry=registry)
    async def child_job(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        wake(namespace, labels.get(LABEL_ADAPTATION))

    @kopf.on.event("", "v1", "pods", labels=managed, registry=registry)
    async def child_pod(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        wake(namespace, labels.get(LABEL_ADAPTATION))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def seen(
        namespace: str | None, name: str, body: kopf.Body, type: str | None, **_: Any
    ) -> None:
        if namespace is None:  # AsrAdaptation is namespaced; kopf's signature is general
            return
        if type == "DELETED":
            set_phase(namespace, name, None)
            tracked.pop((namespace, name), None)
            return
        state = tracked[namespace, name]
        state.seen_version = body.get("metadata", {}).get("resourceVersion")
        generation = body.get("metadata", {}).get("generation")
        if state.seen_generation is not None and generation != state.seen_generation:
            state.edited.set()
        state.seen_generation = generation
        # Settled adaptations have no loop; their phase still counts in the gauge.
        phase = (body.get("status") or {}).get("phase")
        if phase:
            set_phase(namespace, name, phase)
        state.delivered.set()
        if state.seen_version in state.unechoed:
            # The echo of a status this driver wrote: the next pass has that status already
            # (with_own_status), and nothing else changed in this version.
            state.unechoed.discard(state.seen_version)
            return
        _wake(state, by=state.seen_version)

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        for state in tracked.values():
            _unfollow(state)
        for session in sessions:
            await session.close()
        kube.close()

    return registry


def _wake(state: _Tracked, by: str | None = None) -> None:
    state.woken_by.append(by)
    state.wake.set()


def _said_if_failed(task: asyncio.Task[None]) -> None:
    """A follower ends by itself only when training finished; anything else is a bug."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("rank 0 follower failed", exc_info=task.exception())


def _error_kind(error: BaseException) -> str:
    """The errors metric's kind of a failed pass: refused (a child), api, or internal."""
    from marco_operator.reconciler import describe_failure

    return {"ChildRefused": "refused", "ChildNotOurs": "refused", "ApiError": "api"}.get(
        describe_failure(error).reason, "internal"
    )


def _no_diff_base() -> type:
    import kopf

    class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
        """kopf's diff base for an operator without change handlers: an empty essence.

        kopf builds an essence of every object of every watch event (a deep copy of the
        whole body, pods' status included, then another in its progress storage) to diff
        it against the last one handled, and only change handlers (on.create, on.update,
        on.field) and idle daemons read that diff; this operator has neither (a test holds
        it), and the two copies were 10 % of its CPU at 500 adaptations. Annotations stay
        kopf's own, so nothing is ever stored or read under another key.
        """

        def build(self, *, body: Any, extra_fields: Any = None) -> Any:
            return {}

    return NoDiffBase


def settings_for(options: DriverOptions) -> kopf.OperatorSettings:
    import kopf

    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = _no_diff_base()()
    settings.persistence.finalizer = FINALIZER
    # The children's watches carry only the operator's own objects: the API server filters
    # them (labelSelector), where kopf's handler filters would receive every Job, pod,
    # ConfigMap and Service of the namespaces served and drop the others on arrival.
    for group, plural in INDEXED:
        settings.watching.label_selectors[group, "v1", plural] = MANAGED_SELECTOR
    settings.posting.level = logging.WARNING  # our own Events carry the decisions
    # A deleted adaptation keeps kopf's finalizer until the daemon's pass in flight ends
    # (seconds at most); kopf's default re-check after 60 s would hold the deletion that long.
    settings.background.cancellation_polling = 1.0
    settings.peering.standalone = options.standalone
    if options.peering_name:
        settings.peering.name = options.peering_name
        settings.peering.mandatory = True  # several replicas must never run unpeered
    return settings


async def operate(
    options: DriverOptions,
    configuration: client.Configuration,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    metrics: OperatorMetrics | None = None,
) -> None:
    """Run the operator until the stop flag is set (or a signal in the main thread)."""
    import kopf

    from marco_operator.metrics import OperatorMetrics, start_metrics_server

    metrics = metrics or OperatorMetrics()
    # Passes run in threads (asyncio.to_thread): enough of them, each with its connection.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(PASS_THREADS, thread_name_prefix="pass")
    )
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize or 0, PASS_THREADS
    )
    if options.metrics_port is not None:
        address, port = start_metrics_server(options.metrics_port, metrics=metrics)
        logger.info("serving /metrics on %s:%d", address, port)
    await kopf.operator(
        registry=build_registry(options, configuration, metrics),
        settings=settings_for(options),
        clusterwide=options.all_namespaces,
        namespaces=list(options.namespaces),
        standalone=options.standalone,
        peering_name=options.peering_name,
        liveness_endpoint=options.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def policy_of(args: argparse.Namespace) -> Policy:
    """The allow-lists: the flags, else the environment (the chart sets it), else none."""
    env = Policy.from_env()
    images = listed(args.allowed_images) if args.allowed_images is not None else env.images
    accounts = (
        listed(args.allowed_service_accounts)
        if args.allowed_service_accounts is not None
        else env.service_accounts
    )
    return Policy(images=images, service_accounts=accounts)


def default_queue_of(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> str | None:
    """The default Kueue queue: the flag, else $MARCO_DEFAULT_QUEUE_NAME (the chart sets it),
    else none; empty means none. SystemExit naming the source for a name Kueue cannot take."""
    env = os.environ if environ is None else environ
    if args.default_queue_name is not None:
        name, source = args.default_queue_name, "--default-queue-name"
    else:
        name, source = env.get(DEFAULT_QUEUE_ENV, ""), f"${DEFAULT_QUEUE_ENV}"
    if not name:
        return None
    problem = queue_name_problem(name)
    if problem:
        raise SystemExit(f"marco operator: {source}: {problem}")
    return name


def _command(args: argparse.Namespace) -> int:
    from marco_operator.kube import load_configuration
    from marco_operator.metrics import metrics_port

    if not args.all_namespaces and not args.namespace:
        raise SystemExit("marco operator: give --namespace NS (repeatable) or --all-namespaces")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = DriverOptions(
        namespaces=tuple(args.namespace or ()),
        all_namespaces=args.all_namespaces,
        trainer_port=args.trainer_port,
        trainer_timeout=args.trainer_timeout,
        trainer_startup_seconds=args.trainer_startup_seconds,
        interval=args.interval,
        liveness_endpoint=args.liveness,
        standalone=args.standalone,
        peering_name=args.peering,
        metrics_port=args.metrics_port if args.metrics_port is not None else metrics_port(),
        endpoint_key=load_key(args.endpoint_key_file),
        policy=policy_of(args),
        default_queue_name=default_queue_of(args),
    )
    if options.policy.images is None:
        logger.warning("no image allow-list (--allowed-images): any image may run")
    configuration = load_configuration(args.kubeconfig, args.context)
    asyncio.run(operate(options, configuration))
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf) that reconciles AsrAdaptation objects",
        description="Watch AsrAdaptation objects and their Jobs; run stages, steer the "
        "learning rate and stop training from measured WER.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", metavar="NS", help="namespace to serve (repeatable)"
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="serve the whole cluster"
    )
    parser.add_argument(
        "--trainer-port",
        type=_port,
        default=API_PORT,
        help="port of rank 0's /v1/evaluations (default: %(default)s)",
    )
    parser.add_argument(
        "--endpoint-key-file",
        metavar="FILE",
        default=None,
        help="key the trainers' endpoint tokens derive from (default: $MARCO_ENDPOINT_KEY_FILE; "
        "none: one made at start, lost at a restart)",
    )
    parser.add_argument(
        "--allowed-images",
        metavar="LIST",
        default=None,
        help="comma-separated image repositories an AsrAdaptation may run ('reg.io/org/' "
        "for all under it, '*' for any; default: $MARCO_ALLOWED_IMAGES, else any)",
    )
    parser.add_argument(
        "--allowed-service-accounts",
        metavar="LIST",
        default=None,
        help="comma-separated ServiceAccounts a stage pod may use ('*' for any; default: "
        "$MARCO_ALLOWED_SERVICE_ACCOUNTS, else any)",
    )
    parser.add_argument(
        "--default-queue-name",
        metavar="QUEUE",
        default=None,
        help="Kueue LocalQueue of the stage Jobs of an AsrAdaptation without spec.queueName "
        f"(default: ${DEFAULT_QUEUE_ENV}, else none: such Jobs are not queued)",
    )
    parser.add_argument(
        "--trainer-timeout",
        type=_positive_seconds,
        default=TRAINER_TIMEOUT_SECONDS,
        help="seconds to wait for rank 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--trainer-startup-seconds",
        type=_positive_seconds,
        default=TRAINER_STARTUP_SECONDS,
        help="seconds after its container started that rank 0 may refuse connections before "
        "each refusal counts as an error (default: %(default)s; raise it where torchrun's "
        "rendezvous waits long for the other nodes)",
    )
    parser.add_argument(
        "--interval",
        type=_positive_seconds,
        default=10.0,
        help="longest wait between passes over an adaptation with work left; sooner when "
        "the core asks or a child changes (default: %(default)s)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", help="no peering with other operator replicas"
    )
    peering.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help="kopf peering object shared by replicas (only one of them acts at a time)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="port of the operator's /metrics (default: $MARCO_METRICS_PORT, else 9090)",
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file when not running in a cluster"
    )
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.set_defaults(func=_command)
