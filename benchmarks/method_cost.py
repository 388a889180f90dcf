"""Gradient-step cost of each arm of the CPU Table 1 against vanilla SAC, on the window pair's
``:cpu`` config (5 seeds vmapped, [256, 256], batch 256).

    python benchmarks/method_cost.py --json out.json

Each arm's learner is built from ``configs/metaworld_window.py:cpu`` with the arm's overrides
(``experiments.ablation.ARMS``) and its state from ``init_run`` (so PI holds its injected
networks, EWC its anchors, CBP its utilities). One timed call is what the phase loop runs per
chunk of ``chunk_steps`` env steps: the fused update, CBP's replacement step for ``cbp``, and
ReDo's reset every ``redo_every`` gradient steps (its share per chunk). Buffers hold random
Meta-World-shaped transitions. The arms are timed in rotation (A, B, C, ..., A, B, C, ...), so
that each sees the same machine load; medians per gradient step, and each median over SAC's.
Environment steps, evaluation and scoring are not included: a run's wall time is this plus
those.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.update_throughput import random_buffer  # noqa: E402
from experiments.ablation import arm_fields, validate_arms  # noqa: E402


def arm_config(arm: str):
    """The window pair's ``:cpu`` config with ``arm``'s overrides (string fields only)."""
    from configs.metaworld_window import get_config

    c = get_config("cpu")
    for key, value in arm_fields(arm).items():
        if not isinstance(c[key], str):
            raise ValueError(f"{arm}: override {key}={value} is not a string field; "
                             "extend arm_config")
        c[key] = value
    return c


def chunk_call(arm: str, rows: int):
    """Returns ``(call, grad_steps, config)``: one chunk's learning for ``arm`` (a function of
    no arguments that carries the state from call to call), the gradient steps of one call,
    and the arm's config."""
    from nbsp_jax.training import make_learner
    from nbsp_jax.training.state import init_run

    c = arm_config(arm)
    learner = make_learner(c)
    device, _ = init_run(c, learner, len(c.tasks))
    S = c.num_seeds
    buf = jax.jit(jax.vmap(lambda k: random_buffer(k, rows)))(jax.random.split(
        jax.random.key(1), S))
    active = jnp.ones((S,), bool)
    steps = c.chunk_steps * c.num_envs * c.updates_per_step
    box = {"state": device.state, "cbp": device.cbp, "step": 0}
    keys = jax.random.split(jax.random.key(2), S)

    def call():
        state, info = learner.update(box["state"], buf, device.pre, jnp.int32(box["step"]),
                                     active)
        before, box["step"] = box["step"], box["step"] + steps
        if learner.spec.redo and before // c.redo_every != box["step"] // c.redo_every:
            state, _ = learner.redo(state, buf, keys)
        if learner.spec.cbp:
            state, box["cbp"], _ = learner.cbp(state, box["cbp"], buf, keys)
        box["state"] = state
        return state, info

    return call, steps, c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=["all"],
                   help="arms of the CPU Table 1 (experiments.ablation), or all")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (after 1 warm-up)")
    p.add_argument("--chunks", type=int, default=20,
                   help="chunks per timed call (ReDo resets once per 1000 gradient steps)")
    p.add_argument("--rows", type=int, default=100_000, help="buffer rows per seed")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    try:
        a.arms = validate_arms(a.arms, "baselines")
    except ValueError as e:
        p.error(str(e))
    if "sac" not in a.arms:
        raise SystemExit("--arms must include sac (the reference of every ratio)")
    calls = {}
    for arm in a.arms:
        calls[arm] = chunk_call(arm, a.rows)
    times = {arm: [] for arm in a.arms}
    for r in range(a.rounds + 1):
        for arm in a.arms:
            call, steps, _ = calls[arm]
            t0 = time.perf_counter()
            for _ in range(a.chunks):
                out = call()
            jax.block_until_ready(out)
            if r >= 1:  # the first round compiles and warms up
                times[arm].append((time.perf_counter() - t0) / (a.chunks * steps))
    per_step = {arm: statistics.median(t) for arm, t in times.items()}
    c = calls["sac"][2]
    rec = {
        "config": "configs/metaworld_window.py:cpu", "seeds": c.num_seeds,
        "hidden": list(c.hidden), "batch": c.batch_size, "chunks_per_call": a.chunks,
        "grad_steps_per_chunk": calls["sac"][1], "rounds": a.rounds,
        "ms_per_grad_step": {arm: 1e3 * v for arm, v in per_step.items()},
        "over_sac": {arm: v / per_step["sac"] for arm, v in per_step.items()},
        "all_ms": {arm: [1e3 * x for x in t] for arm, t in times.items()},
        "jax_version": jax.__version__,
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
    }
    print(json.dumps({k: v for k, v in rec.items() if k != "all_ms"}, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
