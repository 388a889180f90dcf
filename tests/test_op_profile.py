"""FLOP counting of benchmarks/op_profile.py on compiled programs with hand-counted products."""

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import op_profile  # noqa: E402


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_program_flops_counts_products_in_loops_and_batches():
    x, w = jnp.ones((4, 8)), jnp.ones((8, 8))

    def chain(x, w):  # 5 steps of a [4, 8] @ [8, 8] product, then one [8, 4] @ [4, 8]
        y = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0]
        return y.T @ y

    assert op_profile.program_flops(_hlo(chain, x, w)) == 5 * 2 * 4 * 8 * 8 + 2 * 8 * 4 * 8
    # A batch dimension counts once per batch element: 3 seeds x the same chain.
    xs, ws = jnp.ones((3, 4, 8)), jnp.ones((3, 8, 8))
    assert op_profile.program_flops(_hlo(jax.vmap(chain), xs, ws)) == 3 * (
        5 * 2 * 4 * 8 * 8 + 2 * 8 * 4 * 8)


def test_program_flops_counts_convolutions():
    x, k = jnp.ones((2, 10, 10, 3)), jnp.ones((3, 3, 3, 5))  # NHWC, HWIO, VALID: 8 x 8 out
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert op_profile.program_flops(_hlo(conv, x, k)) == 2 * (2 * 8 * 8 * 5) * (3 * 3 * 3)


def test_category_names_products_loops_and_copies():
    assert op_profile.category("fusion.3", {"kind": "fusion", "flops": 10}) == "dot/conv"
    assert op_profile.category("while.7", {"kind": "while", "flops": 0}) == "while"
    assert op_profile.category("copy.12", {"kind": "copy", "flops": 0}) == "copy"
    assert op_profile.category("add_maximum_fusion.2", {"kind": "fusion", "flops": 0}) == (
        "elementwise/other")


def test_program_flops_counts_the_costliest_branch_of_a_conditional():
    """A cond runs one branch: [4, 8] @ [8, 8] (512 FLOPs) against none; before branches were
    read, SBX's delayed actor update (inside a cond) counted as zero."""
    x, w = jnp.ones((4, 8)), jnp.ones((8, 8))

    def f(p, x, w):
        return jax.lax.cond(p, lambda: jnp.tanh(x @ w), lambda: x * 2.0)

    assert op_profile.program_flops(_hlo(f, True, x, w)) == 2 * 4 * 8 * 8
    # Inside a loop of 3 steps, each with its cond:
    g = lambda x, w: jax.lax.scan(lambda c, i: (jax.lax.cond(i % 2 == 0, lambda: c @ w,
                                                             lambda: c), None),
                                  x, jnp.arange(3))[0]
    assert op_profile.program_flops(_hlo(g, x, w)) == 3 * 2 * 4 * 8 * 8
