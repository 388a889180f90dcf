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

import functools
import re

import numpy as np

from nbsp_jax.envs.common import PoolView, unknown_name
from nbsp_jax.types import EpisodeStats, Step

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
    raise unknown_name("Meta-World task", task, sorted(names), "Valid tasks")


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


def reference_env(task: str, seed: int):
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
        [functools.partial(reference_env, task, seed + i) for i in range(num)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        # JAX runs threads in this process: never fork it.
        context="spawn",
    )


class SeedVecEnv(PoolView):
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
        super().__init__(num_seeds, num_envs)
        self.task = task
        make = _make_envpool if backend == "envpool" else _make_metaworld
        self._env = make(task, num_seeds * num_envs, seed)
        n = num_seeds * num_envs
        self._done = np.zeros(n, bool)
        self._succ = np.zeros(n, bool)

    def reset(self) -> np.ndarray:
        """Resets every env; returns observations ``[S, E, 39]`` float32."""
        obs, _ = self._env.reset()
        self._done[:] = False
        self.reset_episodes()
        self._succ[:] = False
        return self.split(obs.astype(np.float32))

    def step(self, actions: np.ndarray) -> tuple[Step, EpisodeStats]:
        """Steps every env with ``actions [S, E, 4]``; returns the step and finished episodes."""
        flat = np.asarray(actions, np.float32).reshape(-1, ACTION_DIM)
        obs, reward, term, trunc, info = self._env.step(flat)
        valid = ~self._done
        # gymnasium's reset step carries no 'success' key; it is invalid anyway.
        success = np.asarray(info.get("success", np.zeros(len(valid))), np.float64) > 0
        # Episode bookkeeping only on real steps; a reset step starts the next episode fresh.
        self.count(valid, reward)
        self._succ = np.where(valid, self._succ | success, False)
        done = valid & (term | trunc)
        stats = self.finished(done, self._succ)
        self._done = done
        step = Step(
            self.split(obs.astype(np.float32)),
            self.split(reward.astype(np.float32)),
            self.split(term & valid),
            self.split(trunc & valid),
            self.split(success & valid),
            self.split(valid),
        )
        return step, stats

    def close(self) -> None:
        close = getattr(self._env, "close", None)
        if close is not None:
            close()
