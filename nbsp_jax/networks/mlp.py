"""The continuous SAC networks (CleanRL ``sac_continuous_action.py``) with named hidden layers.

Every hidden layer is a :class:`~nbsp_jax.networks.layers.ReLUDense` named ``fc{i}``, so
:func:`~nbsp_jax.networks.capture.record` returns ``{'fc0': [T, h0], 'fc1': [T, h1], ...}``
and per-neuron masks share those keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nbsp_jax.networks.layers import relu_stack

# CleanRL's continuous SAC actor bounds on log std.
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


class GaussianActor(nn.Module):
    """Tanh-squashed Gaussian policy head (CleanRL ``sac_continuous_action.py``).

    Returns ``(mean, log_std)`` of the pre-tanh Gaussian, each ``[..., action_dim]``;
    ``log_std`` is squashed into ``[LOG_STD_MIN, LOG_STD_MAX]`` with a tanh as CleanRL does.
    """

    action_dim: int
    hidden: Sequence[int]
    activation: str = "relu"  # or 'crelu' (networks.layers.ACTIVATIONS)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = relu_stack(obs, self.hidden, self.activation)
        mean = nn.Dense(self.action_dim, name="mean")(x)
        log_std = jnp.tanh(nn.Dense(self.action_dim, name="log_std")(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)
        return mean, log_std


class QNetwork(nn.Module):
    """``Q(s, a)``: concat -> ReLU MLP (``fc{i}``) -> ``out``. Returns ``[...]``."""

    hidden: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = relu_stack(jnp.concatenate([obs, action], axis=-1), self.hidden, self.activation)
        return nn.Dense(1, name="out")(x)[..., 0]
