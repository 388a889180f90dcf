"""optax Adam against a plain parameter stream: is the optimizer step memory bound here?

    python benchmarks/adam_bandwidth.py --repeats 5

On parameters shaped like the Atari networks' (three copies of Dense 3136->768, 768->768,
768->18; 9.04 M floats), times ``--steps`` optax Adam steps (``update`` + ``apply_updates``)
in one jitted ``lax.scan``, and the same number of ``p += 1e-3 * g`` steps. Prints ms per step
and GB/s counting the minimum traffic: Adam reads g, mu, nu, p and writes mu, nu, p (7 arrays);
the stream reads p, g and writes p (3). Equal GB/s means Adam runs at memory speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.nbsp_overhead import _median_time  # noqa: E402

SHAPES = [(3136, 768), (768,), (768, 768), (768,), (768, 18), (18,)] * 3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    params = [jnp.full(s, 0.01, jnp.float32) for s in SHAPES]
    grads = [jnp.full(s, 1e-3, jnp.float32) for s in SHAPES]
    n = sum(x.size for x in params)
    opt = optax.adam(3e-4)

    @jax.jit
    def adam(params, state, grads):
        def step(c, i):
            p, s = c
            u, s = opt.update([g * (1 + i * 1e-3) for g in grads], s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(step, (params, state), jnp.arange(a.steps))[0]

    @jax.jit
    def stream(params, grads):
        step = lambda p, _: ([x + 1e-3 * g for x, g in zip(p, grads, strict=True)], None)
        return jax.lax.scan(step, params, None, length=a.steps)[0]

    state = opt.init(params)
    rec = {"params_m": n / 1e6, "steps": a.steps, "repeats": a.repeats}
    for name, fn, args, arrays in (("adam", adam, (params, state, grads), 7),
                                   ("stream", stream, (params, grads), 3)):
        jax.block_until_ready(fn(*args))
        t = _median_time(lambda fn=fn, args=args: fn(*args), a.repeats)[0] / a.steps
        rec[name] = {"ms_per_step": t * 1e3, "gb_per_s": arrays * n * 4 / t / 1e9}
        print(f"{name:<7} {t * 1e3:7.2f} ms/step  {rec[name]['gb_per_s']:5.1f} GB/s "
              f"({arrays} arrays of {n / 1e6:.2f} M floats)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
