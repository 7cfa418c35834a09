"""Rank 0's endpoint exposes no more than it must (issue 13, point 7): loopback unless told
otherwise, the history only for the bearer token when one is set, its own port when asked,
and a bounded number of threads however many connections sit idle on it."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from marco_contract.formats import Evaluation, EvaluationHistory
from marco_trainer.endpoint_server import EndpointServer
from marco_trainer.metrics import TrainerMetrics
from marco_trainer.metrics_server import (
    MetricsServer,
    read_token,
    start_endpoints,
    trainer_app,
)
from marco_trainer.train.options import TrainOptions

TOKEN = "s3cret-token"


def _history() -> EvaluationHistory:
    return EvaluationHistory(
        adaptation="demo",
        evaluations=[Evaluation(step=5, cycle=0, lr=1e-5, wer=21.5, time=time.time())],
    )


def _get(url: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


@pytest.fixture
def guarded():
    server = MetricsServer(TrainerMetrics("demo"), _history, 0, "127.0.0.1", TOKEN).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_the_trainer_binds_loopback_unless_told_otherwise():
    options = TrainOptions(
        model="m", train_manifests=["t.jsonl"], validation_manifest="v.jsonl", output_dir="o"
    )
    assert (options.metrics_host, options.api_port, options.api_token_file) == (
        "127.0.0.1",
        None,
        None,
    )
    server = MetricsServer(TrainerMetrics("demo"), _history, 0)
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_the_history_needs_the_bearer_token(guarded):
    status, _, headers = _get(f"{guarded}/v1/evaluations")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert _get(f"{guarded}/v1/evaluations", token="wrong")[0] == 401
    status, body, _ = _get(f"{guarded}/v1/evaluations", token=TOKEN)
    assert status == 200 and EvaluationHistory.model_validate_json(body).evaluations[0].wer == 21.5


def test_metrics_and_healthz_ask_for_no_token(guarded):
    """Prometheus scrapes /metrics without credentials; kubelet probes /healthz."""
    assert _get(f"{guarded}/metrics")[0] == 200
    assert _get(f"{guarded}/healthz")[:2] == (200, b"ok\n")


def test_without_a_token_the_history_is_served_to_all():
    """`marco run`: loopback and no token, as the local driver reads it."""
    app = trainer_app(TrainerMetrics("demo"), _history)
    server = EndpointServer(app, 0).start()
    try:
        assert _get(f"http://127.0.0.1:{server.port}/v1/evaluations")[0] == 200
    finally:
        server.stop()


def test_an_api_port_of_its_own_keeps_metrics_and_history_apart():
    servers = start_endpoints(
        TrainerMetrics("demo"), _history, host="127.0.0.1", metrics_port=_free(),
        api_port=_free(), token=TOKEN,
    )  # fmt: skip
    try:
        metrics, api = (f"http://127.0.0.1:{s.port}" for s in servers)
        assert _get(f"{metrics}/metrics")[0] == 200
        assert _get(f"{metrics}/v1/evaluations", token=TOKEN)[0] == 404
        assert _get(f"{api}/metrics")[0] == 404
        assert _get(f"{api}/v1/evaluations")[0] == 401
        assert _get(f"{api}/v1/evaluations", token=TOKEN)[0] == 200
    finally:
        for server in servers:
            server.stop()


def test_a_token_file_must_hold_a_token(tmp_path):
    assert read_token(None) is None
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    assert read_token(tmp_path / "token") == TOKEN
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(tmp_path / "token")


def test_idle_connections_cost_no_thread_and_a_request_still_gets_served(guarded):
    """300 connections that never send a byte: the old server had a thread on each."""
    port = int(guarded.rsplit(":", 1)[1])
    assert _get(f"{guarded}/healthz")[0] == 200  # the server and its workers are up
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
    try:
        time.sleep(0.5)
        assert threading.active_count() <= before, threading.enumerate()
        started = time.monotonic()
        assert _get(f"{guarded}/v1/evaluations", token=TOKEN)[0] == 200
        assert time.monotonic() - started < 3
        assert threading.active_count() <= before
    finally:
        for connection in idle:
            connection.close()


def test_a_silent_connection_is_closed_after_the_idle_timeout():
    server = EndpointServer(trainer_app(None, _history), 0, idle_timeout=0.3).start()
    try:
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert connection.recv(1) == b""  # closed by the server, not by the 5 s timeout
    finally:
        server.stop()


def test_a_client_that_stops_mid_request_holds_a_worker_no_longer_than_the_timeout(monkeypatch):
    from marco_trainer import endpoint_server

    monkeypatch.setattr(endpoint_server._QuietHandler, "timeout", 0.3)
    server = EndpointServer(trainer_app(None, _history), 0, workers=1).start()
    try:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow.sendall(b"GET /v1/eval")  # and nothing more: the one worker waits on it
        time.sleep(0.1)
        assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        slow.close()
    finally:
        server.stop()


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
