"""Runs the paper's ablation table (Tables 2, 3 and 9) at CPU scale and collects it to markdown.

    python -m experiments.ablation --pair window [--pair button_window] [--arms all] \
        [--table ablation|baselines] [--seeds 5] [--variant cpu] [--runs runs/ablation] \
        [--out results/ablation] [--collect-only] [--dry-run] [-- --config.x=y ...]

``--table baselines`` runs Table 1's baselines next to ``sac`` and ``nbsp`` (the same runs
as the ablation's) and writes ``<out>/<pair>_baselines.md``; the baselines that act during
phase 1 (NPC, CReLU, CBP, ReDo) train their own phase 1 instead of forking (PI's phase 1
trains only its base, the plain network, so it forks).

Each arm (a method or an ablation of NBSP, see ``ARMS``) of each pair (a
``configs/metaworld_<pair>.py``) is one ``python -m nbsp_jax.train`` subprocess, run one
after another, writing ``<runs>/<pair>_<arm>/`` and logging to ``<runs>/<pair>_<arm>.log``.
An arm whose workdir holds ``results.json`` is finished and skipped, and so is one whose
report kept it (``<out>/<pair>_<arm>_results.json``: committed, the table grows over sessions
whose run folders are gone); any other is started, or resumed from its checkpoints (the train
CLI resumes a workdir that holds the same config), so rerunning the same command after an
interruption continues where it stopped. Arguments after
``--`` are passed to every train command (e.g. ``-- --config.steps_per_task=2000``). By
default every arm starts from the ``sac`` arm's end of phase 1 (``--config.fork_from``; the
``sac`` arm first trains phase 1 alone, then the other arms run, then the ``sac`` arm's phase 2
if it is among the arms): phase 1 is the same computation for every method, so the arms
are compared paired, on the same phase-1 network and data, at half the cost
(``--no-fork`` trains phase 1 in every arm).

After each arm, every finished run of the pair is collected into ``<out>/<pair>.md`` (ASR, FM,
FWT per arm as mean +- standard error over seeds with a 95 % percentile bootstrap interval of
the mean; the FM differences seed by seed against ``sac`` and ``nbsp``; the sr matrices; actor
drift and constant units where the runs record them; the plasticity metrics at the end of
each phase, for actor and critics; the commit each run recorded),
``<out>/<pair>.json`` (all per-seed numbers) and the runs' ``success.png`` / ``sr.png``.
The exit status is 1 if any arm failed (the others still run), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nbsp_jax import metrics
from nbsp_jax.method import method_spec
from nbsp_jax.training.phase import FORK_POINT
from nbsp_jax.workdir.results import source_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")

# Arm name -> train overrides, in table order.
ARMS: dict[str, tuple[str, ...]] = {
    "sac": ("--config.method=sac",),
    "replay_only": ("--config.method=replay_only",),
    "mask_only": ("--config.method=mask_only",),
    "nbsp": ("--config.method=nbsp",),
    "nbsp_hard": ("--config.method=nbsp_hard",),
    "nbsp_random": ("--config.method=nbsp", "--config.selector=random"),
    "nbsp_gradient": ("--config.method=nbsp", "--config.mask_placement=gradient"),
    # The baselines of Table 1 (appendix C.1), with their config defaults.
    "ewc": ("--config.method=ewc",),
    "npc": ("--config.method=npc",),
    "ancl": ("--config.method=ancl",),
    "crelu": ("--config.method=sac", "--config.activation=crelu"),
    "cbp": ("--config.method=cbp",),
    "pi": ("--config.method=pi",),
    "redo": ("--config.method=redo",),
    "shrink_perturb": ("--config.method=shrink_perturb",),
}
# The tables: the paper's ablation (Tables 2, 3 and 9, the default) and Table 1's baselines
# next to SAC and NBSP (in the paper's column order, then ReDo and Shrink & Perturb). Arms
# are shared: a run of the sac or nbsp arm counts in both.
TABLES: dict[str, tuple[str, ...]] = {
    "ablation": ("sac", "replay_only", "mask_only", "nbsp", "nbsp_hard", "nbsp_random",
                 "nbsp_gradient"),
    "baselines": ("sac", "ewc", "npc", "ancl", "crelu", "cbp", "pi", "nbsp", "redo",
                  "shrink_perturb"),
}
# The arm that trains phase 1 for all the others (its run keeps a fork point; every method's
# phase-1 training is the same computation, since masks and replay act only after it).
FORK_SOURCE = "sac"
METRICS = ("asr", "fm", "fwt")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# The arms every other arm is compared with seed by seed in the report.
PAIRED_REFERENCES = ("sac", "nbsp")


# The paper's numbers (H = 4: two cycles; 3 seeds; mean ± standard error) per pair and arm:
# (ASR, FM, FWT, source). Tables 9 (window), 10 (drawer) and 2 (button_window) hold vanilla
# SAC, replay only, masks only, hard masks and NBSP; Table 3 random skill neurons; Table 1 the
# baselines and NBSP (the same NBSP numbers). No paper number for nbsp_gradient, ReDo and
# Shrink & Perturb.
_ABLATION_COLUMNS = ("sac", "replay_only", "mask_only", "nbsp_hard", "nbsp")
_BASELINE_COLUMNS = ("ewc", "npc", "ancl", "cotasp", "crelu", "cbp", "pi", "nbsp")


def _paper_pair(ablation: str | None, ablation_rows, random, table1) -> dict[str, tuple]:
    """``arm -> (ASR, FM, FWT, source)`` from the paper's rows, as printed (one string per
    arm and metric, in column order)."""
    out = {}
    if ablation:
        for i, arm in enumerate(_ABLATION_COLUMNS):
            out[arm] = (*(row[i] for row in ablation_rows), ablation)
    out["nbsp_random"] = (*random, "Table 3")
    for i, arm in enumerate(_BASELINE_COLUMNS):
        if arm not in out:
            out[arm] = (*(row[i] for row in table1), "Table 1")
    return out


PAPER: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "window": _paper_pair(
        "Table 9",
        (("0.63 ± 0.02", "0.81 ± 0.08", "0.78 ± 0.11", "0.71 ± 0.04", "0.90 ± 0.04"),
         ("0.91 ± 0.10", "0.41 ± 0.13", "0.54 ± 0.26", "0.54 ± 0.13", "0.18 ± 0.01"),
         ("0.97 ± 0.02", "0.96 ± 0.01", "0.98 ± 0.01", "0.91 ± 0.05", "0.96 ± 0.02")),
        ("0.78 ± 0.09", "0.42 ± 0.13", "0.90 ± 0.06"),
        (("0.63 ± 0.03", "0.26 ± 0.01", "0.66 ± 0.04", "0.05 ± 0.01", "0.26 ± 0.14",
          "0.67 ± 0.05", "0.61 ± 0.02", "0.90 ± 0.04"),
         ("0.89 ± 0.07", "0.68 ± 0.04", "0.84 ± 0.10", "0.01 ± 0.01", "0.66 ± 0.42",
          "0.78 ± 0.13", "0.91 ± 0.07", "0.18 ± 0.01"),
         ("0.97 ± 0.02", "0.26 ± 0.01", "0.97 ± 0.03", "0.04 ± 0.01", "0.33 ± 0.19",
          "0.95 ± 0.02", "0.95 ± 0.01", "0.96 ± 0.02"))),
    "drawer": _paper_pair(
        "Table 10",
        (("0.67 ± 0.05", "0.78 ± 0.04", "0.74 ± 0.01", "0.59 ± 0.16", "0.96 ± 0.02"),
         ("0.78 ± 0.10", "0.48 ± 0.10", "0.64 ± 0.01", "0.52 ± 0.35", "0.07 ± 0.06"),
         ("0.94 ± 0.04", "0.97 ± 0.01", "0.98 ± 0.02", "0.82 ± 0.21", "0.98 ± 0.01")),
        ("0.72 ± 0.26", "0.41 ± 0.28", "0.83 ± 0.23"),
        (("0.68 ± 0.06", "0.35 ± 0.05", "0.64 ± 0.02", "0.07 ± 0.01", "0.29 ± 0.20",
          "0.61 ± 0.03", "0.60 ± 0.07", "0.96 ± 0.02"),
         ("0.80 ± 0.15", "0.69 ± 0.05", "0.88 ± 0.09", "0.01 ± 0.01", "0.31 ± 0.32",
          "0.91 ± 0.03", "0.71 ± 0.30", "0.07 ± 0.06"),
         ("0.98 ± 0.01", "0.39 ± 0.09", "0.96 ± 0.01", "0.09 ± 0.00", "0.42 ± 0.28",
          "0.93 ± 0.04", "0.88 ± 0.15", "0.98 ± 0.01"))),
    "button_window": _paper_pair(
        "Table 2",
        (("0.62 ± 0.01", "0.70 ± 0.08", "0.71 ± 0.06", "0.71 ± 0.03", "0.95 ± 0.05"),
         ("0.99 ± 0.02", "0.50 ± 0.16", "0.73 ± 0.21", "0.72 ± 0.04", "0.08 ± 0.12"),
         ("0.98 ± 0.02", "0.92 ± 0.05", "0.97 ± 0.02", "0.98 ± 0.03", "0.98 ± 0.01")),
        ("0.72 ± 0.01", "0.70 ± 0.05", "0.96 ± 0.02"),
        (("0.66 ± 0.06", "0.25 ± 0.00", "0.61 ± 0.01", "0.03 ± 0.00", "0.33 ± 0.10",
          "0.62 ± 0.01", "0.63 ± 0.02", "0.95 ± 0.05"),
         ("0.85 ± 0.14", "0.67 ± 0.00", "0.95 ± 0.05", "0.01 ± 0.00", "0.94 ± 0.01",
          "0.97 ± 0.03", "0.97 ± 0.05", "0.08 ± 0.12"),
         ("0.96 ± 0.01", "0.25 ± 0.01", "0.95 ± 0.03", "0.04 ± 0.01", "0.42 ± 0.20",
          "0.98 ± 0.02", "0.98 ± 0.02", "0.98 ± 0.01"))),
}


def paper_cell(pair: str, arm: str) -> str:
    """``'ASR, FM, FWT (Table n)'`` of the paper for ``arm`` on ``pair``, or '-'."""
    row = PAPER.get(pair, {}).get(arm)
    return "-" if row is None else f"{row[0]}, {row[1]}, {row[2]} ({row[3]})"


# --- arguments ----------------------------------------------------------------------------


def valid_pairs() -> list[str]:
    """Returns the pair names that have a ``configs/metaworld_<pair>.py``, sorted."""
    paths = glob.glob(os.path.join(CONFIGS, "metaworld_*.py"))
    return sorted(os.path.basename(p)[len("metaworld_"):-len(".py")] for p in paths)


def validate_pairs(pairs: Sequence[str]) -> list[str]:
    """Checks pair names against ``configs/metaworld_*.py``.

    Args:
        pairs: pair names, e.g. ``['window', 'button_window']``.

    Returns:
        The pairs in the given order, without duplicates.

    Raises:
        ValueError: naming the first unknown pair and the valid choices, or if none is given.
    """
    choices = valid_pairs()
    if not pairs:
        raise ValueError(f"no --pair given; valid choices: {', '.join(choices)}")
    for pair in pairs:
        if pair not in choices:
            raise ValueError(f"unknown pair {pair!r} (no configs/metaworld_{pair}.py); "
                             f"valid choices: {', '.join(choices)}")
    return list(dict.fromkeys(pairs))


def validate_arms(arms: Sequence[str], table: str = "ablation") -> list[str]:
    """Expands and checks arm names.

    Args:
        arms: arm names; an entry may hold several separated by commas, and ``'all'`` stands
            for every arm of ``TABLES[table]``.
        table: a key of ``TABLES``: its order is the table's row order.

    Returns:
        The arms in the table's order (then ``ARMS`` order for arms of another table),
        without duplicates.

    Raises:
        ValueError: naming the first unknown arm and the valid choices, or if none is given.
    """
    names = [a.strip() for entry in arms for a in entry.split(",") if a.strip()]
    if not names:
        raise ValueError(f"no arm given; valid choices: all, {', '.join(ARMS)}")
    for name in names:
        if name != "all" and name not in ARMS:
            raise ValueError(f"unknown arm {name!r}; valid choices: all, {', '.join(ARMS)}")
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; valid choices: {', '.join(TABLES)}")
    if "all" in names:
        return list(TABLES[table])
    order = list(TABLES[table]) + [a for a in ARMS if a not in TABLES[table]]
    return [a for a in order if a in names]


def arm_fields(arm: str) -> dict[str, str]:
    """``arm``'s config overrides as ``{field: value}`` strings (``ARMS[arm]`` parsed)."""
    return dict(o[len("--config."):].split("=", 1) for o in ARMS[arm])


def forks(arm: str) -> bool:
    """Whether ``arm`` can start from the ``FORK_SOURCE`` arm's end of phase 1: its method
    acts only after phase 1 (a method that acts during it, or another activation, trains its
    own phase 1)."""
    fields = arm_fields(arm)
    if fields.get("activation", "relu") != "relu":
        return False
    return not method_spec(fields.get("method", "nbsp")).acts_in_phase_one


def split_extra(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits ``argv`` at the first ``--`` into (own arguments, extra train overrides)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


# --- running ------------------------------------------------------------------------------


def workdir_of(runs: str, pair: str, arm: str) -> str:
    """Returns the workdir ``<runs>/<pair>_<arm>`` of one arm."""
    return os.path.join(runs, f"{pair}_{arm}")


def is_finished(workdir: str) -> bool:
    """True when ``workdir`` holds a ``results.json`` (the train CLI writes it last)."""
    return os.path.exists(os.path.join(workdir, "results.json"))


def results_copy(out: str, pair: str, arm: str) -> str:
    """Where the report keeps a finished arm's ``results.json``
    (``<out>/<pair>_<arm>_results.json``): a table committed from earlier sessions, whose run
    folders are gone, still has it."""
    return os.path.join(out, f"{pair}_{arm}_results.json")


def finished_results(runs: str, out: str | None, pair: str, arm: str) -> str | None:
    """The ``results.json`` of a finished arm: its run's, else the report's copy (``out``),
    else None (not finished)."""
    path = os.path.join(workdir_of(runs, pair, arm), "results.json")
    if os.path.exists(path):
        return path
    if out is not None and os.path.exists(results_copy(out, pair, arm)):
        return results_copy(out, pair, arm)
    return None


def train_command(pair: str, arm: str, *, runs: str, seeds: int, variant: str,
                  extra: Sequence[str] = (), python: str = sys.executable,
                  fork: bool = False) -> list[str]:
    """Builds the train command of one arm.

    Args:
        pair: a valid pair name (``configs/metaworld_<pair>.py``).
        arm: a key of ``ARMS``.
        runs: folder holding the workdirs.
        seeds: ``config.num_seeds``.
        variant: config variant (``'cpu'``, ``'smoke'``, ``''`` for the paper's values).
        extra: further ``--config.x=y`` overrides, appended last (so they win).
        python: interpreter.
        fork: start from the ``FORK_SOURCE`` arm's end of phase 1 (``--config.fork_from``),
            so that every arm shares phase 1 with it (paired comparison, half the cost);
            ignored for an arm that cannot fork (:func:`forks`).

    Returns:
        The argv list of ``python -m nbsp_jax.train ...``.
    """
    config = os.path.relpath(os.path.join(CONFIGS, f"metaworld_{pair}.py"))
    if variant:
        config += f":{variant}"
    return [python, "-m", "nbsp_jax.train", "--config", config,
            "--workdir", workdir_of(runs, pair, arm), f"--config.num_seeds={seeds}",
            "--config.progress=False", *ARMS[arm],
            *([f"--config.fork_from={workdir_of(runs, pair, FORK_SOURCE)}"]
              if fork and arm != FORK_SOURCE and forks(arm) else []), *extra]


def run_order(arms: Sequence[str], fork: bool) -> list[tuple[str, int]]:
    """The order in which the arms run, as ``(arm, stop_after_phase)`` jobs (0: to the end).

    Without forking, ``arms`` in order. With it, the ``FORK_SOURCE`` arm first trains phase 1
    only (``--config.stop_after_phase=1``, which writes its fork point), then the other arms run
    from that fork point, and the source arm's later phases come last (when it is asked for),
    so that the methods' results do not wait for the source's whole run. (When no arm forks,
    ``arms`` in order.)
    """
    if not fork or not any(forks(arm) for arm in arms if arm != FORK_SOURCE):
        return [(arm, 0) for arm in arms]
    return ([(FORK_SOURCE, 1)] + [(arm, 0) for arm in arms if arm != FORK_SOURCE]
            + ([(FORK_SOURCE, 0)] if FORK_SOURCE in arms else []))


def has_fork_point(workdir: str) -> bool:
    """True when ``workdir`` holds a written fork point (its phase 1 has trained)."""
    points = os.path.join(workdir, FORK_POINT, "checkpoints")
    return os.path.isdir(points) and bool(os.listdir(points))


def run_arm(cmd: Sequence[str], log_path: str) -> int:
    """Runs one train command with stdout and stderr appended to ``log_path``.

    Returns:
        The command's exit status.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT).returncode


# --- collecting ---------------------------------------------------------------------------


def bootstrap_ci(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds.

    Args:
        values: one value per seed, shape ``[S]``.
        resamples: number of resamples of the seeds (with replacement).
        seed: seed of ``numpy.random.default_rng``; the same input gives the same interval.
        level: coverage of the interval.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` if any value is nan (e.g. FM of a one-phase run).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [q, 100.0 - q])
    return float(lo), float(hi)


def _numbers(x: Any) -> list[float]:
    """All finite numbers in a (nested) list / scalar; None, bools and others are dropped."""
    if isinstance(x, list | tuple):
        return [v for item in x for v in _numbers(item)]
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return [float(x)]
    return []


def actor_drift(phases: Sequence[dict]) -> float | None:
    """Mean of every ``actor_drift`` number over all phases, seeds and earlier tasks.

    Args:
        phases: the ``phases`` list of a ``results.json``; ``actor_drift`` of a phase is per
            seed a list over earlier tasks (empty in the first phase), or absent.

    Returns:
        The mean, or None if no phase records a value.
    """
    values = [v for p in phases if isinstance(p, dict) for v in _numbers(p.get("actor_drift"))]
    return float(np.mean(values)) if values else None


def _unit_counts(x: Any) -> list[tuple[float, float]]:
    """(constant units, units) per seed in a ``constant_units`` entry: per seed a dict
    ``{net/layer: [constant, width]}`` summed over layers; a bare number counts with width
    nan. Anything else is dropped."""
    if isinstance(x, dict):
        pairs = [v for v in x.values() if len(_numbers(v)) == 2]
        if not pairs:
            return []
        return [(sum(_numbers(v)[0] for v in pairs), sum(_numbers(v)[1] for v in pairs))]
    if isinstance(x, list | tuple):
        return [c for item in x for c in _unit_counts(item)]
    return [(v, math.nan) for v in _numbers(x)]


def constant_units(phases: Sequence[dict]) -> dict[str, float] | None:
    """Units constant over the scoring window, averaged over phases and seeds.

    Args:
        phases: the ``phases`` list of a ``results.json``; ``constant_units`` of a phase is
            per seed ``{net/layer: [constant, width]}`` (all hidden layers of all networks), or
            absent.

    Returns:
        ``{'count': mean number of constant units, 'fraction': mean share of all units (nan
        when widths are unknown)}``, or None if no phase records a value.
    """
    counts = [c for p in phases if isinstance(p, dict)
              for c in _unit_counts(p.get("constant_units"))]
    if not counts:
        return None
    n, width = np.asarray(counts, dtype=np.float64).T
    return {"count": float(n.mean()), "fraction": float((n / width).mean())}


PLASTICITY = ("dormant_0", "dormant_0.1", "feature_srank", "param_norm", "update_norm")


def plasticity(phases: Sequence[dict]) -> list[dict] | None:
    """The plasticity metrics at the end of each phase, averaged over seeds.

    Args:
        phases: the ``phases`` list of a ``results.json``; ``plasticity`` of a phase is per
            seed ``{network: {metric: value}}`` (metrics of :data:`PLASTICITY`: dormant-unit
            shares at tau 0 and 0.1, the last hidden layer's effective rank, parameter and
            update norms), or absent.

    Returns:
        Per phase that records it ``{'phase' (1-based), 'task', 'actor': {metric: mean},
        'critics': {metric: mean}}``; the critics are every network but the actor (qf1,
        qf2), averaged over both and the seeds; None if no phase records plasticity. A phase
        resumed or forked after its start (``update_norm_from_step`` > 0) has no
        ``update_norm``.
    """
    out = []
    for number, p in enumerate(phases, 1):
        seeds = p.get("plasticity") if isinstance(p, dict) else None
        if not isinstance(seeds, list) or not seeds:
            continue
        groups: dict[str, dict[str, list[float]]] = {"actor": {}, "critics": {}}
        # The update norm is the change since the step the phase was resumed at: only a
        # phase trained from its start (0) gives the whole phase's (a forked phase 1: none).
        metrics = PLASTICITY if not p.get("update_norm_from_step") else PLASTICITY[:-1]
        for per_net in seeds:
            for net, values in (per_net or {}).items():
                group = groups["actor" if net == "actor" else "critics"]
                for m in metrics:
                    group.setdefault(m, []).extend(_numbers((values or {}).get(m)))
        means = {g: {m: float(np.mean(v)) for m, v in d.items() if v}
                 for g, d in groups.items()}
        out.append({"phase": number, "task": p.get("task"), **means})
    return out or None


def config_mismatches(arm: str, config: dict) -> list[str]:
    """Overrides of ``arm`` that the run's recorded config does not hold.

    Args:
        arm: a key of ``ARMS``.
        config: the ``config`` dict of a ``results.json``.

    Returns:
        One ``'field: run has X, arm wants Y'`` line per mismatch (empty if none or unknown).
    """
    out = []
    for override in ARMS[arm]:
        field, want = override[len("--config."):].split("=", 1)
        if field in config and str(config[field]) != want:
            out.append(f"{field}: run has {config[field]!r}, arm wants {want!r}")
    return out


def summarize_sr(sr: np.ndarray) -> tuple[dict, dict]:
    """Per-seed ASR/FM/FWT of ``sr [S, H, H]`` and their ``{metric: {'mean', 'stderr',
    'ci': [lo, hi]}}`` (95 % bootstrap interval of the mean)."""
    per_seed = metrics.metrics_for(sr, atari=False)
    summary = {}
    for name in METRICS:
        s = metrics.summarize(per_seed[name])
        summary[name] = {"mean": s["mean"], "stderr": s["stderr"],
                         "ci": list(bootstrap_ci(per_seed[name]))}
    return per_seed, summary


def collect_arm(workdir: str, arm: str, path: str | None = None) -> dict[str, Any]:
    """Reads one finished run and computes its per-seed metrics and their summary.

    Args:
        workdir: the run's folder (its plots are copied from there when it exists).
        arm: a key of ``ARMS`` (to check the run's config against it).
        path: its ``results.json`` (default ``<workdir>/results.json``).

    Returns:
        ``{'workdir', 'tasks', 'seeds', 'sr' [S][H][H], 'per_seed': {metric: [S]},
        'summary': {metric: {'mean', 'stderr', 'ci': [lo, hi]}}, 'summary_last_step' (the
        same from success at the episode's last step, or None), 'actor_drift'
        (:func:`actor_drift`), 'constant_units' (:func:`constant_units`), 'plasticity'
        (:func:`plasticity`), 'mismatches',
        'versions', 'wall_s'}``.

    Raises:
        ValueError: if the run has no sr matrix (``eval_episodes=0``) or a malformed one.
    """
    path = path or os.path.join(workdir, "results.json")
    with open(path) as f:
        r = json.load(f)
    if not r.get("sr"):
        raise ValueError(f"{path} has no sr matrix (eval_episodes=0?)")
    sr = np.asarray(r["sr"], dtype=np.float64)  # [S, H, H]
    per_seed, summary = summarize_sr(sr)
    last = (summarize_sr(np.asarray(r["sr_last_step"], np.float64))[1]
            if r.get("sr_last_step") else None)
    phases = r.get("phases") or []
    return {
        "workdir": workdir,
        "results": path,
        "tasks": list(r.get("tasks") or []),
        "seeds": int(sr.shape[0]),
        "sr": sr.tolist(),
        "per_seed": {name: [float(v) for v in per_seed[name]] for name in METRICS},
        "summary": summary,
        "summary_last_step": last,
        "actor_drift": actor_drift(phases),
        "constant_units": constant_units(phases),
        "plasticity": plasticity(phases),
        "mismatches": config_mismatches(arm, r.get("config") or {}),
        "versions": r.get("versions") or {},
        "wall_s": r.get("wall_s"),
    }


def collect(runs: str, pair: str, arms: Sequence[str] = tuple(ARMS),
            out: str | None = None) -> dict[str, dict]:
    """Collects the finished arms of one pair.

    Args:
        runs: folder holding the workdirs ``<pair>_<arm>``.
        pair: pair name.
        arms: arms to look for, in table order.
        out: the reports' folder: an arm whose run folder is gone counts as finished when the
            report kept its ``results.json`` (:func:`results_copy`).

    Returns:
        ``arm -> collect_arm(...)`` for each finished arm (:func:`finished_results`), in the
        order of ``arms``; unfinished arms are left out.
    """
    collected = {}
    for arm in arms:
        path = finished_results(runs, out, pair, arm)
        if path is not None:
            collected[arm] = collect_arm(workdir_of(runs, pair, arm), arm, path)
    return collected


def paired_differences(collected: dict[str, dict], reference: str,
                       metric: str = "fm") -> list[dict[str, Any]]:
    """Per-seed differences ``metric(arm) - metric(reference)`` for every other arm.

    Seed ``i`` of every arm runs on the same environment seeds (and, for the arms that fork,
    from the same phase-1 network), so the difference per seed removes what the seeds share.

    Args:
        collected: output of :func:`collect`.
        reference: the arm subtracted (left out if not collected).
        metric: one of ``METRICS`` (``'fm'`` by default).

    Returns:
        One dict per arm with as many seeds as the reference: ``{'arm', 'diffs' [S], 'mean',
        'stderr', 'ci': [lo, hi] (95 % bootstrap of the mean), 'lower': seeds where the arm's
        value is below the reference's, 'higher', 'seeds'}``; nan differences (e.g. FM of a
        one-phase run) make the summary nan.
    """
    if reference not in collected:
        return []
    ref = np.asarray(collected[reference]["per_seed"][metric], np.float64)
    rows = []
    for arm, c in collected.items():
        values = np.asarray(c["per_seed"][metric], np.float64)
        if arm == reference or values.shape != ref.shape:
            continue
        d = values - ref
        s = metrics.summarize(d)
        rows.append({"arm": arm, "diffs": d.tolist(), "mean": s["mean"], "stderr": s["stderr"],
                     "ci": list(bootstrap_ci(d)), "lower": int((d < 0).sum()),
                     "higher": int((d > 0).sum()), "seeds": int(d.size)})
    return rows


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    text = fmt.format(x)
    # A value that rounds to zero prints without a sign (not "-0.000").
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_cell(s: dict[str, Any]) -> str:
    """``'mean ± se [lo, hi]'`` of one ``summary[metric]`` dict."""
    lo, hi = s["ci"]
    return f"{_num(s['mean'])} ± {_num(s['stderr'])} [{_num(lo)}, {_num(hi)}]"


def format_sr(sr: Sequence[Sequence[float]], tasks: Sequence[str]) -> str:
    """One seed's sr matrix in one line: ``'after open: 0.90, 0.00; after close: ...'``.

    Rows are named by their phase's task, prefixed by the phase number when tasks repeat.
    """
    unique = len(set(tasks)) == len(tasks) == len(sr)
    names = (list(tasks) if unique else
             [f"{i + 1}:{tasks[i] if i < len(tasks) else '?'}" for i in range(len(sr))])
    return "; ".join(f"after {n}: {', '.join(f'{v:.2f}' for v in row)}"
                     for n, row in zip(names, sr, strict=True))


def git_commit() -> str:
    """Short commit of ``ROOT``, with ``+dirty`` when tracked files outside ``results/`` (the
    reports this program rewrites) have changes; 'unknown' outside a git checkout."""
    return source_commit(ROOT, ignore=("results",)) or "unknown"


def run_commits(collected: dict[str, dict]) -> str:
    """``'`c1` (arm, arm), `c2` (arm)'``: the commit each run's ``results.json`` recorded
    (``versions.nbsp_jax_commit``), 'not recorded' for runs written before it was."""
    by_commit: dict[str, list[str]] = {}
    for arm, c in collected.items():
        commit = (c.get("versions") or {}).get("nbsp_jax_commit")
        by_commit.setdefault(f"`{commit}`" if commit else "not recorded", []).append(arm)
    return "; ".join(f"{k} ({', '.join(v)})" for k, v in by_commit.items()) or "-"


def _dormant(metrics: dict) -> str:
    """``'x / y'``: the dormant shares at tau 0 and 0.1 of one network group."""
    return " / ".join(_num(metrics.get(m), "{:.2f}") for m in ("dormant_0", "dormant_0.1"))


def markdown(pair: str, collected: dict[str, dict], *, command: str, commit: str,
             missing: Sequence[str] = (), title: str = "Ablation") -> str:
    """The report of one pair.

    Args:
        pair: pair name.
        collected: output of :func:`collect`.
        command: the command line that produced it.
        commit: git commit of the code.
        missing: arms asked for but not finished (listed under the table).

    Returns:
        Markdown text: header (command, commit, versions of the first run), the metrics table,
        the mean actor drift / constant units, and the sr matrices per arm and seed.
    """
    first = next(iter(collected.values()), {})
    tasks = first.get("tasks", [])
    lines = [
        f"# {title}: {pair}",
        "",
        f"- command: `{command}`",
        f"- commit of this report's code: `{commit}`",
        f"- commit of each run's code: {run_commits(collected)}",
        f"- versions (first run): `{json.dumps(first.get('versions', {}))}`",
        f"- phases: {' -> '.join(tasks) if tasks else '-'}",
        "",
        "ASR, FM, FWT per arm: mean ± standard error over seeds [95 % percentile bootstrap "
        f"interval of the mean, {BOOTSTRAP_RESAMPLES} resamples].",
        "",
        "The paper's column: its ASR, FM, FWT (mean ± standard error over 3 seeds, two "
        "cycles: H = 4 phases of up to 1e6 steps, [768]x3 networks), not directly comparable.",
        "",
        "| arm | seeds | ASR | FM | FWT | paper: ASR, FM, FWT |",
        "|---|---|---|---|---|---|",
    ]
    for arm, c in collected.items():
        cells = " | ".join(format_cell(c["summary"][m]) for m in METRICS)
        lines.append(f"| {arm} | {c['seeds']} | {cells} | {paper_cell(pair, arm)} |")
    last = {arm: c["summary_last_step"] for arm, c in collected.items()
            if c.get("summary_last_step")}
    if last:
        lines += ["", "The same with success counted at the episode's last step (the "
                  "convention of CoTASP and others; above: at any step, as Meta-World and "
                  "Continual World count it):", "", "| arm | ASR | FM | FWT |", "|---|---|---|---|"]
        for arm, summary in last.items():
            lines.append(f"| {arm} | {' | '.join(format_cell(summary[m]) for m in METRICS)} |")
    if missing:
        lines += ["", f"Not finished: {', '.join(missing)}."]
    warnings = [f"{arm}: {m}" for arm, c in collected.items() for m in c["mismatches"]]
    if warnings:
        lines += ["", "**Config mismatches** (the run does not hold its arm's overrides):", ""]
        lines += [f"- {w}" for w in warnings]
    for reference in PAIRED_REFERENCES:
        rows = paired_differences(collected, reference)
        if not rows:
            continue
        lines += ["", f"FM minus {reference}'s, seed by seed (the same environment seeds; the "
                  "forked arms also share the phase-1 network), mean ± standard error "
                  "[95 % bootstrap interval]:", "",
                  f"| arm | FM - FM({reference}) | per seed | lower / higher than {reference} |",
                  "|---|---|---|---|"]
        for r in rows:
            cell = format_cell({"mean": r["mean"], "stderr": r["stderr"], "ci": r["ci"]})
            per = ", ".join(f"{v:+.2f}" for v in r["diffs"])
            lines.append(f"| {r['arm']} | {cell} | {per} | {r['lower']} / {r['higher']} of "
                         f"{r['seeds']} |")
    lines += ["", "Mean over phases and seeds of the per-phase entries (- where not recorded):",
              "", "| arm | actor drift | constant units (share of all hidden units) |",
              "|---|---|---|"]
    for arm, c in collected.items():
        units = c["constant_units"]
        units_cell = "-" if units is None else (
            f"{units['count']:.1f} ({_num(100 * units['fraction'], '{:.1f}')} %)")
        lines.append(f"| {arm} | {_num(c['actor_drift'], '{:.3g}')} | {units_cell} |")
    rows = [(arm, p) for arm, c in collected.items() for p in c.get("plasticity") or []]
    if rows:
        lines += ["", "Plasticity at the end of each phase, mean over seeds (critics: qf1 and "
                  "qf2 averaged): dormant units (share of hidden units whose mean |activation| "
                  "is at most tau times their layer's mean, tau = 0 / 0.1), effective rank "
                  "(srank, delta 0.01) of the last hidden layer's features, the parameter "
                  "norm, and the norm of the phase's parameter change (update norm; - where the "
                  "phase was resumed or forked after its start):", "",
                  "| arm | after phase | actor dormant | actor rank | critics dormant | "
                  "critics rank | param norm actor / critics | update norm actor / critics |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm, p in rows:
            a, q = p.get("actor", {}), p.get("critics", {})
            cells = [f"{p['phase']}: {p['task']}", _dormant(a), _num(a.get("feature_srank"),
                     "{:.0f}"), _dormant(q), _num(q.get("feature_srank"), "{:.0f}"),
                     *(f"{_num(a.get(m), '{:.0f}')} / {_num(q.get(m), '{:.0f}')}"
                       for m in ("param_norm", "update_norm"))]
            lines.append(f"| {arm} | {' | '.join(cells)} |")
    lines += ["", "sr[i][j] = success on the task of phase j after phase i:", "",
              "| arm | seed | sr |", "|---|---|---|"]
    for arm, c in collected.items():
        for s, m in enumerate(c["sr"]):
            lines.append(f"| {arm} | {s} | {format_sr(m, c['tasks'])} |")
    return "\n".join(lines) + "\n"


def write_pair(out: str, pair: str, collected: dict[str, dict], *, command: str, commit: str,
               missing: Sequence[str] = (), table: str = "ablation") -> str:
    """Writes ``<out>/<pair>.md``, ``<out>/<pair>.json`` and copies the runs' plots.

    Returns:
        The markdown text written.
    """
    os.makedirs(out, exist_ok=True)
    name = report_name(pair, table)
    text = markdown(pair, collected, command=command, commit=commit, missing=missing,
                    title="Ablation" if table == "ablation" else "Table 1 baselines")
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"pair": pair, "command": command, "commit": commit,
                   "missing": list(missing), "arms": collected}, f, indent=2)
    for arm, c in collected.items():
        for png in ("success", "sr"):
            src = os.path.join(c["workdir"], f"{png}.png")
            if os.path.exists(src):
                shutil.copy(src, os.path.join(out, f"{pair}_{arm}_{png}.png"))
        keep = results_copy(out, pair, arm)  # the table survives its run folders
        if os.path.abspath(c.get("results") or keep) != os.path.abspath(keep):
            shutil.copy(c["results"], keep)
    return text


def report_name(pair: str, table: str) -> str:
    """The report's file stem: ``<pair>`` for the ablation, ``<pair>_<table>`` otherwise."""
    return pair if table == "ablation" else f"{pair}_{table}"


def collect_and_write(runs: str, out: str, pair: str, arms: Sequence[str], *, command: str,
                      commit: str, table: str = "ablation") -> dict[str, dict]:
    """:func:`collect` then :func:`write_pair` (only when some arm has finished).

    Returns:
        The collected arms (possibly empty).
    """
    collected = collect(runs, pair, arms, out)
    missing = [a for a in arms if a not in collected]
    if not collected:
        print(f"{pair}: no finished arm under {runs} yet; nothing written")
        return collected
    write_pair(out, pair, collected, command=command, commit=commit, missing=missing,
               table=table)
    print(f"{pair}: {len(collected)}/{len(arms)} arms collected -> "
          f"{os.path.join(out, report_name(pair, table) + '.md')}")
    return collected


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parses and validates the command line.

    Returns:
        (arguments with ``pair`` and ``arms`` validated lists, extra train overrides).

    Raises:
        ValueError: for an unknown pair or arm, or ``--seeds < 1``.
    """
    own, extra = split_extra(argv)
    p = argparse.ArgumentParser(prog="python -m experiments.ablation",
                                description=__doc__.split("\n")[0])
    p.add_argument("--pair", action="append", default=[],
                   help="configs/metaworld_<pair>.py; repeat for several")
    p.add_argument("--table", default="ablation",
                   help=f"which table 'all' arms means and the report is named by: "
                        f"{', '.join(TABLES)} (default ablation)")
    p.add_argument("--arms", nargs="+", default=["all"],
                   help=f"'all' or some of: {', '.join(ARMS)} (space or comma separated)")
    p.add_argument("--seeds", type=int, default=5, help="config.num_seeds of every run")
    p.add_argument("--variant", default="cpu", help="config variant ('' = paper values)")
    p.add_argument("--runs", default="runs/ablation", help="folder of the workdirs and logs")
    p.add_argument("--out", default="results/ablation", help="folder of the reports")
    p.add_argument("--collect-only", action="store_true", help="only collect finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--no-fork", dest="fork", action="store_false",
                   help=f"train phase 1 in every arm (default: the arms start from the "
                        f"{FORK_SOURCE!r} arm's end of phase 1, which then runs first)")
    a = p.parse_args(own)
    a.pair = validate_pairs(a.pair)
    a.arms = validate_arms(a.arms, a.table)
    if a.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {a.seeds}")
    return a, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Runs (or prints, or only collects) the arms of each pair, collecting after each arm.

    Args:
        argv: command-line arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0, 1 if any arm failed, 2 for bad arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        a, extra = parse_args(argv)
    except ValueError as e:
        print(f"experiments.ablation: error: {e}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "experiments.ablation", *argv])
    commit = git_commit()
    # The report holds every finished arm of the table, not only the arms run now: a run of
    # one arm must not drop the others from <pair>.md.
    report = list(dict.fromkeys([*validate_arms(["all"], a.table), *a.arms]))
    if a.collect_only:
        for pair in a.pair:
            collect_and_write(a.runs, a.out, pair, report, command=command, commit=commit,
                              table=a.table)
        return 0
    jobs = [(pair, arm, stop) for pair in a.pair for arm, stop in run_order(a.arms, a.fork)]
    failed: list[str] = []
    ran: set[str] = set()  # pairs collected after one of their arms ran
    for n, (pair, arm, stop) in enumerate(jobs, 1):
        workdir = workdir_of(a.runs, pair, arm)
        tag = f"[{n}/{len(jobs)}] {pair} {arm}" + (" (phase 1, the fork point)" if stop else "")
        done = finished_results(a.runs, a.out, pair, arm)
        if done is not None and not stop:
            print(f"{tag}: skip ({done} exists)")
            continue
        if any(f.startswith(f"{pair}_{arm} ") for f in failed):
            print(f"{tag}: skip (failed above)")
            continue
        if stop and (has_fork_point(workdir) or is_finished(workdir)):
            print(f"{tag}: skip ({workdir} has its fork point)")
            continue
        if stop and all(finished_results(a.runs, a.out, pair, other) for other in a.arms
                        if other != FORK_SOURCE and forks(other)):
            print(f"{tag}: skip (every arm that forks from it is finished)")
            continue
        cmd = train_command(pair, arm, runs=a.runs, seeds=a.seeds, variant=a.variant,
                            extra=[*extra, *([f"--config.stop_after_phase={stop}"] if stop
                                             else [])], fork=a.fork)
        log = f"{workdir}.log"
        if a.dry_run:
            print(f"{tag}: {shlex.join(cmd)} > {log} 2>&1")
            continue
        print(f"{tag}: running, log {log}", flush=True)
        t0 = time.perf_counter()
        rc = run_arm(cmd, log)
        took = time.perf_counter() - t0
        if rc != 0:
            failed.append(f"{pair}_{arm} (exit {rc}, see {log})")
            print(f"{tag}: FAILED with exit status {rc} after {took:.0f} s; see {log}")
        else:
            print(f"{tag}: done in {took:.0f} s")
        ran.add(pair)
        collect_and_write(a.runs, a.out, pair, report, command=command, commit=commit,
                          table=a.table)
    if a.dry_run:
        return 0
    for pair in (p for p in a.pair if p not in ran):  # every arm was finished already
        collect_and_write(a.runs, a.out, pair, report, command=command, commit=commit,
                          table=a.table)
    if failed:
        print(f"{len(failed)} arm(s) failed: {'; '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
