"""Where one continuous SAC update's time goes on this machine (a cost breakdown).

    python benchmarks/sac_breakdown.py --hidden 256,256 --batch 256 --steps 50 --repeats 5

Times ``steps`` iterations, each in one jitted ``lax.scan`` (median of ``repeats`` calls after
warm-up), of: drawing a batch from a 1e5-row buffer; one critic update on a fixed batch; one
actor + temperature update on a fixed batch; a bare [batch, hidden] matmul chain with the same
FLOPs as the critic update's dense layers; and the full fused update (``sac.update_many``,
per gradient step). The parts do not add up exactly (XLA fuses across them in the full
update), but show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

from nbsp_jax.agents import sac
from nbsp_jax.buffers import transitions as replay

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.nbsp_overhead import _median_time  # noqa: E402


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    return _median_time(lambda: fn(*args), repeats)[0]


def critic_matmul_chain(batch: int, steps: int, passes: int = 8):
    """A jitted ``f(ws) -> scalar``: ``steps`` iterations of ``passes`` MLP passes (ReLU
    between the layers ``ws [in, out]``) over a ``[batch, ws[0].shape[0]]`` input, in one
    ``lax.scan``; the matrix products of the critic update without the rest (8 passes: 2
    critics x 1 forward on the next observations, 1 forward, 2 backward)."""

    @jax.jit
    def run(ws):
        def body(c, i):
            x = jnp.ones((batch, ws[0].shape[0])) * c
            for _ in range(passes):
                h = x
                for w in ws:
                    h = jnp.maximum(h @ w, 0.0) if w.shape[1] > 1 else h @ w
                # Each pass starts from the previous one's output: passes from one input
                # would be merged by XLA into a single pass (CSE).
                x = x + h.mean() * 1e-9
            return c + x.mean(), None
        return jax.lax.scan(body, 0.0, jnp.arange(steps))[0]

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json")
    a = p.parse_args()
    hidden = tuple(int(x) for x in a.hidden.split(","))
    agent = sac.make_sac(39, 4, hidden=hidden, batch_size=a.batch)
    state = sac.init_state(agent, jax.random.key(0))
    n = 100_000
    k = jax.random.split(jax.random.key(1), 3)
    buf = replay.add(replay.init_buffer(n, 39, 4), replay.Transition(
        jax.random.normal(k[0], (n, 39)), jax.random.uniform(k[1], (n, 4), minval=-1, maxval=1),
        jnp.zeros(n), jax.random.normal(k[2], (n, 39)), jnp.zeros(n)), jnp.ones(n, bool))
    batch = replay.sample(buf, jax.random.key(2), a.batch)
    steps = a.steps

    @jax.jit
    def sample_only(buf):
        def body(c, i):
            b = replay.sample(buf, jax.random.fold_in(jax.random.key(3), i), a.batch)
            return c + b.reward.sum(), None
        return jax.lax.scan(body, 0.0, jnp.arange(steps))[0]

    # As in update_many, the noise is drawn before the loop.
    noise = jax.random.normal(jax.random.key(4), (steps, 2, a.batch, 4))

    @jax.jit
    def critic_only(state, batch):
        def body(s, n):
            return sac.critic_update(agent, s, batch, n[0])[0], None
        return jax.lax.scan(body, state, noise)[0]

    @jax.jit
    def actor_only(state, batch):
        def body(s, n):
            return sac.actor_alpha_update(agent, s, batch.obs, n)[0], None
        return jax.lax.scan(body, state, noise)[0]

    @jax.jit
    def full(state, buf):
        return sac.update_many(agent, state, replay.sampler(buf, agent.batch_size), steps, 0)[0]

    # The critic update's dense FLOPs: per net forward on obs+next (target) and backward,
    # approximated by 2 critics x (1 forward next + 1 forward + 2 backward) passes of the MLP.
    widths = (43, *hidden, 1)
    ws = [jnp.full((i, o), 0.01, jnp.float32) for i, o in zip(widths[:-1], widths[1:],
                                                                strict=True)]
    matmuls = critic_matmul_chain(a.batch, steps)

    rec = {"hidden": list(hidden), "batch": a.batch, "steps": steps, "jax": jax.__version__}
    for name, fn, args in (("sample", sample_only, (buf,)), ("critic_update", critic_only,
                           (state, batch)), ("actor_alpha_update", actor_only, (state, batch)),
                           ("critic_matmuls_only", matmuls, (ws,)), ("full_update", full,
                                                                    (state, buf))):
        rec[name + "_ms"] = 1e3 * _time(fn, *args, repeats=a.repeats) / steps
    print(json.dumps(rec, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
