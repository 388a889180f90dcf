"""Command-line entry point.

    python -m nbsp_jax.train --config configs/quickstart.py --workdir runs/quick
    python -m nbsp_jax.train --config configs/quickstart.py:smoke --workdir runs/smoke \
        --config.num_seeds=2 --config.tasks="('reach',)"

``--config`` names a file with ``get_config(variant='')``; ``:variant`` (e.g. ``:smoke``) is
passed to it. ``--config.<field>=<value>`` overrides any field. The config is validated before
anything is built, then :func:`nbsp_jax.cycle.train_and_evaluate` runs.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config>-<time>).")


def _default_workdir() -> str:
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def main(argv) -> None:
    del argv
    from nbsp_jax.config import validate
    from nbsp_jax.cycle import train_and_evaluate

    config = _CONFIG.value
    validate(config)  # fail on bad input before anything slow starts
    workdir = _WORKDIR.value or _default_workdir()
    summary = train_and_evaluate(config, workdir)
    print(format_summary(summary))
    print(f"workdir: {os.path.abspath(workdir)}")


def format_summary(summary: dict) -> str:
    """A small table of what each phase learned, per seed."""
    lines = ["phase  task                  train success (last episodes)   eval success"]
    for i, p in enumerate(summary["phases"]):
        fmt = lambda xs: " ".join("  -  " if x is None else f"{x:.2f}" for x in xs)
        ev = fmt(p["eval_success_rate"]) if "eval_success_rate" in p else "-"
        lines.append(f"{i + 1:>5}  {p['task']:<20}  {fmt(p['train_success_rate']):<31} {ev}")
    lines.append(f"wall time {summary['wall_s']:.0f} s; versions {json.dumps(summary['versions'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
