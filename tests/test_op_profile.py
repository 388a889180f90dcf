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
