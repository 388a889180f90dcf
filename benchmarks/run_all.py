"""The benchmark suite: update throughput, seed scaling, env throughput, end-to-end training.

    python benchmarks/run_all.py [--quick] --out DIR

Writes ``DIR/benchmarks.json`` and ``DIR/benchmarks.md`` (the tables of docs/performance.md).
Every number is a median over repeats measured in this process; ratios are between numbers of
the same run. Parts:

- ``update``: fused SAC updates/s on random replay data (:mod:`update_throughput`):
  continuous [256, 256] and [768]x3 at batch 256, and the Atari network (Nature CNN +
  [768, 768], 18 actions) at batch 64.
- ``peers``: our update, SBX's ``SAC._train`` and the PyTorch reference at [256, 256] and
  [768]x3, batch 256, 50 updates per call, interleaved in two passes (:mod:`peers`), with the
  2048^3 matmul peak of the same run; ours also with ``alpha_logp='reuse'``; and the Atari
  update (Nature CNN + [768, 768], batch 64, 16 updates per call) against PyTorch's.
- ``seeds``: [256, 256] updates/s for 1, 2, 3, 4, 8 seeds, ``seed_axis`` 'vmap' and 'map'
  (aggregate and per seed).
- ``matmul``: GFLOP/s XLA reaches here on a chain of matrix products of the updates' shapes;
  each update's matrix-product FLOP rate is given as a share of it.
- ``env``: EnvPool steps/s with random actions: Meta-World (3 envs) and Atari Pong (3 envs).
- ``train``: a short real training run (reach-v3, [256, 256], 3 seeds), its env steps/s per seed
  and the wall time split into env stepping, policy calls and learner; compile time included.
  Its bound is the rate if the run were only its slower part: random-action steps until
  ``learning_starts`` at the env-only rate, then min(env-only rate, 3-seed update rate per
  seed / updates per env step).
- ``memory``: bytes per seed of the paper configs' device state (parameters, optimizer states,
  both replay buffers), from ``jax.eval_shape`` (nothing allocated), and the host-side neuron
  record; peak resident memory of this process.
- ``torch``: the PyTorch reference update (CleanRL semantics, ``benchmarks/torch_reference.py``,
  needs ``pip install -e ".[bench]"``) in the same process, and the JAX / PyTorch ratios.
- ``atari_run``: the expected wall time of ``configs/atari_pong_bowling.py`` here, from the
  measured Atari update and env rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import peers  # noqa: E402
from benchmarks.torch_reference import ratio_markdown, torch_reference_rows  # noqa: E402
from benchmarks.update_throughput import measure  # noqa: E402
from nbsp_jax.workdir.results import source_commit  # noqa: E402

PEER_SETTINGS = ((256, 256), (768, 768, 768))


def matmul_rate(m: int, k: int, repeats: int, steps: int = 200) -> dict:
    """GFLOP/s of ``steps`` chained ``[m, k] @ [k, k]`` products in one jitted ``lax.scan``
    (median of ``repeats`` calls): what XLA's matrix product reaches here at that shape."""
    import jax.numpy as jnp

    from benchmarks.nbsp_overhead import _median_time

    x, w = jnp.full((m, k), 0.01, jnp.float32), jnp.full((k, k), 0.01, jnp.float32)
    run = jax.jit(lambda x, w: jax.lax.scan(lambda c, _: ((c @ w) * 0.5, None), x, None,
                                            length=steps)[0])
    jax.block_until_ready(run(x, w))
    med = _median_time(lambda: run(x, w), repeats)[0]
    return {"shape": [m, k, k], "gflop_per_s": 2 * m * k * k * steps / med / 1e9}


def atari_updates(hidden, batch, updates, repeats, seeds=1, conv_impl="auto") -> dict:
    """Discrete-SAC updates/s (the training loop's fused Atari update on random frames).

    ``conv_impl='auto'`` is the networks' default (the matmul formulation on CPU). Before it,
    this benchmark jitted ``sac_discrete.update_many`` with ``lax.conv`` (0.3 updates/s on a
    2-core CPU: XLA:CPU's convolution gradients are slow inside a loop; see
    ``nbsp_jax/networks_atari.py``).
    """
    return measure("atari", tuple(hidden), batch, seeds, updates, repeats,
                   conv_impl=conv_impl)


def env_steps(kind: str, num: int, steps: int) -> dict:
    """EnvPool steps/s with random actions for a pool of ``num`` envs."""
    rng = np.random.default_rng(0)
    if kind == "metaworld":
        from nbsp_jax.envs import SeedVecEnv

        env = SeedVecEnv("window-open", num, 1, 0)
        act = lambda: rng.uniform(-1, 1, (num, 1, 4)).astype(np.float32)
    else:
        from nbsp_jax.envs import AtariSeedVecEnv

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


def train_run(steps: int, learning_starts: int = 1_000) -> dict:
    """A short real training run; env steps/s per seed and the env/act/learner split."""
    from nbsp_jax.config import base_config
    from nbsp_jax.training import train_and_evaluate

    c = base_config()
    c.tasks, c.num_seeds, c.hidden = ("reach",), 3, (256, 256)
    c.steps_per_task, c.learning_starts, c.buffer_size = steps, learning_starts, 50_000
    c.eval_episodes, c.progress, c.early_stop = 0, False, False
    with tempfile.TemporaryDirectory() as d:
        r = train_and_evaluate(c, d)
    p = r["phases"][0]
    return {"task": "reach", "seeds": 3, "hidden": [256, 256], "env_steps": steps,
            "learning_starts": learning_starts, "updates_per_step": c.updates_per_step,
            "wall_s": p["wall_s"], "env_steps_per_s_per_seed": steps / p["wall_s"],
            "env_s": p["env_s"], "act_s": p["act_s"], "learn_s": p["learn_s"]}


def memory_per_seed(config_file: str) -> dict:
    """Device bytes per seed of a config's run state (no allocation: ``jax.eval_shape``)."""
    import importlib.util

    from nbsp_jax import training

    spec = importlib.util.spec_from_file_location("cfg", config_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    h = len(c.tasks) * c.cycles
    learner = training.make_learner(c)
    device = lambda: training.init_run(c, learner, h)[0]._asdict()
    shapes = jax.eval_shape(lambda: {k: v for k, v in device().items() if k != "recorder"})
    size = lambda t: sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(t))
    per = {k: size(v) / c.num_seeds for k, v in shapes.items()}
    rec = training.new_recorder(c, learner.domain)
    host = sum(x.nbytes for x in rec.arrays().values()) / c.num_seeds
    return {"config": os.path.basename(config_file), "seeds": c.num_seeds,
            "state_mb": (per["state"] + per["act_keys"] + per["task_keys"]) / 2**20,
            "buffer_mb": per["buffer"] / 2**20, "pre_mb": per["pre"] / 2**20,
            "recorder_host_mb": host / 2**20}


def atari_run_estimate(update: dict, env: dict, config_file: str) -> dict:
    """Expected wall time of an Atari config: its updates at the measured aggregate rate of
    ``update`` (seeds run one after another: rate / seeds per seed) plus its env steps at the
    pool rate (evaluation not included)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", config_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    steps = c.steps_per_task * len(c.tasks) * c.cycles  # per seed
    updates = c.num_seeds * (steps - c.learning_starts * len(c.tasks) * c.cycles) / c.update_every
    learn_h = updates / update["updates_per_s"] / 3600
    env_h = steps / env["pool_steps_per_s"] / 3600  # the pool steps all seeds at once
    return {"config": os.path.basename(config_file), "seeds": c.num_seeds,
            "env_steps_per_seed": steps, "updates_all_seeds": updates,
            "learner_h": learn_h, "env_h": env_h, "total_h": learn_h + env_h}


def train_bound(train: dict, env: dict, update: dict) -> dict:
    """The training run's env steps/s per seed against its bound (module docstring)."""
    env_rate = env["pool_steps_per_s"]  # one env per seed: a pool step is a step of each seed
    upd_rate = update["updates_per_s_per_seed"] / train["updates_per_step"]
    n, lo = train["env_steps"], train["learning_starts"]
    t_bound = lo / env_rate + (n - lo) / min(env_rate, upd_rate)
    # The run's wall time includes compiling its functions; the update's compile time, measured
    # in the same process for the same shapes, is its largest part.
    compile_s = update["compile_plus_first_call_s"]
    achieved = train["env_steps_per_s_per_seed"]
    return {"bound_steps_per_s_per_seed": n / t_bound,
            "achieved_over_bound": achieved / (n / t_bound),
            "update_compile_s": compile_s,
            "achieved_over_bound_with_compile": achieved / (n / (t_bound + compile_s))}


def markdown(rec: dict) -> str:
    lines = [f"Machine: {rec['machine']}; jax {rec['jax_version']}, device {rec['device']}; "
             f"commit {rec.get('commit') or 'not recorded'}.", ""]
    peak = max([r["gflop_per_s"] for r in rec["matmul"]] + [rec["peak_gflop_per_s"]])
    lines += ["| update setting | seeds (axis) | updates/s (all seeds) | per seed | matmul GFLOP/s "
              "(% of peak) | compile + 1st call |", "|---|---|---|---|---|---|"]
    for u in rec["update"] + rec["seeds"] + rec["atari_seeds"]:
        lines.append(f"| {u['setting']} {u['hidden']} batch {u['batch']} | {u['seeds']} "
                     f"({u['seed_axis']}) | "
                     f"{u['updates_per_s']:.1f} | {u['updates_per_s'] / u['seeds']:.1f} | "
                     f"{u['matmul_gflop_per_s']:.0f} ({100 * u['matmul_gflop_per_s'] / peak:.0f} "
                     f"%) | {u['compile_plus_first_call_s']:.1f} s |")
    rates = ", ".join(f"{r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]} "
                      f"{r['gflop_per_s']:.0f} GFLOP/s" for r in rec["matmul"])
    lines += ["", f"Matrix-product peak (chained `[m, k] @ [k, k]` in one jitted scan): {rates}, "
              f"2048x2048x2048 {rec['peak_gflop_per_s']:.0f} GFLOP/s; peak = {peak:.0f} GFLOP/s."]

    lines += ["", "| env | pool | pool steps/s | env steps/s |", "|---|---|---|---|"]
    for e in rec["env"]:
        lines.append(f"| {e['env']} | {e['pool']} | {e['pool_steps_per_s']:.0f} | "
                     f"{e['env_steps_per_s']:.0f} |")
    t = rec["train"]
    lines += ["", "| training run | env steps/s per seed | bound | achieved / bound (bound + "
              "update compile) | wall | env | policy | learner |",
              "|---|---|---|---|---|---|---|---|",
              f"| {t['task']}, {t['seeds']} seeds, {t['hidden']}, {t['env_steps']} steps | "
              f"{t['env_steps_per_s_per_seed']:.1f} | {t['bound_steps_per_s_per_seed']:.1f} | "
              f"{t['achieved_over_bound']:.2f} ({t['achieved_over_bound_with_compile']:.2f}, "
              f"+{t['update_compile_s']:.0f} s) | {t['wall_s']:.0f} s | {t['env_s']:.0f} s | "
              f"{t['act_s']:.0f} s | {t['learn_s']:.0f} s |",
              "", f"Peak resident memory of the benchmark process: "
                  f"{rec['peak_rss_mb']:.0f} MB."]
    lines += ["", "| paper config | seeds | params + optimizer / seed | current buffer / seed | "
              "earlier-task buffer / seed | neuron record (host) / seed |",
              "|---|---|---|---|---|---|"]
    for m in rec["memory"]:
        lines.append(f"| {m['config']} | {m['seeds']} | {m['state_mb']:.0f} MB | "
                     f"{m['buffer_mb']:.0f} MB | {m['pre_mb']:.0f} MB | "
                     f"{m['recorder_host_mb']:.0f} MB |")
    a = rec["atari_run"]
    lines += ["", f"Expected wall time of `{a['config']}` here ({a['seeds']} seeds, "
              f"{a['env_steps_per_seed']:.2g} env steps and {a['updates_all_seeds']:.3g} updates "
              f"in all): learner {a['learner_h']:.0f} h + env {a['env_h']:.1f} h = "
              f"{a['total_h']:.0f} h ({a['total_h'] / 24:.1f} days), evaluation not included."]
    if rec.get("torch"):
        lines += ["", ratio_markdown(rec["update"], rec["torch"])]
    lines += ["", peers.markdown(rec["peers"], rec["peak_gflop_per_s"])]
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
           "quick": a.quick, "commit": source_commit(ROOT)}
    rec["update"] = [
        measure("continuous", (256, 256), 256, 1, 50, reps),
        measure("continuous", (768, 768, 768), 256, 1, 50, reps),
        atari_updates((768, 768), 64, 8 if a.quick else 16, reps),
    ]
    rec["peak_gflop_per_s"] = peers.matmul_peak(repeats=reps)
    rec["peers"] = [{"hidden": list(h), "batch": 256, "rows": peers.compare(
        peers.peer_runners(h, 256, 50, ({}, {"alpha_logp": "reuse"})), reps,
        rec["peak_gflop_per_s"])} for h in PEER_SETTINGS]
    rec["peers"].append({"setting": "atari", "hidden": list(peers.ATARI_HIDDEN),
                         "batch": peers.ATARI_BATCH, "rows": peers.compare(
                             peers.atari_runners(), reps, rec["peak_gflop_per_s"])})
    rec["seeds"] = [measure("continuous", (256, 256), 256, s, 50, reps, seed_axis=axis)
                    for s in (1, 2, 3, 4, 8) for axis in ("vmap", "map")]
    rec["matmul"] = [matmul_rate(m, k, reps) for m, k in ((256, 256), (256, 768), (64, 768))]
    rec["atari_seeds"] = [atari_updates((768, 768), 64, 8 if a.quick else 16, reps, seeds=3)]
    rec["env"] = [env_steps("metaworld", 3, 500 if a.quick else 2000),
                  env_steps("atari", 3, 500 if a.quick else 2000)]
    rec["train"] = train_run(4_000 if a.quick else 20_000)
    three = next(u for u in rec["seeds"] if u["seeds"] == 3 and u["seed_axis"] == "vmap")
    rec["train"].update(train_bound(rec["train"], rec["env"][0], three))
    rec["memory"] = [memory_per_seed(os.path.join(ROOT, "configs", f)) for f in
                     ("metaworld_window.py", "atari_pong_bowling.py")]
    rec["atari_run"] = atari_run_estimate(rec["atari_seeds"][0], rec["env"][1],
                                          os.path.join(ROOT, "configs", "atari_pong_bowling.py"))
    rec["torch"] = torch_reference_rows(reps, quick=a.quick)
    rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for group in ("update", "seeds", "atari_seeds"):
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
