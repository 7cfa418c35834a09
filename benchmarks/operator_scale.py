"""The operator at scale: N AsrAdaptations at once against kmock's API emulator.

Run from the repository root:
``PYTHONPATH=contract:operator:trainer:demo .venv/bin/python benchmarks/operator_scale.py
[--adaptations 50,200,500] [--quiet-seconds 30] [--out benchmarks/results/operator_scale]``

What runs: the API emulator of the operator tests (tests/integration/operator/harness.py)
in a process of its own (scale_emulator.py); `marco operator` as its own process (kopf,
default --interval), as a Deployment runs it; and, in this process, a simulated Job
controller and kubelet (each Job the operator creates gets its pods, then Completes after
a few seconds) and simulated rank 0s: one HTTP server on loopback answers every train
pod's /v1/evaluations, telling the adaptations apart by their bearer token, each serving
a history that grows by an evaluation every 2-4 s. 10 % of the trainers ignore the stop
directive (the operator must delete their Job after the grace period).

The load: by default every adaptation is created in the same second and every stage and
evaluation takes 2-4 s (--pace 2), so the adaptations move in step and about N stage
transitions fall within a second or two: a burst, whose latencies measure how fast the
operator works through N decisions at once. --arrival spreads the creations evenly over
that many seconds (and the trainers go on after the quiet window with the same spacing),
and --pace sets how long stages and evaluations take: a steady load, whose latencies
measure the operator at that rate.

Every adaptation runs all stages but fetch and push: filter, profile, augment, baseline,
train (3 cycles of 3 evaluations; WERs that plateau so that early stopping stops it at
the 9th), evaluate. Once every adaptation is training and has its first directive, every
trainer holds for --quiet-seconds: nothing changes, and the requests the operator sends
then are counted at the emulator.

Measured (the simulator's clock, at its watch of Jobs and ConfigMaps, so a latency
includes the watch's delivery to the simulator):
- evaluation → directive: from rank 0 serving the evaluation that ends a cycle to the
  ConfigMap's new directive (next cycle, or the stop);
- stage done → next Job: from the Job controller's Complete to the next stage's Job;
- created → first Job: from the AsrAdaptation's creation to its first Job;
- API requests per adaptation per second while nothing changes, and rank 0 reads;
- the operator process's CPU (share of one core) and RSS (/proc), its errors
  (marco_operator_errors_total, failed passes, tracebacks in its log).
Every LR decision is checked against Eq. 1 computed here; every adaptation must reach
Succeeded with one LearningRateChanged Event per cycle and one EarlyStop.

Writes <out>/<N>.json and <out>/<N>.md per size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' emulator harness
sys.path.insert(0, str(ROOT / "benchmarks"))  # its process: scale_emulator

import aiohttp  # noqa: E402
import aiohttp.web  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from scale_emulator import EmulatorProcess, Write  # noqa: E402

from marco_contract.formats import (  # noqa: E402
    Directive,
    Evaluation,
    EvaluationHistory,
    StageResult,
)
from marco_operator.api import API_VERSION, PLURAL  # noqa: E402
from marco_operator.endpoint_auth import endpoint_token  # noqa: E402
from marco_operator.kube import collection_path  # noqa: E402
from marco_operator.names import job_name  # noqa: E402
from marco_operator.ownership import JOB_UID_LABEL  # noqa: E402
from marco_operator.reconciler import JOB_NAME_LABEL  # noqa: E402
from marco_operator.resources import (  # noqa: E402
    DIRECTIVE_KEY,
    LABEL_ADAPTATION,
    LABEL_COMPLETION_INDEX,
    LABEL_MANAGED_BY,
    LABEL_STAGE,
    MANAGED_BY,
)
from marco_trainer.metrics_server import MAX_WAIT  # noqa: E402
from tests.integration.operator.harness import (  # noqa: E402
    NAMESPACE,
    SHARED_CLAIM,
    TEST_USER_AGENT,
    free_port,
)

#: The stages each adaptation runs, in order, and what each non-train stage reports.
STAGES = ["filter", "profile", "augment", "baseline", "train", "evaluate"]
#: The spec fields of the stages --no-data-stages leaves out.
DATA_STAGE_FIELDS = ("filter", "profile", "augmentation")
RESULTS = {
    "filter": StageResult(stage="filter", counts={"kept": 9, "skipped": 1}),
    "profile": StageResult(stage="profile", counts={"processed": 5}),
    "augment": StageResult(stage="augment", counts={"written": 18}),
    "baseline": StageResult(stage="baseline", wer=31.5, family="encoder-decoder"),
    "evaluate": StageResult(stage="evaluate", wer=26.0),
}
LR_MIN, LR_MAX, SIGMA_REF = 1e-7, 1e-5, 0.5
EVAL_EVERY, CYCLE_STEPS = 10, 30
IGNORE_STOP = 0.1  # share of trainers that ignore the stop directive
STOP_GRACE = 10  # stopGracePeriodSeconds
#: A stage and an evaluation take PACE to 2 x PACE seconds by default (--pace; also what every
#: run before the option had).
PACE = 2.0


def spec(data_stages: bool = True) -> dict[str, Any]:
    off = {} if data_stages else {k: {"enabled": False} for k in DATA_STAGE_FIELDS}
    return off | {
        "model": {"source": "/data/models/whisper-tiny"},
        "data": {
            "volumeClaim": SHARED_CLAIM,
            "train": ["train.jsonl"],
            "validation": "validation.jsonl",
            "test": "test.jsonl",
            "targetAudio": "target",
        },
        "training": {
            "learningRate": {"min": LR_MIN, "max": LR_MAX},
            "sigmaRef": SIGMA_REF,
            "cycleSteps": CYCLE_STEPS,
            "evalEvery": EVAL_EVERY,
            "earlyStopping": {"patience": 3, "minImprovement": 0.1},
            "stopGracePeriodSeconds": STOP_GRACE,
        },
    }


def wers_of(rng: random.Random) -> list[float]:
    """Nine validation WERs: two cycles that improve by ≥ 0.15 per evaluation, then three
    without a 0.1 gain (patience 3: the stop falls on the 9th, the end of cycle 2)."""
    d1, d2 = rng.uniform(0.3, 1.0), rng.uniform(0.15, 0.3)
    first = [30.0, 30.0 - d1, 30.0 - 2 * d1]
    second = [first[-1] - d2 * k for k in (1, 2, 3)]
    best = second[-1]
    third = [best + rng.uniform(-0.09, 0.09) for _ in range(3)]
    return first + second + third


def eq1(wers: list[float]) -> float:
    """Eq. 1, written out independently of core."""
    mean = sum(wers) / len(wers)
    sigma = math.sqrt(sum((w - mean) ** 2 for w in wers) / len(wers))
    return LR_MAX - (LR_MAX - LR_MIN) * min(1.0, max(0.0, sigma / SIGMA_REF))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def now() -> float:
    return time.monotonic()


def iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Adaptation:
    name: str
    wers: list[float]
    ignores_stop: bool
    uid: str = ""
    created: float = 0.0
    offset: float = 0.0  # its creation's delay after the first's (--arrival)
    done: dict[str, float] = field(default_factory=dict)  # stage: when its pods terminated
    cycle_ends: list[tuple[float, int]] = field(default_factory=list)  # (served, cycle)
    directives: list[tuple[float, Directive]] = field(default_factory=list)
    directive_changed: asyncio.Event = field(default_factory=asyncio.Event)
    evaluations: list[Evaluation] = field(default_factory=list)
    finished: bool = False
    training: bool = False  # its rank 0 serves
    grown: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) per change
    reads: int = 0  # rank 0 reads
    train_job: dict[str, Any] | None = None

    @property
    def directive(self) -> Directive | None:
        return self.directives[-1][1] if self.directives else None


@dataclass
class Measured:
    eval_to_directive: list[float] = field(default_factory=list)
    done_to_next_job: list[float] = field(default_factory=list)
    created_to_first_job: list[float] = field(default_factory=list)
    wrong_decisions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored_stops_deleted: int = 0
    by_stage: dict[str, list[float]] = field(default_factory=dict)  # next stage: done → Job

    def derive(self, adaptations: dict[str, Adaptation], writes: list[Write]) -> None:
        """The latencies, from when the simulator acted (its clock, as it acted) to when the
        operator's write reached the emulator (its writes, stamped as the emulator handles
        it): a simulator that lags behind its watches (it shares the CPUs) slows the pace
        of the run, not the figures."""
        jobs: dict[str, list[tuple[float, str]]] = {}
        done = {name: when for when, kind, name, _ in writes if kind == "done"}
        directives: dict[str, list[tuple[float, Directive]]] = {}
        for when, kind, name, payload in writes:
            if kind == "jobs":
                labels = payload.get("metadata", {}).get("labels") or {}
                jobs.setdefault(labels.get(LABEL_ADAPTATION, ""), []).append(
                    (when, labels.get(LABEL_STAGE, ""))
                )
            elif kind == "configmaps" and DIRECTIVE_KEY in (payload.get("data") or {}):
                owner = name.removesuffix("-control")
                directive = Directive.model_validate_json(payload["data"][DIRECTIVE_KEY])
                directives.setdefault(owner, []).append((when, directive))
        for name, adaptation in adaptations.items():
            created = sorted(jobs.get(name, []))
            if created:
                self.created_to_first_job.append(created[0][0] - adaptation.created)
            for when, stage in created[1:]:
                previous = job_name(name, STAGES[STAGES.index(stage) - 1])
                if previous in done:  # not after an enforced stop
                    latency = when - done[previous]
                    self.done_to_next_job.append(latency)
                    self.by_stage.setdefault(stage, []).append(latency)
            for served, cycle in adaptation.cycle_ends:
                answer = next(
                    (when for when, d in directives.get(name, [])
                     if when >= served and (d.cycle > cycle or d.stop)),
                    None,
                )  # fmt: skip
                if answer is not None:
                    self.eval_to_directive.append(answer - served)


class Simulation:
    """Job controller, kubelet, garbage collector and rank 0s, on one event loop."""

    def __init__(self, cluster: EmulatorProcess, count: int, seed: int, pace: float = PACE) -> None:
        rng = random.Random(seed)
        self.cluster = cluster
        self.rng = rng
        self.pace = pace  # a stage and an evaluation take pace to 2 x pace seconds
        self.adaptations = {
            f"a{i:04d}": Adaptation(f"a{i:04d}", wers_of(rng), rng.random() < IGNORE_STOP)
            for i in range(count)
        }
        self.by_token: dict[str, Adaptation] = {}
        self.measured = Measured()
        self.release = asyncio.Event()  # the quiet window is over: trainers go on
        self.holding = 0  # trainers waiting for the release
        self.tasks: set[asyncio.Task[Any]] = set()
        self.trainer_port = free_port()
        self.origin = now()
        self.timeline: list[str] = []  # what happened to the first adaptation, for reading

    def note(self, adaptation: Adaptation, what: str) -> None:
        if adaptation.name == "a0000":
            self.timeline.append(f"{now() - self.origin:8.2f} {what}")

    # --- HTTP to the emulator, as the Job controller's client ---------------------------

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            base_url=self.cluster.url,
            headers={"User-Agent": TEST_USER_AGENT},
            connector=aiohttp.TCPConnector(limit=32),
        )
        app = aiohttp.web.Application()
        app.router.add_get("/v1/evaluations", self.serve_evaluations)
        self.runner = aiohttp.web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, "127.0.0.1", self.trainer_port).start()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.session.close()
        await self.runner.cleanup()

    async def call(self, method: str, path: str, body: Any = None, merge: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if merge else {}
        for attempt in range(5):
            async with self.session.request(method, path, json=body, headers=headers) as reply:
                text = await reply.text()
                if reply.status < 300:
                    return json.loads(text) if text else None
                if reply.status == 404 and method != "POST":
                    return None
                if reply.status < 500 and reply.status != 409:
                    raise RuntimeError(f"{method} {path}: {reply.status} {text[:300]}")
            await asyncio.sleep(0.1 * (attempt + 1))
        raise RuntimeError(f"{method} {path}: still failing after 5 tries")

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.measured.problems.append(f"simulator: {error!r}")

    # --- watches ----------------------------------------------------------------------

    async def watch(self, api_version: str, plural: str, handle: Any) -> None:
        path = collection_path(api_version, plural, NAMESPACE)
        while True:
            try:
                async with self.session.get(
                    path, params={"watch": "true"}, timeout=aiohttp.ClientTimeout(total=None)
                ) as stream:
                    async for line in stream.content:
                        if line.strip():
                            event = json.loads(line)
                            await handle(event.get("type"), event.get("object") or {}, now())
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.2)

    async def on_job(self, kind: str, job: dict[str, Any], seen: float) -> None:
        labels = job.get("metadata", {}).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
            return
        adaptation = self.adaptations.get(labels.get(LABEL_ADAPTATION, ""))
        stage = labels.get(LABEL_STAGE, "")
        if adaptation is None:
            return
        self.note(adaptation, f"Job {stage} {kind} {job.get('status', {})}")
        if kind == "ADDED":
            self.spawn(self.run_job(adaptation, stage, job))
        elif kind == "DELETED":
            if stage == "train" and adaptation.ignores_stop:
                self.measured.ignored_stops_deleted += 1
            # Not awaited here: the watch must not wait for the garbage collector.
            self.spawn(self.collect(job["metadata"]["name"]))

    async def collect(self, name: str) -> None:
        """The garbage collector: a deleted Job's pods go with it."""
        selector = f"?labelSelector={JOB_NAME_LABEL}={name}"
        pods = await self.call("GET", self.pods_path() + selector)
        for pod in (pods or {}).get("items", []):
            # kmock ignores labelSelector: without this, every adaptation's pods would go.
            if (pod["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == name:
                await self.call("DELETE", self.pods_path(pod["metadata"]["name"]))

    async def on_configmap(self, kind: str, configmap: dict[str, Any], seen: float) -> None:
        labels = configmap.get("metadata", {}).get("labels") or {}
        adaptation = self.adaptations.get(labels.get(LABEL_ADAPTATION, ""))
        text = (configmap.get("data") or {}).get(DIRECTIVE_KEY)
        if adaptation is None or kind == "DELETED" or not text:
            return
        directive = Directive.model_validate_json(text)
        if directive != adaptation.directive:
            self.note(adaptation, f"directive {directive}")
            adaptation.directives.append((seen, directive))
            adaptation.directive_changed.set()

    # --- the Job controller and kubelet -------------------------------------------------

    def pods_path(self, name: str = "") -> str:
        base = collection_path("v1", "pods", NAMESPACE)
        return f"{base}/{name}" if name else base

    def job_path(self, name: str) -> str:
        return collection_path("batch/v1", "jobs", NAMESPACE) + f"/{name}"

    async def run_job(self, adaptation: Adaptation, stage: str, job: dict[str, Any]) -> None:
        await asyncio.sleep(self.rng.uniform(0.2, 0.5))  # scheduling, image pull
        if stage == "train":
            # Rank 0 serves its (empty) history before it loads the model, so by the time
            # the operator sees the pod: a real trainer's start-up before it listens is
            # torchrun and imports, which the operator does not count (rank0.py).
            adaptation.training = True
        pods = await self.start_pods(job)
        if stage == "train":
            adaptation.train_job = job
            await self.train(adaptation, job, pods)
            return
        await asyncio.sleep(self.rng.uniform(self.pace, 2 * self.pace))
        await self.finish(adaptation, job, pods, RESULTS[stage])

    async def start_pods(self, job: dict[str, Any]) -> list[str]:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        spec = job.get("spec", {})
        template = spec.get("template", {})
        indexed = spec.get("completionMode") == "Indexed"
        count = int(spec.get("parallelism") or spec.get("completions") or 1) if indexed else 1
        names = []
        for index in range(count):
            labels = dict(template.get("metadata", {}).get("labels") or {})
            labels.update({JOB_NAME_LABEL: name, "batch.kubernetes.io/job-name": name})
            labels[JOB_UID_LABEL] = uid
            meta: dict[str, Any] = {
                "name": f"{name}-{index}" if indexed else f"{name}-pod",
                "namespace": NAMESPACE,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                     "uid": uid, "controller": True,
                                     "blockOwnerDeletion": True}],
            }  # fmt: skip
            if indexed:
                labels[LABEL_COMPLETION_INDEX] = str(index)
                meta["annotations"] = {LABEL_COMPLETION_INDEX: str(index)}
            await self.call("POST", self.pods_path(), {
                "apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": template.get("spec", {}),
                "status": {"phase": "Running", "podIP": "127.0.0.1"},
            })  # fmt: skip
            names.append(meta["name"])
        await self.call(
            "PATCH",
            self.job_path(name) + "/status",
            {"status": {"active": count, "startTime": iso()}},
            merge=True,
        )
        return names

    async def finish(
        self, adaptation: Adaptation, job: dict[str, Any], pods: list[str], result: StageResult
    ) -> None:
        adaptation.done[result.stage] = now()
        self.note(adaptation, f"finish {result.stage}")
        terminated = {"exitCode": 0, "reason": "Completed", "finishedAt": iso(),
                      "message": result.to_termination_message()}  # fmt: skip
        for pod in pods:
            await self.call("PATCH", self.pods_path(pod) + "/status", {"status": {
                "phase": "Succeeded", "containerStatuses": [{
                    "name": "trainer", "ready": False, "restartCount": 0,
                    "state": {"terminated": terminated}}]}}, merge=True)  # fmt: skip
        await self.call("PATCH", self.job_path(job["metadata"]["name"]) + "/status", {"status": {
            "active": 0, "succeeded": len(pods), "completionTime": iso(),
            "conditions": [{"type": "Complete", "status": "True",
                            "lastTransitionTime": iso()}]}}, merge=True)  # fmt: skip

    # --- rank 0 ---------------------------------------------------------------------------

    async def serve_evaluations(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        header = request.headers.get("Authorization", "")
        adaptation = self.by_token.get(header.removeprefix("Bearer "))
        if adaptation is None or not adaptation.training:
            return aiohttp.web.Response(status=401)
        adaptation.reads += 1
        if "wait" in request.query:
            # The long poll of marco_trainer.metrics_server: held until more than `after`
            # evaluations or the end of training, at most `wait` (capped as rank 0 caps it).
            after, wait = int(request.query.get("after", "0")), float(request.query["wait"])
            deadline = now() + min(wait, MAX_WAIT)
            while len(adaptation.evaluations) <= after and not adaptation.finished:
                left = deadline - now()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(adaptation.grown.wait(), left)
                except TimeoutError:
                    break
        history = EvaluationHistory(
            adaptation=adaptation.name,
            evaluations=list(adaptation.evaluations),
            directive=adaptation.directive,
            finished=adaptation.finished,
        )
        return aiohttp.web.Response(
            body=history.model_dump_json().encode(), content_type="application/json"
        )

    async def until_directive(self, adaptation: Adaptation, test: Any, timeout: float) -> bool:
        deadline = now() + timeout
        while not (adaptation.directive and test(adaptation.directive)):
            adaptation.directive_changed.clear()
            left = deadline - now()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(adaptation.directive_changed.wait(), left)
            except TimeoutError:
                return False
        return True

    async def train(self, adaptation: Adaptation, job: dict[str, Any], pods: list[str]) -> None:
        if not await self.until_directive(adaptation, lambda d: True, 120):
            self.measured.problems.append(f"{adaptation.name}: no first directive")
            return
        self.holding += 1
        await self.release.wait()  # the quiet window
        # Trainers go on spaced as their adaptations were created, not all in one second.
        await asyncio.sleep(adaptation.offset)
        for index, wer in enumerate(adaptation.wers, start=1):
            await asyncio.sleep(self.rng.uniform(self.pace, 2 * self.pace))
            directive = adaptation.directive
            assert directive is not None
            adaptation.evaluations.append(Evaluation(
                step=index * EVAL_EVERY, cycle=directive.cycle, lr=directive.learning_rate,
                wer=wer, loss=1.0 / index, time=time.time()))  # fmt: skip
            served = now()
            self.note(adaptation, f"evaluation {index}: {wer}")
            self.grew(adaptation)
            if index % (CYCLE_STEPS // EVAL_EVERY):
                continue
            # The end of a cycle: rank 0 waits for the next cycle's directive (or the stop).
            cycle = directive.cycle
            if not await self.until_directive(
                adaptation, lambda d, c=cycle: d.cycle > c or d.stop, 120
            ):
                self.measured.problems.append(f"{adaptation.name}: no directive after {index}")
                return
            adaptation.cycle_ends.append((served, cycle))
            _, decided = adaptation.directives[-1]
            self.check(adaptation, index, decided)
            if decided.stop:
                break
        if adaptation.ignores_stop:
            return  # runs on until the operator deletes the Job
        adaptation.finished = True
        self.grew(adaptation)
        await asyncio.sleep(0.3)
        best = min(adaptation.wers)
        step = (adaptation.wers.index(best) + 1) * EVAL_EVERY
        result = StageResult(stage="train", wer=best, best_step=step, steps=90)
        await self.finish(adaptation, job, pods, result)

    def grew(self, adaptation: Adaptation) -> None:
        """Wake the long polls held on this rank 0."""
        adaptation.grown.set()
        adaptation.grown = asyncio.Event()

    def check(self, adaptation: Adaptation, evaluations: int, directive: Directive) -> None:
        """The decision at the end of the cycle that the `evaluations`-th evaluation ends."""
        cycle = evaluations // (CYCLE_STEPS // EVAL_EVERY) - 1
        if evaluations == len(adaptation.wers):
            if not directive.stop:
                self.measured.wrong_decisions.append(f"{adaptation.name}: no stop at the 9th")
            return
        wers = adaptation.wers[cycle * 3 : cycle * 3 + 3]
        expected = eq1(wers)
        if directive.stop or directive.cycle != cycle + 1:
            self.measured.wrong_decisions.append(
                f"{adaptation.name}: after cycle {cycle}: {directive}"
            )
        elif not math.isclose(directive.learning_rate, expected, rel_tol=1e-9):
            self.measured.wrong_decisions.append(
                f"{adaptation.name}: cycle {cycle + 1} lr {directive.learning_rate} "
                f"!= Eq. 1 {expected}"
            )

    # --- the run ----------------------------------------------------------------------

    async def create(self, adaptation: Adaptation, key: bytes) -> None:
        path = collection_path(API_VERSION, PLURAL, NAMESPACE)
        manifest = {"apiVersion": API_VERSION, "kind": "AsrAdaptation",
                    "metadata": {"name": adaptation.name, "namespace": NAMESPACE},
                    "spec": spec(STAGES[0] == "filter")}  # fmt: skip
        adaptation.created = now()
        created = await self.call("POST", path, manifest)
        adaptation.uid = created["metadata"]["uid"]
        token = endpoint_token(key, NAMESPACE, adaptation.name, adaptation.uid)
        self.by_token[token] = adaptation

    async def phases(self) -> dict[str, str]:
        path = collection_path(API_VERSION, PLURAL, NAMESPACE)
        listing = await self.call("GET", path)
        return {
            item["metadata"]["name"]: (item.get("status") or {}).get("phase", "")
            for item in listing["items"]
        }

    async def events(self) -> list[dict[str, Any]]:
        listing = await self.call("GET", collection_path("v1", "events", NAMESPACE))
        return list(listing["items"])


class OperatorProcess:
    """`marco operator` as a Deployment runs it, with /proc readings of its CPU and RSS."""

    def __init__(
        self, cluster: EmulatorProcess, trainer_port: int, workdir: Path, root: Path = ROOT
    ) -> None:
        self.workdir = workdir
        kubeconfig = workdir / "kubeconfig.yaml"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
            "users": [{"name": "bench", "user": {"token": "bench-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "bench"}}],
        }))  # fmt: skip
        key = workdir / "endpoint-key"
        key.write_bytes(cluster.endpoint_key)
        self.log = workdir / "operator.log"
        self.metrics_port = free_port()
        liveness = free_port()
        self.liveness = f"http://127.0.0.1:{liveness}/healthz"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                str(root / part) for part in ("contract", "operator", "trainer", "demo")
            ),
            MARCO_METRICS_PORT=str(self.metrics_port),
            MARCO_ENDPOINT_KEY_FILE=str(key),
        )
        command = [sys.executable, "-m", "marco_operator", "operator", "--namespace", NAMESPACE,
                   "--standalone", "--trainer-port", str(trainer_port),
                   "--kubeconfig", str(kubeconfig), "--liveness", self.liveness]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"operator exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.liveness, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def memory(self) -> tuple[float, float]:
        """RSS now and its peak (VmHWM), MiB."""
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text()
            .splitlines() if ":" in line
        )  # fmt: skip
        return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)

    def metric_sum(self, name: str) -> dict[str, float]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    found[key] = sample.value
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (/proc: utime + stime, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_kinds(calls: list[tuple[str, str, bool, str]]) -> dict[str, int]:
    """The operator's requests by method and resource (the name dropped), most first."""
    kinds: dict[str, int] = {}
    for method, path, watch, agent in calls:
        if agent == TEST_USER_AGENT:
            continue
        parts = path.strip("/").split("/")
        resource = "/".join(p for p in parts if not p.startswith("a0"))  # names a0000...
        key = f"{method}{' watch' if watch else ''} {resource}"
        kinds[key] = kinds.get(key, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


async def wait_until(what: str, probe: Any, timeout: float, problems: list[str]) -> bool:
    deadline = now() + timeout
    while now() < deadline:
        if await probe():
            return True
        await asyncio.sleep(0.5)
    problems.append(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


async def run_size(
    count: int,
    quiet: float,
    seed: int,
    workdir: Path,
    keep_log: Path | None = None,
    operator_root: Path = ROOT,
    pace: float = PACE,
    arrival: float = 0.0,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    cluster = EmulatorProcess(SHARED_CLAIM)
    try:
        sim = Simulation(cluster, count, seed, pace)
        await sim.start()
        operator = OperatorProcess(cluster, sim.trainer_port, workdir, operator_root)
        try:
            deadline = now() + 60
            while not operator.ready():
                if now() > deadline:
                    raise RuntimeError("the operator did not get ready in 60 s")
                await asyncio.sleep(0.2)
            sim.spawn(sim.watch("batch/v1", "jobs", sim.on_job))
            sim.spawn(sim.watch("v1", "configmaps", sim.on_configmap))
            await asyncio.sleep(1.0)  # the watches are open
            started, cpu_start = now(), operator.cpu_seconds()
            # Who used the cores: the emulator's process and this one (simulator, rank 0s).
            emulator_start = cpu_seconds(cluster.pid)
            simulator_start = cpu_seconds(os.getpid())
            served_start, requests_start = cluster.counts()
            for i, adaptation in enumerate(sim.adaptations.values()):
                # Evenly spaced over --arrival seconds (0: all at once), as a script applying
                # one manifest after another would.
                adaptation.offset = i * arrival / count
                await asyncio.sleep(max(0.0, started + adaptation.offset - now()))
                await sim.create(adaptation, cluster.endpoint_key)
            problems = sim.measured.problems
            budget = 120 + count * 0.6 + arrival + 10 * pace
            await wait_until(
                "every trainer to hold at its first directive",
                lambda: _ready(sim.holding >= count),
                budget,
                problems,
            )
            await asyncio.sleep(3.0)  # the last passes' writes and watch deliveries
            quiet_from, quiet_requests = cluster.counts()
            quiet_reads = sum(a.reads for a in sim.adaptations.values())
            quiet_cpu, quiet_start = operator.cpu_seconds(), now()
            await asyncio.sleep(quiet)
            quiet_elapsed = now() - quiet_start
            quiet_requests = cluster.counts()[1] - quiet_requests
            quiet_kinds = request_kinds(cluster.calls_since(quiet_from))
            quiet_reads = sum(a.reads for a in sim.adaptations.values()) - quiet_reads
            quiet_cpu = (operator.cpu_seconds() - quiet_cpu) / quiet_elapsed
            sim.release.set()

            async def all_settled() -> bool:
                phases = await sim.phases()
                return all(p in ("Succeeded", "Failed") for p in phases.values())

            await wait_until(
                "every adaptation to finish", all_settled, budget + 120 + 30 * pace, problems
            )
            elapsed = now() - started
            cpu = (operator.cpu_seconds() - cpu_start) / elapsed
            emulator_cpu = (cpu_seconds(cluster.pid) - emulator_start) / elapsed
            simulator_cpu = (cpu_seconds(os.getpid()) - simulator_start) / elapsed
            served, requests = cluster.counts()
            served, requests = served - served_start, requests - requests_start
            run_kinds = request_kinds(cluster.calls_since(served_start))
            rss, peak = operator.memory()
            phases = await sim.phases()
            errors = operator.metric_sum("marco_operator_errors_total")
            failed_passes = operator.metric_sum("marco_operator_reconciles_total")
            events = await sim.events()
            writes = cluster.writes()
        finally:
            operator.stop()
            await sim.close()
    finally:
        cluster.close()
    log = operator.log.read_text()
    if keep_log is not None:
        keep_log.write_text(log)
    tracebacks = log.count("Traceback")
    not_succeeded = {n: p for n, p in phases.items() if p != "Succeeded"}
    per_reason: dict[str, dict[str, int]] = {}
    for event in events:
        name = event.get("involvedObject", {}).get("name", "")
        per_reason.setdefault(event.get("reason", ""), {}).setdefault(name, 0)
        per_reason[event.get("reason", "")][name] += 1
    twice = [
        f"{reason} ×{n} on {name}"
        for reason, expected in (("LearningRateChanged", 2), ("EarlyStop", 1))
        for name in sim.adaptations
        if (n := per_reason.get(reason, {}).get(name, 0)) != expected
    ]
    measured = sim.measured
    measured.derive(sim.adaptations, writes)

    def summary(values: list[float]) -> dict[str, Any]:
        return {
            "count": len(values),
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values, default=None),
        }

    return {
        "adaptations": count,
        "when": iso(),
        "operator": _commit(operator_root),
        "stages": list(STAGES),
        "pace_s": pace,
        "arrival_s": arrival,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "seconds": elapsed,
        "eval_to_directive_s": summary(measured.eval_to_directive),
        "done_to_next_job_s": summary(measured.done_to_next_job),
        "created_to_first_job_s": summary(measured.created_to_first_job),
        "done_to_next_job_by_next_stage_s": {
            stage: summary(values) for stage, values in measured.by_stage.items()
        },
        "quiet": {
            "seconds": quiet_elapsed,
            "api_requests": quiet_requests,
            "api_requests_per_adaptation_per_s": quiet_requests / quiet_elapsed / count,
            "rank0_reads_per_adaptation_per_s": quiet_reads / quiet_elapsed / count,
            "operator_cpu_share_of_one_core": quiet_cpu,
            "requests_by_kind": quiet_kinds,
        },
        "api_requests_per_s": requests / elapsed,
        # Where the operator's requests go, per adaptation, over the whole run.
        "api_requests_per_adaptation_by_kind": {
            kind: round(n / count, 2) for kind, n in run_kinds.items()
        },
        "operator_cpu_share_of_one_core": cpu,
        "emulator_cpu_share_of_one_core": emulator_cpu,
        # Every client's requests (the operator's, the simulator's) and the emulator's CPU
        # per request: what the emulator alone costs, whatever the operator does.
        "emulator_requests": served,
        "emulator_cpu_ms_per_request": 1000 * emulator_cpu * elapsed / max(1, served),
        "simulator_cpu_share_of_one_core": simulator_cpu,
        "operator_rss_mib": rss,
        "operator_peak_rss_mib": peak,
        "decisions_checked": len(measured.eval_to_directive),
        "wrong_decisions": measured.wrong_decisions,
        "decisions_not_once": twice[:20],
        "ignored_stops_enforced": measured.ignored_stops_deleted,
        "ignoring_trainers": sum(a.ignores_stop for a in sim.adaptations.values()),
        "not_succeeded": dict(list(not_succeeded.items())[:20]),
        "operator_errors": {k: v for k, v in errors.items() if v},
        "passes": failed_passes,
        "operator_log_tracebacks": tracebacks,
        "problems": measured.problems[:20],
        "timeline_of_first": sim.timeline,
    }


def _commit(root: Path) -> str:
    """The operator's commit, and whether its checkout has changes."""
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "operator"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}{'+changes' if dirty else ''}"


async def _ready(value: bool) -> bool:
    return value


def fmt(value: float | None, unit: str = " s") -> str:
    return "–" if value is None else f"{value:.2f}{unit}"


def markdown(result: dict[str, Any]) -> str:
    q = result["quiet"]
    cpu = result["operator_cpu_share_of_one_core"]
    troubles = sum(len(result[k]) for k in ("problems", "not_succeeded", "decisions_not_once"))

    def spread(key: str) -> str:
        return f"{fmt(result[key]['p50'])} / {fmt(result[key]['p99'])}"

    rows = [
        ("evaluation → directive, p50 / p99", spread("eval_to_directive_s")),
        ("stage done → next Job, p50 / p99", spread("done_to_next_job_s")),
        ("created → first Job, p50 / p99", spread("created_to_first_job_s")),
        ("API requests / adaptation / s, nothing changing",
         f"{q['api_requests_per_adaptation_per_s']:.3f}"),
        ("rank 0 reads / adaptation / s, nothing changing",
         f"{q['rank0_reads_per_adaptation_per_s']:.3f}"),
        ("operator CPU (one core), nothing changing / whole run",
         f"{q['operator_cpu_share_of_one_core']:.0%} / {cpu:.0%}"),
        ("emulator / simulator CPU (one core), whole run",
         f"{result['emulator_cpu_share_of_one_core']:.0%} / "
         f"{result['simulator_cpu_share_of_one_core']:.0%}"),
        ("operator RSS, end / peak",
         f"{result['operator_rss_mib']:.0f} / {result['operator_peak_rss_mib']:.0f} MiB"),
        ("API requests / s, whole run", f"{result['api_requests_per_s']:.0f}"),
        ("emulator: requests served (every client) / CPU per request",
         f"{result.get('emulator_requests', 0)} / "
         f"{result.get('emulator_cpu_ms_per_request', 0):.2f} ms"),
        ("LR decisions checked / wrong", f"{result['decisions_checked']} / "
         f"{len(result['wrong_decisions'])}"),
        ("errors (metric, tracebacks, problems)",
         f"{sum(result['operator_errors'].values()):.0f}, {result['operator_log_tracebacks']}, "
         f"{troubles}"),
        ("load: a stage, an evaluation takes / adaptations created over",
         f"{result.get('pace_s', PACE):g}-{2 * result.get('pace_s', PACE):g} s / "
         f"{result.get('arrival_s', 0.0):g} s"),
        ("passes", f"{sum(result['passes'].values()):.0f}"),
        ("load average before / after", f"{result['load_before'][0]:.2f} / "
         f"{result['load_after'][0]:.2f} ({result['cpus']} CPUs)"),
    ]  # fmt: skip
    lines = [f"# operator_scale: {result['adaptations']} adaptations, operator "
             f"{result['operator']} ({result['when']})", "",
             "| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]  # fmt: skip
    kinds = result.get("api_requests_per_adaptation_by_kind") or {}
    if kinds:
        lines += ["", "The operator's API requests per adaptation, whole run:", "",
                  "| request | per adaptation |", "|---|---|"]  # fmt: skip
        lines += [f"| {kind} | {n:g} |" for kind, n in kinds.items() if n >= 0.1]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adaptations", default="50", help="comma-separated sizes")
    parser.add_argument("--quiet-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pace",
        type=float,
        default=PACE,
        help="a stage and an evaluation take PACE to 2 x PACE seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--arrival",
        type=float,
        default=0.0,
        help="create the adaptations evenly over this many seconds, and let their trainers "
        "go on after the quiet window with the same spacing (default: 0, all at once)",
    )
    parser.add_argument(
        "--no-data-stages",
        action="store_true",
        help="baseline, train and evaluate only (no filter, profile, augment): a shorter run",
    )
    parser.add_argument("--keep-log", action="store_true", help="write <out>/<N>-operator.log")
    parser.add_argument(
        "--operator-root",
        type=Path,
        default=ROOT,
        help="checkout whose operator runs (another commit, to compare); default: this one",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/operator_scale")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.no_data_stages:
        del STAGES[:3]
    worst = 0
    for size in (int(s) for s in args.adaptations.split(",")):
        with tempfile.TemporaryDirectory(prefix="operator-scale-") as work:
            result = asyncio.run(
                run_size(
                    size,
                    args.quiet_seconds,
                    args.seed,
                    Path(work),
                    args.out / f"{size}-operator.log" if args.keep_log else None,
                    args.operator_root,
                    args.pace,
                    args.arrival,
                )
            )
        (args.out / f"{size}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / f"{size}.md").write_text(markdown(result))
        print(markdown(result), flush=True)
        bad = (result["wrong_decisions"] or result["problems"] or result["not_succeeded"]
               or result["decisions_not_once"] or result["operator_log_tracebacks"])  # fmt: skip
        worst = max(worst, 1 if bad else 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
