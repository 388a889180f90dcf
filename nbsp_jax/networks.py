"""Flax Linen networks with named layers whose hidden activations can be recorded.

Every hidden layer is a :class:`ReLUDense` named ``fc{i}``: Dense and ReLU in one module, so
Flax ``capture_intermediates`` records the *post-ReLU* output under the same path as the
layer's parameters, and per-neuron masks share that key too::

    params['params']['fc0']['kernel']   # (in, features)
    acts['fc0']                         # (T, features), post-ReLU, from record()

The output layers (``mean``/``log_std`` of the actor, ``out`` of a critic) are plain Dense
layers and are never recorded: the last layer of each network is not a neuron candidate
(SPEC section 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax
import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from nbsp_jax.neurons import channel_mean

# CleanRL's continuous SAC actor bounds on log std.
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


class ReLUDense(nn.Dense):
    """A Dense layer followed by ReLU, as one module: a hidden neuron candidate.

    ``capture_intermediates`` records module outputs; keeping the ReLU inside the module makes
    the recorded value the post-nonlinearity activation (SPEC section 2).
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return nn.relu(super().__call__(inputs))


class ReLUConv(nn.Conv):
    """A Conv layer followed by ReLU, as one module: each output channel is a neuron.

    :func:`record` reduces its captured ``[T, H, W, C]`` output to channel means ``[T, C]``.
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return nn.relu(super().__call__(inputs))


def _relu_stack(x: jax.Array, hidden: Sequence[int]) -> jax.Array:
    """Hidden layers ``fc0, fc1, ...``; call from inside a compact method."""
    for i, features in enumerate(hidden):
        x = ReLUDense(features, name=f"fc{i}")(x)
    return x


class GaussianActor(nn.Module):
    """Tanh-squashed Gaussian policy head (CleanRL ``sac_continuous_action.py``).

    Returns ``(mean, log_std)`` of the pre-tanh Gaussian, each ``[..., action_dim]``;
    ``log_std`` is squashed into ``[LOG_STD_MIN, LOG_STD_MAX]`` with a tanh as CleanRL does.
    """

    action_dim: int
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = _relu_stack(obs, self.hidden)
        mean = nn.Dense(self.action_dim, name="mean")(x)
        log_std = jnp.tanh(nn.Dense(self.action_dim, name="log_std")(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1.0)
        return mean, log_std


class QNetwork(nn.Module):
    """``Q(s, a)``: concat -> ReLU MLP (``fc{i}``) -> ``out``. Returns ``[...]``."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = _relu_stack(jnp.concatenate([obs, action], axis=-1), self.hidden)
        return nn.Dense(1, name="out")(x)[..., 0]


def _is_candidate(module: nn.Module, method_name: str) -> bool:
    return isinstance(module, ReLUDense | ReLUConv) and method_name == "__call__"


def record(module: nn.Module, params, *inputs) -> tuple[jax.Array, dict]:
    """Applies ``module`` and returns ``(outputs, activations)``.

    Uses Flax ``capture_intermediates`` restricted to the hidden :class:`ReLUDense` and
    :class:`ReLUConv` layers; a conv layer's neuron is a channel, its activation the channel's
    mean over height and width.

    Args:
      module: a network from this file.
      params: its variables ``{'params': ...}``.
      *inputs: the module's inputs, each with leading batch dims ``[T, ...]``.

    Returns:
      The module's output and a flat dict ``{layer_path: [T, features]}`` of post-ReLU
      activations (channel means for conv layers); ``layer_path`` is the module path joined
      by ``/`` (e.g. ``'fc0'``), the same path as the layer's parameters.
    """
    out, state = module.apply(params, *inputs, capture_intermediates=_is_candidate)
    flat = flax.traverse_util.flatten_dict(state["intermediates"], sep="/")
    # Keys end in '/__call__'. ReLUDense.__call__ calls Dense.__call__ on the same module, so
    # each tuple holds (pre-ReLU, post-ReLU) in call-completion order: the last is ours.
    acts = {k.rsplit("/", 1)[0]: v[-1] for k, v in flat.items()}
    return out, {k: channel_mean(v) if v.ndim > 2 else v for k, v in acts.items()}
