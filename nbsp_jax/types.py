"""The data structures every layer shares: NamedTuples, no behaviour.

This module imports no other module of the package, so any layer may import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import optax


class Transition(NamedTuple):
    """One batch of transitions: obs ``[..., D]``, action ``[..., A]``, the rest ``[...]``."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    # 1.0 where the episode *terminated* at this step (no bootstrap). Time-limit truncation
    # stores 0.0 so the target bootstraps from next_obs.
    terminated: jax.Array


class Sampler(NamedTuple):
    """Where each gradient step of a fused call draws its batch from, in two parts, so that
    the call's random numbers are drawn at once, before its loop (one draw of
    ``[num_steps, batch]`` indices, not ``num_steps`` small ones inside it).

    ``draw(key, num_steps) -> plan``: a pytree whose leaves have leading axis ``num_steps``
    (e.g. the row indices ``[num_steps, batch]``). ``take(plan_row, step) -> Transition``:
    the batch of gradient step ``step`` (a global counter, int32 scalar) from its row of the
    plan. A batch that does not depend on a draw may ignore both.
    """

    draw: Callable[[jax.Array, int], object]
    take: Callable[[object, jax.Array], Transition]


class SACParams(NamedTuple):
    """Actor variables, twin critics ``{'qf1', 'qf2'}``, their targets, and log temperature."""

    actor: dict
    q: dict
    q_target: dict
    log_alpha: jax.Array


class SACOptStates(NamedTuple):
    """Optimizer states of actor, critics (one optimizer over both) and temperature."""

    actor: optax.OptState
    q: optax.OptState
    alpha: optax.OptState


class SACState(NamedTuple):
    """Everything one seed's learner carries between updates (both SAC agents)."""

    params: SACParams
    opt: SACOptStates
    key: jax.Array


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


class Recorded(NamedTuple):
    """Recorded steps per seed: obs ``[S, T, *obs]``, action ``[S, T, *action]``; goals, valid,
    episode ids (unique within a seed) and the seed's step index of each row ``[S, T]``."""

    obs: np.ndarray
    action: np.ndarray
    success: np.ndarray
    ret: np.ndarray
    valid: np.ndarray
    episode: np.ndarray
    step: np.ndarray
