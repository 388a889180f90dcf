"""What both environment pools share: the ``[S, E]`` view of a flat pool, episode bookkeeping
and the errors for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from nbsp_jax.types import EpisodeStats


def unknown_name(kind: str, name: str, valid: Sequence[str], label: str) -> ValueError:
    """A ValueError for an unknown ``kind`` (e.g. ``'Meta-World task'``) naming the closest
    valid names and all of them (``label``: how the list is introduced)."""
    close = difflib.get_close_matches(name, list(valid), n=3)
    hint = f" Did you mean {close}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} {label}: {', '.join(valid)}")


class PoolView:
    """A flat pool of ``S * E`` envs seen as ``[S, E, ...]`` arrays, with per-env episode
    return and length over the valid (non-reset) steps."""

    def __init__(self, num_seeds: int, num_envs: int):
        self.num_seeds, self.num_envs = num_seeds, num_envs
        self.shape = (num_seeds, num_envs)
        n = num_seeds * num_envs
        self._ret = np.zeros(n)
        self._len = np.zeros(n, np.int64)
        self._seeds = np.repeat(np.arange(num_seeds), num_envs)

    def split(self, x) -> np.ndarray:
        """``[S * E, ...] -> [S, E, ...]``."""
        x = np.asarray(x)
        return x.reshape(self.shape + x.shape[1:])

    def reset_episodes(self) -> None:
        self._ret[:] = 0.0
        self._len[:] = 0

    def count(self, valid: np.ndarray, reward: np.ndarray) -> None:
        """Adds one step's ``reward [S * E]`` to the episodes of the ``valid`` envs; a reset
        step (not valid) starts the next episode at zero."""
        self._ret = np.where(valid, self._ret + reward, 0.0)
        self._len = np.where(valid, self._len + 1, 0)

    def finished(self, done: np.ndarray, success: np.ndarray) -> EpisodeStats:
        """The episodes that end where ``done [S * E]`` (``success`` of each env ``[S * E]``)."""
        return EpisodeStats(self._seeds[done], self._ret[done], self._len[done], success[done])
