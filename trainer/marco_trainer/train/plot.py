"""The WER curve people look at: ``wer.png`` next to ``evaluations.json``."""

from __future__ import annotations

from pathlib import Path

from marco_contract.formats import EvaluationHistory


def plot_history(history: EvaluationHistory, path: str | Path) -> Path | None:
    if not history.evaluations:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marco_contract.files import atomic_write_bytes

    steps = [e.step for e in history.evaluations]
    fig, (ax_wer, ax_lr) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    ax_wer.plot(steps, [e.wer for e in history.evaluations], marker="o", label="validation WER")
    losses = [(e.step, e.loss) for e in history.evaluations if e.loss is not None]
    if losses:
        twin = ax_wer.twinx()
        twin.plot(*zip(*losses, strict=True), color="tab:gray", linestyle="--", label="loss")
        twin.set_ylabel("training loss")
    ax_wer.set_ylabel("WER (%)")
    ax_wer.set_title(f"{history.adaptation or 'training'}: WER by step")
    ax_lr.step(steps, [e.lr for e in history.evaluations], where="post", color="tab:orange")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
