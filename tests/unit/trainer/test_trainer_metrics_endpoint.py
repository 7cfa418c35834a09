import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from marco_contract.formats import Directive, Evaluation, EvaluationHistory
from marco_trainer.metrics import TrainerMetrics
from marco_trainer.metrics_server import MetricsServer


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read()


@pytest.fixture
def server():
    metrics = TrainerMetrics("demo")
    history = EvaluationHistory(
        adaptation="demo",
        evaluations=[Evaluation(step=50, cycle=0, lr=1e-5, wer=21.5, loss=0.7, time=time.time())],
        directive=Directive(cycle=0, learning_rate=1e-5),
    )
    srv = MetricsServer(metrics, lambda: history, port=0, host="127.0.0.1").start()
    yield metrics, srv
    srv.stop()


def test_metrics_parse_with_prometheus_client(server):
    metrics, srv = server
    metrics.observe_position(50)
    metrics.observe_directive(1e-5, 0)
    metrics.observe_evaluation(
        Evaluation(step=50, cycle=0, lr=1e-5, wer=21.5, time=time.time()),
        best_wer=20.0,
        duration_seconds=2.0,
    )
    metrics.nonfinite_steps.inc(2)
    status, content_type, body = fetch(f"http://127.0.0.1:{srv.port}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples = {
        s.name: s
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples["marco_trainer_validation_wer_ratio"].value == 0.215
    assert samples["marco_trainer_validation_wer_ratio"].labels == {"adaptation": "demo"}
    assert samples["marco_trainer_best_validation_wer_ratio"].value == 0.2
    assert samples["marco_trainer_learning_rate"].value == 1e-5
    assert samples["marco_trainer_evaluations_total"].value == 1
    assert samples["marco_trainer_nonfinite_steps_total"].value == 2
    # A private registry: nothing from the host process leaks in.
    assert not any(name.startswith(("process_", "python_")) for name in samples)


def test_evaluations_json_validates(server):
    _, srv = server
    status, content_type, body = fetch(f"http://127.0.0.1:{srv.port}/v1/evaluations")
    assert status == 200 and content_type == "application/json"
    history = EvaluationHistory.model_validate_json(body)
    assert history.evaluations[0].wer == 21.5 and history.directive.learning_rate == 1e-5


def test_unknown_path_is_404(server):
    _, srv = server
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(f"http://127.0.0.1:{srv.port}/nope")
    assert error.value.code == 404


def test_two_trainers_in_one_process_keep_their_own_registries():
    a, b = TrainerMetrics("a"), TrainerMetrics("b")
    a.observe_position(1)
    assert b'adaptation="a"' in generate_latest(a.registry)
    assert b'adaptation="a"' not in generate_latest(b.registry)


def test_healthz_and_query_strings(server):
    _, srv = server
    assert fetch(f"http://127.0.0.1:{srv.port}/healthz")[2] == b"ok\n"
    status, content_type, _ = fetch(f"http://127.0.0.1:{srv.port}/v1/evaluations?since=0")
    assert status == 200 and content_type == "application/json"


def test_metrics_negotiate_openmetrics_and_gzip_like_prometheus_scrapes(server):
    """/metrics is prometheus_client's own app: a Prometheus scrape asks for OpenMetrics
    and gzip and gets them; a plain GET gets the text format (above)."""
    import gzip

    metrics, srv = server
    metrics.observe_position(7)
    request = urllib.request.Request(
        f"http://127.0.0.1:{srv.port}/metrics",
        headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        content_type, encoding, body = (
            response.headers["Content-Type"],
            response.headers["Content-Encoding"],
            response.read(),
        )
    assert content_type.startswith("application/openmetrics-text") and encoding == "gzip"
    text = gzip.decompress(body).decode()
    assert 'marco_trainer_step{adaptation="demo"} 7.0' in text and text.endswith("# EOF\n")


def test_post_is_refused(server):
    _, srv = server
    request = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v1/evaluations", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 405


@pytest.fixture
def growing():
    """An endpoint over a history the test appends to, as rank 0's evaluations grow."""
    evaluations: list[Evaluation] = []
    state = {"finished": False}

    def history() -> EvaluationHistory:
        return EvaluationHistory(
            adaptation="demo", evaluations=list(evaluations), finished=state["finished"]
        )

    srv = MetricsServer(None, history, port=0, host="127.0.0.1").start()
    yield evaluations, state, f"http://127.0.0.1:{srv.port}/v1/evaluations"
    srv.stop()


def _evaluation(step: int) -> Evaluation:
    return Evaluation(step=step, cycle=0, lr=1e-5, wer=20.0, time=time.time())


def test_a_long_poll_answers_when_an_evaluation_comes(growing):
    evaluations, _, url = growing
    evaluations.append(_evaluation(10))
    added = threading.Timer(0.5, lambda: evaluations.append(_evaluation(20)))
    started = time.monotonic()
    added.start()
    _, _, body = fetch(f"{url}?after=1&wait=5")
    waited = time.monotonic() - started
    assert [e.step for e in EvaluationHistory.model_validate_json(body).evaluations] == [10, 20]
    assert 0.4 <= waited < 2.0, f"answered after {waited:.2f}s, the evaluation came at 0.5s"


def test_a_long_poll_answers_at_once_when_the_history_is_past_after(growing):
    evaluations, _, url = growing
    evaluations.extend([_evaluation(10), _evaluation(20)])
    started = time.monotonic()
    _, _, body = fetch(f"{url}?after=1&wait=5")
    assert time.monotonic() - started < 1.0
    assert len(EvaluationHistory.model_validate_json(body).evaluations) == 2


def test_a_long_poll_ends_at_its_wait_or_when_training_finished(growing):
    evaluations, state, url = growing
    evaluations.append(_evaluation(10))
    started = time.monotonic()
    _, _, body = fetch(f"{url}?after=1&wait=0.6")
    waited = time.monotonic() - started
    assert 0.6 <= waited < 2.0 and len(EvaluationHistory.model_validate_json(body).evaluations) == 1
    state["finished"] = True
    started = time.monotonic()
    _, _, body = fetch(f"{url}?after=1&wait=5")
    assert time.monotonic() - started < 1.0 and EvaluationHistory.model_validate_json(body).finished


@pytest.mark.parametrize("query", ["after=x", "after=-1", "wait=soon", "wait=-2", "wait=nan"])
def test_a_bad_long_poll_is_400(growing, query):
    _, _, url = growing
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(f"{url}?{query}")
    assert error.value.code == 400
    assert b"after must be an integer" in error.value.read()
