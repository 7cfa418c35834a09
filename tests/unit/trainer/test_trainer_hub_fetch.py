"""`marco-trainer fetch` of a hub model with the real hub client, against a small local
server standing in for the hub (HF_ENDPOINT): the four read endpoints snapshot_download
uses (revision, tree, and each file's HEAD and GET). Uploads (push to hf://) are tested
with a fake at the HfApi boundary (test_trainer_remote.py): the hub's commit protocol is
more than a test server should imitate."""

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from marco_contract.results import read_stage_result
from tests.tools import checkout_env

REPO = "org/tiny-whisper"
COMMIT = "c0ffee" + "0" * 34
FILES = {"config.json": b'{"model_type": "whisper"}', "sub/model.safetensors": b"\x00\x01\x02"}


class Hub:
    """The hub's answers for one repo at one commit, and what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = handler.path.split("?")[0]
        self.requests.append((handler.command, path, handler.headers.get("Authorization")))
        headers = {"Content-Type": "application/json"}
        data = b"{}"
        status = 200
        if path.startswith(f"/api/models/{REPO}/revision/"):
            siblings = [{"rfilename": name} for name in FILES]
            data = json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode()
        elif path == f"/api/models/{REPO}/tree/{COMMIT}":
            data = json.dumps([{"type": "file", "path": name, "size": len(content),
                                "oid": hashlib.sha1(content).hexdigest()}
                               for name, content in FILES.items()]).encode()  # fmt: skip
        elif path.startswith(f"/{REPO}/resolve/{COMMIT}/"):
            data = FILES[path.removeprefix(f"/{REPO}/resolve/{COMMIT}/")]
            headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": COMMIT,
                       "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}  # fmt: skip
        else:
            status = 404
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)


@pytest.fixture
def hub() -> Iterator[Hub]:
    served = Hub()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_fetch_downloads_the_model_at_the_revision_s_commit_with_the_token(tmp_path, hub):
    out = tmp_path / "out"
    env = checkout_env()
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(out / "cache" / "huggingface"),
               HF_TOKEN="hf_test_token", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-m", "marco_trainer", "fetch", "--output-dir", str(out / "fetch"),
         "--model", REPO, "--model-dir", str(out / "fetch" / "model"), "--revision", "main"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model = out / "fetch" / "model"
    assert {name: (model / name).read_bytes() for name in FILES} == FILES
    record = json.loads((out / "fetch" / "model.json").read_text())
    assert record == {"repo_id": REPO, "revision": "main", "commit": COMMIT}
    result = read_stage_result(out / "fetch")
    assert result is not None and result.message == f"fetched model {REPO}@{COMMIT}"
    # The revision asked once; every file then at its commit, never at "main".
    asked = [(method, path) for method, path, _ in hub.requests]
    assert ("GET", f"/api/models/{REPO}/revision/main") in asked
    files = [path for _, path in asked if "/resolve/" in path]
    assert files and all(path.startswith(f"/{REPO}/resolve/{COMMIT}/") for path in files)
    # The token from the environment went to the hub, and nowhere into the output.
    tokens = {auth for _, path, auth in hub.requests if REPO in path}
    assert tokens == {"Bearer hf_test_token"}
    assert "hf_test_token" not in done.stdout + done.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert b"hf_test_token" not in path.read_bytes(), path


def test_fetch_of_a_repo_the_hub_does_not_have_fails_naming_it(tmp_path, hub):
    env = checkout_env()
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-m", "marco_trainer", "fetch", "--output-dir", str(tmp_path / "f"),
         "--model", "org/absent", "--model-dir", str(tmp_path / "f" / "model")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("marco-trainer fetch: org/absent: ") and "404" in last, last
    assert not Path(tmp_path / "f" / "model.json").exists()
