"""Rank 0's HTTP endpoint: Prometheus metrics and the evaluation history.

- ``GET /metrics``: Prometheus text format from a private registry (no process
  collectors of the host bleed in; two trainers in one process stay apart).
- ``GET /v1/evaluations``: :class:`marco_contract.formats.EvaluationHistory` JSON.
- ``GET /healthz``: ``ok``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from marco_contract.formats import Evaluation, EvaluationHistory


class TrainerMetrics:
    """The trainer's Prometheus metrics, labelled by adaptation name."""

    def __init__(self, adaptation: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["adaptation"]

        def gauge(name: str, doc: str):
            return Gauge(f"marco_trainer_{name}", doc, labels, registry=self.registry).labels(
                adaptation
            )

        def counter(name: str, doc: str):
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

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsServer:
    """A threaded HTTP server in the background (daemon thread)."""

    def __init__(
        self,
        metrics: TrainerMetrics,
        history: Callable[[], EvaluationHistory],
        port: int,
        host: str = "0.0.0.0",
    ) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/v1/evaluations":
                    body = history().model_dump_json().encode()
                    self._send(200, body, "application/json")
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds: keep logs quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
