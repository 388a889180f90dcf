"""Atari networks for discrete SAC (CleanRL ``sac_atari.py``), with recordable hidden layers.

The actor and each critic own a separate Nature-CNN trunk (no sharing, as in CleanRL):

    uint8 [..., 4, 84, 84]  (EnvPool layout: frame stack first)
      -> float32 / 255, transposed to NHWC [..., 84, 84, 4]
      -> conv0: ReLUConv 32, 8x8, stride 4, VALID   -> [..., 20, 20, 32]
      -> conv1: ReLUConv 64, 4x4, stride 2, VALID   -> [...,  9,  9, 64]
      -> conv2: ReLUConv 64, 3x3, stride 1, VALID   -> [...,  7,  7, 64]
      -> flatten (H, W, C order)                    -> [..., 3136]
      -> fc0, fc1: ReLUDense (768, 768 by default; CleanRL uses one layer of 512)
      -> out: Dense |A|   (logits for the actor, Q-values for a critic; never a candidate)

Every hidden layer is one module with its ReLU inside, named like its parameters, so
:func:`nbsp_jax.networks.record` returns ``{'conv0': [T, 32], 'conv1': [T, 64], 'conv2':
[T, 64], 'fc0': [T, h0], 'fc1': [T, h1]}`` (conv channels as means over height and width) and
per-unit masks share those keys.

Weights use CleanRL's ``layer_init`` for this script: Kaiming normal (fan-in, gain sqrt(2),
untruncated) for every layer, the output included, and zero biases.

``convs`` lists ``(features, kernel, stride)`` per conv layer (Nature CNN by default; tests use
a smaller one on small frames; 36x36 is the smallest frame the Nature trunk accepts).

Convolution implementations: see :mod:`nbsp_jax.networks.conv_matmul`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nbsp_jax.networks.conv_matmul import ReLUConvMatmul, resolve_conv_impl
from nbsp_jax.networks.layers import ReLUConv, dense_layer

# CleanRL sac_atari ``layer_init``: torch.nn.init.kaiming_normal_ (fan_in, gain sqrt(2)).
KAIMING_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# (features, kernel, stride) of the Nature CNN.
NATURE_CNN = ((32, 8, 4), (64, 4, 2), (64, 3, 1))

def _preprocess(obs: jax.Array) -> jax.Array:
    """uint8 ``[..., C, H, W]`` -> float32 ``[..., H, W, C]`` in [0, 1]."""
    x = obs.astype(jnp.float32) / 255.0
    return jnp.moveaxis(x, -3, -1)


def _nature_trunk(
    obs: jax.Array,
    convs: Sequence[tuple[int, int, int]],
    hidden: Sequence[int],
    conv_impl: str,
    kernel_init: Callable,
    activation: str = "relu",
) -> jax.Array:
    """conv0.., flatten, fc0..; call from inside a compact method (names at top level)."""
    conv_impl = resolve_conv_impl(conv_impl)
    if conv_impl == "xla":
        x = _preprocess(obs)
        for i, (features, k, s) in enumerate(convs):
            x = ReLUConv(
                features, (k, k), strides=(s, s), padding="VALID", kernel_init=kernel_init,
                name=f"conv{i}",
            )(x)
    else:
        # conv0 reads the uint8 frames [..., C, H, W] itself; 1/255 scales its product.
        x = obs
        for i, (features, k, s) in enumerate(convs):
            first = dict(layout="NCHW", scale=1.0 / 255.0) if i == 0 else {}
            nxt = convs[i + 1] if i + 1 < len(convs) else None
            out_block = nxt[2] if conv_impl == "s2d" and nxt and nxt[1] % nxt[2] == 0 else 1
            x = ReLUConvMatmul(
                features, (k, k), strides=(s, s), padding="VALID", kernel_init=kernel_init,
                name=f"conv{i}", method=conv_impl, out_block=out_block, **first,
            )(x)
    x = x.reshape(*x.shape[:-3], -1)
    dense = dense_layer(activation)  # CReLU acts on the dense layers; convs keep ReLU
    for i, features in enumerate(hidden):
        x = dense(features, kernel_init=kernel_init, name=f"fc{i}")(x)
    return x


class _TrunkHead(nn.Module):
    """Own Nature trunk + Dense ``out`` with one unit per action; uint8 ``[..., 4, 84, 84]``
    in, ``[..., num_actions]`` out."""

    num_actions: int
    hidden: Sequence[int] = (768, 768)
    convs: Sequence[tuple[int, int, int]] = NATURE_CNN
    conv_impl: str = "auto"
    kernel_init: Callable = KAIMING_NORMAL
    activation: str = "relu"  # of the dense layers (networks.layers.ACTIVATIONS)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _nature_trunk(obs, self.convs, self.hidden, self.conv_impl, self.kernel_init,
                          self.activation)
        return nn.Dense(self.num_actions, kernel_init=self.kernel_init, name="out")(x)


class DiscreteActor(_TrunkHead):
    """Categorical policy: uint8 ``[..., 4, 84, 84]`` -> logits ``[..., num_actions]``."""


class DiscreteQ(_TrunkHead):
    """Soft Q-values of every action: uint8 ``[..., 4, 84, 84]`` -> ``[..., num_actions]``."""
