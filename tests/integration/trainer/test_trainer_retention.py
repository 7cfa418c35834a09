"""The retention options through the trainer's CLI (issue 16): the LR warm-up at each
cycle's start (across a resume), encoder freezing, SpecAugment in training only, and
the clean-source share's flags. The runs are in this process (their outcome is under
test, not the process), but for the refusals: what the process says on stderr."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from marco_contract.formats import Directive
from tests.tiny_models import TEST_SENTENCES, build_tiny_whisper
from tests.trainer_runs import read_trace, run_trainer, train_args, train_in_process

pytestmark = pytest.mark.slow


def test_each_cycle_starts_with_a_linear_warm_up_also_after_a_resume(
    tmp_path, tiny_whisper, speech_manifest
):
    out, control = tmp_path / "run", tmp_path / "directive.json"
    flags = dict(
        learning_rate=1e-3, eval_every=3, max_new_tokens=4, control_file=control,
        warmup_steps=2, warmup_start_factor=0.5,
    )  # fmt: skip
    assert (
        train_in_process(*train_args(tiny_whisper, speech_manifest, out, max_steps=3, **flags)) == 0
    )
    # The operator starts cycle 1 at 4e-4; the resumed run reads it before its first step.
    control.write_text(Directive(cycle=1, learning_rate=4e-4).model_dump_json())
    assert (
        train_in_process(*train_args(tiny_whisper, speech_manifest, out, max_steps=6, **flags)) == 0
    )
    lrs = {line["step"]: line["lr"] for line in read_trace(out)}
    # 2 warm-up steps from half the LR: 0.5, 0.75, then 1 × the cycle's LR.
    expected = {1: 5e-4, 2: 7.5e-4, 3: 1e-3, 4: 2e-4, 5: 3e-4, 6: 4e-4}
    assert lrs == pytest.approx(expected)


def test_frozen_encoder_layers_keep_their_weights_the_rest_trains(tmp_path, speech_manifest):
    model = build_tiny_whisper(tmp_path / "model", TEST_SENTENCES, layers=2)
    out = tmp_path / "run"
    code = train_in_process(
        *train_args(
            model, speech_manifest, out, learning_rate=1e-2, max_steps=2, eval_every=2,
            max_new_tokens=4, freeze_encoder_layers=1,
        )
    )  # fmt: skip
    assert code == 0
    before = load_file(str(model / "model.safetensors"))
    after = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    frozen = ("model.encoder.conv1.", "model.encoder.conv2.", "model.encoder.layers.0.")
    for name, tensor in before.items():
        if name.startswith(frozen) or name == "model.encoder.embed_positions.weight":
            assert after[name].equal(tensor), f"{name} changed"
    for name in (
        "model.encoder.layers.1.fc1.weight",
        "model.encoder.layer_norm.weight",
        "model.decoder.layers.0.fc1.weight",
        "model.decoder.layers.1.self_attn.q_proj.weight",
    ):
        assert not after[name].equal(before[name]), f"{name} did not train"


def test_spec_augment_changes_the_training_loss_but_not_the_saved_config(
    tmp_path, tiny_whisper, speech_manifest
):
    flags = dict(learning_rate=1e-3, max_steps=1, eval_every=1, max_new_tokens=4)
    losses = {}
    for name, extra in [("off", {}), ("on", {"spec_augment_enabled": True,
                                             "spec_augment_mask_time_prob": 0.5})]:  # fmt: skip
        out = tmp_path / name
        assert (
            train_in_process(*train_args(tiny_whisper, speech_manifest, out, **flags, **extra)) == 0
        )
        losses[name] = read_trace(out)[0]["loss"]
        config = json.loads((out / "export" / "config.json").read_text())
        assert config["apply_spec_augment"] is False  # the pretrained value
    # The same seed, batch and weights: only the masks differ.
    assert losses["on"] != pytest.approx(losses["off"], rel=1e-6)


@pytest.mark.parametrize(
    "flags",
    [{"clean_source_share": 0.5}, {"clean_manifest": "clean.jsonl"}],
    ids=["share-without-manifest", "manifest-without-share"],
)
def test_half_of_the_clean_share_flags_is_refused_by_name(tmp_path, speech_manifest, flags):
    done = run_trainer(*train_args(tmp_path / "model", speech_manifest, tmp_path / "run", **flags))
    assert done.returncode != 0
    assert "--clean-source-share and --clean-manifest go together" in done.stderr
