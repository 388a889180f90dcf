"""Gradient updates per second on random replay data, seeds vmapped.

    python benchmarks/update_throughput.py --setting continuous --hidden 256,256 --batch 256 \
        --seeds 1 --json out.json

Fills a device-resident buffer with random transitions, compiles the same fused update the
training loop uses (:func:`nbsp_jax.cycle.make_learner`: ``lax.scan`` over ``--updates`` gradient
steps, vmapped over seeds), warms up, then times ``--repeats`` calls and reports the median.
``updates_per_s`` is aggregate over seeds (seeds x updates / s); ``updates_per_s_per_seed`` is
the rate each seed advances.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp


def random_buffer(key: jax.Array, rows: int):
    """A full buffer of ``rows`` random Meta-World-shaped transitions (one seed)."""
    from nbsp_jax import replay
    from nbsp_jax.envs import ACTION_DIM, OBS_DIM

    ks = jax.random.split(key, 4)
    batch = replay.Transition(
        jax.random.normal(ks[0], (rows, OBS_DIM)),
        jax.random.uniform(ks[1], (rows, ACTION_DIM), minval=-1, maxval=1),
        jax.random.uniform(ks[2], (rows,), maxval=10.0),
        jax.random.normal(ks[3], (rows, OBS_DIM)),
        jnp.zeros((rows,)),
    )
    return replay.add(replay.init_buffer(rows, OBS_DIM, ACTION_DIM), batch, jnp.ones(rows, bool))


def measure(setting: str, hidden: tuple[int, ...], batch: int, seeds: int, updates: int,
            repeats: int, method: str = "sac", buffer_rows: int = 100_000,
            seed_axis: str = "vmap") -> dict:
    """Returns the benchmark record (see module docstring)."""
    if setting != "continuous":
        raise SystemExit(f"--setting {setting!r} is not implemented yet; valid: 'continuous' "
                         "('atari' arrives with the Atari issue)")
    from nbsp_jax.config import base_config
    from nbsp_jax.cycle import make_learner, seed_keys
    from nbsp_jax.sac import init_state

    c = base_config()
    c.hidden, c.batch_size, c.num_seeds = hidden, batch, seeds
    c.chunk_steps, c.num_envs, c.updates_per_step = updates, 1, 1
    c.method = method
    c.seed_axis = seed_axis
    learner = make_learner(c)
    state = jax.vmap(lambda k: init_state(learner.agent, k))(seed_keys(0, seeds))

    fill = jax.jit(jax.vmap(lambda k: random_buffer(k, buffer_rows)))
    buffer = fill(jax.random.split(jax.random.key(1), seeds))
    # NBSP methods also replay a (filled) earlier-task buffer every k-th step and carry masks.
    pre = fill(jax.random.split(jax.random.key(2), seeds))
    active = jnp.ones((seeds,), bool)
    update = lambda s: learner.update(s, buffer, pre, jnp.int32(0), active)
    t0 = time.perf_counter()
    state, info = update(state)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    for _ in range(2):  # warm-up
        state, info = update(state)
    jax.block_until_ready(info)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, info = update(state)
        jax.block_until_ready(info)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "setting": setting,
        "hidden": list(hidden),
        "batch": batch,
        "seeds": seeds,
        "method": method,
        "seed_axis": seed_axis,
        "updates_per_call": updates,
        "repeats": repeats,
        "updates_per_s": seeds * updates / med,
        "updates_per_s_per_seed": updates / med,
        "call_s_median": med,
        "call_s_all": times,
        "compile_plus_first_call_s": compile_s,
        "jax_version": jax.__version__,
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="continuous", choices=["continuous", "atari"])
    p.add_argument("--hidden", default="256,256", help="comma-separated widths")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--updates", type=int, default=200, help="updates fused per call")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--method", default="sac", help="config.method: sac, nbsp, ... (masks and "
                   "earlier-task replay on for nbsp)")
    p.add_argument("--seed-axis", default="vmap", choices=["vmap", "map"])
    p.add_argument("--json", default=None, help="write the record here")
    a = p.parse_args()
    hidden = tuple(int(h) for h in a.hidden.split(","))
    rec = measure(a.setting, hidden, a.batch, a.seeds, a.updates, a.repeats, a.method,
                  seed_axis=a.seed_axis)
    print(json.dumps({k: v for k, v in rec.items() if k != "call_s_all"}, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
