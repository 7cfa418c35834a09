"""`benchmarks/adaptation.py --smoke`: every system runs end to end and the table has its shape.

The full benchmark is hours on 2 cores and not part of `make test`; its smoke
mode is: one scenario, one seed, tiny sets, two steps, all six systems, on the
real Whisper tiny.en with a 10 s window. The numbers mean
nothing; that each system produced a plausible test WER and that the table,
markdown and plot were written does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import ROOT, checkout_env

# The smoke costs about 250 CPU-seconds (its runs in parallel, mostly processes
# importing torch): 2 to 3 minutes on 2 idle cores, 15 at a load of 10 (2026-12-02).
# The timeout allows the shared case.
pytestmark = [
    pytest.mark.bench,
    pytest.mark.slow,
    pytest.mark.tts,
    pytest.mark.sox,
    pytest.mark.timeout(2400),
]

SYSTEMS = {"baseline", "hf", "hf-aug", "ft", "ftda", "ftda-target"}


def test_smoke_runs_every_system_and_writes_the_table(
    whisper_tiny_10s_dir: Path, tmp_path: Path
) -> None:
    work = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "adaptation.py"), "--smoke",
         "--work", str(work), "--model", str(whisper_tiny_10s_dir)],
        env=checkout_env(), capture_output=True, text=True, timeout=2300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((work / "adaptation.json").read_text())
    assert result["settings"]["scenarios"] == ["car"] and result["settings"]["seeds"] == [0]
    table = result["table"]
    assert set(table) == {"car"}
    assert set(table["car"]) == SYSTEMS
    for system, cell in table["car"].items():
        assert 0.0 <= cell["wer_mean"] <= 200.0, (system, cell)
        assert cell["wer_sd"] == 0.0 and cell["runs"] == 1  # one seed
        shares = cell["substitutions"] + cell["deletions"] + cell["insertions"]
        # Shares of the errors: they sum to 1, or to 0 when there is no error at all.
        assert shares == pytest.approx(1.0, abs=0.01) or cell["wer_mean"] == 0.0, cell
    rows = {r["system"]: r for r in result["rows"]}
    assert set(rows) == SYSTEMS
    assert rows["baseline"]["best_step"] == 0
    for system in SYSTEMS - {"baseline"}:
        assert 1 <= rows[system]["steps"] <= 2, rows[system]  # the smoke's two-step budget
    # The held-out table appears only when the held-out scenario ran; car is a tuning one.
    markdown = (work / "adaptation.md").read_text()
    assert "## Tuning scenarios" in markdown and "Held-out" not in markdown
    assert markdown.count("| car |") == len(SYSTEMS)
    assert (work / "adaptation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every system's test set was scored by the one evaluator, leaving its report.
    for row in result["rows"]:
        assert row["test_wer"] == pytest.approx(row["wer"], abs=0.01), row
        # Each row keeps its test set's per-utterance counts, which add up to its WER,
        # so rows pair (benchmarks/paired.py) after the run folders are gone.
        counts = row["utterance_errors"].values()
        wrong, words = sum(e for e, _ in counts), sum(n for _, n in counts)
        assert 100 * wrong / words == pytest.approx(row["test_wer"], abs=0.01), row["system"]
    assert len({frozenset(r["utterance_errors"]) for r in result["rows"]}) == 1
