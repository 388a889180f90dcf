"""EWC as an optax transform: the penalty gradient, its sums over tasks, online decay, the
Fisher estimate, and no recompilation on consolidation — all against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nbsp_jax.method import EWCState, consolidate, diagonal_fisher, ewc, get_ewc


def test_gradient_is_lambda_fisher_times_distance_to_the_anchor():
    params = {"w": jnp.array([1.0, 2.0, 3.0])}
    opt = optax.chain(ewc(0.5), optax.sgd(1.0))
    state = opt.init(params)
    grads = {"w": jnp.array([0.1, 0.1, 0.1])}
    # No task consolidated yet: the identity.
    upd, _ = opt.update(grads, state, params)
    np.testing.assert_allclose(upd["w"], [-0.1, -0.1, -0.1])
    # Task 1: F = [1, 0, 4] at theta* = [0, 0, 1]. Penalty gradient 0.5 * F * (theta - theta*)
    # = [0.5, 0, 4]; sgd(1) negates: -(0.1 + [0.5, 0, 4]).
    state = consolidate(state, {"w": jnp.array([1.0, 0.0, 4.0])},
                        {"w": jnp.array([0.0, 0.0, 1.0])})
    upd, _ = opt.update(grads, state, params)
    np.testing.assert_allclose(upd["w"], [-0.6, -0.1, -4.1], rtol=1e-6)


def test_two_tasks_sum_and_online_decay():
    """Two tasks: gradient = lam * (F1 (theta - a1) + F2 (theta - a2)); with decay gamma the
    first term is scaled by gamma."""
    theta = {"w": jnp.array([2.0, -1.0])}
    f1, a1 = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 1.0])}
    f2, a2 = {"w": jnp.array([3.0, 0.5])}, {"w": jnp.array([0.0, -3.0])}
    zero = {"w": jnp.zeros(2)}
    for gamma in (1.0, 0.25):
        t = ewc(2.0)
        state = consolidate(consolidate(t.init(theta), f1, a1, gamma), f2, a2, gamma)
        upd, _ = t.update(zero, state, theta)
        # By hand, gamma = 1: 2 * ([1*1 + 3*2, 2*(-2) + 0.5*2]) = [14, -6]
        # gamma = 0.25: 2 * ([0.25*1 + 6, 0.25*(-4) + 1]) = [12.5, 0]
        expected = [14.0, -6.0] if gamma == 1.0 else [12.5, 0.0]
        np.testing.assert_allclose(upd["w"], expected, rtol=1e-6)


def test_diagonal_fisher_is_the_mean_squared_per_example_gradient():
    # loss(theta, x) = 0.5 * (theta . x)^2: gradient (theta . x) x.
    theta = jnp.array([1.0, -2.0])
    xs = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    f = diagonal_fisher(lambda p, x: 0.5 * jnp.dot(p, x) ** 2, theta, xs, chunk=2)
    # theta . x = 1, -2, -1, 0 -> gradients [1,0], [0,-2], [-1,-1], [0,0]; squares' mean:
    np.testing.assert_allclose(f, [(1 + 0 + 1 + 0) / 4, (0 + 4 + 1 + 0) / 4])
    # 4 examples in chunks of 3: the padding rows weigh nothing.
    f3 = diagonal_fisher(lambda p, x: 0.5 * jnp.dot(p, x) ** 2, theta, xs, chunk=3)
    np.testing.assert_allclose(f3, [0.5, 1.25], rtol=1e-6)
    # Weights [1, 0, 3, 0]: (1*[1,0] + 3*[1,1]) / 4.
    fw = diagonal_fisher(lambda p, x: 0.5 * jnp.dot(p, x) ** 2, theta, xs, chunk=3,
                         weights=jnp.array([1.0, 0.0, 3.0, 0.0]))
    np.testing.assert_allclose(fw, [1.0, 0.75], rtol=1e-6)
    with pytest.raises(ValueError, match=r"weights have shape \(3,\); expected \(4,\)"):
        diagonal_fisher(lambda p, x: 0.5 * jnp.dot(p, x) ** 2, theta, xs, weights=jnp.ones(3))


def test_consolidation_changes_values_not_shapes_jit_and_vmap():
    params = {"w": jnp.ones((2, 3))}  # 2 seeds of a 3-parameter model
    opt = optax.chain(ewc(1.0), optax.sgd(1.0))
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        return jax.vmap(lambda p, s: opt.update(jax.tree.map(jnp.zeros_like, p), s, p)[0])(p, s)

    state = jax.vmap(opt.init)(params)
    step(params, state)
    fisher = {"w": jnp.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])}
    state = jax.vmap(consolidate)(state, fisher, {"w": jnp.zeros((2, 3))})
    upd = step(params, state)
    assert len(traces) == 1
    np.testing.assert_allclose(upd["w"], [[-1.0] * 3, [-2.0] * 3])  # per seed its own F
    assert isinstance(get_ewc(state), EWCState)
    with pytest.raises(ValueError, match="no EWCState"):
        get_ewc(optax.sgd(1.0).init(params))
