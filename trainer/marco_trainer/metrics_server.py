"""Rank 0's HTTP endpoint: Prometheus metrics and the evaluation history.

The series themselves are in :mod:`marco_trainer.metrics`.

- ``GET /metrics``: prometheus_client's own WSGI app (exposition format negotiation,
  gzip) over a private registry (no process collectors of the host bleed in; two
  trainers in one process stay apart). Never asks for a token: Prometheus scrapes it.
- ``GET /v1/evaluations``: :class:`marco_contract.formats.EvaluationHistory` JSON;
  with a token (``--api-token-file``) only for ``Authorization: Bearer <token>``.
  ``?after=N&wait=S`` makes it a long poll: the answer waits (at most S seconds, capped
  at ``MAX_WAIT``) until the history holds more than N evaluations or training has
  finished. The operator keeps one such request open per training adaptation, so it
  learns of an evaluation at once without polling every trainer every second.
- ``GET /healthz``: ``ok``.

One port serves all three (``--metrics-port``), unless ``--api-port`` names another
for the history, as the operator does in a cluster (9400 for Prometheus, 9401 for
itself, each with its own NetworkPolicy rule). Both bind ``--metrics-host``:
loopback by default (``marco run``), every address in a pod. prometheus_client's
``start_http_server`` serves only its metrics app on every path, so a small WSGI
router sits in front of ``make_wsgi_app``, on :mod:`marco_trainer.endpoint_server`
(bounded threads, timeouts).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from marco_contract.formats import EvaluationHistory
from marco_trainer.endpoint_server import EndpointServer
from marco_trainer.metrics import TrainerMetrics

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]
History = Callable[[], EvaluationHistory]

#: The longest a long poll is held: under the endpoint server's REQUEST_TIMEOUT (the socket
#: timeout of the connection), and it holds one of its few workers meanwhile.
MAX_WAIT = 8.0
#: How often a held long poll looks at the history again (an in-process call, no I/O).
WAIT_TICK = 0.1


def trainer_app(
    metrics: TrainerMetrics | None, history: History | None, token: str | None = None
) -> App:
    """The endpoint as a WSGI app: a pure function of the metrics, the history and the token.

    `metrics` None: no /metrics; `history` None: no /v1/evaluations (404). With a
    `token`, /v1/evaluations answers 401 unless the request carries it as a bearer token.
    """
    from prometheus_client import make_wsgi_app

    prometheus = make_wsgi_app(metrics.registry) if metrics is not None else None

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics" and prometheus is not None:
            return prometheus(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return _reply(start_response, "405 Method Not Allowed", b"use GET\n", "text/plain")
        if path == "/v1/evaluations" and history is not None:
            if token is not None and not _bearer_matches(environ, token):
                return _reply(
                    start_response,
                    "401 Unauthorized",
                    b"bearer token required\n",
                    "text/plain",
                    [("WWW-Authenticate", 'Bearer realm="marco-trainer"')],
                )
            wait = _long_poll(environ.get("QUERY_STRING", ""))
            if wait is None:
                return _reply(
                    start_response,
                    "400 Bad Request",
                    b"after must be an integer >= 0 and wait a number of seconds >= 0\n",
                    "text/plain",
                )
            body = _history_after(history, *wait).model_dump_json().encode()
            return _reply(start_response, "200 OK", body, "application/json")
        if path == "/healthz":
            return _reply(start_response, "200 OK", b"ok\n", "text/plain")
        return _reply(start_response, "404 Not Found", b"not found\n", "text/plain")

    return app


def _long_poll(query: str) -> tuple[int, float] | None:
    """(after, wait) from the query; (0, 0) without them (answer at once); None when bad."""
    from urllib.parse import parse_qs

    params = parse_qs(query)
    try:
        after = int(params.get("after", ["0"])[-1])
        wait = float(params.get("wait", ["0"])[-1])
    except ValueError:
        return None
    if after < 0 or not wait >= 0:  # `not >=` refuses NaN too
        return None
    return after, min(wait, MAX_WAIT)


def _history_after(history: History, after: int, wait: float) -> EvaluationHistory:
    """The history once it holds more than `after` evaluations or is finished, or as it is
    when `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    while True:
        current = history()
        if len(current.evaluations) > after or current.finished:
            return current
        if time.monotonic() >= deadline:
            return current
        time.sleep(WAIT_TICK)


def _bearer_matches(environ: Environ, token: str) -> bool:
    scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(status, headers + (extra or []))
    return [body]


def read_token(path: str | Path | None) -> str | None:
    """The bearer token in `path` (surrounding whitespace dropped); None without a path.

    An empty file is an error, not "no token": a mounted Secret that lost its key
    must not open the endpoint."""
    if path is None:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"--api-token-file {path}: empty")
    return token


class MetricsServer(EndpointServer):
    """:func:`trainer_app` served in a background daemon thread."""

    def __init__(
        self,
        metrics: TrainerMetrics | None,
        history: History | None,
        port: int,
        host: str = "127.0.0.1",
        token: str | None = None,
    ) -> None:
        super().__init__(trainer_app(metrics, history, token), port, host)


def start_endpoints(
    metrics: TrainerMetrics,
    history: History,
    *,
    host: str,
    metrics_port: int,
    api_port: int | None = None,
    token: str | None = None,
) -> list[EndpointServer]:
    """Rank 0's servers: one on `metrics_port` for everything, or, when `api_port` is
    another port, /metrics there and the history on `api_port` (0: no history served)."""
    if not metrics_port:
        return []
    if api_port is None or api_port == metrics_port:
        return [MetricsServer(metrics, history, metrics_port, host, token).start()]
    servers = [MetricsServer(metrics, None, metrics_port, host).start()]
    if api_port:
        servers.append(MetricsServer(None, history, api_port, host, token).start())
    return servers
