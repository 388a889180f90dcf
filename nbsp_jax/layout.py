"""Array layouts of a host env pool: ``[K steps, S seeds, E envs, ...]`` to per-seed rows.

Imports no other module of the package.
"""

from __future__ import annotations

import numpy as np


def seed_major(x: np.ndarray) -> np.ndarray:
    """``[K, S, E, ...] -> [S, K * E, ...]``: K steps of a pool as per-seed rows."""
    x = np.swapaxes(np.asarray(x), 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])
