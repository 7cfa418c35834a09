"""Second-order-section IIR filtering from rest along the last axis: ``scipy.signal.sosfilt``
without its per-call overhead.

The augmenter filters every utterance twice (F_filt, then BS.1770's K-weighting
to measure F_lufs). ``sosfilt``'s array-API dispatch, validation and axis
bookkeeping cost ~35 µs a call, as much as filtering 4000 samples, so this
calls scipy's compiled loop (the one ``sosfilt`` ends in) directly: the same
arithmetic, the same results (a unit test holds them equal). Where that private
loop is missing or the dtype is not float32/float64, it is ``sosfilt`` itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal


def _find_compiled_sosfilt() -> Callable[..., None] | None:
    """scipy's loop behind ``sosfilt``, if this scipy has it with the signature used here
    (tried once on a unit impulse); else None, and the public function does the work."""
    try:
        from scipy.signal._sosfilt import _sosfilt

        rows = np.array([[1.0, 0.0]])
        _sosfilt(np.array([[1.0, 0.0, 0.0, 1.0, -0.5, 0.0]]), rows, np.zeros((1, 1, 2)))
    except (ImportError, TypeError, ValueError):
        return None
    return _sosfilt if np.allclose(rows, [[1.0, 0.5]]) else None


_compiled_sosfilt = _find_compiled_sosfilt()


def sosfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfilt(sos, x, axis=-1)`` (zero initial state); ``sos`` is
    ``(sections, 6)`` with a0 = 1, as filter design returns it."""
    sos = np.asarray(sos)
    x = np.asarray(x)
    dtype = np.result_type(sos, x)
    if (
        _compiled_sosfilt is None
        or dtype not in (np.float32, np.float64)
        or sos.ndim != 2
        or sos.shape[1] != 6
        or x.size == 0
    ):
        return signal.sosfilt(sos, x, axis=-1)
    rows = np.array(x.reshape(-1, x.shape[-1]), dtype=dtype, order="C")  # filtered in place
    state = np.zeros((rows.shape[0], sos.shape[0], 2), dtype=dtype)
    _compiled_sosfilt(np.ascontiguousarray(sos, dtype=dtype), rows, state)
    return rows.reshape(x.shape)
