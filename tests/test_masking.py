"""Tests for nbsp_jax.method.masking: the masked_scale transform, set_masks, masks_from_layers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nbsp_jax.method import (
    MaskedScaleState,
    get_masks,
    layer_paths,
    masked_scale,
    masks_from_layers,
    ones_masks,
    set_masks,
)

LR = 1e-2


def tiny_params(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "dense": {
            "kernel": jax.random.normal(k1, (3, 4)),
            "bias": jax.random.normal(k2, (4,)),
        },
        "conv": {"kernel": jax.random.normal(k3, (2, 2, 3, 4))},
    }


def tiny_masks():
    return {
        "dense": {
            "kernel": jnp.array([1.0, 0.0, 0.5, 0.02]),
            "bias": jnp.array([0.0, 1.0, 0.25, 1.0]),
        },
        "conv": {"kernel": jnp.array([0.1, 1.0, 0.0, 1.0])},
    }


def loss_fn(params):
    return sum(
        jnp.sum((p - 1.0) ** 2 * jnp.arange(1, p.size + 1).reshape(p.shape) / p.size)
        for p in jax.tree.leaves(params)
    )


def test_init_ones_shapes_and_scalar():
    params = dict(tiny_params(), temp=jnp.array(0.3))
    state = masked_scale().init(params)
    assert isinstance(state, MaskedScaleState)
    shapes = jax.tree.map(lambda m: m.shape, state.masks)
    assert shapes == {"dense": {"kernel": (4,), "bias": (4,)}, "conv": {"kernel": (4,)}, "temp": ()}
    for m in jax.tree.leaves(state.masks):
        assert m.dtype == jnp.float32
        np.testing.assert_array_equal(m, 1.0)
    # A 0-d leaf is scaled by its 0-d mask.
    state = set_masks(state, dict(ones_masks(tiny_params()), temp=jnp.array(0.5)))
    upd, _ = masked_scale().update(jax.tree.map(jnp.ones_like, params), state)
    assert upd["temp"].shape == () and float(upd["temp"]) == 0.5


def test_masked_update_equals_mask_times_adam():
    params = tiny_params()
    grads = jax.grad(loss_fn)(params)
    masks = tiny_masks()
    adam = optax.adam(LR)
    opt = optax.chain(optax.adam(LR), masked_scale())
    state = set_masks(opt.init(params), masks)
    ref_state = adam.init(params)
    for _ in range(3):  # a few steps so that Adam's moments are non-trivial
        upd, state = opt.update(grads, state, params)
        ref, ref_state = adam.update(grads, ref_state, params)
        # Hand-built reference: column j of every leaf times mask[j].
        np.testing.assert_allclose(
            upd["dense"]["kernel"],
            np.asarray(ref["dense"]["kernel"]) * np.asarray(masks["dense"]["kernel"])[None, :],
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            upd["dense"]["bias"],
            np.asarray(ref["dense"]["bias"]) * np.asarray(masks["dense"]["bias"]),
            rtol=1e-6,
        )
        conv_ref = np.asarray(ref["conv"]["kernel"]) * np.asarray(masks["conv"]["kernel"]).reshape(
            1, 1, 1, 4
        )
        np.testing.assert_allclose(upd["conv"]["kernel"], conv_ref, rtol=1e-6)
        assert float(jnp.abs(ref["dense"]["kernel"][:, 1]).min()) > 0  # mask 0 matters
        np.testing.assert_array_equal(upd["dense"]["kernel"][:, 1], 0.0)


def test_zero_masked_units_never_move():
    params0 = tiny_params()
    opt = optax.chain(optax.adam(LR), masked_scale())
    state = set_masks(opt.init(params0), tiny_masks())

    @jax.jit
    def step(params, state):
        upd, state = opt.update(jax.grad(loss_fn)(params), state, params)
        return optax.apply_updates(params, upd), state

    params = params0
    for _ in range(100):
        params, state = step(params, state)
    k0, k1 = params0["dense"]["kernel"], params["dense"]["kernel"]
    np.testing.assert_array_equal(k1[:, 1], k0[:, 1])
    assert np.all(np.abs(k1[:, [0, 2, 3]] - k0[:, [0, 2, 3]]) > 1e-4)
    np.testing.assert_array_equal(params["dense"]["bias"][0], params0["dense"]["bias"][0])
    assert np.all(np.abs(params["dense"]["bias"][1:] - params0["dense"]["bias"][1:]) > 1e-4)
    c0, c1 = params0["conv"]["kernel"], params["conv"]["kernel"]
    np.testing.assert_array_equal(c1[..., 2], c0[..., 2])
    assert np.all(np.abs(c1[..., [0, 1, 3]] - c0[..., [0, 1, 3]]) > 1e-5)


def test_scaling_before_adam_is_cancelled_after_adam_is_not():
    """Spec section 4: a factor on the gradient is undone by Adam, a factor on the update isn't."""
    n, steps, factor = 8, 50, 0.01
    key = jax.random.PRNGKey(1)
    # Noisy gradients with a consistent sign per coordinate (as from a real loss).
    grads = 1.0 + 0.5 * jax.random.normal(key, (steps, n))

    def run(opt):
        p = jnp.zeros(n)
        state = opt.init(p)
        for g in grads:
            upd, state = opt.update(g, state, p)
            p = optax.apply_updates(p, upd)
        return p

    plain = run(optax.adam(LR))
    before = run(optax.chain(optax.scale(factor), optax.adam(LR)))
    after_opt = optax.chain(optax.adam(LR), masked_scale())
    after = run(
        optax.GradientTransformation(
            lambda p: set_masks(after_opt.init(p), jnp.full((n,), factor)),
            after_opt.update,
        )
    )
    ratio_before = np.abs(before) / np.abs(plain)
    ratio_after = np.abs(after) / np.abs(plain)
    assert np.all(ratio_before > 0.9), ratio_before
    np.testing.assert_allclose(ratio_after, factor, rtol=1e-4)


def test_no_recompilation_when_masks_change():
    traces = []
    params = tiny_params()
    opt = optax.chain(optax.adam(LR), masked_scale())

    @jax.jit
    def step(params, state):
        traces.append(1)  # Python side effect: runs only while tracing
        upd, state = opt.update(jax.grad(loss_fn)(params), state, params)
        return optax.apply_updates(params, upd), state

    state = opt.init(params)
    p1, state = step(params, state)
    # New values, given as float64 numpy: cast to float32, so the avals are unchanged.
    new = jax.tree.map(lambda m: np.full(m.shape, 0.3), ones_masks(params))
    new["dense"]["bias"] = np.array([0.0, 0.1, 0.2, 0.3])
    state = set_masks(state, new)
    p2, state = step(p1, state)
    state = set_masks(state, tiny_masks())
    p3, state = step(p2, state)
    assert len(traces) == 1
    np.testing.assert_array_equal(p3["dense"]["kernel"][:, 1], p2["dense"]["kernel"][:, 1])
    assert not np.allclose(p2["dense"]["kernel"][:, 1], p1["dense"]["kernel"][:, 1])


def test_vmap_over_seeds_matches_per_seed():
    seeds = 3
    params = jax.tree.map(lambda *x: jnp.stack(x), *[tiny_params(s) for s in range(seeds)])
    masks = jax.tree.map(lambda m: jnp.stack([m, 1.0 - m, jnp.full_like(m, 0.5)]), tiny_masks())
    opt = optax.chain(optax.adam(LR), masked_scale())

    def step(params, state):
        upd, state = opt.update(jax.grad(loss_fn)(params), state, params)
        return optax.apply_updates(params, upd), state

    @jax.jit
    @jax.vmap
    def init_and_steps(params, masks):
        state = set_masks(opt.init(params), masks)  # set_masks inside vmap: per-seed shapes
        for _ in range(3):
            params, state = step(params, state)
        return params, state

    v_params, v_state = init_and_steps(params, masks)
    assert get_masks(v_state)["dense"]["kernel"].shape == (seeds, 4)
    for s in range(seeds):
        p_s = jax.tree.map(lambda x, s=s: x[s], params)
        m_s = jax.tree.map(lambda x, s=s: x[s], masks)
        state = set_masks(opt.init(p_s), m_s)
        for _ in range(3):
            p_s, state = step(p_s, state)
        for a, b in zip(jax.tree.leaves(p_s), jax.tree.leaves(v_params), strict=True):
            np.testing.assert_allclose(a, b[s], rtol=1e-5, atol=1e-6)
    # Outside vmap, a seed-batched state takes seed-batched masks.
    v_state = set_masks(v_state, jax.tree.map(jnp.zeros_like, masks))
    np.testing.assert_array_equal(get_masks(v_state)["conv"]["kernel"], 0.0)


def test_set_masks_on_chain_nested_and_bare_state():
    params = tiny_params()
    masks = tiny_masks()
    opt = optax.chain(optax.adam(LR), masked_scale())
    state = set_masks(opt.init(params), masks)
    assert isinstance(state, tuple) and isinstance(state[1], MaskedScaleState)
    np.testing.assert_array_equal(state[1].masks["conv"]["kernel"], masks["conv"]["kernel"])
    # Adam's state is untouched.
    assert state[0] is not None and jax.tree.structure(state[0]) == jax.tree.structure(
        opt.init(params)[0]
    )
    # Nested: two chains, each with a mask, inside a tuple of a dict.
    nested = ({"actor": opt.init(params)}, optax.chain(optax.sgd(1.0), masked_scale()).init(params))
    nested = set_masks(nested, masks)
    for m in (nested[0]["actor"][1].masks, nested[1][1].masks):
        np.testing.assert_array_equal(m["dense"]["bias"], masks["dense"]["bias"])
    bare = set_masks(MaskedScaleState(ones_masks(params)), masks)
    np.testing.assert_array_equal(bare.masks["dense"]["kernel"], masks["dense"]["kernel"])
    # Inside jit.
    jitted = jax.jit(set_masks)(opt.init(params), masks)
    np.testing.assert_array_equal(get_masks(jitted)["dense"]["kernel"], masks["dense"]["kernel"])


def test_set_masks_errors():
    params = tiny_params()
    state = optax.chain(optax.adam(LR), masked_scale()).init(params)
    with pytest.raises(ValueError, match="no MaskedScaleState"):
        set_masks(optax.adam(LR).init(params), tiny_masks())
    bad = tiny_masks()
    del bad["conv"]
    with pytest.raises(ValueError, match=r"missing paths \[\"\['conv'\]\['kernel'\]\"\]"):
        set_masks(state, bad)
    bad = tiny_masks()
    bad["dense"]["bias"] = jnp.ones(5)
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\] has shape \(5,\), expected \(4,"):
        set_masks(state, bad)


def test_masks_from_layers_and_layer_paths():
    inner = {
        "fc0": {"kernel": jnp.zeros((5, 3)), "bias": jnp.zeros(3)},
        "trunk": {"conv0": {"kernel": jnp.zeros((2, 2, 1, 2)), "bias": jnp.zeros(2)}},
        "out": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)},
    }
    vec = jnp.array([0.1, 1.0, 0.0])
    conv = jnp.array([0.5, 0.02])
    for params in (inner, {"params": inner}):
        assert layer_paths(params) == ["fc0", "out", "trunk/conv0"]
        masks = masks_from_layers(params, {"fc0": vec, "trunk/conv0": conv})
        m = masks["params"] if "params" in masks else masks
        np.testing.assert_array_equal(m["fc0"]["kernel"], vec)
        np.testing.assert_array_equal(m["fc0"]["bias"], vec)
        np.testing.assert_allclose(m["trunk"]["conv0"]["kernel"], conv)
        np.testing.assert_allclose(m["trunk"]["conv0"]["bias"], conv)
        np.testing.assert_array_equal(m["out"]["kernel"], jnp.ones(2))
        assert jax.tree.structure(masks) == jax.tree.structure(ones_masks(params))
        # Plugs into an optimizer built on the same tree.
        state = masked_scale().init(params)
        set_masks(state, masks)
    with pytest.raises(
        ValueError,
        match=r"unknown layer keys \['conv0', 'fc9'\]; "
        r"valid layers: \['fc0', 'out', 'trunk/conv0'\]",
    ):
        masks_from_layers(inner, {"fc9": vec, "conv0": conv, "fc0": vec})
    with pytest.raises(ValueError, match=r"layer 'fc0' has shape \(2,\)"):
        masks_from_layers(inner, {"fc0": jnp.ones(2)})


@pytest.mark.parametrize("placement", ["update", "gradient"])
def test_mask_placement_through_the_learners_optimizer(placement):
    """The learner's actor optimizer, on a 2-unit layer with a constant gradient: 200 unmasked
    steps, then unit 1 masked by c = 0.02. After Adam ('update') the unit moves c times as far
    at every step; before Adam ('gradient') the factor fades as Adam's second moment forgets
    the unmasked gradients, exactly as Adam's recurrence gives:
    step_t = lr * m_t / (1 - b1^t) / (sqrt(v_t / (1 - b2^t)) + eps)."""
    from nbsp_jax.training import make_learner
    from tests.conftest import tiny_config

    c = tiny_config(method="nbsp", hidden=(8,), mask_placement=placement)
    opt = make_learner(c).agent.actor_opt
    params = {"kernel": jnp.zeros((1, 2)), "bias": jnp.zeros(2)}
    grads = jax.tree.map(jnp.ones_like, params)
    lr, b1, b2, eps, cmask, n0, n1 = 3e-4, 0.9, 0.999, 1e-8, 0.02, 200, 8000

    def run(state, n):
        def body(s, _):
            u, s = opt.update(grads, s, params)
            return s, u["kernel"][0]
        return jax.lax.scan(body, state, None, length=n)

    state, _ = run(opt.init(params), n0)
    state = set_masks(state, {"kernel": jnp.array([1.0, cmask]), "bias": jnp.array([1.0, cmask])})
    _, steps = run(state, n1)
    steps = -np.asarray(steps, np.float64)  # [n1, 2]: the two units' step sizes
    np.testing.assert_allclose(steps[:, 0], lr, rtol=1e-4)  # the free unit
    ratio = steps[:, 1] / steps[:, 0]
    if placement == "update":
        np.testing.assert_allclose(ratio, cmask, rtol=1e-4)
        return
    # Hand-computed Adam on the masked gradient sequence (1 for n0 steps, then c).
    g = np.r_[np.ones(n0), np.full(n1, cmask)]
    m = v = 0.0
    expected = []
    for t, gt in enumerate(g, start=1):
        m, v = b1 * m + (1 - b1) * gt, b2 * v + (1 - b2) * gt**2
        expected.append(lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    np.testing.assert_allclose(steps[:, 1], expected[n0:], rtol=2e-3)
    assert ratio[20] < 0.25 and ratio[-1] > 0.5  # the restriction fades: half gone by 8k steps
