"""The chart's side of issue 13, point 7, rendered by the real helm: a NetworkPolicy in
front of the stage pods, the operator's endpoint key, and its allow-lists."""

from __future__ import annotations

import base64

from marco_operator.api import parse_spec
from marco_operator.policy import Policy
from marco_operator.resources import API_PORT, METRICS_PORT, RENDEZVOUS_PORT, Owner, labels
from tests.integration.deploy.chart import NAMESPACE, RELEASE, VALUE_SETS, of_kind, one, render

TRAINER_SA = f"{RELEASE}-marco-asr-trainer"


def _operator(manifests):
    deployment = one(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _env(container) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def _selects(selector: dict, pod_labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= pod_labels.items()


def _rule(policy, port: int | None):
    rules = [r for r in policy["spec"]["ingress"] if [p.get("port") for p in r.get("ports", [])]
             == ([port] if port is not None else [])]  # fmt: skip
    assert len(rules) == 1, policy["spec"]["ingress"]
    return rules[0]


def test_a_network_policy_admits_only_the_operator_prometheus_and_train_peers(helm):
    manifests = render(helm)
    (policy,) = of_kind(manifests, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    owner = Owner("a", NAMESPACE, "u")
    for stage in ("filter", "train", "evaluate"):  # every stage pod, as the operator labels it
        assert _selects(spec["podSelector"], labels(owner, stage))
    assert len(spec["ingress"]) == 3

    # The API port, from the operator's pods only (their labels, their namespace).
    deployment, _ = _operator(manifests)
    operator_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (peer,) = _rule(policy, API_PORT)["from"]
    assert _selects(peer["podSelector"], operator_labels)
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}

    # The metrics port, from Prometheus as the values select it.
    (scraper,) = _rule(policy, METRICS_PORT)["from"]
    assert scraper["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert scraper["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}

    # Train pods from train pods: c10d and the ports NCCL/gloo open, nothing from others.
    (peer,) = _rule(policy, None)["from"]
    assert _selects(peer["podSelector"], labels(owner, "train"))
    assert not _selects(peer["podSelector"], labels(owner, "filter"))
    assert RENDEZVOUS_PORT not in {
        p.get("port") for r in spec["ingress"] for p in r.get("ports", [])
    }


def test_the_prometheus_selectors_are_values_and_the_policy_can_be_turned_off(helm):
    sets = ["networkPolicy.prometheus.namespaceSelector.matchLabels.team=obs",
            "networkPolicy.prometheus.podSelector=null"]  # fmt: skip
    (policy,) = of_kind(render(helm, sets=sets), "NetworkPolicy")
    (scraper,) = _rule(policy, METRICS_PORT)["from"]
    assert "podSelector" not in scraper
    assert scraper["namespaceSelector"]["matchLabels"]["team"] == "obs"
    assert of_kind(render(helm, sets=["networkPolicy.enabled=false"]), "NetworkPolicy") == []


def test_a_namespaced_operator_guards_every_namespace_it_serves(helm):
    policies = of_kind(render(helm, VALUE_SETS["namespaced"]), "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["asr-team-a", "asr-team-b"]


def test_the_operator_gets_its_endpoint_key_from_a_kept_secret(helm):
    manifests = render(helm)
    deployment, container = _operator(manifests)
    path = _env(container)["MARCO_ENDPOINT_KEY_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]  # fmt: skip
    secret = next(s for s in of_kind(manifests, "Secret")
                  if s["metadata"]["name"] == volume["secret"]["secretName"])  # fmt: skip
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"][path.rsplit("/", 1)[1]])
    assert len(key) >= 32


def test_the_allow_lists_reach_the_operator_and_admit_the_chart_s_own_trainer(helm):
    _, container = _operator(render(helm))
    policy = Policy.from_env(_env(container))
    assert policy == Policy(("ghcr.io/marco-asr/trainer",), (TRAINER_SA,))
    default = parse_spec({
        "model": {"source": "openai/whisper-tiny"},
        "data": {"train": ["t.jsonl"], "validation": "v.jsonl", "test": "e.jsonl",
                 "targetAudio": "target"},
    })  # fmt: skip
    assert policy.refusal(default) is None  # the API's default image, no ServiceAccount
    named = default.model_copy(deep=True)
    named.resources.service_account_name = TRAINER_SA
    assert policy.refusal(named) is None
    named.resources.image = "docker.io/someone/else:1"
    assert policy.refusal(named) is not None

    sets = ["operator.allowedImages={reg.example.com/asr/,ghcr.io/x/t}",
            "operator.allowedServiceAccounts={*}"]  # fmt: skip
    _, container = _operator(render(helm, sets=sets))
    env = _env(container)
    assert env["MARCO_ALLOWED_IMAGES"] == "reg.example.com/asr/,ghcr.io/x/t"
    assert env["MARCO_ALLOWED_SERVICE_ACCOUNTS"] == "*"
