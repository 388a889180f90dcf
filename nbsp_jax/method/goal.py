"""Host-side record of a task's training steps, with each step's goal metric (SPEC section 3).

The skill-neuron scores need, for ``T`` recorded training steps of a task, the observation,
the action and the goal metric of the episode that contains the step: Meta-World episode
success (any step succeeded), Atari episode return. Episodes still running when the task ends
use their value so far. Two windows (``config.score_window``), neither of which needs advance
knowledge of when the task ends (a phase can stop early at the success threshold):

- ``'task'``: a uniform sample of ``T`` rows over every step of the task (reservoir
  sampling, Algorithm R, with a counter-based hash as its random source, so the record is
  reproducible and needs no RNG state in a checkpoint);
- ``'last'``: a ring of the last ``T`` steps.
"""

from __future__ import annotations

import numpy as np

from nbsp_jax.layout import seed_major
from nbsp_jax.types import Recorded, Step

SCORE_WINDOWS = ("task", "last")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based 64-bit hash (SplitMix64's finaliser), elementwise on uint64."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class GoalRecorder:
    """Per seed, ``rows`` of its training steps of ``E`` envs (``T = rows * E``): the last
    ``rows`` (``window='last'``) or a uniform sample of all of them (``window='task'``).

    Each seed has its own write position, so a seed that stopped training early (success
    threshold) keeps the record of its own training steps while the others go on.
    """

    def __init__(self, rows: int, num_seeds: int, num_envs: int, obs_dim, action_dim,
                 obs_dtype=np.float32, action_dtype=np.float32, window: str = "last",
                 salt: int = 0):
        """``obs_dim``/``action_dim``: an int (vector) or a shape tuple (e.g. ``(4, 84, 84)``
        uint8 Atari stacks, ``()`` for a discrete action). ``window``: one of
        :data:`SCORE_WINDOWS`; ``salt``: seeds the reservoir's hash (e.g. run seed, phase)."""
        if window not in SCORE_WINDOWS:
            raise ValueError(f"unknown score window {window!r}; valid choices: {SCORE_WINDOWS}")
        s, e = num_seeds, num_envs
        shape = lambda d: (d,) if isinstance(d, int) else tuple(d)
        self.rows, self.window, self.salt = rows, window, int(salt)
        self.step = np.zeros((rows, s), np.int64)  # per-seed step index of each row
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
        seeds = np.arange(len(self._ptr)) if active is None else np.nonzero(active)[0]
        sel, n = seeds, self._ptr[seeds]  # n: this row's index among the seed's steps
        if self.window == "last":
            i = n % self.rows
        else:  # Algorithm R: row n replaces a uniform slot j < rows with probability rows/(n+1)
            u64 = np.uint64
            key = (u64(self.salt) << u64(40)) ^ (sel.astype(u64) << u64(32)) ^ n.astype(u64)
            j = (_splitmix64(key) % (n + 1).astype(u64)).astype(np.int64)
            i = np.where(n < self.rows, n, j)
            keep = i < self.rows
            sel, i, n = sel[keep], i[keep], n[keep]
        self.obs[i, sel], self.action[i, sel] = obs[sel], action[sel]
        self.valid[i, sel], self.episode[i, sel] = step.valid[sel], self._episode[sel]
        self.step[i, sel] = n
        self._ptr[seeds] += 1
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
                "valid": self.valid, "step": self.step, "running_episode": self._episode,
                "running_ret": self._ret, "running_succ": self._succ}

    def host_state(self) -> dict:
        """JSON-able state for a checkpoint."""
        return {"ptr": self._ptr.tolist(), "out_ret": [[list(map(float, x)) for x in r]
                                              for r in self._out_ret],
                "out_succ": [[list(map(bool, x)) for x in r] for r in self._out_succ]}

    def load(self, arrays: dict, host: dict) -> None:
        """Restores what :meth:`arrays` and :meth:`host_state` returned."""
        self.obs, self.action = np.asarray(arrays["obs"]), np.asarray(arrays["action"])
        self.episode, self.valid = np.asarray(arrays["episode"]), np.asarray(arrays["valid"])
        self.step = np.asarray(arrays["step"]).copy()
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
        # Row order per seed: oldest first (a reservoir's slots are in no time order).
        ring = self.window == "last"
        order = np.stack([np.arange(p - n, p) % n if ring and p >= n else np.arange(n)
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

        # Episode ids unique within a seed: env e's episode k -> k * E + e.
        episode = take(self.episode) * e + np.arange(e)
        step = np.repeat(take(self.step)[:, :, None], e, axis=2)
        return Recorded(seed_major(take(self.obs)), seed_major(take(self.action)),
                        seed_major(succ).astype(np.float32), seed_major(ret).astype(np.float32),
                        seed_major(take(self.valid)), seed_major(episode), seed_major(step))


def scoring_goal(rec: Recorded, metric: str) -> tuple[np.ndarray, list[str]]:
    """The goal metric ``[S, T]`` each seed's neurons are scored against, and its name per seed.

    ``metric='return'`` (Atari): the raw return of the step's whole game. ``'success'``
    (Meta-World): the step's episode success; a seed whose recorded success is constant over
    its valid rows (all episodes succeeded, or none) carries no goal information there, so that
    seed falls back to the episode return, a graded metric (SPEC section 3).

    Args:
      rec: a task's record (:meth:`GoalRecorder.result`).
      metric: ``'success'`` or ``'return'``.

    Returns:
      ``(goal [S, T] float32, kinds)``, ``kinds[s]`` in ``{'success', 'return'}``.
    """
    goal = rec.success.copy()
    kinds = []
    for s in range(goal.shape[0]):
        v = rec.valid[s]
        if metric == "return" or (v.any() and goal[s][v].min() == goal[s][v].max()):
            goal[s] = rec.ret[s]
            kinds.append("return")
        else:
            kinds.append("success")
    return goal, kinds
