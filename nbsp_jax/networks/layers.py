"""Hidden layers that are neuron candidates: Dense or Conv with the ReLU inside the module.

``capture_intermediates`` records module outputs; keeping the ReLU inside the module makes the
recorded value the post-nonlinearity activation (SPEC section 2), under the same path as the
layer's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


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


def relu_stack(x: jax.Array, hidden: Sequence[int]) -> jax.Array:
    """Hidden layers ``fc0, fc1, ...``; call from inside a compact method."""
    for i, features in enumerate(hidden):
        x = ReLUDense(features, name=f"fc{i}")(x)
    return x
