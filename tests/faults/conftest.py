"""The fault-injection suite's fixtures: the operator harness's (an emulated API server, the
test as Job controller, a scripted rank 0, the operator) and the trainer tests' (spoken
utterances, a tiny Whisper), imported so that both kinds of fault share one folder."""

from __future__ import annotations

from tests.integration.operator.conftest import cluster, jobs, operator, trainer
from tests.integration.trainer.conftest import speech_manifest, tiny_whisper

__all__ = ["cluster", "jobs", "operator", "speech_manifest", "tiny_whisper", "trainer"]
