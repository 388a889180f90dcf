"""Plots from a run's workdir (matplotlib, Agg backend: no screen needed).

    python -m nbsp_jax.workdir.plots runs/learning_check   # writes runs/learning_check/success.png
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def read_metrics(workdir: str) -> list[list[dict]]:
    """Rows of ``seed_{s}/metrics.jsonl`` for every seed, in seed order (a multi-process run
    keeps its seeds under ``process_{i}/seed_{s}``)."""
    dirs = [workdir] + sorted(os.path.join(workdir, d) for d in os.listdir(workdir)
                              if d.startswith("process_"))
    seeds = sorted((os.path.join(p, d) for p in dirs for d in os.listdir(p)
                    if d.startswith("seed_")), key=lambda d: int(d.rsplit("_", 1)[1]))
    out = []
    for d in seeds:
        with open(os.path.join(d, "metrics.jsonl")) as f:
            out.append([json.loads(line) for line in f])
    return out


def plot_success(workdir: str, out: str | None = None, tag: str = "charts/success_rate") -> str:
    """Training success rate (running window) against env steps, one line per seed.

    Phase boundaries (a change of task) are dashed vertical lines, as in the paper's Figure 3.
    Returns the PNG path (default ``workdir/success.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    boundaries, labels = [], []
    for s, seed_rows in enumerate(rows):
        pts = [(r["step"], r[tag], r.get("task")) for r in seed_rows if tag in r]
        if not pts:
            continue
        steps, values, tasks = zip(*pts, strict=True)
        # One line per phase, so a seed that stopped early is not joined to the next phase.
        cuts = [0] + [i for i in range(1, len(tasks)) if tasks[i] != tasks[i - 1]] + [len(tasks)]
        color = f"C{s}"
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            ax.plot(steps[a:b], values[a:b], lw=1.2, color=color,
                    label=f"seed {s}" if a == 0 else None)
        if s == 0:
            boundaries = [steps[i] for i in range(1, len(tasks)) if tasks[i] != tasks[i - 1]]
            labels = [tasks[0]] + [tasks[i] for i in range(1, len(tasks))
                                   if tasks[i] != tasks[i - 1]]
    for b in boundaries:
        ax.axvline(b, color="k", ls="--", lw=0.8)
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel(tag.split("/")[-1].replace("_", " "))
    ax.set_title(" -> ".join(labels))
    if "success" in tag:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = out or os.path.join(workdir, "success.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_sr(results: dict, out: str) -> str:
    """Heatmap of the seed-mean ``sr[i, j]``: rows = after phase i, columns = phase j's task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr = np.asarray(results["sr"], np.float64).mean(axis=0)  # [H, H]
    h = sr.shape[0]
    labels = [f"{j + 1}:{t}" for j, t in enumerate(results["tasks"])]
    fig, ax = plt.subplots(figsize=(1.2 * h + 2.5, 1.0 * h + 1.5))
    atari = results.get("config", {}).get("agent") == "sac_atari"
    # Normalised Atari returns can leave [0, 1] (below random, above human).
    lo, hi = (min(0.0, sr.min()), max(1.0, sr.max())) if atari else (0.0, 1.0)
    im = ax.imshow(sr, vmin=lo, vmax=hi, cmap="viridis")
    for i in range(h):
        for j in range(h):
            ax.text(j, i, f"{sr[i, j]:.2f}", ha="center", va="center",
                    color="w" if sr[i, j] < lo + 0.6 * (hi - lo) else "k", fontsize=9)
    ax.set_xticks(range(h), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(h), [f"after {i + 1}" for i in range(h)], fontsize=8)
    ax.set_xlabel("evaluated task (phase)")
    what = "normalised return" if atari else "success rate"
    ax.set_title(f"{what}, mean of {len(results['sr'])} seeds ({results['method']})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(plot_success(sys.argv[1]))
