"""Rank 0's HTTP endpoint: Prometheus metrics and the evaluation history.

- ``GET /metrics``: prometheus_client's own WSGI app (exposition format negotiation,
  gzip) over a private registry (no process collectors of the host bleed in; two
  trainers in one process stay apart).
- ``GET /v1/evaluations``: :class:`marco_contract.formats.EvaluationHistory` JSON.
- ``GET /healthz``: ``ok``.

prometheus_client's ``start_http_server`` serves only its metrics app on every path,
so the one port the operator knows is served by a small WSGI router in front of
``make_wsgi_app``, on the standard library's WSGI server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from marco_contract.formats import Evaluation, EvaluationHistory


class TrainerMetrics:
    """The trainer's Prometheus metrics, labelled by adaptation name."""

    def __init__(self, adaptation: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["adaptation"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"marco_trainer_{name}", doc, labels, registry=self.registry).labels(
                adaptation
            )

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"marco_trainer_{name}", doc, labels, registry=self.registry).labels(
                adaptation
            )

        self.wer = gauge("wer", "Validation word error rate of the latest evaluation (percent).")
        self.best_wer = gauge("best_wer", "Best validation WER so far (percent).")
        self.loss = gauge("loss", "Training loss of the latest optimizer step.")
        self.learning_rate = gauge("learning_rate", "Learning rate in force.")
        self.step = gauge("step", "Optimizer steps taken.")
        self.cycle = gauge("cycle", "Training cycle of the directive in force.")
        self.samples_per_second = gauge("samples_per_second", "Training utterances per second.")
        self.tokens_per_second = gauge("tokens_per_second", "Target tokens per second.")
        self.evaluations = counter("evaluations", "Validation evaluations taken.")
        self.nonfinite_steps = counter(
            "nonfinite_steps", "Optimizer steps skipped for a non-finite loss or gradient."
        )
        self.rollbacks = counter("rollbacks", "Rollbacks to the best checkpoint.")
        self.skipped_audio = counter("skipped_audio", "Training utterances skipped as unreadable.")

    def observe_evaluation(self, evaluation: Evaluation, best_wer: float | None) -> None:
        self.wer.set(evaluation.wer)
        if best_wer is not None:
            self.best_wer.set(best_wer)
        self.evaluations.inc()


Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]


def trainer_app(metrics: TrainerMetrics, history: Callable[[], EvaluationHistory]) -> App:
    """The endpoint as a WSGI app: a pure function of the metrics and the history."""
    from prometheus_client import make_wsgi_app

    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return prometheus(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return _reply(start_response, "405 Method Not Allowed", b"use GET\n", "text/plain")
        if path == "/v1/evaluations":
            body = history().model_dump_json().encode()
            return _reply(start_response, "200 OK", body, "application/json")
        if path == "/healthz":
            return _reply(start_response, "200 OK", b"ok\n", "text/plain")
        return _reply(start_response, "404 Not Found", b"not found\n", "text/plain")

    return app


def _reply(
    start_response: StartResponse, status: str, body: bytes, content_type: str
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # A slow scraper must not hold up the operator's /v1/evaluations poll; daemon
    # threads so that a request in flight never keeps the trainer from exiting.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scraped every few seconds: keep the trainer's log for training


class MetricsServer:
    """:func:`trainer_app` served in a background daemon thread."""

    def __init__(
        self,
        metrics: TrainerMetrics,
        history: Callable[[], EvaluationHistory],
        port: int,
        host: str = "0.0.0.0",
    ) -> None:
        self._server = make_server(
            host,
            port,
            trainer_app(metrics, history),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
