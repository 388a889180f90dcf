"""The benchmark suite: update throughput, seed scaling, env throughput, end-to-end training.

    python benchmarks/run_all.py [--quick] --out DIR

Writes ``DIR/benchmarks.json`` and ``DIR/benchmarks.md`` (the README's performance tables).
Every number is a median over repeats measured in this process; ratios are between numbers of
the same run. Parts:

- ``update``: fused SAC updates/s on random replay data (:mod:`update_throughput`):
  continuous [256, 256] and [768]x3 at batch 256, and the Atari network (Nature CNN +
  [768, 768], 18 actions) at batch 64.
- ``seeds``: [256, 256] updates/s for 1, 2, 4, 8 vmapped seeds (aggregate and per seed).
- ``env``: EnvPool steps/s with random actions: Meta-World (3 envs) and Atari Pong (3 envs).
- ``train``: a short real training run (reach-v3, [256, 256], 3 seeds), its env steps/s per seed
  and the wall time split into env stepping, policy calls and learner; compile time included.
- peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.update_throughput import measure  # noqa: E402


def atari_updates(hidden, batch, updates, repeats) -> dict:
    """Discrete-SAC updates/s on random uint8 frames (one seed)."""
    from nbsp_jax import sac_discrete
    from nbsp_jax.replay import Transition

    agent = sac_discrete.make_sac_discrete((4, 84, 84), 18, hidden=hidden, batch_size=batch)
    state = sac_discrete.init_state(agent, jax.random.key(0))
    k = jax.random.split(jax.random.key(1), 3)
    n = 1024
    data = Transition(
        jax.random.randint(k[0], (n, 4, 84, 84), 0, 256).astype(jnp.uint8),
        jax.random.randint(k[1], (n,), 0, 18),
        jax.random.uniform(k[2], (n,)),
        jax.random.randint(k[0], (n, 4, 84, 84), 0, 256).astype(jnp.uint8),
        jnp.zeros((n,)),
    )

    def sampler(key, step):
        idx = jax.random.randint(key, (batch,), 0, n)
        return jax.tree.map(lambda x: x[idx], data)

    run = jax.jit(lambda s: sac_discrete.update_many(agent, s, sampler, updates, jnp.int32(0)))
    t0 = time.perf_counter()
    state, info = run(state)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, info = run(state)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"setting": "atari", "hidden": list(hidden), "batch": batch, "seeds": 1,
            "updates_per_s": updates / med, "compile_plus_first_call_s": compile_s,
            "updates_per_call": updates, "repeats": repeats}


def env_steps(kind: str, num: int, steps: int) -> dict:
    """EnvPool steps/s with random actions for a pool of ``num`` envs."""
    rng = np.random.default_rng(0)
    if kind == "metaworld":
        from nbsp_jax.envs import SeedVecEnv

        env = SeedVecEnv("window-open", num, 1, 0)
        act = lambda: rng.uniform(-1, 1, (num, 1, 4)).astype(np.float32)
    else:
        from nbsp_jax.envs_atari import AtariSeedVecEnv

        env = AtariSeedVecEnv("Pong", num, 1, 0)
        act = lambda: rng.integers(0, 18, (num, 1))
    env.reset()
    for _ in range(20):
        env.step(act())
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(act())
    dt = time.perf_counter() - t0
    env.close()
    return {"env": kind, "pool": num, "pool_steps_per_s": steps / dt,
            "env_steps_per_s": steps * num / dt}


def train_run(steps: int) -> dict:
    """A short real training run; env steps/s per seed and the env/act/learner split."""
    from nbsp_jax.config import base_config
    from nbsp_jax.cycle import train_and_evaluate

    c = base_config()
    c.tasks, c.num_seeds, c.hidden = ("reach",), 3, (256, 256)
    c.steps_per_task, c.learning_starts, c.buffer_size = steps, 1_000, 50_000
    c.eval_episodes, c.progress, c.early_stop = 0, False, False
    with tempfile.TemporaryDirectory() as d:
        r = train_and_evaluate(c, d)
    p = r["phases"][0]
    return {"task": "reach", "seeds": 3, "hidden": [256, 256], "env_steps": steps,
            "wall_s": p["wall_s"], "env_steps_per_s_per_seed": steps / p["wall_s"],
            "env_s": p["env_s"], "act_s": p["act_s"], "learn_s": p["learn_s"]}


def markdown(rec: dict) -> str:
    lines = [f"Machine: {rec['machine']}; jax {rec['jax_version']}, device {rec['device']}.", ""]
    lines += ["| update setting | seeds | updates/s (all seeds) | per seed | compile + 1st call |",
              "|---|---|---|---|---|"]
    for u in rec["update"] + rec["seeds"]:
        lines.append(f"| {u['setting']} {u['hidden']} batch {u['batch']} | {u['seeds']} | "
                     f"{u['updates_per_s']:.1f} | {u['updates_per_s'] / u['seeds']:.1f} | "
                     f"{u['compile_plus_first_call_s']:.1f} s |")
    lines += ["", "| env | pool | pool steps/s | env steps/s |", "|---|---|---|---|"]
    for e in rec["env"]:
        lines.append(f"| {e['env']} | {e['pool']} | {e['pool_steps_per_s']:.0f} | "
                     f"{e['env_steps_per_s']:.0f} |")
    t = rec["train"]
    lines += ["", "| training run | env steps/s per seed | wall | env | policy | learner |",
              "|---|---|---|---|---|---|",
              f"| {t['task']}, {t['seeds']} seeds, {t['hidden']}, {t['env_steps']} steps | "
              f"{t['env_steps_per_s_per_seed']:.1f} | {t['wall_s']:.0f} s | {t['env_s']:.0f} s | "
              f"{t['act_s']:.0f} s | {t['learn_s']:.0f} s |",
              "", f"Peak resident memory of the benchmark process: "
                  f"{rec['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and steps (~5 min)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    reps = 3 if a.quick else 7
    rec = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "jax_version": jax.__version__,
           "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
           "quick": a.quick}
    rec["update"] = [
        measure("continuous", (256, 256), 256, 1, 100, reps),
        measure("continuous", (768, 768, 768), 256, 1, 20 if a.quick else 50, reps),
        atari_updates((768, 768), 64, 4 if a.quick else 10, reps),
    ]
    rec["seeds"] = [measure("continuous", (256, 256), 256, s, 100, reps) for s in (2, 4, 8)]
    rec["env"] = [env_steps("metaworld", 3, 500 if a.quick else 2000),
                  env_steps("atari", 3, 500 if a.quick else 2000)]
    rec["train"] = train_run(4_000 if a.quick else 20_000)
    rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for group in ("update", "seeds"):
        for u in rec[group]:
            u.pop("call_s_all", None)
    with open(os.path.join(a.out, "benchmarks.json"), "w") as f:
        json.dump(rec, f, indent=2)
    md = markdown(rec)
    with open(os.path.join(a.out, "benchmarks.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
