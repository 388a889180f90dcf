"""Host-side record of the last steps of a task, with each step's goal metric (SPEC section 3).

The skill-neuron scores need, for the last ``T`` steps of training on a task, the observation,
the action and the goal metric of the episode that contains the step: Meta-World episode
success (any step succeeded), Atari episode return. Episodes still running when the task ends
use their value so far. The record is a ring, so it needs no advance knowledge of when the
task ends (a phase can stop early at the success threshold).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nbsp_jax.envs import Step, seed_major


class Recorded(NamedTuple):
    """Recorded steps per seed: obs ``[S, T, *obs]``, action ``[S, T, *action]``, goals and
    valid ``[S, T]``."""

    obs: np.ndarray
    action: np.ndarray
    success: np.ndarray
    ret: np.ndarray
    valid: np.ndarray


class GoalRecorder:
    """Per seed, a ring of its last ``rows`` training steps of ``E`` envs (``T = rows * E``).

    Each seed has its own write position, so a seed that stopped training early (success
    threshold) keeps the record of its own last ``rows`` training steps while the others go on.
    """

    def __init__(self, rows: int, num_seeds: int, num_envs: int, obs_dim, action_dim,
                 obs_dtype=np.float32, action_dtype=np.float32):
        """``obs_dim``/``action_dim``: an int (vector) or a shape tuple (e.g. ``(4, 84, 84)``
        uint8 Atari stacks, ``()`` for a discrete action)."""
        s, e = num_seeds, num_envs
        shape = lambda d: (d,) if isinstance(d, int) else tuple(d)
        self.rows = rows
        self.obs = np.zeros((rows, s, e, *shape(obs_dim)), obs_dtype)
        self.action = np.zeros((rows, s, e, *shape(action_dim)), action_dtype)
        self.episode = np.zeros((rows, s, e), np.int64)
        self.valid = np.zeros((rows, s, e), bool)
        self._ptr = np.zeros(s, np.int64)  # steps recorded so far, per seed
        self._episode = np.zeros((s, e), np.int64)  # current episode number per env
        self._ret = np.zeros((s, e))
        self._succ = np.zeros((s, e), bool)
        # Finished episodes' outcomes per env: lists indexed by episode number.
        self._out_ret = [[[] for _ in range(e)] for _ in range(s)]
        self._out_succ = [[[] for _ in range(e)] for _ in range(s)]

    def add(self, obs: np.ndarray, action: np.ndarray, step: Step,
            active: np.ndarray | None = None) -> None:
        """Records the step taken from ``obs [S, E, D]`` with ``action [S, E, A]``.

        ``active [S]`` (optional): seeds that are still training; steps of the others are
        recorded as invalid, so each seed's record ends where its training ended.
        """
        sel = np.arange(len(self._ptr)) if active is None else np.nonzero(active)[0]
        i = self._ptr[sel] % self.rows
        self.obs[i, sel], self.action[i, sel] = obs[sel], action[sel]
        self.valid[i, sel], self.episode[i, sel] = step.valid[sel], self._episode[sel]
        self._ptr[sel] += 1
        self._ret += np.where(step.valid, step.reward, 0.0)
        self._succ |= step.success
        done = step.valid & (step.terminated | step.truncated)
        for s, e in zip(*np.nonzero(done), strict=True):
            self._out_ret[s][e].append(self._ret[s, e])
            self._out_succ[s][e].append(self._succ[s, e])
        self._episode += done
        self._ret[done], self._succ[done] = 0.0, False

    def cut(self) -> None:
        """Ends every running episode with its outcome so far (the envs were reset, e.g. on
        resume from a checkpoint); later steps belong to new episodes."""
        s, e = self._episode.shape
        for si in range(s):
            for ei in range(e):
                self._out_ret[si][ei].append(self._ret[si, ei])
                self._out_succ[si][ei].append(self._succ[si, ei])
        self._episode += 1
        self._ret[:], self._succ[:] = 0.0, False

    def arrays(self) -> dict:
        """Array state for a checkpoint (fixed shapes)."""
        return {"obs": self.obs, "action": self.action, "episode": self.episode,
                "valid": self.valid, "running_episode": self._episode, "running_ret": self._ret,
                "running_succ": self._succ}

    def host_state(self) -> dict:
        """JSON-able state for a checkpoint."""
        return {"ptr": self._ptr.tolist(), "out_ret": [[list(map(float, x)) for x in r]
                                              for r in self._out_ret],
                "out_succ": [[list(map(bool, x)) for x in r] for r in self._out_succ]}

    def load(self, arrays: dict, host: dict) -> None:
        """Restores what :meth:`arrays` and :meth:`host_state` returned."""
        self.obs, self.action = np.asarray(arrays["obs"]), np.asarray(arrays["action"])
        self.episode, self.valid = np.asarray(arrays["episode"]), np.asarray(arrays["valid"])
        self._episode = np.asarray(arrays["running_episode"]).copy()
        self._ret = np.asarray(arrays["running_ret"]).copy()
        self._succ = np.asarray(arrays["running_succ"]).copy()
        self._ptr = np.asarray(host["ptr"], np.int64)
        self._out_ret, self._out_succ = host["out_ret"], host["out_succ"]

    def result(self) -> Recorded:
        """The recorded steps in time order with their episodes' goal metrics."""
        # Fixed length T (so the jitted scorer never recompiles); unfilled rows are invalid.
        n = self.rows
        s, e = self._episode.shape
        # Row order per seed: oldest first.
        order = np.stack([np.arange(p - n, p) % n if p >= n else np.arange(n)
                          for p in self._ptr], axis=1)  # [n, S]
        cols = np.arange(s)[None, :]
        ret = np.zeros((n, s, e))
        succ = np.zeros((n, s, e))
        for si in range(s):
            for ei in range(e):
                # Outcome table of this env: finished episodes, then the running one.
                r = np.append(self._out_ret[si][ei], self._ret[si, ei])
                c = np.append(self._out_succ[si][ei], self._succ[si, ei])
                ids = self.episode[order[:, si], si, ei]
                ret[:, si, ei], succ[:, si, ei] = r[ids], c[ids]
        take = lambda x: x[order, cols]  # [n, S, E, ...] in per-seed time order

        return Recorded(seed_major(take(self.obs)), seed_major(take(self.action)),
                        seed_major(succ).astype(np.float32), seed_major(ret).astype(np.float32),
                        seed_major(take(self.valid)))
