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

``conv_impl='im2col'`` computes each convolution as strided patch extraction plus one matmul:
the same parameters (names, shapes, initial values) and the same numbers up to float rounding.
It is there for back-ends where XLA's convolution is slow; ``'xla'``
(``lax.conv_general_dilated``) is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nbsp_jax.networks import ReLUConv, ReLUDense

# CleanRL sac_atari ``layer_init``: torch.nn.init.kaiming_normal_ (fan_in, gain sqrt(2)).
KAIMING_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# (features, kernel, stride) of the Nature CNN.
NATURE_CNN = ((32, 8, 4), (64, 4, 2), (64, 3, 1))

CONV_IMPLS = ("xla", "im2col")


def extract_patches(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """VALID patches of ``x [N, H, W, C]`` as ``[N, Ho, Wo, kernel * kernel * C]``.

    The last axis is ordered ``(kh, kw, c)``, the order of a Flax conv kernel
    ``(kh, kw, in, out)`` reshaped to ``(kh * kw * in, out)``.
    """
    _, h, w, _ = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    cols = [
        x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
        for i in range(kernel)
        for j in range(kernel)
    ]
    patches = jnp.stack(cols, axis=3)  # [N, Ho, Wo, kh*kw, C]
    return patches.reshape(*patches.shape[:3], -1)


class ReLUConvIm2col(ReLUConv):
    """:class:`ReLUConv` (stride, VALID padding, no dilation or groups) as patches + matmul.

    Creates the same ``kernel``/``bias`` parameters, in the same order, as ``nn.Conv``.
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        stride = self.strides if isinstance(self.strides, int) else self.strides[0]
        if kh != kw or self.padding != "VALID" or (
            not isinstance(self.strides, int) and len(set(self.strides)) != 1
        ):
            raise ValueError("ReLUConvIm2col supports square kernels, equal strides, VALID only")
        in_features = inputs.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init, (kh, kw, in_features, self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape(-1, *inputs.shape[-3:])
        patches = extract_patches(x, kh, stride)
        y = patches @ kernel.reshape(-1, self.features) + bias
        return nn.relu(y.reshape(*batch_shape, *y.shape[1:]))


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
) -> jax.Array:
    """conv0.., flatten, fc0..; call from inside a compact method (names at top level)."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    conv_cls = ReLUConv if conv_impl == "xla" else ReLUConvIm2col
    x = _preprocess(obs)
    for i, (features, k, s) in enumerate(convs):
        x = conv_cls(
            features, (k, k), strides=(s, s), padding="VALID", kernel_init=kernel_init,
            name=f"conv{i}",
        )(x)
    x = x.reshape(*x.shape[:-3], -1)
    for i, features in enumerate(hidden):
        x = ReLUDense(features, kernel_init=kernel_init, name=f"fc{i}")(x)
    return x


class _TrunkHead(nn.Module):
    """Own Nature trunk + Dense ``out`` with one unit per action; uint8 ``[..., 4, 84, 84]``
    in, ``[..., num_actions]`` out."""

    num_actions: int
    hidden: Sequence[int] = (768, 768)
    convs: Sequence[tuple[int, int, int]] = NATURE_CNN
    conv_impl: str = "xla"
    kernel_init: Callable = KAIMING_NORMAL

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _nature_trunk(obs, self.convs, self.hidden, self.conv_impl, self.kernel_init)
        return nn.Dense(self.num_actions, kernel_init=self.kernel_init, name="out")(x)


class DiscreteActor(_TrunkHead):
    """Categorical policy: uint8 ``[..., 4, 84, 84]`` -> logits ``[..., num_actions]``."""


class DiscreteQ(_TrunkHead):
    """Soft Q-values of every action: uint8 ``[..., 4, 84, 84]`` -> ``[..., num_actions]``."""
