"""The bearer token of rank 0's `/v1/evaluations`, one per adaptation.

The operator derives each adaptation's token from a key of its own
(HMAC-SHA256 of `<namespace>/<name>/<uid>`), writes it once into the Secret
`<name>-endpoint` that the train pods mount, and sends it with every read of the
history. Deriving rather than storing means the operator needs only to create
Secrets, never to read one back: after a restart it computes the same tokens.
The key comes from a file (`--endpoint-key-file`, `$MARCO_ENDPOINT_KEY_FILE`; the
chart mounts a Secret it keeps across upgrades). Without one the operator makes a
key at start: tokens then change when it restarts, and the trainings already
running answer it 401 until they end.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)

KEY_FILE_ENV = "MARCO_ENDPOINT_KEY_FILE"
MIN_KEY_BYTES = 16


def load_key(path: str | Path | None = None) -> bytes:
    """The key in `path` (else `$MARCO_ENDPOINT_KEY_FILE`), or a fresh one with a warning."""
    path = path or os.environ.get(KEY_FILE_ENV) or None
    if path is None:
        logger.warning(
            "no endpoint key (--endpoint-key-file, $%s): using one made now; trainings "
            "started before a restart will refuse the next operator's reads",
            KEY_FILE_ENV,
        )
        return secrets.token_bytes(32)
    key = Path(path).read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"endpoint key {path}: {len(key)} bytes, at least {MIN_KEY_BYTES} needed")
    return key


def endpoint_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    """The token of one adaptation: the uid makes a recreated namesake's differ."""
    return hmac.new(key, f"{namespace}/{name}/{uid}".encode(), hashlib.sha256).hexdigest()
