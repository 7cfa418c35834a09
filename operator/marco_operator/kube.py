"""Raw-JSON access to the Kubernetes API through the ``kubernetes`` client's ApiClient.

The typed models of the client would reject partial objects and cost a
conversion on every call; the control plane works on plain manifests (what core
builds and reads), so requests go through the client's transport (auth, TLS,
token refresh) and bodies stay dicts.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from kubernetes import client, config

from marco_operator import __version__

USER_AGENT = f"marco-operator/{__version__}"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

#: The kinds the operator creates (core.reconcile's children and its Events), to the URL
#: plural of each. A fixed table: guessing plurals (kind + "s") is wrong for many kinds
#: (Ingress, NetworkPolicy, Endpoints), and a wrong guess would surface only as a 404.
PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Event": "events",
    "Job": "jobs",
    "PodGroup": "podgroups",  # Volcano's and scheduler-plugins' alike
    "Secret": "secrets",
    "Service": "services",
}


#: 4xx answers that say nothing against the request itself: a timeout, a conflict with
#: another writer, throttling. The rest of 4xx refuse what was asked, and the same request
#: gets the same answer until something changes (the spec, a policy, a quota).
TRANSIENT_4XX = frozenset({408, 409, 429})


class KubeError(RuntimeError):
    """A request the API server refused; ``status`` is the HTTP code.

    ``reason`` and ``message`` come from the API server's Status object (``Invalid``,
    ``Job.batch "x" is invalid: ...``) when the answer is one, else the HTTP status line
    and the body's start.
    """

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.method = method
        self.path = path
        self.status = status
        self.reason, self.message = _status_of(status, body)

    @property
    def refused(self) -> bool:
        """The server refused the request itself (400 Bad Request, 403, 404, 422 Invalid...),
        as opposed to being unable to serve it now (5xx, a conflict, throttling)."""
        return 400 <= self.status < 500 and self.status not in TRANSIENT_4XX

    def describe(self) -> str:
        """One line for a user: the code, the Status reason, the API server's message."""
        return f"HTTP {self.status} {self.reason}: {self.message}"


def _status_of(code: int, body: str) -> tuple[str, str]:
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    try:
        phrase = HTTPStatus(code).phrase.replace(" ", "")  # "ServiceUnavailable", as Status
    except ValueError:
        phrase = "Error"
    if isinstance(status, dict) and status.get("kind") == "Status":
        return str(status.get("reason") or phrase), str(status.get("message") or "").strip()
    return phrase, " ".join(body.split())[:500]


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    """URL of a resource collection: /api/v1/... for the core group, /apis/G/V/... otherwise."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


def manifest_collection_path(manifest: Mapping[str, Any]) -> str:
    """Where a manifest of one of the operator's kinds (PLURALS) is created."""
    kind = manifest["kind"]
    if kind not in PLURALS:
        raise ValueError(
            f"no collection known for kind {kind!r}; the operator creates {', '.join(PLURALS)}"
        )
    return collection_path(
        manifest["apiVersion"], PLURALS[kind], manifest["metadata"].get("namespace")
    )


def matches_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


def matches_fields(obj: Mapping[str, Any], fields: Mapping[str, str]) -> bool:
    for path, value in fields.items():
        found: Any = obj
        for part in path.split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        if found is None or str(found) != value:
            return False
    return True


def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> client.Configuration:
    """An explicit kubeconfig wins; else the in-cluster service account, else the default
    kubeconfig (``$KUBECONFIG`` or ~/.kube/config)."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return configuration
        except config.ConfigException:
            pass
    config.load_kube_config(
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return configuration


class Kube:
    """Synchronous JSON requests; callers in an event loop run them in a worker thread."""

    def __init__(
        self,
        configuration: client.Configuration,
        timeout: float = 15.0,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.configuration = configuration
        self._api = client.ApiClient(configuration)
        # Names the operator in the API server's audit log (and lets tests tell its calls apart).
        self._api.user_agent = user_agent
        self._timeout = timeout

    def close(self) -> None:
        self._api.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        prepared = self._api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*prepared, _request_timeout=self._timeout)
        response.read()
        text = (response.data or b"").decode()
        if response.status >= 400:
            raise KubeError(method, path, response.status, text)
        return json.loads(text) if text else None

    def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def list(
        self,
        path: str,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The collection's items with these labels and fields (`involvedObject.uid`: a
        dotted path, as a fieldSelector names it)."""
        labels, fields = labels or {}, fields or {}
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            query["fieldSelector"] = ",".join(f"{k}={v}" for k, v in fields.items())
        items = self.request("GET", path, query=query).get("items") or []
        # Filter again here: a server (or an emulator) that ignores the selector must not make
        # another adaptation's children ours.
        return [
            item for item in items if matches_labels(item, labels) and matches_fields(item, fields)
        ]

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create the object and return it as the API server answered (uid,
        resourceVersion); None when one of its name exists (409): the caller checks whose."""
        try:
            created = self.request("POST", manifest_collection_path(manifest), body=dict(manifest))
        except KubeError as error:
            if error.status == 409:
                return None
            raise
        return created if isinstance(created, dict) and created else dict(manifest)

    def delete(self, path: str, propagation: str = "Background", uid: str | None = None) -> bool:
        """Delete the object; its dependents (a Job's pods) go by garbage collection: after
        it (Background), or before it, the object staying until they are gone (Foreground).
        With `uid`, only that object (a precondition): a newer one of the same name, made
        after the caller looked, stays. False when it is gone already (404), or replaced
        (the precondition's 409)."""
        body: dict[str, Any] | None = None
        if uid is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        try:
            self.request("DELETE", path, query={"propagationPolicy": propagation}, body=body)
        except KubeError as error:
            if error.status == 404 or (uid is not None and error.status == 409):
                return False
            raise
        return True

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH)

    # builtins.list: inside the class, `list` is the method above.
    def json_patch(self, path: str, operations: builtins.list[dict[str, Any]]) -> Any:
        return self.request("PATCH", path, body=operations, content_type=JSON_PATCH)
