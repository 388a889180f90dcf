"""Device-resident replay buffers, written for one seed (the loop vmaps them): a transition
ring (:mod:`~nbsp_jax.buffers.transitions`) and frame-once Atari streams
(:mod:`~nbsp_jax.buffers.frames`). They know no agent and no method."""

from nbsp_jax.buffers import frames, transitions
from nbsp_jax.buffers.transitions import ReplayBuffer, init_buffer, store_for_replay

__all__ = ["ReplayBuffer", "frames", "init_buffer", "store_for_replay", "transitions"]
