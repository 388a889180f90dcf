"""The files of a workdir that hold results: ``config.json`` (and the check that a workdir is
resumed with its own config), ``results.json``, ``results.md`` and the plots.

Host-side: numpy and the standard library only.
"""

from __future__ import annotations

import json
import os

import numpy as np

from nbsp_jax import metrics
from nbsp_jax.workdir import plots

# Config fields that change no computed value (display, logging cadence, checkpoint interval):
# a workdir may be resumed with other values of them.
PRESENTATION = ("progress", "log_every_steps", "checkpoint_every_s", "stop_after_phase")
# Config fields added after runs were written: the value that reproduces such a run, from its
# config.json (which lacks the field).
ADDED = {"alpha_logp": lambda old: "fresh" if old.get("agent") == "sac" else "reuse"}
# Fields of methods and options that came later: a run written before them used none of them,
# so their defaults (those of nbsp_jax.config, checked by a test) reproduce it.
ADDED.update({k: (lambda old, v=v: v) for k, v in {
    "redo_every": 1000, "redo_tau": 0.1, "cbp_decay": 0.99, "cbp_rate": 1e-4,
    "cbp_maturity": 100, "npc_decay": 0.999, "npc_c_max": 2.0, "stop_after_phase": 0,
    "ancl_lambda": 10.0, "ancl_critic_lambda": 0.0, "ancl_aux_steps": 0}.items()})


def read_config(path: str) -> dict:
    """A run's ``config.json`` as a dict, with the fields of :data:`ADDED` it lacks filled in
    with the values that reproduce it."""
    with open(path) as f:
        old = json.load(f)
    return {**{k: value(old) for k, value in ADDED.items()}, **old}


def prepare_workdir(workdir: str, config) -> bool:
    """Creates ``workdir`` and writes ``config.json``.

    Returns:
      True if ``workdir`` already holds a run of this same config (to resume or report).
      Fields of :data:`PRESENTATION` may differ (the workdir keeps its ``config.json``).

    Raises:
      FileExistsError: the workdir holds a run of another config; the message names the fields
        that differ. Nothing in the workdir is touched.
    """
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        old = read_config(path)
        diff = sorted(k for k in set(old) | set(new)
                      if k not in PRESENTATION and old.get(k) != new.get(k))
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise FileExistsError(
                f"workdir {workdir!r} holds a run of a different config ({detail}); refusing "
                "to overwrite or resume it. Choose a new --workdir, or rerun with its config."
            )
        return True
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    return False


def last_step_results(phase_summaries: list) -> dict:
    """``{'sr_last_step': [S, H, H], 'metrics_last_step': ...}``: the sr matrix and its
    metrics with Meta-World success counted at the episode's last step, from the phases'
    ``eval_last_step_sr`` rows (``[S][H]`` each); empty when a phase lacks them (Atari, no
    evaluation, or a run resumed from before the field existed)."""
    rows = [p.get("eval_last_step_sr") for p in phase_summaries]
    if not rows or any(r is None for r in rows):
        return {}
    sr = np.transpose(np.asarray(rows, np.float64), (1, 0, 2))  # [H][S][H] -> [S, H, H]
    return {"sr_last_step": sr.tolist(),
            "metrics_last_step": metrics.summarize(metrics.metrics_for(sr, atari=False))}


def merge_process_results(config, parts: list[dict]) -> dict:
    """One results dict over all ``config.num_seeds`` seeds from per-process results (each for
    its block of seeds, in process order): per-seed lists are concatenated, per-phase scalars
    (steps, times) take the largest, and the metrics are recomputed over all seeds."""
    sr = [x for p in parts for x in p["sr"]] if all(p["sr"] for p in parts) else []
    summary = metrics.summarize(metrics.metrics_for(
        np.asarray(sr, np.float64), atari=config.agent == "sac_atari")) if sr else {}
    phases = []
    for rows in zip(*(p["phases"] for p in parts), strict=True):
        merged = {}
        for k, v in rows[0].items():
            if isinstance(v, list):
                merged[k] = [x for r in rows for x in r[k]]
            elif isinstance(v, int | float) and not isinstance(v, bool):
                merged[k] = max(r[k] for r in rows)
            else:
                merged[k] = v
        phases.append(merged)
    return {**parts[0], "sr": sr, "metrics": summary, "phases": phases,
            **last_step_results(phases),
            "num_seeds": config.num_seeds, "config": json.loads(config.to_json_best_effort()),
            "wall_s": max(p["wall_s"] for p in parts), "processes": len(parts),
            "checkpoint_bytes": sum(p.get("checkpoint_bytes", 0) for p in parts)}


def results_dict(config, sr_rows: list, phase_summaries: list, phases: list, wall_s: float,
                 device: str) -> dict:
    """``results.json`` of a finished run: ``sr [S, H, H]`` from the per-phase ``sr_rows``
    ``[H][H][S]``, its ASR/AR, FM, FWT (Meta-World also ``sr_last_step`` and its metrics:
    success at the episode's last step), the per-phase summaries, config and versions."""
    if sr_rows:  # eval_episodes > 0
        sr = np.transpose(np.asarray(sr_rows, np.float64), (2, 0, 1))  # [S, H, H]
        summary = metrics.summarize(metrics.metrics_for(sr, atari=config.agent == "sac_atari"))
        sr = sr.tolist()
    else:
        sr, summary = [], {}
    return {
        "tasks": phases,
        "sr": sr,
        "metrics": summary,
        **last_step_results(phase_summaries),
        "phases": phase_summaries,
        "num_seeds": config.num_seeds,
        "method": config.method,
        "config": json.loads(config.to_json_best_effort()),
        "versions": library_versions(device),
        "wall_s": wall_s,
    }


def write_results(workdir: str, results: dict) -> None:
    """Writes ``results.json``, ``results.md`` and the plots (their paths go to
    ``results['plots']``)."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(results_table([results]))
    if results["config"]["agent"] == "sac_atari":  # Atari has returns, not success
        curves = plots.plot_success(workdir, os.path.join(workdir, "return.png"),
                                    tag="charts/episodic_return")
    else:
        curves = plots.plot_success(workdir)
    results["plots"] = [curves]
    if results["sr"]:
        results["plots"].append(plots.plot_sr(results, os.path.join(workdir, "sr.png")))


def results_table(runs: list[dict]) -> str:
    """A Markdown table in the form of the paper's Table 1 rows: mean +- stderr over seeds."""
    name = "AR" if any("ar" in r["metrics"] for r in runs) else "ASR"
    lines = [f"| method | tasks | seeds | {name} | FM | FWT |", "|---|---|---|---|---|---|"]

    def cell(m, k):
        if k not in m or not np.isfinite(m[k]["mean"]):
            return "-"  # e.g. FM of a single phase
        return f"{m[k]['mean']:.3f} ± {m[k]['stderr']:.3f}"

    for r in runs:
        seq = " → ".join(r["tasks"][: len(r["config"]["tasks"])])
        rows = [(r["method"], r["metrics"])]
        if r.get("metrics_last_step"):  # Meta-World: success at the episode's last step
            rows.append((f"{r['method']} (success at the last step)", r["metrics_last_step"]))
        for method, m in rows:
            lines.append(f"| {method} | {seq} (x{r['config']['cycles']}) | {r['num_seeds']} "
                         f"| {cell(m, 'ar' if 'ar' in m else 'asr')} | {cell(m, 'fm')} "
                         f"| {cell(m, 'fwt')} |")
    return "\n".join(lines) + "\n"


def library_versions(device: str) -> dict:
    """Versions of the libraries that determine results, and ``device`` (the accelerator's
    kind)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nbsp_jax", "jax", "jaxlib", "flax", "optax", "envpool", "metaworld", "mujoco",
                 "gymnasium", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["nbsp_jax_commit"] = source_commit()
    out["device"] = device
    return out


def source_commit(root: str | None = None, ignore: tuple[str, ...] = ()) -> str | None:
    """Short git commit of the checkout ``root`` (default: the one whose ``nbsp_jax`` source
    is running), with ``+dirty`` when its tracked files have uncommitted changes (outside the
    folders ``ignore``, relative to ``root``); None when ``root`` is not the top of a git
    checkout (e.g. an installed wheel) or git is missing."""
    import subprocess

    # nbsp_jax/workdir/results.py -> the folder that holds the package.
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, ".git")):  # a folder, or a worktree's file
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    *(f":(exclude){p}" for p in ignore))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
