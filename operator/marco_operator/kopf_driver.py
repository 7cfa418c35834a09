"""`marco operator`: the cluster driver. kopf wiring only; every decision is core.reconcile's.

Level-triggered: a timer on each AsrAdaptation and every event of a Job the
operator manages call the same pass (reconciler.reconcile_once), which reads
the adaptation and its children fresh. Passes over one adaptation are
serialised by an asyncio lock, so a timer tick and a Job event never
interleave. The locks and the phase gauge's tally are all it keeps in memory;
a restart loses neither a decision nor a child.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from marco_operator.resources import METRICS_PORT

if TYPE_CHECKING:
    import kopf
    from kubernetes import client

    from marco_operator.metrics import OperatorMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriverOptions:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    trainer_port: int = METRICS_PORT
    trainer_timeout: float = 2.0
    interval: float = 10.0
    liveness_endpoint: str | None = None
    standalone: bool = False
    peering_name: str | None = None
    metrics_port: int | None = None  # None: no /metrics server (tests run several operators)


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


def build_registry(
    options: DriverOptions, configuration: client.Configuration, metrics: OperatorMetrics
) -> kopf.OperatorRegistry:
    import kopf

    from marco_operator import reconciler
    from marco_operator.api import GROUP, PLURAL, VERSION
    from marco_operator.kube import Kube, KubeError
    from marco_operator.resources import LABEL_ADAPTATION, LABEL_MANAGED_BY, MANAGED_BY

    registry = kopf.OperatorRegistry()
    kube = Kube(configuration)
    pass_options = reconciler.Options(
        trainer_port=options.trainer_port, trainer_timeout=options.trainer_timeout
    )
    locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
    phases: dict[str, str] = {}  # for the phase gauge only; rebuilt by the first ticks

    async def reconcile(namespace: str, name: str) -> None:
        async with locks[namespace, name]:
            started = time.monotonic()
            try:
                done = await asyncio.to_thread(
                    reconciler.reconcile_once, kube, namespace, name, pass_options
                )
            except Exception as error:
                # The next tick retries from scratch; kopf's own backoff would stall the CR.
                logger.exception("reconcile of %s/%s failed", namespace, name)
                metrics.observe_error("api" if isinstance(error, KubeError) else "internal")
                metrics.observe_reconcile(time.monotonic() - started, ok=False)
                return
            metrics.observe_reconcile(time.monotonic() - started, ok=True)
            metrics.observe_events(done.events)
            for kind in done.errors:
                metrics.observe_error(kind)
            if any(event.reason == "InvalidSpec" for event in done.events):
                metrics.observe_error("invalid-spec")
            if done.phase is None:
                phases.pop(f"{namespace}/{name}", None)
            else:
                phases[f"{namespace}/{name}"] = done.phase
            metrics.observe_phases(phases)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=options.interval, registry=registry)
    async def tick(namespace: str, name: str, **_: Any) -> None:
        await reconcile(namespace, name)

    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def child_job(namespace: str, labels: dict[str, str], **_: Any) -> None:
        parent = labels.get(LABEL_ADAPTATION)
        if parent:
            await reconcile(namespace, parent)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def forget(namespace: str, name: str, type: str | None, **_: Any) -> None:
        # The timer ends with the object, so no pass would see it gone.
        if type == "DELETED":
            phases.pop(f"{namespace}/{name}", None)
            metrics.observe_phases(phases)
            locks.pop((namespace, name), None)

    @kopf.on.cleanup(registry=registry)
    def close(**_: Any) -> None:
        kube.close()

    return registry


def settings_for(options: DriverOptions) -> kopf.OperatorSettings:
    import kopf

    settings = kopf.OperatorSettings()
    settings.posting.level = logging.WARNING  # our own Events carry the decisions
    # A deleted adaptation keeps kopf's finalizer until the timer's pass in flight ends
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
        interval=args.interval,
        liveness_endpoint=args.liveness,
        standalone=args.standalone,
        peering_name=args.peering,
        metrics_port=args.metrics_port if args.metrics_port is not None else metrics_port(),
    )
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
        default=METRICS_PORT,
        help="port of rank 0's /v1/evaluations (default: %(default)s)",
    )
    parser.add_argument(
        "--trainer-timeout",
        type=_positive_seconds,
        default=2.0,
        help="seconds to wait for rank 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--interval",
        type=_positive_seconds,
        default=10.0,
        help="seconds between reconcile passes per adaptation (default: %(default)s)",
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
