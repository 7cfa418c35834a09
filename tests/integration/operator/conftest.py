"""Fixtures: an emulated API server, the test as Job controller, a scripted rank 0, and the
operator running against them. Each test gets fresh ones, so tests never share state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import SHARED_CLAIM, EmulatedCluster, JobController, OperatorRun, ScriptedTrainer


@pytest.fixture()
def cluster() -> Iterator[EmulatedCluster]:
    """The emulated API server, holding the shared ReadWriteMany claim the specs name."""
    with EmulatedCluster() as emulated:
        emulated.create_claim(SHARED_CLAIM, ("ReadWriteMany",))
        yield emulated


@pytest.fixture()
def jobs(cluster: EmulatedCluster) -> JobController:
    return JobController(cluster)


@pytest.fixture()
def trainer(cluster: EmulatedCluster) -> Iterator[ScriptedTrainer]:
    with ScriptedTrainer(cluster, adaptation="telephony") as rank0:
        yield rank0


@pytest.fixture()
def operator(cluster: EmulatedCluster, trainer: ScriptedTrainer) -> Iterator[OperatorRun]:
    run = OperatorRun(cluster, trainer_port=trainer.port, interval=0.3).start()
    yield run
    run.stop()
