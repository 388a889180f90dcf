"""Gradient updates per second on random replay data, for the fused update of the training loop.

    python benchmarks/update_throughput.py --setting continuous --hidden 256,256 --batch 256 \
        --seeds 1 --json out.json
    python benchmarks/update_throughput.py --setting atari --hidden 768,768 --batch 64 \
        --seeds 2 --seed-axis vmap,map --conv-impl s2d,im2col --json out.json

Fills device-resident buffers with random transitions (Meta-World-shaped rows, or random
uint8 frames in the frame-once Atari streams), builds the update the training loop runs
(:func:`nbsp_jax.training.make_learner`: ``lax.scan`` over ``--updates`` gradient steps, over
seeds with ``vmap`` or ``lax.map``), compiles it (``compile_s``, timed on its own), runs it
once (``first_call_s``) and twice more to warm up, then times ``--repeats`` calls.

Several ``--seeds`` / ``--seed-axis`` / ``--conv-impl`` values give one record each; their
timed calls are interleaved (round robin), so that ratios between them are measured under the
same machine load (``load_avg`` is recorded before and after). ``updates_per_s`` is the median
rate over all seeds (seeds x updates / s); ``updates_per_s_per_seed`` the rate each seed
advances; ``matmul_gflop_per_update`` the matrix-product FLOPs of one update, counted in the
compiled HLO (:func:`benchmarks.op_profile.program_flops`), and ``matmul_gflop_per_s`` the rate
at which the update does them.
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
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def random_buffer(key: jax.Array, rows: int):
    """A full buffer of ``rows`` random Meta-World-shaped transitions (one seed)."""
    from nbsp_jax.buffers import transitions as replay
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


def random_atari_streams(seed: int, seeds: int, streams: int, capacity: int):
    """Full frame-once Atari streams ``[seeds, streams, capacity + 4, ...]`` of random frames,
    actions and rewards, each stream one long episode (every stored transition complete but
    those at the ring's seam)."""
    from nbsp_jax.buffers import frames as atari_replay
    from nbsp_jax.envs import NUM_ACTIONS

    rng = np.random.default_rng(seed)
    rows = capacity + atari_replay.STACK
    shape = (seeds, streams, rows)
    first = np.zeros(shape, bool)
    first[..., 0] = True
    return atari_replay.AtariReplay(
        frames=jnp.asarray(rng.integers(0, 256, (*shape, *atari_replay.FRAME_SHAPE), np.uint8)),
        action=jnp.asarray(rng.integers(0, NUM_ACTIONS, shape, np.int32)),
        reward=jnp.asarray(rng.uniform(-1.0, 1.0, shape).astype(np.float32)),
        terminated=jnp.zeros(shape, jnp.float32),
        first=jnp.asarray(first),
        ptr=jnp.zeros(shape[:2], jnp.int32),
        size=jnp.full(shape[:2], rows, jnp.int32),
    )


def _config(setting, hidden, batch, seeds, updates, method, seed_axis, conv_impl,
            alpha_logp=None):
    from nbsp_jax.config import atari_cycle, base_config

    if setting == "atari":
        c = atari_cycle(("Pong",), 1)
        c.conv_impl = conv_impl
        c.update_every = 1  # one update per env step: --updates per call
    else:
        c = base_config()
    c.hidden, c.batch_size, c.num_seeds = tuple(hidden), batch, seeds
    c.chunk_steps, c.num_envs, c.updates_per_step = updates, 1, 1
    c.method, c.seed_axis = method, seed_axis
    c.act_on, c.shard_seeds = "learner", False
    if alpha_logp is not None:
        c.alpha_logp = alpha_logp
    return c


def _prepare(setting, hidden, batch, seeds, updates, method, seed_axis, conv_impl,
             buffer_rows, alpha_logp=None) -> dict:
    """Builds, compiles and warms up one configuration; returns its runner and record."""
    from nbsp_jax.training import make_learner, seed_keys

    c = _config(setting, hidden, batch, seeds, updates, method, seed_axis, conv_impl,
                alpha_logp)
    learner = make_learner(c)
    state = jax.vmap(lambda k: learner.domain.init_state(learner.agent, k))(seed_keys(0, seeds))
    if setting == "atari":
        from nbsp_jax.buffers import frames as atari_replay
        from nbsp_jax.networks import resolve_conv_impl

        buffer = random_atari_streams(1, seeds, c.num_envs, buffer_rows)
        # NBSP methods also replay (filled) earlier-task windows every k-th step.
        pre = random_atari_streams(2, seeds, c.num_envs, min(buffer_rows, c.replay_store_size))
        n = jax.vmap(atari_replay.num_transitions_streams)(buffer)
        assert int(n.min()) > 0, "no complete transition in the random streams"
        conv_impl = resolve_conv_impl(conv_impl)
    else:
        fill = jax.jit(jax.vmap(lambda k: random_buffer(k, buffer_rows)))
        buffer = fill(jax.random.split(jax.random.key(1), seeds))
        pre = fill(jax.random.split(jax.random.key(2), seeds))
        conv_impl = None
    step0 = jnp.int32(0)
    t0 = time.perf_counter()
    # The training loop's path when every seed is active (the update without a state select).
    compiled = learner.update_all.lower(state, buffer, pre, step0).compile()
    compile_s = time.perf_counter() - t0

    def run(s):
        s, info = compiled(s, buffer, pre, step0)
        jax.block_until_ready(info)
        return s

    t0 = time.perf_counter()
    state = run(state)
    first_call_s = time.perf_counter() - t0
    from benchmarks.op_profile import program_flops  # here: op_profile imports this module

    matmul_gflop = program_flops(compiled.as_text()) / 1e9 / (updates * seeds)
    for _ in range(2):  # warm-up
        state = run(state)
    rec = {
        "setting": setting,
        "hidden": list(hidden),
        "batch": batch,
        "seeds": seeds,
        "method": method,
        "seed_axis": seed_axis,
        "conv_impl": conv_impl,
        "updates_per_call": updates,
        "matmul_gflop_per_update": matmul_gflop,
        "compile_s": compile_s,
        "first_call_s": first_call_s,
        "compile_plus_first_call_s": compile_s + first_call_s,
    }
    return {"run": run, "state": state, "rec": rec, "times": [], "compiled": compiled}


def measure_many(configs: list[dict], repeats: int, buffer_rows: int | None = None) -> list[dict]:
    """One record per configuration (keyword dicts of :func:`measure`), timed calls
    interleaved."""
    load_before = os.getloadavg()
    preps = []
    for cfg in configs:
        rows = buffer_rows or (20_000 if cfg["setting"] == "atari" else 100_000)
        preps.append(_prepare(**cfg, buffer_rows=rows))
    for _ in range(repeats):
        for p in preps:
            t0 = time.perf_counter()
            p["state"] = p["run"](p["state"])
            p["times"].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    dev = jax.devices()[0]
    out = []
    for p in preps:
        rec, times = p["rec"], p["times"]
        med = statistics.median(times)
        n = rec["seeds"] * rec["updates_per_call"]
        rec.update(
            repeats=repeats,
            updates_per_s=n / med,
            updates_per_s_per_seed=rec["updates_per_call"] / med,
            updates_per_s_best=n / min(times),
            matmul_gflop_per_s=rec["matmul_gflop_per_update"] * n / med,
            call_s_median=med,
            call_s_all=times,
            load_avg_before=list(load_before),
            load_avg_after=list(load_after),
            cpu_count=os.cpu_count(),
            jax_version=jax.__version__,
            device=f"{dev.platform}:{dev.device_kind}",
        )
        out.append(rec)
    return out


def measure(setting: str, hidden: tuple[int, ...], batch: int, seeds: int, updates: int,
            repeats: int, method: str = "sac", buffer_rows: int | None = None,
            seed_axis: str = "vmap", conv_impl: str = "auto") -> dict:
    """Returns the benchmark record of one configuration (see module docstring)."""
    cfg = dict(setting=setting, hidden=tuple(hidden), batch=batch, seeds=seeds, updates=updates,
               method=method, seed_axis=seed_axis, conv_impl=conv_impl)
    return measure_many([cfg], repeats, buffer_rows)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="continuous", choices=["continuous", "atari"])
    p.add_argument("--hidden", default=None,
                   help="comma-separated widths (default 256,256; atari 768,768)")
    p.add_argument("--batch", type=int, default=None, help="default 256; atari 64")
    p.add_argument("--seeds", default="1",
                   help="seed count, or several comma-separated (one record each)")
    p.add_argument("--updates", type=int, default=None,
                   help="updates fused per call (default 50, the Meta-World loop's; atari 16)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--method", default="sac", help="config.method: sac, nbsp, ... (masks and "
                   "earlier-task replay on for nbsp)")
    p.add_argument("--seed-axis", default="vmap",
                   help="vmap, map, or both comma-separated (one record each)")
    p.add_argument("--conv-impl", default="auto",
                   help="atari: networks_atari.CONV_IMPLS value(s), comma-separated")
    p.add_argument("--buffer-rows", type=int, default=None,
                   help="rows per seed (default 100000; atari 20000 frames)")
    p.add_argument("--json", default=None, help="write the record (a list if several) here")
    a = p.parse_args()
    atari = a.setting == "atari"
    hidden = tuple(int(h) for h in (a.hidden or ("768,768" if atari else "256,256")).split(","))
    batch = a.batch or (64 if atari else 256)
    updates = a.updates or (16 if atari else 50)
    impls = a.conv_impl.split(",") if atari else ["auto"]
    configs = [dict(setting=a.setting, hidden=hidden, batch=batch, seeds=int(seeds),
                    updates=updates, method=a.method, seed_axis=axis, conv_impl=impl)
               for impl in impls for seeds in a.seeds.split(",")
               for axis in a.seed_axis.split(",")]
    recs = measure_many(configs, a.repeats, a.buffer_rows)
    for rec in recs:
        print(json.dumps({k: v for k, v in rec.items() if k != "call_s_all"}, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(recs[0] if len(recs) == 1 else recs, f, indent=2)


if __name__ == "__main__":
    main()
