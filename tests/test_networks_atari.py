"""Every conv_impl of the Atari networks computes the same function with the same parameters.

'xla' (lax.conv) is the reference; 's2d' and 'im2col' gather patches and run one matmul per
layer with a custom backward pass. Compared: parameter trees (structure, shapes, initial
values), outputs, gradients, and what nbsp_jax.networks.record captures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax import networks as na
from nbsp_jax.networks import ReLUConv, record

IMPLS = [i for i in na.CONV_IMPLS if i not in ("xla", "auto")]  # auto: s2d or xla
# (convs, frame size): the Nature CNN on its smallest frame (conv0 output 8x8 in 2x2 blocks
# for conv1); conv0 output in blocks of 2 then an odd map; a stride that does not divide the
# kernel (im2col fallback); an output the next stride does not divide (no blocks).
# The last two (edge cases of the block layout) run in the slow tier only: compiling the
# conv gradients is most of this file's time.
CASES = [
    (na.NATURE_CNN, 36),
    (((6, 4, 2), (5, 4, 2), (4, 3, 1)), 22),
    pytest.param(((6, 3, 2), (5, 3, 1)), 15, marks=pytest.mark.slow),
    pytest.param(((6, 4, 2), (5, 2, 2)), 20, marks=pytest.mark.slow),
]


def _obs(n, size, seed=1):
    return jax.random.randint(jax.random.key(seed), (n, 4, size, size), 0, 256).astype(jnp.uint8)


def _nets(convs, impl):
    kw = dict(num_actions=5, hidden=(16, 8), convs=convs)
    return na.DiscreteQ(**kw, conv_impl="xla"), na.DiscreteQ(**kw, conv_impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("convs,size", CASES)
def test_same_parameters_outputs_gradients_and_records(impl, convs, size):
    ref, net = _nets(convs, impl)
    obs = _obs(3, size)
    v_ref = jax.jit(ref.init)(jax.random.key(0), obs)
    v = jax.jit(net.init)(jax.random.key(0), obs)
    # Same tree, shapes and initial values (NBSP masks index the same leaves).
    assert jax.tree.structure(v) == jax.tree.structure(v_ref)
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v_ref), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert v["params"]["conv0"]["kernel"].shape == (convs[0][1], convs[0][1], 4, convs[0][0])

    def parts(model, v):
        out, acts = record(model, v, obs)
        grad = jax.grad(lambda v: (model.apply(v, obs) ** 2).sum())(v)
        return out, acts, grad

    out_ref, acts_ref, g_ref = jax.jit(lambda v: parts(ref, v))(v_ref)
    out, acts, g = jax.jit(lambda v: parts(net, v))(v_ref)
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-5)
    # Captured activations: same names and shapes (channel means of post-ReLU maps).
    assert {k: a.shape for k, a in acts.items()} == {k: a.shape for k, a in acts_ref.items()}
    assert sorted(acts) == [f"conv{i}" for i in range(len(convs))] + ["fc0", "fc1"]
    for k in acts:
        np.testing.assert_allclose(acts[k], acts_ref[k], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("method", ["s2d", "im2col"])
@pytest.mark.parametrize("k,s,size,out_block", [
    (4, 2, 12, 1), pytest.param(4, 2, 14, 2, marks=pytest.mark.slow), (3, 2, 11, 1)])
def test_matmul_conv_layer_matches_relu_conv_with_input_gradient(method, k, s, size, out_block):
    """One layer on float NHWC input with leading batch dims: output, the full captured
    output map, and the gradients of kernel, bias and input."""
    common = dict(features=6, kernel_size=(k, k), strides=(s, s), padding="VALID")
    ref = ReLUConv(**common)
    layer = na.ReLUConvMatmul(**common, method=method, out_block=out_block)
    x = jax.random.normal(jax.random.key(0), (2, 3, size, size, 5))
    v = ref.init(jax.random.key(1), x)
    assert jax.tree.structure(layer.init(jax.random.key(1), x)) == jax.tree.structure(v)

    def f(model, v, x):
        y = model.apply(v, x)
        return y, jax.grad(lambda v, x: jnp.sum(jnp.sin(model.apply(v, x))), (0, 1))(v, x)

    y_ref, g_ref = jax.jit(lambda v, x: f(ref, v, x))(v, x)
    y, g = jax.jit(lambda v, x: f(layer, v, x))(v, x)
    assert y.shape == y_ref.shape == (2, 3, (size - k) // s + 1, (size - k) // s + 1, 6)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # the Nature CNN's gradients, vmapped and scanned: ~5 s to compile
def test_gradients_under_vmap_and_scan_match():
    """The training loop takes gradients inside lax.scan, vmapped over seeds."""
    ref, net = _nets(na.NATURE_CNN, "s2d")
    obs = _obs(2, 36)
    vs = jax.vmap(lambda k: ref.init(k, obs))(jax.random.split(jax.random.key(0), 2))

    def steps(model):
        def one(v):
            def body(v, _):
                g = jax.grad(lambda v: (model.apply(v, obs) ** 2).mean())(v)
                return jax.tree.map(lambda p, d: p - 1e-3 * d, v, g), None
            return jax.lax.scan(body, v, None, length=2)[0]
        return jax.jit(jax.vmap(one))

    for a, b in zip(jax.tree.leaves(steps(net)(vs)), jax.tree.leaves(steps(ref)(vs)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_space_to_depth_kernel_and_patch_order():
    # A kernel/stride conv of x equals the stride-1 conv of its blocks with s2d_kernel weights.
    x = jax.random.normal(jax.random.key(0), (2, 10, 10, 3))
    w = jax.random.normal(jax.random.key(1), (4, 4, 3, 5))
    dn = ("NHWC", "HWIO", "NHWC")
    direct = jax.lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=dn)
    blocks = jax.lax.conv_general_dilated(
        na.space_to_depth(x, 4, 2), na.s2d_kernel(w, 2), (1, 1), "VALID", dimension_numbers=dn)
    np.testing.assert_allclose(blocks, direct, rtol=1e-5, atol=1e-5)
    # NCHW frames give the same blocks as their NHWC transpose.
    frames = jnp.moveaxis(x, -1, 1)
    np.testing.assert_array_equal(na.space_to_depth(frames, 4, 2, "NCHW"),
                                  na.space_to_depth(x, 4, 2))
    # Patch rows of 'im2col' are in (kh, kw, c) order, like a Flax kernel reshaped.
    spec = na.ConvSpec(tuple(x.shape), x.dtype, "NHWC", 3, 2, "im2col")
    p = na.gather_patches(x, spec).reshape(2, 4, 4, -1)
    np.testing.assert_array_equal(p[1, 2, 1], x[1, 4:7, 2:5, :].reshape(-1))


def test_auto_resolves_by_backend_and_unknown_impl_is_rejected():
    expected = "s2d" if jax.default_backend() == "cpu" else "xla"
    assert na.resolve_conv_impl("auto") == expected
    assert na.DiscreteQ(18).conv_impl == "auto"
    with pytest.raises(ValueError, match="conv_impl"):
        na.DiscreteQ(3, conv_impl="winograd").init(jax.random.key(0), _obs(1, 36))
