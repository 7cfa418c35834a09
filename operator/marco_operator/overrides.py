"""The pod template overrides of a spec (`spec.podTemplateOverrides`) merged into a stage
Job's pod template: pure, a template and the overrides in, a new template out.

Merged as Kubeflow Trainer v2 merges a TrainJob's podTemplateOverrides into its runtime's
pod templates (a strategic merge patch of the PodTemplateSpec, entries in list order, later
ones winning):

- metadata.labels, metadata.annotations, spec.nodeSelector: key by key;
- spec.volumes, spec.imagePullSecrets, the container's env: by name, an entry of the same
  name replaced whole, a new one appended;
- the container's volumeMounts: by mountPath (core/v1's merge key: a path holds one mount);
- spec.serviceAccountName, spec.affinity: replaced;
- spec.tolerations and the container's envFrom: appended, an entry already there not
  repeated. Kubeflow replaces the tolerations; here they come on top of
  `resources.tolerations`, which an override would otherwise silently drop.

What an override may not touch (the operator's volumes, mounts, env and labels) is refused
when the spec is read (api.py), so nothing here has to guard it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from marco_operator.api import PodTemplateOverride, override_targets


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def _merge_keyed(
    base: list[dict[str, Any]], extra: list[dict[str, Any]], key: str
) -> list[dict[str, Any]]:
    """`base` with each entry of `extra` replacing the one of the same `key`, or appended."""
    merged = list(base)
    for entry in extra:
        at = next((i for i, old in enumerate(merged) if old.get(key) == entry[key]), None)
        if at is None:
            merged.append(entry)
        else:
            merged[at] = entry
    return merged


def _append_new(base: list[Any], extra: list[Any]) -> list[Any]:
    return list(base) + [entry for entry in extra if entry not in base]


def _set(target: dict[str, Any], key: str, value: Any, how: Callable[[Any, Any], Any]) -> None:
    """target[key] = how(what it holds, value); an empty result leaves no key behind."""
    if value is None:
        return
    merged = how(target.get(key), value)
    if merged or merged is False:
        target[key] = merged


def apply_override(template: dict[str, Any], override: PodTemplateOverride) -> dict[str, Any]:
    """`template` (a Job's spec.template) with one override merged in; a new dict."""
    result = copy.deepcopy(template)
    if override.metadata is not None:
        meta = result.setdefault("metadata", {})
        for field in ("labels", "annotations"):
            _set(meta, field, getattr(override.metadata, field), lambda a, b: {**(a or {}), **b})
    spec = override.spec
    if spec is None:
        return result
    pod = result.setdefault("spec", {})
    _set(pod, "serviceAccountName", spec.service_account_name, lambda _, b: b)
    _set(pod, "nodeSelector", spec.node_selector, lambda a, b: {**(a or {}), **b})
    _set(pod, "affinity", _dump(spec.affinity) if spec.affinity else None, lambda _, b: b)
    tolerations = [_dump(t) for t in spec.tolerations] if spec.tolerations is not None else None
    _set(pod, "tolerations", tolerations, lambda a, b: _append_new(a or [], b))
    volumes = [_dump(v) for v in spec.volumes] if spec.volumes is not None else None
    _set(pod, "volumes", volumes, lambda a, b: _merge_keyed(a or [], b, "name"))
    secrets = [_dump(s) for s in spec.image_pull_secrets or []] or None
    _set(pod, "imagePullSecrets", secrets, lambda a, b: _merge_keyed(a or [], b, "name"))
    for change in spec.containers or []:
        container = next(c for c in pod["containers"] if c["name"] == change.name)
        env = [_dump(e) for e in change.env] if change.env is not None else None
        _set(container, "env", env, lambda a, b: _merge_keyed(a or [], b, "name"))
        env_from = [_dump(e) for e in change.env_from] if change.env_from is not None else None
        _set(container, "envFrom", env_from, lambda a, b: _append_new(a or [], b))
        mounts = (
            [_dump(m) for m in change.volume_mounts] if change.volume_mounts is not None else None
        )
        _set(container, "volumeMounts", mounts, lambda a, b: _merge_keyed(a or [], b, "mountPath"))
    return result


def apply_overrides(
    template: dict[str, Any], overrides: list[PodTemplateOverride] | None, stage: str
) -> dict[str, Any]:
    """`template` with every override that reaches `stage` merged in, in list order."""
    for override in overrides or []:
        if override_targets(override, stage):
            template = apply_override(template, override)
    return template
