"""benchmarks/sac_breakdown.py times as many matrix products as it says."""

import jax.numpy as jnp

from benchmarks.op_profile import program_flops
from benchmarks.sac_breakdown import critic_matmul_chain


def test_critic_matmul_chain_does_every_pass():
    # Passes that started from one input were merged by XLA into one (1/8 of the products).
    batch, steps, widths = 16, 3, (7, 12, 12, 1)
    layers = list(zip(widths[:-1], widths[1:], strict=True))
    ws = [jnp.full((i, o), 0.01, jnp.float32) for i, o in layers]
    text = critic_matmul_chain(batch, steps).lower(ws).compile().as_text()
    per_pass = sum(2 * batch * i * o for i, o in layers)
    assert program_flops(text) == steps * 8 * per_pass
