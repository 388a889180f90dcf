"""Cost of NBSP against vanilla SAC on the same config.

    python benchmarks/nbsp_overhead.py --hidden 768,768,768 --seeds 1 --json out.json

1. Per-update time: the fused update of ``method='sac'`` and ``method='nbsp'`` (masks in the
   optimizer, earlier-task replay every k-th step) on random data, timed in alternation
   (A, B, A, B, ...) so both see the same machine load; medians and their ratio.
2. End of task: time to record activations of the three networks on ``--score-steps``
   recorded steps, score, build and install masks (``Learner.end_task``), and to copy
   ``--store`` transitions into the earlier-task buffer (``Learner.store``); medians after a
   compile call.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.update_throughput import random_buffer  # noqa: E402


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> None:
    from nbsp_jax.agents.sac import init_state
    from nbsp_jax.config import base_config
    from nbsp_jax.training import make_learner, seed_keys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="768,768,768")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--score-steps", type=int, default=10_000)
    p.add_argument("--store", type=int, default=100_000)
    p.add_argument("--buffer", type=int, default=1_000_000)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    hidden = tuple(int(h) for h in a.hidden.split(","))
    S = a.seeds

    def setup(method, buffer_rows):
        c = base_config()
        c.hidden, c.batch_size, c.num_seeds, c.method = hidden, a.batch, S, method
        c.chunk_steps, c.num_envs, c.updates_per_step = a.updates, 1, 1
        c.replay_store_size = a.store
        learner = make_learner(c)
        state = jax.vmap(lambda k: init_state(learner.agent, k))(seed_keys(0, S))
        return learner, state

    keys = jax.random.split(jax.random.key(1), S)
    active = jnp.ones((S,), bool)
    buf = jax.jit(jax.vmap(lambda k: random_buffer(k, 100_000)))(keys)
    runs = {}
    for method in ("sac", "nbsp"):
        learner, state = setup(method, 100_000)
        runs[method] = [learner, state]
        state, info = learner.update(state, buf, buf, jnp.int32(0), active)  # compile
        runs[method][1] = state
    times = {"sac": [], "nbsp": []}
    for _ in range(a.repeats):
        for method in ("sac", "nbsp"):
            learner, state = runs[method]
            t0 = time.perf_counter()
            state, info = learner.update(state, buf, buf, jnp.int32(0), active)
            jax.block_until_ready(info)
            times[method].append(time.perf_counter() - t0)
            runs[method][1] = state
    per_update = {m: statistics.median(t) / a.updates for m, t in times.items()}

    # End of task on the nbsp learner.
    learner, state = runs["nbsp"]
    k = jax.random.split(jax.random.key(3), 3)
    T = a.score_steps
    obs = jax.random.normal(k[0], (S, T, 39))
    act = jax.random.uniform(k[1], (S, T, 4), minval=-1, maxval=1)
    goal = (jax.random.uniform(k[2], (S, T)) > 0.5).astype(jnp.float32)
    valid = jnp.ones((S, T), bool)
    end = lambda: learner.end_task(state, obs, act, goal, valid, seed_keys(1, S))
    t0 = time.perf_counter()
    jax.block_until_ready(end())
    end_compile = time.perf_counter() - t0
    end_med, _ = _median_time(end, max(3, a.repeats // 2))
    big = jax.jit(jax.vmap(lambda k: random_buffer(k, a.buffer)))(keys)
    from nbsp_jax.buffers import transitions as replay

    def fresh_pre():
        return jax.vmap(lambda _: replay.init_buffer(a.store * 3, 39, 4))(jnp.arange(S))

    pre = fresh_pre()
    t0 = time.perf_counter()
    jax.block_until_ready(learner.store(pre, big, seed_keys(2, S)))
    store_compile = time.perf_counter() - t0
    store_times = []
    for _ in range(3):
        pre = fresh_pre()
        jax.block_until_ready(pre)
        t0 = time.perf_counter()
        jax.block_until_ready(learner.store(pre, big, seed_keys(2, S)))
        store_times.append(time.perf_counter() - t0)
    rec = {
        "hidden": list(hidden), "batch": a.batch, "seeds": S, "updates_per_call": a.updates,
        "repeats": a.repeats,
        "sac_update_ms": 1e3 * per_update["sac"],
        "nbsp_update_ms": 1e3 * per_update["nbsp"],
        "nbsp_over_sac": per_update["nbsp"] / per_update["sac"],
        "score_steps": T,
        "end_task_s": end_med, "end_task_compile_s": end_compile,
        "store": a.store, "buffer_rows": a.buffer,
        "store_s": statistics.median(store_times), "store_compile_s": store_compile,
        "jax_version": jax.__version__,
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
    }
    print(json.dumps(rec, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
