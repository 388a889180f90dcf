"""What both SAC agents share: building a fresh learner state."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nbsp_jax.types import SACOptStates, SACParams, SACState


def new_state(agent, actor: dict, q: dict, key: jax.Array) -> SACState:
    """One seed's state from freshly initialised ``actor`` and ``q = {'qf1', 'qf2'}``
    variables: targets equal to the online critics, ``log_alpha = 0`` (CleanRL), and the
    initial states of ``agent.actor_opt``, ``agent.q_opt`` and ``agent.alpha_opt``."""
    log_alpha = jnp.zeros((), jnp.float32)
    # A copy, not an alias: the update donates its input state buffers.
    params = SACParams(actor, q, jax.tree.map(jnp.copy, q), log_alpha)
    opt = SACOptStates(
        agent.actor_opt.init(actor), agent.q_opt.init(q), agent.alpha_opt.init(log_alpha)
    )
    return SACState(params, opt, key)
