"""The data structures every layer shares: NamedTuples and one type alias, no behaviour.

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


Sampler = Callable[[jax.Array, jax.Array], Transition]
"""``sampler(key, gradient_step) -> batch``: where each gradient step draws its batch from."""


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
