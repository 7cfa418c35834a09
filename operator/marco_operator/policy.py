"""What the operator lets an AsrAdaptation run: allow-lists of images and ServiceAccounts.

Operator settings, not spec: whoever installs the operator decides (the chart's
`operator.allowedImages` and `operator.allowedServiceAccounts`, passed as
`$MARCO_ALLOWED_IMAGES` and `$MARCO_ALLOWED_SERVICE_ACCOUNTS`, comma-separated).
A spec that asks for anything else is refused before any Job exists (core: phase
`Invalid`, reason `NotAllowed`).

Images: an entry is a repository (`ghcr.io/marco-asr/trainer`), which allows
that repository with any tag or digest; an entry ending in `/`
(`registry.example.com/asr/`) allows every repository under it; `*` allows all.
Tags and digests of an entry are not compared. ServiceAccounts (resources' and
every pod template override's): names, `*` for any; a spec without one (the
namespace's `default`, with no token mounted) is always allowed. No setting at
all (None) allows anything: `marco run`, and an operator started by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from marco_operator.api import AsrAdaptationSpec

IMAGES_ENV = "MARCO_ALLOWED_IMAGES"
SERVICE_ACCOUNTS_ENV = "MARCO_ALLOWED_SERVICE_ACCOUNTS"
ANY = "*"


def repository(image: str) -> str:
    """`image` without digest and tag: `host:port/org/name:tag@sha256:…` → `host:port/org/name`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_allowed(image: str, allowed: Iterable[str]) -> bool:
    repo = repository(image)
    for entry in allowed:
        if entry == ANY or repo == entry:
            return True
        if entry.endswith("/") and repo.startswith(entry):
            return True
    return False


def listed(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated setting as a tuple; None (no setting) stays None."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Policy:
    """None: no list, anything goes; an empty tuple allows nothing."""

    images: tuple[str, ...] | None = None
    service_accounts: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Policy:
        env = os.environ if environ is None else environ
        return cls(listed(env.get(IMAGES_ENV)), listed(env.get(SERVICE_ACCOUNTS_ENV)))

    def refusal(self, spec: AsrAdaptationSpec) -> str | None:
        """Why the operator will not run `spec`, naming the field; None when it will."""
        res = spec.resources
        if self.images is not None and not image_allowed(res.image, self.images):
            return (
                f"spec.resources.image: {res.image!r} is not allowed by the operator "
                f"(allowed: {', '.join(self.images) or 'none'})"
            )
        accounts = self.service_accounts
        # A pod template override names one too, and wins over resources' (overrides.py).
        asked = [("spec.resources.serviceAccountName", res.service_account_name)]
        for i, override in enumerate(spec.pod_template_overrides or []):
            if override.spec is not None:
                field = f"spec.podTemplateOverrides[{i}].spec.serviceAccountName"
                asked.append((field, override.spec.service_account_name))
        for field, account in asked:
            if account and accounts is not None and ANY not in accounts and account not in accounts:
                return (
                    f"{field}: {account!r} is not allowed by the operator "
                    f"(allowed: {', '.join(accounts) or 'none'})"
                )
        return None
