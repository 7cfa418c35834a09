"""The real kubectl against the status the operator writes: `kubectl wait --for=condition=...`
and the CRD's printer columns' JSONPaths.

kubectl runs as a user runs it (discovery, then a watch-list of the one object by a field
selector, client-go decoding) against kmock's API emulator, which the operator (kopf, in
a thread) writes the status to; the test plays the Job controller. So the conditions are
read by the client that users wait with, in the shape the operator writes them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from marco_contract.formats import StageResult
from marco_operator.crd import PRINTER_COLUMNS
from tests.tools import find_tool

from .harness import NAMESPACE, EmulatedCluster, JobController, wait_for
from .test_operator_kopf import NAME, ONLY_TRAINING, condition, make_spec, phase_is

pytestmark = pytest.mark.timeout(120)
#: What kubectl says on a wait that ends because its condition holds.
MET = f"asradaptation.asr.marco.dev/{NAME} condition met"


class Kubectl:
    """The real kubectl, configured for the emulated cluster (no credentials: it has none)."""

    def __init__(self, cluster: EmulatedCluster, folder: Path) -> None:
        self.binary = find_tool("kubectl")
        config = folder / "kubeconfig"
        config.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: emulated, cluster: {{server: '{cluster.url}'}}}}]\n"
            "users: [{name: tester, user: {}}]\n"
            f"contexts: [{{name: emulated, context: {{cluster: emulated, user: tester, "
            f"namespace: {NAMESPACE}}}}}]\n"
            "current-context: emulated\n"
        )
        # HOME too: kubectl caches discovery under ~/.kube; each test starts without one.
        self.env = {"KUBECONFIG": str(config), "HOME": str(folder), "PATH": "/usr/bin:/bin"}

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.binary, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture()
def kubectl(cluster: EmulatedCluster, tmp_path: Path) -> Kubectl:
    return Kubectl(cluster, tmp_path)


def ended(wait: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = wait.communicate(timeout=timeout)
    return wait.returncode, out.strip(), err.strip()


def test_kubectl_wait_for_succeeded_returns_once_the_operator_reports_success(
    cluster: EmulatedCluster, jobs: JobController, kubectl: Kubectl, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    job = jobs.wait_job(NAME, "train")
    jobs.start(job)
    # Started while the run trains: the wait must sit through the Running status.
    succeeded = kubectl.start(
        "wait", "--for=condition=Succeeded", f"asradaptation/{NAME}", "--timeout=90s"
    )
    code, out, err = ended(
        kubectl.start("wait", "--for=condition=Running", f"asradaptation/{NAME}", "--timeout=60s")
    )
    assert (code, out) == (0, MET), err
    running = cluster.status(NAME)
    assert running["phase"] == "Training"
    assert condition(running, "Succeeded")["status"] == "False"
    assert succeeded.poll() is None, f"returned while Training: {ended(succeeded)}"

    jobs.complete(job, StageResult(stage="train", wer=22.0, best_step=40, steps=60))
    code, out, err = ended(succeeded)
    assert (code, out) == (0, MET), err
    status = cluster.status(NAME)
    assert status["phase"] == "Succeeded"
    met = condition(status, "Succeeded")
    assert (met["status"], met["reason"]) == ("True", "Succeeded")
    assert met["observedGeneration"] == cluster.adaptation(NAME)["metadata"]["generation"]

    # The other ways users wait: on the phase by JSONPath, and on Ready.
    for how in ("--for=jsonpath={.status.phase}=Succeeded", "--for=condition=Ready"):
        code, out, err = ended(kubectl.start("wait", how, f"asradaptation/{NAME}", "--timeout=30s"))
        assert (code, out) == (0, MET), (how, err)
    # A finished run is no longer Running: that wait times out (kubectl's own timeout).
    code, _, err = ended(
        kubectl.start("wait", "--for=condition=Running", f"asradaptation/{NAME}", "--timeout=2s")
    )
    assert code == 1 and "timed out" in err, err


def test_kubectl_wait_for_succeeded_does_not_return_for_a_failed_run_while_failed_does(
    cluster: EmulatedCluster, jobs: JobController, kubectl: Kubectl, operator
) -> None:
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    job = jobs.wait_job(NAME, "train")
    jobs.start(job)
    wait_for("phase Training", phase_is(cluster, "Training"))
    failed = kubectl.start(
        "wait", "--for=condition=Failed", f"asradaptation/{NAME}", "--timeout=90s"
    )
    jobs.fail(job, reason="BackoffLimitExceeded", message="Job has reached the specified "
              "backoff limit", log_tail="CUDA error: out of memory")  # fmt: skip
    code, out, err = ended(failed)
    assert (code, out) == (0, MET), err
    status = cluster.status(NAME)
    assert status["phase"] == "Failed"
    reason = condition(status, "Failed")
    assert (reason["status"], reason["reason"]) == ("True", "StageFailed")
    assert "BackoffLimitExceeded" in reason["message"]

    # Succeeded is there and False, so a wait for it runs to its timeout and fails...
    code, out, err = ended(
        kubectl.start("wait", "--for=condition=Succeeded", f"asradaptation/{NAME}",
                      "--timeout=3s")
    )  # fmt: skip
    assert code == 1 and out == "", out
    assert "timed out waiting for the condition" in err, err
    # ...while the condition is found, and False (not missing).
    code, out, err = ended(
        kubectl.start("wait", "--for=condition=Succeeded=False", f"asradaptation/{NAME}",
                      "--timeout=30s")
    )  # fmt: skip
    assert (code, out) == (0, MET), err


def test_the_printer_columns_read_the_status_the_operator_wrote(
    cluster: EmulatedCluster, jobs: JobController, kubectl: Kubectl, operator
) -> None:
    """kubectl's JSONPath reads each string column of `kubectl get asradaptations` (the
    API server evaluates the same JSONPaths for its table) as the status holds it."""
    cluster.apply_adaptation(NAME, make_spec(**ONLY_TRAINING))
    jobs.fail(jobs.wait_job(NAME, "train"), reason="DeadlineExceeded",
              message="Job was active longer than specified deadline", log_tail="")  # fmt: skip
    status = wait_for("phase Failed", phase_is(cluster, "Failed"))
    expected = {
        "Phase": status["phase"],
        "Ready": condition(status, "Ready")["status"],
        "Message": status["message"],
    }
    columns = {c["name"]: c["jsonPath"] for c in PRINTER_COLUMNS if c["type"] == "string"}
    assert set(expected) <= set(columns)
    for name, value in expected.items():
        shown = kubectl.run("get", f"asradaptation/{NAME}", "-o", f"jsonpath={{{columns[name]}}}")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == value, name
    assert expected["Ready"] == "False"
