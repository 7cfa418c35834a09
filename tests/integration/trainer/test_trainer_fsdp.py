"""FSDP2 (``--strategy fsdp``) with 2 CPU ranks (gloo) trains as DDP does, saves, resumes.

Same model, data, seed and steps under both strategies. The tolerance, 1e-5 relative on
the losses (about 100 fp32 ulps), stands for the reduction order: with two ranks the gradient
sum a + b is the same either way (fp32 addition of two numbers commutes exactly, and FSDP's
division by 2 is exact), but the clipping norm is summed per shard under FSDP and per
tensor under DDP, and that difference of an ulp or so moves the weights by as much at each
step; a few steps at these learning rates amplify it far less than 100-fold (measured:
2e-8 relative after 4 steps). A real difference (a missing gradient sync, an unsharded
optimizer state, a step on other data) moves the loss by 1e-3 and more.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marco_contract.formats import StageResult
from tests.trainer_runs import read_history, read_trace, run_trainer, train_args

pytestmark = pytest.mark.slow

LOSS_RTOL = 1e-5
#: Accumulation 2: the first micro-batch's backward does not sync (FSDP's
#: set_requires_gradient_sync, DDP's no_sync), the second does.
WHISPER = dict(
    learning_rate=1e-2, max_steps=4, eval_every=2, gradient_accumulation=2, max_new_tokens=8
)
#: LoRA dropout on (the default's 0.05, raised so that masks move the loss): each rank draws
#: its masks from its own generator, and a resumed rank must go on from its own states.
QWEN = dict(
    learning_rate=5e-2,
    max_steps=4,
    eval_every=2,
    gradient_accumulation=2,
    max_new_tokens=6,
    lora_dropout=0.3,
)


def train(model: Path, manifest: Path, out: Path, **flags) -> str:
    """A 2-rank run; its log (stderr)."""
    done = run_trainer(*train_args(model, manifest, out, **flags), nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def losses(trace: list[dict]) -> list[float]:
    return [t["loss"] for t in trace]


def assert_same_run(ddp: Path, fsdp: Path) -> None:
    a, b = read_history(ddp).evaluations, read_history(fsdp).evaluations
    assert [e.step for e in a] == [e.step for e in b] == [2, 4]
    for x, y in zip(a, b, strict=True):
        assert y.loss == pytest.approx(x.loss, rel=LOSS_RTOL)
        assert (y.wer, y.lr, y.cycle) == (x.wer, x.lr, x.cycle)
    trace_a, trace_b = read_trace(ddp, 0), read_trace(fsdp, 0)
    assert [t["step"] for t in trace_a] == [t["step"] for t in trace_b] == [1, 2, 3, 4]
    assert losses(trace_b) == pytest.approx(losses(trace_a), rel=LOSS_RTOL)
    # Both ranks saw the same global loss under FSDP, as under DDP.
    assert losses(read_trace(fsdp, 1)) == pytest.approx(losses(trace_b), rel=1e-6)
    assert trace_a[-1]["loss"] < trace_a[0]["loss"]  # it trained: not two no-ops compared


def assert_resumes(
    model: Path, manifest: Path, out: Path, reference: Path, flags: dict, first: str = "fsdp"
) -> None:
    """A run stopped at step 2 (under the strategy ``first``) and started again under fsdp,
    from ``last``, takes steps 3 and 4 as the uninterrupted fsdp run ``reference`` did."""
    train(model, manifest, out, **{**flags, "max_steps": 2, "strategy": first})
    train(model, manifest, out, **{**flags, "strategy": "fsdp"})
    trace = read_trace(out, 0)
    assert [t["step"] for t in trace] == [1, 2, 3, 4]  # the first run's 2, then the resumed 2
    resumed = losses(trace)[2:]
    assert resumed == pytest.approx(losses(read_trace(reference, 0))[2:], rel=LOSS_RTOL)
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["corrupt_checkpoints"] == 0


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_fsdp_full_finetune_matches_ddp_saves_and_resumes(tmp_path, tiny_whisper, speech_manifest):
    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    train(tiny_whisper, speech_manifest, ddp, **WHISPER)
    log = train(tiny_whisper, speech_manifest, fsdp, strategy="fsdp", **WHISPER)
    assert_same_run(ddp, fsdp)
    # Rank 1 trained to DDP's losses on weights it never read: rank 0 sent them.
    assert "rank 1: 2 layers sharded over 2 ranks; no weights read, rank 0's received" in log
    assert "rank 0: 2 layers sharded over 2 ranks; weights read from disk" in log

    # The checkpoints and the export are the unsharded run's files: the same tensors under
    # the same names (the tied output projection written once), loadable without FSDP.
    for folder in ("checkpoints/last", "checkpoints/best", "export"):
        assert_same_weights(
            load_file(ddp / folder / "model.safetensors"),
            load_file(fsdp / folder / "model.safetensors"),
        )
    initial = load_file(tiny_whisper / "model.safetensors")
    trained = load_file(fsdp / "export" / "model.safetensors")
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    ddp_moments = torch.load(ddp / "checkpoints/last/optimizer.pt", weights_only=True)["state"]
    fsdp_moments = torch.load(fsdp / "checkpoints/last/optimizer.pt", weights_only=True)["state"]
    # DDP's moments are keyed by index, FSDP's (gathered whole) by parameter name.
    assert len(fsdp_moments) == len(ddp_moments)
    assert all(
        state["exp_avg"].shape == trained[name].shape for name, state in fsdp_moments.items()
    )

    # A DDP run's last (optimizer state keyed by index) resumes under FSDP.
    assert_resumes(tiny_whisper, speech_manifest, resumed, fsdp, WHISPER, first="ddp")


def test_fsdp_lora_matches_ddp_with_activation_checkpointing_and_resumes(
    tmp_path, tiny_qwen2_audio, speech_manifest
):
    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    train(tiny_qwen2_audio, speech_manifest, ddp, **QWEN)
    # Recomputed activations give the same loss: they are checkpointed inside FSDP's units.
    train(
        tiny_qwen2_audio,
        speech_manifest,
        fsdp,
        strategy="fsdp",
        gradient_checkpointing=True,
        **QWEN,
    )
    assert_same_run(ddp, fsdp)

    # Adapters only, as a DDP run saves them; the export merged and loadable without peft.
    for folder in ("checkpoints/last", "checkpoints/best"):
        assert not (fsdp / folder / "model.safetensors").exists()
        assert_same_weights(
            load_file(ddp / folder / "adapter_model.safetensors"),
            load_file(fsdp / folder / "adapter_model.safetensors"),
        )
    from transformers import Qwen2AudioForConditionalGeneration

    merged = Qwen2AudioForConditionalGeneration.from_pretrained(fsdp / "export").state_dict()
    assert_same_weights(
        Qwen2AudioForConditionalGeneration.from_pretrained(ddp / "export").state_dict(), merged
    )

    assert_resumes(tiny_qwen2_audio, speech_manifest, resumed, fsdp, QWEN)


def test_fsdp_rolls_back_non_finite_steps(tmp_path, tiny_whisper, speech_manifest):
    """As `test_trainer_nonfinite` single-process: the sharded weights go back to the initial
    ones (no best yet), then to the best checkpoint, which holds them too."""
    out = tmp_path / "run"
    train(
        tiny_whisper,
        speech_manifest,
        out,
        strategy="fsdp",
        learning_rate=1e30,  # one AdamW step moves weights to ~1e30, the next forward overflows
        max_steps=8,
        eval_every=4,
        max_new_tokens=4,
        max_consecutive_nonfinite=3,
    )
    history = read_history(out)
    assert [e.skipped_steps for e in history.evaluations] == [3, 3]
    assert all(math.isfinite(e.loss) for e in history.evaluations)
    result = StageResult.model_validate_json((out / "result.json").read_text())
    assert result.ok and result.steps == 8
    assert result.counts["nonfinite_steps"] == 6 and result.counts["rollbacks"] == 2
    exported = load_file(out / "export" / "model.safetensors")
    initial = load_file(tiny_whisper / "model.safetensors")
    assert exported.keys() == initial.keys()
    assert all(torch.equal(exported[k], initial[k]) for k in initial)


def test_fsdp_bf16_gathers_bf16_weights_and_keeps_fp32_masters(
    tmp_path, tiny_whisper, speech_manifest
):
    """``--precision bf16``: FSDP all-gathers bf16 weights (MixedPrecisionPolicy) where DDP
    autocasts fp32 ones. Matrix products run in bf16 either way; what differs is the bf16
    rounding of weights autocast leaves in fp32 (layer norms, embeddings): a few bf16 ulps
    (2^-8 relative each), hence 1e-2 relative on the loss, where an fp32 run matches to 1e-5
    and a broken run (no sync, no step) misses by far more."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    train(tiny_whisper, speech_manifest, ddp, precision="bf16", **WHISPER)
    train(tiny_whisper, speech_manifest, fsdp, precision="bf16", strategy="fsdp", **WHISPER)
    a, b = losses(read_trace(ddp, 0)), losses(read_trace(fsdp, 0))
    assert all(math.isfinite(x) for x in b) and b[-1] < b[0]
    assert b == pytest.approx(a, rel=1e-2)
    # The sharded master weights stay fp32: so do the checkpoint and the export.
    for folder in ("checkpoints/last", "export"):
        weights = load_file(fsdp / folder / "model.safetensors")
        assert {t.dtype for t in weights.values()} == {torch.float32}
