"""What the operator exposes and lets run (issue 13, point 7): read-only root filesystems,
the endpoint's token Secret and ports, the allow-lists of images and ServiceAccounts."""

from __future__ import annotations

import copy

import pytest

from marco_contract.layout import Layout
from marco_operator.api import parse_spec
from marco_operator.core import NOT_ALLOWED, Observed, reconcile
from marco_operator.endpoint_auth import endpoint_token, load_key
from marco_operator.plan import stage_command
from marco_operator.policy import Policy, image_allowed, repository
from marco_operator.reconciler import Options, children
from marco_operator.resources import (
    API_PORT,
    METRICS_PORT,
    SCRATCH_MOUNTS,
    Owner,
    endpoint_secret,
    train_service,
)
from tests.unit.operator.test_core import body
from tests.unit.operator.test_resources import OWNER, jobs_by_stage, spec_of


def test_every_stage_container_has_a_read_only_root_and_its_scratch_volumes():
    jobs = jobs_by_stage(spec_of())
    assert set(jobs) >= {"filter", "profile", "augment", "baseline", "train", "evaluate"}
    for stage, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, stage
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for name, path in SCRATCH_MOUNTS.items():
            assert mounts[path] == name and "emptyDir" in volumes[name], (stage, path)
        env = {e["name"]: e.get("value") for e in container["env"]}
        # The caches the stages were seen writing point into a writable volume: matplotlib's
        # into scratch, the hub client's onto the output volume, shared by every stage.
        assert any(env["MPLCONFIGDIR"].startswith(f"{p}/") for p in SCRATCH_MOUNTS.values())
        output = next(m for m in container["volumeMounts"] if m["mountPath"] == "/output")
        assert not output.get("readOnly") and env["HF_HOME"].startswith("/output/"), stage


def test_the_train_pods_mount_the_token_and_serve_the_api_on_a_port_of_their_own():
    pod = jobs_by_stage(spec_of())["train"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret = next(v for v in pod["volumes"] if v["name"] == "endpoint")["secret"]
    assert secret["secretName"] == f"{OWNER.name}-endpoint-{OWNER.uid.replace('-', '')[:12]}"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "endpoint")
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/marco/endpoint", True)
    command = container["command"][-1]
    assert f"--metrics-port {METRICS_PORT} --metrics-host 0.0.0.0 --api-port {API_PORT} " in command
    assert "--api-token-file /etc/marco/endpoint/token" in command
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "rendezvous": 29500, "metrics": METRICS_PORT, "api": API_PORT,
    }  # fmt: skip
    ports = {p["name"]: p["port"] for p in train_service(OWNER)["spec"]["ports"]}
    assert ports == {"rendezvous": 29500, "metrics": METRICS_PORT, "api": API_PORT}
    assert endpoint_secret(OWNER, "t")["stringData"] == {"token": "t"}


def test_marco_run_binds_rank_0_to_loopback_without_a_token():
    spec = spec_of("demo-local.yaml")
    layout = Layout(data_mount="/data", data_root="/d", output_root="/o", control_file="/o/c")
    args = " ".join(
        stage_command(
            spec, "train", layout, name="x", family="encoder-decoder", learning_rate=1e-5
        ).args
    )
    assert "--metrics-port 9400 --metrics-host 127.0.0.1 " in args
    assert "--api-port" not in args and "--api-token-file" not in args


def test_tokens_are_per_adaptation_and_reproducible_from_the_key(tmp_path, monkeypatch):
    key = b"k" * 32
    token = endpoint_token(key, "ns", "a", "uid-1")
    assert token == endpoint_token(key, "ns", "a", "uid-1") and len(token) == 64
    others = {
        endpoint_token(key, "ns", "b", "uid-1"),
        endpoint_token(key, "ns", "a", "uid-2"),
        endpoint_token(key, "ns2", "a", "uid-1"),
        endpoint_token(b"j" * 32, "ns", "a", "uid-1"),
    }
    assert token not in others and len(others) == 4
    (tmp_path / "key").write_text("0123456789abcdef0123\n")
    monkeypatch.setenv("MARCO_ENDPOINT_KEY_FILE", str(tmp_path / "key"))
    assert load_key() == b"0123456789abcdef0123"
    (tmp_path / "short").write_text("short")
    with pytest.raises(ValueError, match="at least 16"):
        load_key(tmp_path / "short")
    monkeypatch.delenv("MARCO_ENDPOINT_KEY_FILE")
    assert len(load_key()) == 32  # made at start, with a warning


def test_the_operator_writes_the_token_it_sends():
    options = Options(endpoint_key=b"x" * 32)
    owner = Owner("a", "ns", "uid-1")
    obj = body(name="a")
    obj["metadata"].update(namespace="ns", uid="uid-1")
    obj["spec"]["baseline"] = {"enabled": False}
    for section in ("filter", "profile", "augmentation"):
        obj["spec"][section] = {"enabled": False}
    outcome = reconcile(obj, Observed(jobs={}, now=0.0))
    (secret,) = [c for c in children(outcome, owner, options.token(owner)) if c["kind"] == "Secret"]
    assert secret["stringData"]["token"] == endpoint_token(b"x" * 32, "ns", "a", "uid-1")


@pytest.mark.parametrize(
    ("image", "repo"),
    [("ghcr.io/marco-asr/trainer:0.1.0", "ghcr.io/marco-asr/trainer"),
     ("ghcr.io/marco-asr/trainer@sha256:abc", "ghcr.io/marco-asr/trainer"),
     ("ghcr.io/marco-asr/trainer:0.1@sha256:abc", "ghcr.io/marco-asr/trainer"),
     ("localhost:5000/trainer", "localhost:5000/trainer"),
     ("localhost:5000/trainer:1", "localhost:5000/trainer"),
     ("trainer", "trainer")],
)  # fmt: skip
def test_the_repository_of_an_image(image, repo):
    assert repository(image) == repo


@pytest.mark.parametrize(
    ("image", "allowed", "ok"),
    [("ghcr.io/marco-asr/trainer:0.2.0", ["ghcr.io/marco-asr/trainer"], True),
     ("ghcr.io/marco-asr/trainer@sha256:abc", ["ghcr.io/marco-asr/trainer"], True),
     # A prefix is no repository: the allowed one's name must end where the image's does.
     ("ghcr.io/marco-asr/trainer-evil:1", ["ghcr.io/marco-asr/trainer"], False),
     ("ghcr.io/marco-asr/trainer/evil:1", ["ghcr.io/marco-asr/trainer"], False),
     ("evil.io/ghcr.io/marco-asr/trainer:1", ["ghcr.io/marco-asr/trainer"], False),
     ("registry.example.com/asr/trainer:1", ["registry.example.com/asr/"], True),
     ("registry.example.com/asrx/trainer:1", ["registry.example.com/asr/"], False),
     ("anything:1", ["*"], True),
     ("anything:1", [], False)],
)  # fmt: skip
def test_image_allow_list_matching(image, allowed, ok):
    assert image_allowed(image, allowed) is ok


def test_the_policy_from_the_environment():
    assert Policy.from_env({}) == Policy(None, None)
    policy = Policy.from_env(
        {"MARCO_ALLOWED_IMAGES": "ghcr.io/a/t, reg.io/x/", "MARCO_ALLOWED_SERVICE_ACCOUNTS": ""}
    )
    assert policy == Policy(("ghcr.io/a/t", "reg.io/x/"), ())


def _spec(**resources):
    return parse_spec({**body()["spec"], "resources": resources})


def test_the_policy_names_the_field_it_refuses():
    policy = Policy(images=("ghcr.io/marco-asr/trainer",), service_accounts=("trainer",))
    assert policy.refusal(_spec()) is None  # the default image, no ServiceAccount
    assert policy.refusal(_spec(serviceAccountName="trainer")) is None
    refusal = policy.refusal(_spec(image="evil.io/miner:1"))
    assert refusal is not None and refusal.startswith("spec.resources.image: 'evil.io/miner:1'")
    refusal = policy.refusal(_spec(serviceAccountName="admin"))
    assert refusal is not None and refusal.startswith("spec.resources.serviceAccountName")
    assert Policy(service_accounts=("*",)).refusal(_spec(serviceAccountName="admin")) is None
    assert Policy(service_accounts=()).refusal(_spec()) is None  # none asked: the default


def test_an_overrides_service_account_is_held_to_the_allow_list_too():
    """An override's serviceAccountName replaces resources' in the pods: it is no way around
    the operator's list."""
    policy = Policy(service_accounts=("trainer",))

    def with_accounts(*names):
        spec = {**body()["spec"], "resources": {"serviceAccountName": "trainer"}}
        spec["podTemplateOverrides"] = [{"spec": {"serviceAccountName": n}} for n in names]
        return parse_spec(spec)

    assert policy.refusal(with_accounts("trainer")) is None
    assert policy.refusal(with_accounts("trainer", "admin")) == (
        "spec.podTemplateOverrides[1].spec.serviceAccountName: 'admin' is not allowed by the "
        "operator (allowed: trainer)"
    )
    assert Policy(service_accounts=("*",)).refusal(with_accounts("admin")) is None


def test_core_refuses_a_disallowed_spec_before_any_stage_starts():
    obj = body(spec_patch={"resources": {"image": "evil.io/miner:1"}})
    policy = Policy(images=("ghcr.io/marco-asr/trainer",))
    outcome = reconcile(copy.deepcopy(obj), Observed(jobs={}, now=5.0), policy=policy)
    assert outcome.start == [] and outcome.spec is None
    status = outcome.status
    assert status["phase"] == "Invalid" and "evil.io/miner:1" in status["message"]
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", NOT_ALLOWED)
    assert ("Warning", NOT_ALLOWED) in [(e.type, e.reason) for e in outcome.events]
    # Said once: the next pass over the refused spec posts nothing new.
    again = reconcile({**obj, "status": status}, Observed(jobs={}, now=6.0), policy=policy)
    assert again.events == [] and again.start == []
    # Without the policy (marco run) the same spec runs.
    assert reconcile(copy.deepcopy(obj), Observed(jobs={}, now=5.0)).start


def test_the_operator_takes_its_allow_lists_from_flags_else_the_environment(monkeypatch):
    from marco_operator.cli import build_parser
    from marco_operator.kopf_driver import policy_of

    monkeypatch.delenv("MARCO_ALLOWED_IMAGES", raising=False)
    monkeypatch.delenv("MARCO_ALLOWED_SERVICE_ACCOUNTS", raising=False)
    parse = build_parser().parse_args
    assert policy_of(parse(["operator", "-A"])) == Policy(None, None)
    monkeypatch.setenv("MARCO_ALLOWED_IMAGES", "ghcr.io/marco-asr/trainer")
    monkeypatch.setenv("MARCO_ALLOWED_SERVICE_ACCOUNTS", "trainer,default")
    assert policy_of(parse(["operator", "-A"])) == Policy(
        ("ghcr.io/marco-asr/trainer",), ("trainer", "default")
    )
    flags = ["operator", "-A", "--allowed-images", "reg.io/x/,*", "--allowed-service-accounts", ""]
    assert policy_of(parse(flags)) == Policy(("reg.io/x/", "*"), ())
