"""Device-resident Atari replay buffer that stores every frame once, as a jittable pytree.

EnvPool's Atari observation is a stack of the last 4 grayscale frames ``[4, 84, 84]`` uint8
(oldest first). Consecutive observations of one episode share 3 of their 4 frames, and a
transition's ``next_obs`` shares 3 frames with its ``obs``, so storing ``obs`` and ``next_obs``
stacks stores each frame up to 8 times. This buffer keeps a ring of single frames and rebuilds
both stacks when it samples.

**One stream.** A buffer holds one stream: one environment of one seed, whose frames arrive in
time order. The training loop ``jax.vmap``s every function here over environments and seeds
(arrays carry ``[seeds, envs, rows, ...]`` there) and splits a batch evenly across
environments; they fill at the same rate, so this is uniform sampling up to rounding.

**Layout.** Row ``i`` holds the newest frame of an observation ``obs_t`` together with the
transition taken from it: ``action[i] = a_t``, ``reward[i] = r_t``, ``terminated[i]`` (1.0 = the
episode terminated at that step: no bootstrap; a time-limit truncation stores 0.0 and
bootstraps). The newest frame of ``obs_{t+1}`` is row ``i + 1``. ``first[i]`` marks the first frame
of an episode. The last observation of an episode (the final one, returned by EnvPool's done
step) gets its own row, whose transition fields stay unset; the next row is the first frame of
the next episode (EnvPool's reset step), so no stored transition crosses an episode boundary::

    row    0      1      2        3        4      5      6
    frame  f0     f1     f2       f3(end)  g0     g1     g2 (newest, ptr-1)
    first  T      .      .        .        T      .      .
    trans  a0..   a1..   a2..     -        b0..   b1..   - (successor not stored yet)

**Stacks.** The stack of row ``i`` is rows ``i-3, i-2, i-1, i``, except that the walk back stops
at the episode's first frame and repeats it, as EnvPool pads its reset observation: row 5
above reads ``g0 g0 g0 g1``. ``next_obs`` of row ``i`` is the stack of row ``i + 1``. A row is
sampled only if its transition is complete: its successor is stored and belongs to the same
episode, and every frame its stack reads is still in the ring (not overwritten). See
:func:`transition_mask`.

**Capacity.** The ring has ``capacity + stack`` rows (``stack - 1`` for the history of the oldest
row, one for the successor of the newest), so a full buffer can sample the transitions of the
last ``capacity`` frames, less one per episode end among them.

**Memory** (84x84 frames, stack 4, measured as ``sum(x.nbytes)`` of :func:`init`'s arrays,
see :func:`bytes_per_transition` and :func:`buffer_bytes`):

=================================  ===================  =====================
layout                             bytes / transition   2e5 transitions
=================================  ===================  =====================
this buffer (frame once + fields)  7,069                1.414 GB (+28 KB pad)
naive ``obs`` + ``next_obs`` uint8  56,460               11.29 GB
naive as float32 (``replay.py``)   225,804              45.16 GB
=================================  ===================  =====================

7,069 = 7,056 (one uint8 frame) + 4 (action int32) + 4 (reward float32) + 4 (terminated
float32) + 1 (first bool): 8.0x less than stacked uint8 storage.

**Usage** (the start must be a reset observation, whose 4 frames are equal)::

    buf = init(capacity)
    buf = add_first(buf, obs)                    # after env.reset()
    # each step, on the obs stack the step returned and valid = "not a reset step":
    buf = add(buf, next_obs, action, reward, terminated, valid, keep=seed_active)
    batch = sample(buf, key, batch_size)         # replay.Transition of uint8 stacks
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nbsp_jax.types import Sampler, Transition

STACK = 4
FRAME_SHAPE = (84, 84)
# Bytes per row besides the frame: action int32, reward float32, terminated float32, first bool.
_FIELD_BYTES = 4 + 4 + 4 + 1


class AtariReplay(NamedTuple):
    """Frame ring for one stream: ``frames [rows, H, W]`` uint8 and per-row fields ``[rows]``."""

    frames: jax.Array  # uint8 [rows, H, W]: newest frame of the observation at this row
    action: jax.Array  # int32 [rows]: action taken from this row's observation
    reward: jax.Array  # float32 [rows]: reward of that step
    terminated: jax.Array  # float32 [rows]: 1.0 = episode terminated (no bootstrap)
    first: jax.Array  # bool [rows]: this row is the first frame of an episode
    ptr: jax.Array  # int32 scalar: next row to write
    size: jax.Array  # int32 scalar: rows written so far, <= rows


def init(capacity: int, frame_shape: tuple[int, ...] = FRAME_SHAPE, stack: int = STACK
         ) -> AtariReplay:
    """Returns an empty buffer whose ring holds ``capacity + stack`` frames.

    Args:
      capacity: frames whose transitions a full buffer can sample (see the module docstring).
      frame_shape: shape of one frame, ``(84, 84)`` for EnvPool Atari.
      stack: frames per observation, 4 for EnvPool Atari.

    Returns:
      An :class:`AtariReplay` with ``frames [capacity + stack, *frame_shape]`` uint8.
    """
    if capacity <= 0:
        raise ValueError(f"buffer capacity must be positive, got {capacity}")
    if stack <= 0:
        raise ValueError(f"frame stack must be positive, got {stack}")
    rows = capacity + stack
    return AtariReplay(
        frames=jnp.zeros((rows, *frame_shape), jnp.uint8),
        action=jnp.zeros(rows, jnp.int32),
        reward=jnp.zeros(rows, jnp.float32),
        terminated=jnp.zeros(rows, jnp.float32),
        first=jnp.zeros(rows, bool),
        ptr=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def add(buf: AtariReplay, obs: jax.Array, action: jax.Array, reward: jax.Array,
        terminated: jax.Array, valid: jax.Array, keep: jax.Array = True) -> AtariReplay:
    """Stores one environment step of one stream.

    Args:
      buf: one stream's buffer.
      obs: uint8 ``[stack, H, W]``: the observation the step returned (only its newest frame,
        ``obs[-1]``, is stored; the older ones are already in the ring).
      action: int scalar: the action taken from the previous observation.
      reward: float scalar: the step's reward.
      terminated: scalar: 1 if the episode terminated at this step (a time-limit truncation
        passes 0, so the target bootstraps from ``obs``).
      valid: bool scalar, as ``nbsp_jax.envs.Step.valid``: False on EnvPool's reset
        step, whose ``obs`` starts a new episode; ``obs`` is then stored as a first frame and
        ``action``, ``reward``, ``terminated`` are ignored. True: ``(action, reward,
        terminated)`` is recorded on the previous row and ``obs`` becomes its successor.
      keep: bool scalar; False writes nothing (e.g. a seed gated off). A stream that resumes
        after dropped steps must resume with a reset observation (``valid = False``).

    Returns:
      The buffer with the frame written at ``ptr`` (overwriting the oldest row when full).
    """
    rows = buf.frames.shape[0]
    keep = jnp.asarray(keep, bool)
    valid = jnp.asarray(valid, bool)
    # Out-of-range indices make the scatters drop the write.
    frame_row = jnp.where(keep, buf.ptr, rows)
    step_row = jnp.where(keep & valid & (buf.size > 0), (buf.ptr - 1) % rows, rows)
    frames = buf.frames.at[frame_row].set(obs[-1].astype(jnp.uint8), mode="drop")
    first = buf.first.at[frame_row].set(~valid, mode="drop")
    act = buf.action.at[step_row].set(jnp.asarray(action, jnp.int32), mode="drop")
    rew = buf.reward.at[step_row].set(jnp.asarray(reward, jnp.float32), mode="drop")
    term = buf.terminated.at[step_row].set(jnp.asarray(terminated, jnp.float32), mode="drop")
    n = keep.astype(jnp.int32)
    return AtariReplay(frames, act, rew, term, first, (buf.ptr + n) % rows,
                       jnp.minimum(buf.size + n, rows))


def add_first(buf: AtariReplay, obs: jax.Array, keep: jax.Array = True) -> AtariReplay:
    """Starts an episode with the reset observation ``obs [stack, H, W]`` (after ``reset()``);
    the same as :func:`add` with ``valid = False``."""
    return add(buf, obs, 0, 0.0, 0.0, False, keep)


def transition_mask(buf: AtariReplay, stack: int = STACK) -> jax.Array:
    """Which rows hold a complete transition, bool ``[rows]``.

    Row ``p`` qualifies when its successor ``p + 1`` is stored and is not a first frame (same
    episode), and every frame its stack reads (back to ``p - 3``, or to the episode's first
    frame if nearer) is among the ``size`` rows still in the ring.
    """
    rows = buf.first.shape[0]
    age = (buf.ptr - 1 - jnp.arange(rows)) % rows  # 0 = newest row
    has_next = (age >= 1) & ~jnp.roll(buf.first, -1)  # first[p + 1]
    # back[p]: how many earlier rows the stack of row p reads (its walk stops at a first frame).
    back = jnp.zeros(rows, jnp.int32)
    stopped = buf.first
    for k in range(1, stack):
        back += ~stopped
        stopped = stopped | jnp.roll(buf.first, k)  # first[p - k]
    return has_next & (age + back < buf.size)


def num_transitions(buf: AtariReplay, stack: int = STACK) -> jax.Array:
    """Number of transitions :func:`sample` can draw from, int32 scalar."""
    return transition_mask(buf, stack).sum()


def gather(buf: AtariReplay, rows: jax.Array, stack: int = STACK) -> Transition:
    """Rebuilds the transitions of ``rows [B]`` (ring indices that :func:`transition_mask`
    accepts; other rows give meaningless values).

    Returns:
      A :class:`nbsp_jax.types.Transition`: ``obs`` and ``next_obs`` uint8
      ``[B, stack, H, W]`` (oldest frame first), ``action`` int32, ``reward`` and
      ``terminated`` float32 ``[B]``.
    """
    one = jax.tree.map(lambda x: x[None], buf)
    return gather_streams(one, jnp.zeros_like(rows), rows, stack)


def gather_streams(bufs: AtariReplay, stream: jax.Array, rows: jax.Array, stack: int = STACK
                   ) -> Transition:
    """As :func:`gather` for buffers with a leading stream axis (fields ``[N, rows, ...]``):
    transition ``b`` is row ``rows[b]`` of stream ``stream[b]``."""
    n = bufs.frames.shape[1]
    # Walk back from each row; at an episode's first frame stay there (reset padding).
    idx = [rows]
    for _ in range(stack - 1):
        idx.insert(0, jnp.where(bufs.first[stream, idx[0]], idx[0], (idx[0] - 1) % n))
    # next_obs of row p is the stack of p + 1 (not a first frame): idx[1:] then p + 1.
    cols = jnp.stack([*idx, (rows + 1) % n], axis=-1)  # [B, stack + 1]
    frames = bufs.frames[stream[:, None], cols]  # [B, stack + 1, H, W]
    return Transition(
        obs=frames[:, :stack], action=bufs.action[stream, rows],
        reward=bufs.reward[stream, rows], next_obs=frames[:, 1:],
        terminated=bufs.terminated[stream, rows],
    )


def sample_rows(buf: AtariReplay, key: jax.Array, batch_size: int, stack: int = STACK
                ) -> jax.Array:
    """Draws ``batch_size`` ring rows uniformly (with replacement) among complete transitions.

    Returns int32 ``[batch_size]``. Costs one pass over the ring (mask and cumulative sum). An
    empty buffer returns row ``rows - 1``, which is meaningless; sample only after
    ``learning_starts`` steps.
    """
    mask = transition_mask(buf, stack)
    count = jnp.cumsum(mask, dtype=jnp.int32)  # count[p]: complete rows among 0..p
    u = jax.random.randint(key, (batch_size,), 0, jnp.maximum(count[-1], 1))
    # The (u+1)-th complete row is the first p with count[p] > u.
    rows = jnp.searchsorted(count, u, side="right").astype(jnp.int32)
    return jnp.minimum(rows, mask.shape[0] - 1)


def sample(buf: AtariReplay, key: jax.Array, batch_size: int, stack: int = STACK
           ) -> Transition:
    """Draws ``batch_size`` complete transitions uniformly (with replacement).

    Returns:
      A :class:`nbsp_jax.types.Transition` with ``obs`` and ``next_obs`` uint8
      ``[batch_size, stack, H, W]`` equal to the stacks EnvPool returned, ``action`` int32,
      ``reward`` and ``terminated`` float32 ``[batch_size]``.
    """
    return gather(buf, sample_rows(buf, key, batch_size, stack), stack)


def num_transitions_streams(bufs: AtariReplay, stack: int = STACK) -> jax.Array:
    """Complete transitions over all streams of ``bufs`` (fields ``[N, rows, ...]``), int32."""
    return jax.vmap(lambda b: transition_mask(b, stack))(bufs).sum()


def sample_streams(bufs: AtariReplay, key: jax.Array, batch_size: int, stack: int = STACK
                   ) -> Transition:
    """Draws ``batch_size`` transitions uniformly (with replacement) among the complete
    transitions of all streams of ``bufs`` (fields ``[N, rows, ...]``, e.g. the environments
    of one seed, or the stored windows of earlier tasks).

    Costs one pass over all rows (mask and one cumulative sum). With no complete transition
    the batch is meaningless (sample only after ``learning_starts``).

    Returns:
      A :class:`nbsp_jax.types.Transition` as :func:`sample` returns it.
    """
    stream, rows = _draw_streams(bufs, key, (batch_size,), stack)
    return gather_streams(bufs, stream, rows, stack)


def _draw_streams(bufs: AtariReplay, key: jax.Array, shape: tuple[int, ...], stack: int
                  ) -> tuple[jax.Array, jax.Array]:
    """``(stream, row)`` int32 arrays of ``shape``, uniform among complete transitions."""
    mask = jax.vmap(lambda b: transition_mask(b, stack))(bufs)  # [N, rows]
    num, rows = mask.shape
    count = jnp.cumsum(mask.reshape(-1), dtype=jnp.int32)
    u = jax.random.randint(key, shape, 0, jnp.maximum(count[-1], 1))
    # The (u+1)-th complete row is the first p with count[p] > u.
    flat = jnp.searchsorted(count, u, side="right").astype(jnp.int32)
    flat = jnp.minimum(flat, num * rows - 1)
    return flat // rows, flat % rows


def streams_sampler(bufs: AtariReplay, batch_size: int, stack: int = STACK) -> Sampler:
    """A :class:`~nbsp_jax.types.Sampler` over all streams of ``bufs``, uniform among their
    complete transitions (as :func:`sample_streams`). The plan is ``(stream, row)``, int32
    ``[num_steps, batch_size]`` each; the mask and count over all rows are computed once per
    draw, not once per gradient step (the buffer does not change during a fused call)."""

    def draw(key, num_steps):
        return _draw_streams(bufs, key, (num_steps, batch_size), stack)

    def take(plan, step):
        return gather_streams(bufs, plan[0], plan[1], stack)

    return Sampler(draw, take)


def window(buf: AtariReplay, key: jax.Array, length: int, stack: int = STACK) -> AtariReplay:
    """A new buffer holding ``length + stack`` consecutive rows of ``buf`` in time order,
    starting at a uniformly drawn offset among the rows written (all rows if fewer).

    This is how an earlier task's transitions are kept for replay (Eq. 8) without storing
    stacks: a contiguous window keeps every frame once and every stack intact, and at a
    uniform offset each transition of ``buf`` is kept with about the same probability
    (``length / capacity``). The window's oldest ``stack - 1`` rows only serve as stack
    history and its newest row has no successor, so about ``length`` transitions of the
    window are complete (fewer across episode ends); :func:`transition_mask` finds them.

    Args:
      buf: one stream.
      key: PRNG key for the offset.
      length: static; transitions to keep.

    Returns:
      An :class:`AtariReplay` with ``length + stack`` rows (its ring: ``ptr`` after the last
      copied row, ``size`` = rows copied).
    """
    ring = buf.frames.shape[0]
    w = length + stack
    m = jnp.minimum(buf.size, w)
    offset = jax.random.randint(key, (), 0, buf.size - m + 1)
    j = jnp.arange(w)
    src = (buf.ptr - buf.size + offset + j) % ring  # the oldest written row is ptr - size
    keep = j < m

    def take(x):
        return jnp.where(keep.reshape(-1, *([1] * (x.ndim - 1))), x[src], jnp.zeros_like(x[src]))

    return AtariReplay(take(buf.frames), take(buf.action), take(buf.reward),
                       take(buf.terminated), take(buf.first), (m % w).astype(jnp.int32),
                       m.astype(jnp.int32))


def bytes_per_transition(frame_shape: tuple[int, ...] = FRAME_SHAPE) -> int:
    """Bytes one row of this buffer occupies: one uint8 frame plus action, reward, terminated
    and first (7,069 for 84x84)."""
    return math.prod(frame_shape) + _FIELD_BYTES


def naive_bytes_per_transition(frame_shape: tuple[int, ...] = FRAME_SHAPE, stack: int = STACK
                               ) -> int:
    """Bytes per transition when ``obs`` and ``next_obs`` stacks are stored as uint8, with
    int32 action and float32 reward and terminated (56,460 for 84x84, stack 4)."""
    return 2 * stack * math.prod(frame_shape) + 4 + 4 + 4


def buffer_bytes(capacity: int, frame_shape: tuple[int, ...] = FRAME_SHAPE, stack: int = STACK
                 ) -> int:
    """Exact bytes of :func:`init`'s arrays: ``capacity + stack`` rows plus ``ptr`` and
    ``size``."""
    return (capacity + stack) * bytes_per_transition(frame_shape) + 2 * 4
