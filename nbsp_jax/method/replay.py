"""Replay of earlier tasks (NBSP Eq. 8): every ``k``-th batch of every update kind (critics,
actor, temperature) is drawn from the earlier-task buffer instead of the current one.

The samplers are :class:`nbsp_jax.types.Sampler` pairs, so nothing here knows a buffer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nbsp_jax.types import Sampler


def replay_step(step: jax.Array, interval: int, policy_frequency: int = 1) -> jax.Array:
    """Whether gradient step ``step`` draws its batch from the earlier-task buffer (Eq. 8).

    With ``policy_frequency`` ``pf = 1`` (one batch feeds the critics, the actor and the
    temperature, Algorithm 2) this is ``step % interval == 0``. With CleanRL's delayed policy
    update (``pf > 1``) the actor trains only on the batches of the steps ``g`` with
    ``g % pf == 0``; then ``g % interval == 0`` would miss them whenever ``interval`` and ``pf``
    share a factor (``k = 10, pf = 2``: no actor update would ever see a replayed batch). So a
    step is indexed by its group ``m = g // pf`` and its place ``j = g % pf`` in the group, and
    replays when ``(m + j * (interval // pf)) % interval == 0``: for each ``j`` exactly one
    group in ``interval`` replays, so exactly ``1 / interval`` of the critic batches and
    exactly ``1 / interval`` of the actor's (and temperature's) batches come from the
    earlier-task buffer, in every window of ``interval * pf`` steps, spread evenly.

    Args:
      step: int scalar (or array) of gradient-step indices.
      interval: ``k`` of Eq. 8 (Table 6: 10).
      policy_frequency: the agent's ``pf`` (1 for discrete SAC, which updates every network on
        every batch).

    Returns:
      bool, the shape of ``step``.
    """
    pf = int(policy_frequency)
    group, place = step // pf, step % pf
    return (group + place * (interval // pf)) % interval == 0


def replay_sampler(current: Sampler, pre: Sampler, pre_nonempty: jax.Array,
                   interval: int, policy_frequency: int = 1) -> Sampler:
    """A sampler that draws gradient step ``g``'s batch from ``pre`` when
    :func:`replay_step` says so and ``pre_nonempty``, else from ``current`` (Eq. 8). Its plan
    holds both samplers' plans (drawn from two keys split off the call's key).

    Args:
      current, pre: samplers of the current-task and the earlier-task buffer (e.g.
        :func:`nbsp_jax.buffers.transitions.sampler`).
      pre_nonempty: bool scalar, whether the earlier-task buffer holds anything.
      interval: ``k`` of Eq. 8 (Table 6: 10).
      policy_frequency: the agent's delayed-policy period (see :func:`replay_step`).
    """

    def draw(key, num_steps):
        k_current, k_pre = jax.random.split(key)
        return current.draw(k_current, num_steps), pre.draw(k_pre, num_steps)

    def from_pre_if_any(plan, step):
        a, b = pre.take(plan[1], step), current.take(plan[0], step)
        return jax.tree.map(lambda x, y: jnp.where(pre_nonempty, x, y), a, b)

    def take(plan, step):
        # `step` is shared by all seeds (unbatched under vmap), so this stays a real branch.
        return jax.lax.cond(replay_step(step, interval, policy_frequency), from_pre_if_any,
                            lambda plan, step: current.take(plan[0], step), plan, step)

    return Sampler(draw, take)
