"""The accelerator check: one program, at most about 8 minutes on a GPU, writing one JSON.

    python -m benchmarks.device_check --out DIR [--dry-run] [--budget-s 480]
    bash benchmarks/device_check.sh DIR          # on the lent machine (installs carried wheels)

Parts, in this order, each written to ``DIR/device_check.json`` as soon as it is done (so a
run cut short keeps what it measured):

1. ``device``: backend, device kind, jax version.
2. ``updates``: the training loop's fused update on random data (:mod:`update_throughput`) for
   continuous [256, 256] and [768]x3 at batch 256 (50 updates per call) and the Atari networks
   at batch 64 (16 per call), at 1, 4, 16 and 64 vmapped seeds: updates/s aggregate and per
   seed, compile time, and the device's peak memory after it (``memory_stats``, where the
   backend reports it).
3. ``training``: NBSP on EnvPool Meta-World (window-open, [256, 256], 16 seeds), once with
   ``act_on='learner'`` and once with ``act_on='host'``: env steps/s per seed and the wall time
   split into env stepping, policy calls and learner.

A part that would start after ``--budget-s`` seconds is skipped and listed under
``skipped``. ``--dry-run`` shrinks every size (1 and 2 seeds, [32, 32], a few updates, a
600-step training) so that the whole path runs on a CPU in a minute or two (the test suite
runs it so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.update_throughput import measure  # noqa: E402

FULL = {
    "seeds": (1, 4, 16, 64),
    "settings": (("continuous", (256, 256), 256, 50), ("continuous", (768, 768, 768), 256, 50),
                 ("atari", (768, 768), 64, 16)),
    "repeats": 5,
    "train": {"num_seeds": 16, "hidden": (256, 256), "steps_per_task": 3_000,
              "learning_starts": 1_000, "buffer_size": 50_000},
}
DRY = {
    "seeds": (1, 2),
    "settings": (("continuous", (32, 32), 32, 4), ("atari", (32,), 8, 2)),
    "repeats": 2,
    "train": {"num_seeds": 2, "hidden": (32, 32), "steps_per_task": 600,
              "learning_starts": 200, "buffer_size": 2_000, "batch_size": 32},
}


def peak_memory_bytes() -> int | None:
    """The default device's peak bytes in use so far, or None where it is not reported."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def update_rows(sizes: dict, deadline: float, skipped: list) -> list[dict]:
    rows = []
    for setting, hidden, batch, updates in sizes["settings"]:
        for seeds in sizes["seeds"]:
            name = f"{setting} {list(hidden)} x{seeds}"
            if time.time() > deadline:
                skipped.append(name)
                continue
            buffer_rows = 2_000 if sizes is DRY else None
            r = measure(setting, hidden, batch, seeds, updates, sizes["repeats"],
                        buffer_rows=buffer_rows)
            rows.append({k: r[k] for k in (
                "setting", "hidden", "batch", "seeds", "updates_per_call", "updates_per_s",
                "updates_per_s_per_seed", "compile_s", "matmul_gflop_per_s")}
                | {"peak_memory_bytes": peak_memory_bytes()})
    return rows


def training_run(sizes: dict, act_on: str) -> dict:
    from nbsp_jax.config import base_config
    from nbsp_jax.training import train_and_evaluate

    c = base_config()
    c.tasks, c.method, c.act_on = ("window-open",), "nbsp", act_on
    c.eval_episodes, c.progress, c.early_stop = 0, False, False
    for k, v in sizes["train"].items():
        c[k] = v
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = train_and_evaluate(c, d)
        wall = time.perf_counter() - t0
    p = r["phases"][0]
    return {"act_on": act_on, "seeds": c.num_seeds, "env_steps": c.steps_per_task,
            "wall_s": wall, "env_steps_per_s_per_seed": c.steps_per_task / p["wall_s"],
            "env_s": p["env_s"], "act_s": p["act_s"], "learn_s": p["learn_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for device_check.json")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes (CPU smoke)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="no part starts after this many seconds")
    a = p.parse_args(argv)
    sizes = DRY if a.dry_run else FULL
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "device_check.json")
    start = time.time()
    deadline = start + a.budget_s
    dev = jax.devices()[0]
    rec = {"device": {"backend": jax.default_backend(), "kind": dev.device_kind,
                      "count": jax.device_count(), "jax": jax.__version__},
           "dry_run": a.dry_run, "skipped": []}

    def write():
        rec["elapsed_s"] = time.time() - start
        with open(path, "w") as f:
            json.dump(rec, f, indent=2)

    write()
    rec["updates"] = update_rows(sizes, deadline, rec["skipped"])
    write()
    rec["training"] = []
    for act_on in ("learner", "host"):
        if time.time() > deadline:
            rec["skipped"].append(f"training act_on={act_on}")
            continue
        if act_on == "host" and jax.default_backend() == "cpu" and jax.local_device_count() < 2:
            rec["skipped"].append("training act_on=host (one CPU device)")
            continue
        rec["training"].append(training_run(sizes, act_on))
        write()
    write()
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
