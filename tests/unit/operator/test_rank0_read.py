"""One read of rank 0 (rank0.read_evaluations) tells a port nobody listens on from other
trouble, and `reconciler.starting` says whether the trainer may still be starting.

A pass counts a refused read as an error only past the start-up allowance; a 401 (another
operator's token), a timeout or a body that is no history is counted at once.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from marco_contract.formats import EvaluationHistory
from marco_operator.rank0 import evaluations_url, read_evaluations
from marco_operator.reconciler import starting

STARTED = "2025-01-01T00:00:00Z"
T0 = 1735689600.0  # STARTED in Unix seconds


@contextmanager
def rank0(status: int, body: bytes = b"") -> Iterator[int]:
    """A loopback HTTP server answering every GET with `status` and `body`; its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def nobody_listening() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on leaving: nothing listens there


def test_a_port_nobody_listens_on_is_refused() -> None:
    read = read_evaluations(evaluations_url("127.0.0.1", nobody_listening()), 1.0, "t")
    assert read.history is None and read.refused


def test_an_unauthorised_or_unreadable_answer_is_not_a_refusal() -> None:
    with rank0(401) as port:
        read = read_evaluations(evaluations_url("127.0.0.1", port), 1.0, "wrong")
    assert read.history is None and not read.refused
    with rank0(200, b'{"evaluations": "half a bo') as port:
        read = read_evaluations(evaluations_url("127.0.0.1", port), 1.0, "t")
    assert read.history is None and not read.refused


def test_a_history_is_read() -> None:
    served = EvaluationHistory(adaptation="a", finished=False)
    with rank0(200, served.model_dump_json().encode()) as port:
        read = read_evaluations(evaluations_url("127.0.0.1", port), 1.0, "t")
    assert read.history == served and not read.refused


def pod(container_started: str | None = None, pod_started: str | None = None) -> dict:
    status: dict = {"phase": "Running", "podIP": "10.0.0.7"}
    if pod_started is not None:
        status["startTime"] = pod_started
    if container_started is not None:
        status["containerStatuses"] = [
            {"name": "sidecar", "state": {"running": {"startedAt": "2020-01-01T00:00:00Z"}}},
            {"name": "trainer", "state": {"running": {"startedAt": container_started}}},
        ]
    return {"metadata": {"name": "a-train-0"}, "status": status}


def test_starting_is_measured_from_the_trainer_container_s_start() -> None:
    assert starting(pod(STARTED), T0 + 119, 120.0)
    assert not starting(pod(STARTED), T0 + 120, 120.0)
    # The sidecar's older start is not the trainer's; the pod's is a fallback only.
    assert starting(pod(STARTED, pod_started="2020-01-01T00:00:00Z"), T0 + 60, 120.0)


def test_without_a_container_start_the_pod_s_start_counts_else_it_is_starting() -> None:
    assert starting(pod(pod_started=STARTED), T0 + 60, 120.0)
    assert not starting(pod(pod_started=STARTED), T0 + 600, 120.0)
    assert starting(pod(), T0 + 10_000, 120.0)  # nothing recorded yet: the kubelet is at it
