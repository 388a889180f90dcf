"""Command-line entry point.

    python -m nbsp_jax.train --config configs/quickstart.py --workdir runs/quick
    python -m nbsp_jax.train --config configs/quickstart.py:smoke --workdir runs/smoke \
        --config.num_seeds=2 --config.tasks="('reach',)"

``--config`` names a file with ``get_config(variant='')``; ``:variant`` (e.g. ``:smoke``) is
passed to it. ``--config.<field>=<value>`` overrides any field. The config is validated before
anything is built, then :func:`nbsp_jax.training.train_and_evaluate` runs.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from nbsp_jax.workdir import results_table

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config>-<time>).")


def _default_workdir() -> str:
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's INFO lines off the terminal
    from nbsp_jax.training.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host launches only; before any JAX computation
    import jax

    from nbsp_jax.config import validate
    from nbsp_jax.training import train_and_evaluate

    config = _CONFIG.value
    workdir = _WORKDIR.value or _default_workdir()
    try:
        validate(config)  # fail on bad input before anything slow starts
        results = train_and_evaluate(config, workdir)
    except (ValueError, NotImplementedError, FileExistsError) as e:
        # Bad input: the message names the value and the choices; no traceback needed.
        print(f"nbsp_jax.train: error: {e}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() > 0:
        return  # process 0 wrote the merged results and prints them
    if "stopped_after_phase" in results:
        print(f"stopped after phase {results['stopped_after_phase']}/{results['num_phases']} "
              f"(config.stop_after_phase); rerun without it to go on: {workdir}")
        return
    print(format_summary(results))
    print(f"results: {os.path.abspath(os.path.join(workdir, 'results.json'))}")
    print(f"plots:   {', '.join(os.path.abspath(p) for p in results.get('plots', []))}")


def format_summary(results: dict) -> str:
    """What each phase learned, per seed, and the continual-learning metrics."""
    fmt = lambda xs, f: " ".join("  -  " if x is None else f.format(x) for x in xs)
    atari = results["config"]["agent"] == "sac_atari"
    train, ev, f = (("episodic_return", "eval_normalized_return", "{:.2f}") if atari else
                    ("train_success_rate", "eval_success_rate", "{:.2f}"))
    head = ("train raw return (last 10 games)", "eval normalised return") if atari else (
        "train success (last 10 ep.)", "eval success")
    lines = [f"{'phase':>5}  {'task':<22} {head[0]:<33} {head[1]}"]
    for i, p in enumerate(results["phases"]):
        e = fmt(p[ev], f) if p.get(ev) else "-"
        lines.append(f"{i + 1:>5}  {p['task']:<22} {fmt(p[train], f):<33} {e}")
    if results.get("metrics"):
        lines += ["", results_table([results])]
    lines.append(f"wall time {results['wall_s']:.0f} s; versions "
                 f"{json.dumps(results['versions'])}")
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the command line and loads the config; a bad flag, config file, ``:variant`` or
    ``--config.<field>`` is one line on stderr and exit status 2, like every other bad value,
    not a traceback."""
    try:
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # a config file that failed to load raises here
        return rest
    except Exception as e:  # absl and ml_collections raise many kinds
        cause = e.__cause__ or e
        lines = [x.strip() for x in str(cause).strip().strip('"').splitlines() if x.strip()]
        what = re.sub(r"^\w+Error: ", "", lines[-1]) if lines else type(cause).__name__
        if isinstance(cause, KeyError | AttributeError):
            what = f"unknown config field {what}"
        print(f"nbsp_jax.train: error: {what}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=parse_flags)
