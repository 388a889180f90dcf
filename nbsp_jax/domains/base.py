"""The interface of a domain, documented once: what the training loop asks of Meta-World and
of Atari, so that it has one code path for both.

===============  ==================================  =====================================
\                Meta-World (``agent='sac'``)        Atari (``agent='sac_atari'``)
===============  ==================================  =====================================
agent            continuous SAC                      discrete SAC
observation      float32 ``[39]``                    uint8 ``[4, 84, 84]``
action           float32 ``[4]``                     int32 ``[]`` (18 actions)
buffer per seed  transitions (``buffers.transitions``)  a frame-once stream per env
                                                     (``buffers.frames``)
earlier tasks    one buffer, 1e5 uniform draws per   per task and env, a window of
                 task                                consecutive frames (uniform offset)
goal metric      episode success (return if          raw return of the whole game
                 constant)
evaluation       success rate, deterministic policy  normalised raw return, sampled policy
metric names     ``asr``, ``fm``, ``fwt``            ``ar``, ``fm``, ``fwt``
===============  ==================================  =====================================

A domain is the only place that names an agent, an environment and a buffer together. The
jitted members (``make_agent``, ``init_buffer``, ``add``, ``sampler``, ``store``, the actions)
are for one seed; the loop vmaps them. The host members (``make_env``, staging, random
actions) see the whole ``[S, E]`` pool. Masking, scoring and replay are the method's
(:mod:`nbsp_jax.method`), shared by both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import optax

from nbsp_jax.types import SACState, Sampler, Step


class Domain(Protocol):
    """What the training loop uses of a domain (``Domain(config)``)."""

    name: ClassVar[str]  # 'metaworld' or 'atari'
    metric: ClassVar[str]  # name of the average-performance metric in results ('asr', 'ar')
    sr_name: ClassVar[str]  # what an sr entry is ('success_rate', 'normalized_return')
    goal: ClassVar[str]  # goal metric of the neuron scores ('success' or 'return')
    obs_shape: ClassVar[tuple[int, ...]]
    obs_dtype: ClassVar[Any]
    action_shape: ClassVar[tuple[int, ...]]
    action_dtype: ClassVar[Any]
    critic_takes_action: ClassVar[bool]  # Q(s, a) (continuous) or Q(s) -> [A] (discrete)
    record_chunk: ClassVar[int | None]  # steps recorded at once when scoring (None: all)
    counts_invalid_steps: ClassVar[bool]  # whether a pool's reset step counts to the budget
    config: Any

    @staticmethod
    def validate(config) -> None:
        """Raises ValueError naming a bad domain-specific field, before anything is built."""

    # ---- agent (one seed, jitted) ----
    def make_agent(self, actor_opt: optax.GradientTransformation | None,
                   q_opt: optax.GradientTransformation | None) -> Any:
        """The agent; ``None`` optimizers mean the domain's plain Adam."""

    def adam(self, lr: float) -> optax.GradientTransformation: ...
    def init_state(self, agent, key) -> SACState: ...
    def update_many(self, agent, state: SACState, sampler: Sampler, num_updates: int,
                    step0) -> tuple[SACState, dict]: ...
    def sample_action(self, agent, actor_params, obs, key): ...
    def eval_action(self, agent, actor_params, obs, key): ...
    # The policy output whose drift on earlier tasks' states is logged, or None (no probes).
    probe_action: Callable | None

    # ---- buffers (one seed, jitted) ----
    def init_buffer(self) -> Any: ...
    def init_pre(self, stored_tasks: int) -> Any:
        """Earlier-task buffer for ``stored_tasks`` tasks (tiny when 0: never filled, so
        that every method runs the same compiled update)."""

    def add(self, buffer, rows: dict) -> Any: ...
    def sampler(self, agent, buffer) -> Sampler: ...
    def nonempty(self, buffer): ...
    def store(self, pre, buffer, key, slot: int) -> Any:
        """``pre`` with this task's transitions kept for replay (earlier task ``slot``)."""

    # ---- host ----
    def make_env(self, task: str, num_envs: int, seed: int, train: bool = True) -> Any: ...
    def random_actions(self, rng: np.random.Generator) -> np.ndarray: ...
    def new_stage(self) -> dict:
        """Host arrays for one chunk, ``[K, S, E, ...]``."""

    def stage_step(self, stage: dict, k: int, obs, actions, step: Step,
                   active: np.ndarray) -> None: ...
    def to_seed_rows(self, x: np.ndarray) -> np.ndarray:
        """A staged field ``[K, S, E, ...]`` as the seed-major rows ``add`` takes."""

    def start_episode_rows(self, obs) -> dict | None:
        """Rows to write after a reset, or None."""

    def goal_step(self, env, step: Step) -> Step:
        """The step as the goal recorder sees it."""

    def eval_score(self, task: str, per_env: np.ndarray) -> np.ndarray:
        """``sr`` entries per seed ``[S]`` from per-episode outcomes ``[S, n]``."""

    def updates_per_chunk(self) -> int: ...
    def progress_text(self, recent, returns) -> str: ...


def with_injection(agent, config, actor_post=None):
    """``agent`` with plasticity injection (``config.method='pi'``): actor and critic become
    :class:`nbsp_jax.networks.Injected` networks with one slot per task switch
    (``len(tasks) * cycles - 1``); any other method gets ``agent`` unchanged.

    Args:
      actor_post: applied to the actor's summed output (e.g. to clip its log-std).
    """
    from nbsp_jax.method import method_spec
    from nbsp_jax.networks import Injected

    if not method_spec(config.method).inject:
        return agent
    slots = max(1, len(config.tasks) * config.cycles - 1)
    return agent._replace(actor=Injected(agent.actor, slots, actor_post),
                          critic=Injected(agent.critic, slots))

