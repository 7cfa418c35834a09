"""The API emulator of operator_scale.py in a process of its own.

In the benchmark's process, kmock shared one interpreter lock with the simulated Job
controller and rank 0s: at 50 adaptations it stopped answering within the operator's
15 s read timeout while the operator itself used 1-2 % of a core. Here it has a
process (and on idle cores a core) of its own; the benchmark reaches it over HTTP, as
the operator does, and asks it over a pipe for what it counted: the requests it served
and the operator's writes, stamped with its clock (time.monotonic, CLOCK_MONOTONIC: one
clock for every process of the machine, so the simulator's stamps compare with them).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: An operator write as the emulator handled it: (when, kind, name, payload), kind "jobs"
#: (created), "configmaps" (created or patched) or "done" (a Job's Complete condition,
#: the Job controller's), payload cut to the labels and data the benchmark reads.
Write = tuple[float, str, str, dict[str, Any]]


def index_named_lookups() -> None:
    """kmock's emulator finds an object by scanning every object it holds (O(objects) per
    GET, PATCH, POST): at hundreds of adaptations (thousands of objects with their Events) the
    emulator, not the operator, would be measured. A request that names its object (and a
    namespace) is looked up by key instead; the rest (lists, watches) scan as before."""
    from kmock._internal import k8s

    scan = k8s.KubernetesEmulator._KubernetesEmulator__get_objs  # type: ignore[attr-defined]

    def lookup(self: Any, request: Any, strict: bool) -> list[Any]:
        if request.resource is None or request.name is None or request.namespace is None:
            found = list(scan(self, request, strict))
            selector = (request.params or {}).get("fieldSelector")
            return [o for o in found if fields_match(o.raw, selector)] if selector else found
        key = (request.resource, request.namespace, request.name)
        found = self._objects._objects.get(key)
        return [] if found is None else [found]

    k8s.KubernetesEmulator._KubernetesEmulator__get_objs = lookup  # type: ignore[attr-defined]


def fields_match(raw: dict[str, Any], selector: str) -> bool:
    """Whether an object matches a field selector of `a.b=value` terms, as the API server
    filters a list (kmock ignores the selector; here a watch's first listing is filtered
    too, its stream not: the operator watches nothing by field). The operator lists a
    pod-less Job's Events by `involvedObject.uid`: unfiltered, each such list returned every
    Event of the namespace, thousands at 500 adaptations, which a real API server never
    sends. The matching is the operator's own (it filters again what a server returns)."""
    from marco_operator.kube import matches_fields

    terms = dict(term.partition("=")[::2] for term in selector.split(","))
    return matches_fields(raw, terms)


def log_operator_writes(writes: list[Write]) -> None:
    """Stamp each Job creation and ConfigMap write, and each Job's Complete, as handled."""
    import kmock

    from tests.integration.operator import harness

    handle = harness.ApiServer._handle

    async def logged(self: Any, request: Any) -> Any:
        answer = await handle(self, request)
        plural = request.resource.plural if request.resource is not None else None
        written = request.action in (kmock.action.CREATE, kmock.action.UPDATE)
        data = request.data
        if plural in ("jobs", "configmaps") and written and isinstance(data, dict):
            meta = data.get("metadata") or {}
            name = request.name or meta.get("name", "")
            if request.subresource is None:
                kept = {"metadata": {"labels": meta.get("labels") or {}}, "data": data.get("data")}
                writes.append((time.monotonic(), plural, name, kept))
            elif plural == "jobs" and any(
                c.get("type") == "Complete" for c in data.get("status", {}).get("conditions", [])
            ):  # the Job controller's verdict: the stage is done
                writes.append((time.monotonic(), "done", name, {}))
        return answer

    harness.ApiServer._handle = logged  # type: ignore[method-assign]


def _serve(conn: multiprocessing.connection.Connection, claim: str) -> None:
    """The child: the emulator (in the harness's thread), answering the pipe until "stop"."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.operator.harness import TEST_USER_AGENT, EmulatedCluster

    writes: list[Write] = []
    index_named_lookups()
    log_operator_writes(writes)
    with EmulatedCluster() as cluster:
        cluster.create_claim(claim, ("ReadWriteMany",))
        conn.send((cluster.url, cluster.endpoint_key))
        while True:
            what, argument = conn.recv()
            if what == "stop":
                break
            calls = list(cluster.calls)
            if what == "counts":  # (every request, the operator's)
                operator = sum(1 for *_, agent in calls if agent != TEST_USER_AGENT)
                conn.send((len(calls), operator))
            elif what == "calls_since":
                conn.send(calls[argument:])
            elif what == "writes":
                conn.send(list(writes))
    conn.send(None)


class EmulatorProcess:
    """The emulator's process, as the benchmark sees it: a URL, the endpoint key the operator
    derives rank 0's tokens from, and what the emulator counted."""

    def __init__(self, claim: str) -> None:
        context = multiprocessing.get_context("spawn")  # nothing of this process's loop
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, claim), name="kmock")
        self.process.start()
        if not self._conn.poll(60):
            self.process.kill()
            raise RuntimeError("the emulator's process did not start in 60 s")
        self.url, self.endpoint_key = self._conn.recv()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None, "started in __init__"
        return self.process.pid

    def _ask(self, what: str, argument: Any = None) -> Any:
        self._conn.send((what, argument))
        return self._conn.recv()

    def counts(self) -> tuple[int, int]:
        """Requests served so far: all of them, and the operator's."""
        counted: tuple[int, int] = self._ask("counts")
        return counted

    def calls_since(self, start: int) -> list[tuple[str, str, bool, str]]:
        calls: list[tuple[str, str, bool, str]] = self._ask("calls_since", start)
        return calls

    def writes(self) -> list[Write]:
        writes: list[Write] = self._ask("writes")
        return writes

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(EOFError, OSError):  # it ended meanwhile
                self._ask("stop")
        self.process.join(20)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
