"""The baseline's WER reaches the train command (its model card and the dashboard's
baseline line, `marco_trainer_baseline_wer_ratio`), and only a measured one does."""

import shlex

from tests.unit.operator.test_core import Cluster, body, run_to_training


def train_command(cluster) -> list[str]:
    train = next(
        c for c in cluster.created if c["kind"] == "Job" and c["metadata"]["name"] == "demo-train"
    )
    # torchrun under `sh -c`: the trainer's flags are the script's words.
    return shlex.split(train["spec"]["template"]["spec"]["containers"][0]["command"][-1])


def test_train_gets_the_baseline_wer_the_baseline_measured():
    cluster = Cluster(body())
    run_to_training(cluster, baseline_wer=37.25)
    words = train_command(cluster)
    assert words[words.index("--baseline-wer") + 1] == "37.25"


def test_without_a_baseline_train_gets_none():
    off = {"enabled": False}
    spec = {"model": {"source": "/data/models/qwen2-audio", "family": "llm"},
            "training": {"initialLearningRate": 5e-5}, "baseline": off, "filter": off,
            "profile": off, "augmentation": off, "evaluation": off}  # fmt: skip
    cluster = Cluster(body(spec))
    cluster.step()
    assert cluster.phase == "Training"
    assert "--baseline-wer" not in train_command(cluster)
