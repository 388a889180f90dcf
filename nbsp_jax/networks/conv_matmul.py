"""Convolutions as matmuls, for XLA:CPU, behind the ``conv_impl`` switch.

Convolution implementations (``conv_impl``); all create the same parameters (names, shapes,
initial values), return the same post-ReLU activations ``[..., Ho, Wo, C]`` and agree up to
float32 rounding:

- ``'auto'`` (default): ``'s2d'`` when JAX's default backend is the CPU, ``'xla'`` otherwise.
- ``'xla'``: ``lax.conv_general_dilated``. Use it on GPU/TPU (cuDNN and friends). Avoid it on
  XLA:CPU: inside a ``lax.scan``/``while`` loop (as in ``sac_discrete.update_many``) XLA:CPU
  runs the convolutions of the backward pass (kernel gradients: batch-major operands with
  dilated windows) on its naive loop emitter instead of a library kernel, 20-60x slower than
  the same convolution outside a loop, so a discrete-SAC update took ~3 s on 2 cores.
- ``'s2d'``: space-to-depth reshapes plus unit-stride slices gather the patches (for conv0
  straight from the uint8 frames, 1/255 applied to the product), then one matmul per layer,
  with a custom backward pass whose matmuls XLA:CPU runs fast (:func:`conv_matmul`). Each
  layer computes its output pixels in the block order of the next layer's space-to-depth, so
  no activation is transposed between layers. The fastest choice on CPU.
- ``'im2col'``: ``kernel**2`` strided slices, then the same matmul (a general fallback; the
  ``'s2d'`` layers fall back to it where the stride does not divide the kernel).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nbsp_jax.networks.layers import ReLUConv

CONV_IMPLS = ("auto", "xla", "s2d", "im2col")


def resolve_conv_impl(conv_impl: str) -> str:
    """``'auto'`` -> ``'s2d'`` on the CPU backend, ``'xla'`` elsewhere; others unchanged."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    if conv_impl == "auto":
        return "s2d" if jax.default_backend() == "cpu" else "xla"
    return conv_impl


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


def space_to_depth(x: jax.Array, kernel: int, stride: int, layout: str = "NHWC") -> jax.Array:
    """Blocks of ``stride x stride`` pixels as channels: ``[N, Hb, Wb, stride * stride * C]``.

    ``x`` is ``[N, H, W, C]`` (``layout='NHWC'``) or ``[N, C, H, W]`` (``'NCHW'``, raw frames);
    only the ``Hb = Ho + kernel // stride - 1`` block rows (and columns) that a VALID
    ``kernel``/``stride`` convolution reads are kept. The channel axis is ordered
    ``(row in block, column in block, c)``. A reshape and one transpose; a VALID
    ``kernel``/``stride`` convolution of ``x`` is then a ``kernel // stride`` square,
    stride-1 convolution of the blocks with :func:`s2d_kernel` weights.
    """
    if layout == "NCHW":
        n, c, h, w = x.shape
    else:
        n, h, w, c = x.shape
    b, s = kernel // stride, stride
    hb, wb = (h - kernel) // s + b, (w - kernel) // s + b
    if layout == "NCHW":
        x = x[:, :, : hb * s, : wb * s].reshape(n, c, hb, s, wb, s).transpose(0, 2, 4, 3, 5, 1)
    else:
        x = x[:, : hb * s, : wb * s, :].reshape(n, hb, s, wb, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, hb, wb, s * s * c)


def s2d_kernel(kernel: jax.Array, stride: int) -> jax.Array:
    """A Flax kernel ``(k, k, in, out)`` as ``(k // s, k // s, s * s * in, out)``: the weights of
    the stride-1 convolution over :func:`space_to_depth` blocks that equals the original one."""
    k, _, cin, cout = kernel.shape
    b, s = k // stride, stride
    w = kernel.reshape(b, s, b, s, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return w.reshape(b, b, s * s * cin, cout)


class ConvSpec(NamedTuple):
    """Static description of one convolution computed as a matmul (see :func:`conv_matmul`)."""

    shape: tuple[int, ...]  # input [N, H, W, C] ('NHWC') or [N, C, H, W] ('NCHW')
    dtype: Any  # input dtype (uint8 frames or float activations)
    layout: str  # 'NHWC' or 'NCHW'
    kernel: int
    stride: int
    method: str  # 's2d' (needs kernel % stride == 0) or 'im2col'
    out_block: int = 1  # 's2d' only: output pixels in out_block x out_block blocks

    @property
    def out_hw(self) -> tuple[int, int]:
        h, w = self.shape[2:] if self.layout == "NCHW" else self.shape[1:3]
        return (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1


def gather_patches(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """Patch rows ``[N * Ho * Wo, K]`` of ``x`` (in ``x``'s dtype), ``K`` in kernel order:
    ``(kh, kw, c)`` for ``'im2col'``, ``(kh // s, kw // s, kh % s, kw % s, c)`` for ``'s2d'``
    (:func:`s2d_kernel`).

    Rows are pixels in ``(n, h, w)`` order, or with ``spec.out_block = B > 1`` in
    ``(n, h // B, w // B, h % B, w % B)`` order: a ``[N, Ho // B, Wo // B, B * B * F]`` view
    of the product is then already the next layer's ``space_to_depth`` by ``B``.
    """
    k, s, bo = spec.kernel, spec.stride, spec.out_block
    n = x.shape[0]
    ho, wo = spec.out_hw
    if spec.method == "im2col":
        if spec.layout == "NCHW":
            x = jnp.moveaxis(x, 1, -1)
        return extract_patches(x, k, s).reshape(n * ho * wo, -1)
    x = space_to_depth(x, k, s, spec.layout)
    b, hq, wq = k // s, ho // bo, wo // bo
    cols = [
        x[:, hi + i : hi + i + bo * (hq - 1) + 1 : bo, wi + j : wi + j + bo * (wq - 1) + 1 : bo]
        for hi in range(bo)
        for wi in range(bo)
        for i in range(b)
        for j in range(b)
    ]
    return jnp.stack(cols, axis=3).reshape(n * ho * wo, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_matmul(x: jax.Array, w2d: jax.Array, spec: ConvSpec) -> jax.Array:
    """A VALID convolution as ``gather_patches(x) @ w2d``: float32 ``[N * Ho * Wo, F]``.

    ``w2d [K, F]`` is the kernel in patch order (``s2d_kernel(kernel).reshape(-1, F)`` for
    ``'s2d'``, ``kernel.reshape(-1, F)`` for ``'im2col'``). Integer inputs (uint8 frames) are
    gathered as integers and converted once; they get no gradient.

    The custom backward pass exists for XLA:CPU: autodiff would compute the kernel gradient as
    ``patches^T @ g``, contracting the long ``N * Ho * Wo`` axis of two row-major arrays, which
    XLA:CPU runs on a slow generic path; ``(g^T @ patches)^T`` is the same sum, 2-3x faster.
    The input gradient is ``g @ w2d^T`` scattered back by the transpose of the gather.
    """
    return _conv_matmul_fwd(x, w2d, spec)[0]


def _conv_matmul_fwd(x, w2d, spec):
    p = gather_patches(x, spec).astype(w2d.dtype)
    return jnp.dot(p, w2d, preferred_element_type=jnp.float32), (p, w2d)


def _conv_matmul_bwd(spec, res, g):
    p, w2d = res
    g_w = jax.lax.dot_general(g, p, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    # The barrier keeps XLA from folding this transpose back into the dot (the slow form).
    g_w = jax.lax.optimization_barrier(g_w).T.astype(w2d.dtype)
    if not jnp.issubdtype(spec.dtype, jnp.floating):
        return None, g_w
    g_p = jnp.dot(g, w2d.T, preferred_element_type=jnp.float32).astype(spec.dtype)
    x_aval = jax.ShapeDtypeStruct(spec.shape, spec.dtype)
    (g_x,) = jax.linear_transpose(lambda x: gather_patches(x, spec), x_aval)(g_p)
    return g_x, g_w


conv_matmul.defvjp(_conv_matmul_fwd, _conv_matmul_bwd)


class ReLUConvMatmul(ReLUConv):
    """:class:`ReLUConv` (square kernel, equal strides, VALID, no dilation or groups) computed
    by :func:`conv_matmul`.

    Creates the same ``kernel``/``bias`` parameters, in the same order, as ``nn.Conv`` and
    returns the same post-ReLU ``[..., Ho, Wo, features]`` (what NBSP records).

    ``method``: ``'s2d'`` (space-to-depth then ``(kernel / stride)**2`` unit-stride slices;
    im2col where the stride does not divide the kernel) or ``'im2col'`` (``kernel**2`` strided
    slices). ``layout='NCHW'`` reads raw frames ``[..., C, H, W]``; ``scale`` multiplies the
    input (applied to the product, the same by linearity), so uint8 frames scaled by 1/255 are
    gathered as bytes. ``out_block``: the next layer's stride; the output pixels are computed
    in blocks of that size, so the transpose back to ``[..., Ho, Wo, C]`` and the next layer's
    space-to-depth cancel in XLA.
    """

    method: str = "s2d"
    layout: str = "NHWC"
    scale: float = 1.0
    out_block: int = 1

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        if kh != kw or self.padding != "VALID" or len(set(strides)) != 1:
            raise ValueError("ReLUConvMatmul supports square kernels, equal strides, VALID only")
        if self.method not in ("s2d", "im2col"):
            raise ValueError(f"unknown method {self.method!r}")
        k, s, f = kh, strides[0], self.features
        in_features = inputs.shape[-3] if self.layout == "NCHW" else inputs.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, in_features, f), self.param_dtype)
        bias = self.param("bias", self.bias_init, (f,), self.param_dtype)
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape(-1, *inputs.shape[-3:])
        method = self.method if k % s == 0 else "im2col"
        spec = ConvSpec(tuple(x.shape), jnp.dtype(x.dtype), self.layout, k, s, method)
        ho, wo = spec.out_hw
        bo = self.out_block
        if method == "s2d" and bo > 1 and ho % bo == 0 and wo % bo == 0:
            spec = spec._replace(out_block=bo)
        else:
            bo = 1
        w2d = s2d_kernel(kernel, s) if method == "s2d" else kernel
        dtype = jnp.promote_types(kernel.dtype, jnp.float32)
        y = conv_matmul(x, w2d.reshape(-1, f).astype(dtype), spec)
        if self.scale != 1.0:
            y = y * jnp.asarray(self.scale, y.dtype)
        y = nn.relu(y + bias)
        y = y.reshape(-1, ho // bo, wo // bo, bo, bo, f).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(*batch_shape, ho, wo, f)


def ReLUConvIm2col(*args, **kwargs) -> ReLUConvMatmul:  # noqa: N802
    """:class:`ReLUConvMatmul` with ``method='im2col'`` (the former class of that name)."""
    return ReLUConvMatmul(*args, method="im2col", **kwargs)
