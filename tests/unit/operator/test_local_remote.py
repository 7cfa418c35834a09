"""`marco run` with a hub model, a remote data source and a push: the real local driver
and core, each stage a small process that records the environment it was given."""

import json
import sys
from pathlib import Path

import yaml

from marco_operator.local import LocalRun, run_until_done

ROOT = Path(__file__).resolve().parents[3]
#: A stand-in stage: notes its name and the hub variables it sees, writes its result.
STAGE = """
import json, os, pathlib, sys
log, stage, args = sys.argv[1], sys.argv[2], sys.argv[3:]
keys = ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
with open(log, "a") as handle:
    handle.write(json.dumps({"stage": stage, "env": {k: os.environ.get(k) for k in keys}}) + "\\n")
out = pathlib.Path(args[args.index("--output-dir") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "result.json").write_text(json.dumps({"stage": stage, "wer": 10.0, "message": stage}))
"""


def test_marco_run_fetches_first_pushes_last_and_keeps_the_token_to_those_two(
    tmp_path, monkeypatch
):
    manifest = yaml.safe_load((ROOT / "examples" / "demo-local.yaml").read_text())
    spec = manifest["spec"]
    spec["model"]["source"] = "openai/whisper-tiny.en"
    spec["data"]["sources"] = [{"uri": "s3://corpora/callcentre", "path": "target"}]
    spec["output"] = {"push": {"uri": "gs://models/demo"}}
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    run = LocalRun(manifest, data_dir=tmp_path / "data", output_dir=tmp_path / "out")
    log = tmp_path / "stages.jsonl"
    run.command_line = lambda command: [
        sys.executable, "-c", STAGE, str(log), command.stage, *command.args,
    ]  # fmt: skip
    with run.owned():
        status = run_until_done(run, interval=0.01)
    assert status["phase"] == "Succeeded", status.get("message")
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["stage"] for s in seen] == [
        "fetch", "filter", "profile", "augment", "baseline", "train", "evaluate", "push",
    ]  # fmt: skip
    hf_home = str(run.root / "cache" / "huggingface")
    for record in seen:
        online = record["stage"] in ("fetch", "push")
        assert record["env"] == {
            "HF_HOME": hf_home,
            "HF_HUB_OFFLINE": None if online else "1",
            "TRANSFORMERS_OFFLINE": None if online else "1",
            "HF_TOKEN": "hf_secret_value" if online else None,
        }, record["stage"]
    assert status["stages"]["push"]["message"] == "push"
    # The token went to two processes' environments, nowhere into what the run wrote.
    for path in run.root.rglob("*"):
        if path.is_file():
            assert b"hf_secret_value" not in path.read_bytes(), path
