"""Hidden layers that are neuron candidates: Dense or Conv with the ReLU inside the module.

``capture_intermediates`` records module outputs; keeping the ReLU inside the module makes the
recorded value the post-nonlinearity activation (SPEC section 2), under the same path as the
layer's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Hidden-layer activations (``config.activation``).
ACTIVATIONS = ("relu", "crelu")


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


class CReLUDense(nn.Dense):
    """A Dense layer of ``features`` units followed by CReLU (Abbas et al. 2023):
    ``[relu(z), relu(-z)]``, ``2 * features`` outputs, as one module.

    A neuron is a unit (a kernel column): :func:`nbsp_jax.networks.record` reduces the
    captured ``[T, 2 * features]`` output to ``|z| = relu(z) + relu(-z)``, ``[T, features]``,
    so scores and masks have one entry per unit, as its parameters do.
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        z = super().__call__(inputs)
        return jnp.concatenate([nn.relu(z), nn.relu(-z)], axis=-1)


def dense_layer(activation: str):
    """The hidden Dense module class of ``activation`` (one of :data:`ACTIVATIONS`)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid choices: {ACTIVATIONS}")
    return CReLUDense if activation == "crelu" else ReLUDense


def hidden_widths(hidden: Sequence[int], activation: str) -> tuple[int, ...]:
    """Units per hidden layer for ``activation`` given the ReLU widths ``hidden``.

    ReLU: ``hidden`` itself. CReLU: ``round(h / sqrt(2))`` units, each emitting two features,
    so that an interior layer ``h -> h`` keeps ReLU's parameter count
    (``2 u * u = h^2``); the first layer then has ``1/sqrt(2)`` and the output heads
    ``sqrt(2)`` times ReLU's (2.9 % fewer than ReLU in total at [256, 256] on Meta-World).
    """
    dense_layer(activation)  # checks the name
    if activation == "relu":
        return tuple(hidden)
    return tuple(max(1, round(h / math.sqrt(2))) for h in hidden)


def relu_stack(x: jax.Array, hidden: Sequence[int], activation: str = "relu") -> jax.Array:
    """Hidden layers ``fc0, fc1, ...`` of ``hidden[i]`` units each (:class:`ReLUDense`, or
    :class:`CReLUDense` for ``activation='crelu'``); call from inside a compact method."""
    layer = dense_layer(activation)
    for i, features in enumerate(hidden):
        x = layer(features, name=f"fc{i}")(x)
    return x
