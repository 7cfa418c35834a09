"""Fixtures for deployment tests: the real helm binary and a real Prometheus server.

`prometheus(targets)` starts /usr/bin/prometheus on loopback with a temporary
config and storage directory, scraping the given `host:port` targets every
second, and returns its base URL; every server started is stopped at the end
of the test. `query(url, expr)` runs an instant PromQL query through the HTTP
API, and `wait_for_series` polls until a query has results.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import find_tool

PROMETHEUS_BIN = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """Instant PromQL query; the result vector (list of {metric, value})."""
    body = _get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    if body.get("status") != "success":
        raise AssertionError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


def targets_of(url: str) -> list[dict[str, Any]]:
    return _get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]


def wait_for_series(
    url: str, expr: str, timeout: float = 20.0, accept: Callable[[list], bool] = bool
) -> list[dict[str, Any]]:
    """Poll `expr` until `accept(result)` holds; the last result is returned either way."""
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(url, expr)
        if accept(result):
            return result
        time.sleep(0.25)
    return result


def rules_of(url: str) -> list[dict[str, Any]]:
    """The loaded alerting and recording rules, each with its `health` and `lastError`."""
    groups = _get_json(f"{url}/api/v1/rules")["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _prometheus_config(
    targets: Mapping[str, Sequence[str]],
    labels: Mapping[str, Mapping[str, str]],
    rule_files: Sequence[Path] = (),
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "static_configs": [
                    {"targets": list(addresses), "labels": dict(labels.get(job, {}))}
                ],
            }
            for job, addresses in targets.items()
        ],
    }


@pytest.fixture
def prometheus(tmp_path_factory) -> Iterator[Callable[..., str]]:
    """`prometheus(targets)` -> base URL of a running Prometheus scraping `targets`.

    `targets` maps a job name to `host:port` addresses (a plain list is job "marco");
    `labels` (job -> labels) adds target labels, as a PodMonitor adds `namespace`;
    `rule_files` are loaded and evaluated every second.
    """
    if not Path(PROMETHEUS_BIN).exists():
        raise FileNotFoundError(f"{PROMETHEUS_BIN} missing: install the Debian package")
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(
        targets: Mapping[str, Sequence[str]] | Sequence[str],
        labels: Mapping[str, Mapping[str, str]] | None = None,
        rule_files: Sequence[Path] = (),
    ) -> str:
        jobs = dict(targets) if isinstance(targets, Mapping) else {"marco": list(targets)}
        workdir = tmp_path_factory.mktemp("prometheus")
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(_prometheus_config(jobs, labels or {}, rule_files)))
        port = free_port()
        log = workdir / "prometheus.log"
        process = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        started.append((process, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited {process.returncode}: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within 20s: {log.read_text()}")

    yield start
    for process, _log in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
