"""Device-resident ring replay buffer as a jittable pytree.

The buffer is written for one seed; the training loop ``jax.vmap``s it over a leading seed axis,
so every array carries shape ``[seeds, capacity, ...]`` there and each seed keeps its own write
position and size (seeds may be gated off independently later).

Memory per transition (float32 everywhere): ``(2 * obs_dim + action_dim + 2) * 4`` bytes; for
Meta-World v3 (obs 39, action 4) that is ``(78 + 4 + 2) * 4 = 336`` bytes, so the paper's 1e6
buffer takes 336 MB per seed. ``next_obs`` is stored explicitly rather than reconstructed from
the next row, so a transition never needs its neighbour and episode boundaries need no care.
See :func:`bytes_per_transition`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nbsp_jax.types import Sampler, Transition


class ReplayBuffer(NamedTuple):
    """Ring buffer for one seed: ``data`` rows ``[capacity, ...]``, write position, fill."""

    data: Transition
    ptr: jax.Array  # int32 scalar: next row to write
    size: jax.Array  # int32 scalar: number of valid rows (<= capacity)


def bytes_per_transition(obs_dim: int, action_dim: int) -> int:
    """Bytes one stored transition occupies (obs, next_obs, action, reward, terminated)."""
    return (2 * obs_dim + action_dim + 2) * 4


def init_buffer(capacity: int, obs_dim: int, action_dim: int) -> ReplayBuffer:
    """Returns an empty buffer with ``capacity`` float32 rows."""
    if capacity <= 0:
        raise ValueError(f"buffer capacity must be positive, got {capacity}")
    zeros = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)
    data = Transition(zeros(obs_dim), zeros(action_dim), zeros(), zeros(obs_dim), zeros())
    return ReplayBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, batch: Transition, valid: jax.Array) -> ReplayBuffer:
    """Appends the rows of ``batch`` whose ``valid`` flag is set, in order.

    Args:
      buffer: one seed's buffer.
      batch: transitions with a leading axis ``[B, ...]``.
      valid: bool ``[B]``; invalid rows (e.g. EnvPool's reset steps, whose transition would
        cross an episode boundary, or a seed gated off) are dropped without a host round-trip.

    Returns:
      The buffer with the valid rows written at ``ptr, ptr+1, ...`` (mod capacity).
    """
    capacity = buffer.data.reward.shape[0]
    valid = valid.astype(jnp.int32)
    offsets = jnp.cumsum(valid) - 1
    # Invalid rows get an out-of-range index and are dropped by the scatter.
    idx = jnp.where(valid > 0, (buffer.ptr + offsets) % capacity, capacity)
    data = jax.tree.map(
        lambda store, rows: store.at[idx].set(rows.astype(store.dtype), mode="drop"),
        buffer.data,
        batch,
    )
    n = valid.sum()
    return ReplayBuffer(data, (buffer.ptr + n) % capacity, jnp.minimum(buffer.size + n, capacity))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
    """Draws ``batch_size`` rows uniformly (with replacement) from the filled part.

    Returns a :class:`Transition` with leading axis ``[batch_size]``. The buffer must hold at
    least one row; the training loop only samples after ``learning_starts`` steps.
    """
    return jax.tree.map(lambda x: x[_rows(buffer, key, (batch_size,))], buffer.data)


def _rows(buffer: ReplayBuffer, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Row indices of ``shape``, uniform (with replacement) over the filled rows."""
    return jax.random.randint(key, shape, 0, jnp.maximum(buffer.size, 1))


def store_for_replay(pre: ReplayBuffer, current: ReplayBuffer, key: jax.Array,
                     store_size: int) -> ReplayBuffer:
    """Appends ``store_size`` transitions drawn uniformly (without replacement) from ``current``
    to the earlier-task buffer ``pre`` (Eq. 8); all of them if ``current`` holds fewer."""
    capacity = current.data.reward.shape[0]
    n = min(store_size, capacity)
    u = jax.random.uniform(key, (capacity,))
    u = jnp.where(jnp.arange(capacity) < current.size, u, -1.0)
    _, idx = jax.lax.top_k(u, n)  # filled rows rank first
    rows = jax.tree.map(lambda x: x[idx], current.data)
    return add(pre, rows, jnp.arange(n) < current.size)


def sampler(buffer: ReplayBuffer, batch_size: int) -> Sampler:
    """A :class:`~nbsp_jax.types.Sampler` that draws every batch uniformly (with replacement)
    from the filled rows of ``buffer``: the plan is row indices ``[num_steps, batch_size]``
    (replay of earlier tasks plugs in around it, :func:`nbsp_jax.method.replay_sampler`)."""

    def draw(key, num_steps):
        return _rows(buffer, key, (num_steps, batch_size))

    def take(rows, step):
        return jax.tree.map(lambda x: x[rows], buffer.data)

    return Sampler(draw, take)
