"""Meta-World environments for a vmapped agent: one host pool of ``num_seeds * num_envs`` envs.

Two backends give the same interface (:class:`SeedVecEnv`), chosen by ``config.env_backend``:

- ``'envpool'`` (default): EnvPool's C++ ``MetaWorld/<Task>-v3`` pool, threads on the host.
- ``'metaworld'``: the ``metaworld`` package (the reference simulator), one
  ``gym.make('Meta-World/MT1', ...)`` per env in gymnasium's subprocess ``AsyncVectorEnv``.

Both reset an environment on the step *after* it ends (EnvPool always does; gymnasium's
``AutoresetMode.NEXT_STEP``); that step ignores the action and returns the first observation of
the next episode. :class:`SeedVecEnv` marks it ``valid = False`` so the training loop never stores
a transition that crosses an episode boundary. Time-limit truncation (500 steps) is reported
separately from termination so that truncation bootstraps. The goal position is observable
(``partially_observable=False``, SPEC section 7): observations are 39 floats whose last 3 are
the goal.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import NamedTuple

import numpy as np

BACKENDS = ("envpool", "metaworld")
OBS_DIM = 39
ACTION_DIM = 4
MAX_EPISODE_STEPS = 500


def _envpool_names() -> dict[str, str]:
    """Maps Meta-World task names ('window-open') to EnvPool ids ('MetaWorld/WindowOpen-v3')."""
    import envpool

    out = {}
    for env_id in envpool.list_all_envs():
        m = re.fullmatch(r"MetaWorld/(\w+)-v3", env_id)
        if m:
            kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", m.group(1)).lower()
            out[kebab] = env_id
    return out


def metaworld_tasks() -> list[str]:
    """All Meta-World v3 task names EnvPool provides, e.g. ``'window-open'``, sorted."""
    return sorted(_envpool_names())


def check_task(task: str) -> str:
    """Returns ``task`` if it is a Meta-World v3 task, else raises a ValueError naming the
    closest valid names and the full list."""
    names = _envpool_names()
    if task in names:
        return task
    close = difflib.get_close_matches(task, names, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        f"unknown Meta-World task {task!r}.{hint} Valid tasks: {', '.join(sorted(names))}"
    )


def seed_major(x: np.ndarray) -> np.ndarray:
    """``[K, S, E, ...] -> [S, K * E, ...]``: K steps of a pool as per-seed rows."""
    x = np.swapaxes(np.asarray(x), 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])


class Step(NamedTuple):
    """What one step of all ``S * E`` envs returns, each array ``[S, E, ...]``.

    ``obs`` is the observation after the step (for a ``valid`` step whose episode ended, the
    final observation; the next episode's first observation arrives on the following, invalid,
    step). ``valid`` is False on the reset step that follows an episode end.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    valid: np.ndarray


class EpisodeStats(NamedTuple):
    """Episodes finished during one step: ``seed``, ``ret``, ``length``, ``success`` ``[n]``."""

    seed: np.ndarray
    ret: np.ndarray
    length: np.ndarray
    success: np.ndarray


def _make_envpool(task: str, num: int, seed: int):
    import envpool

    return envpool.make(
        _envpool_names()[task],
        env_type="gymnasium",
        num_envs=num,
        seed=seed,
        partially_observable=False,
        max_episode_steps=MAX_EPISODE_STEPS,
    )


def _metaworld_env(task: str, seed: int):
    """One reference env; runs in a subprocess, so it imports metaworld there."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)

    # MT1 draws each reset's goal from the benchmark's fixed set of 50 goals of `task`
    # (EnvPool samples a fresh one each reset); the goal is observable in both.
    return gym.make(
        "Meta-World/MT1", env_name=f"{task}-v3", seed=seed, max_episode_steps=MAX_EPISODE_STEPS
    )


def _make_metaworld(task: str, num: int, seed: int):
    import gymnasium as gym

    return gym.vector.AsyncVectorEnv(
        [functools.partial(_metaworld_env, task, seed + i) for i in range(num)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        # JAX runs threads in this process: never fork it.
        context="spawn",
    )


class SeedVecEnv:
    """One pool of ``num_seeds * num_envs`` Meta-World envs seen as ``[S, E, ...]`` arrays.

    Env ``k`` of the pool gets environment seed ``seed + k``, so every seed (and every env of a
    seed) sees distinct initial states and goals.

    Args:
      task: Meta-World task name, e.g. ``'window-open'``.
      num_seeds: S, the vmapped seed axis.
      num_envs: E, environments per seed.
      seed: base environment seed.
      backend: one of :data:`BACKENDS`.
    """

    def __init__(self, task: str, num_seeds: int, num_envs: int, seed: int, backend="envpool"):
        check_task(task)
        if backend not in BACKENDS:
            raise ValueError(f"unknown env backend {backend!r}; valid choices: {BACKENDS}")
        self.task, self.num_seeds, self.num_envs = task, num_seeds, num_envs
        make = _make_envpool if backend == "envpool" else _make_metaworld
        self._env = make(task, num_seeds * num_envs, seed)
        self.shape = (num_seeds, num_envs)
        n = num_seeds * num_envs
        self._done = np.zeros(n, bool)
        self._ret = np.zeros(n)
        self._len = np.zeros(n, np.int64)
        self._succ = np.zeros(n, bool)

    def _split(self, x) -> np.ndarray:
        x = np.asarray(x)
        return x.reshape(self.shape + x.shape[1:])

    def reset(self) -> np.ndarray:
        """Resets every env; returns observations ``[S, E, 39]`` float32."""
        obs, _ = self._env.reset()
        self._done[:] = False
        self._ret[:] = 0.0
        self._len[:] = 0
        self._succ[:] = False
        return self._split(obs.astype(np.float32))

    def step(self, actions: np.ndarray) -> tuple[Step, EpisodeStats]:
        """Steps every env with ``actions [S, E, 4]``; returns the step and finished episodes."""
        flat = np.asarray(actions, np.float32).reshape(-1, ACTION_DIM)
        obs, reward, term, trunc, info = self._env.step(flat)
        valid = ~self._done
        # gymnasium's reset step carries no 'success' key; it is invalid anyway.
        success = np.asarray(info.get("success", np.zeros(len(valid))), np.float64) > 0
        # Episode bookkeeping only on real steps; a reset step starts the next episode fresh.
        self._ret = np.where(valid, self._ret + reward, 0.0)
        self._len = np.where(valid, self._len + 1, 0)
        self._succ = np.where(valid, self._succ | success, False)
        done = valid & (term | trunc)
        seeds = np.repeat(np.arange(self.num_seeds), self.num_envs)
        stats = EpisodeStats(seeds[done], self._ret[done], self._len[done], self._succ[done])
        self._done = done
        step = Step(
            self._split(obs.astype(np.float32)),
            self._split(reward.astype(np.float32)),
            self._split(term & valid),
            self._split(trunc & valid),
            self._split(success & valid),
            self._split(valid),
        )
        return step, stats

    def close(self) -> None:
        close = getattr(self._env, "close", None)
        if close is not None:
            close()
