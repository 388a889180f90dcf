"""Plots from a run's workdir (matplotlib, Agg backend: no screen needed).

    python -m nbsp_jax.plots runs/learning_check   # writes runs/learning_check/success.png
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def read_metrics(workdir: str) -> list[list[dict]]:
    """Rows of ``seed_{s}/metrics.jsonl`` for every seed, in seed order."""
    seeds = sorted((d for d in os.listdir(workdir) if d.startswith("seed_")),
                   key=lambda d: int(d.split("_")[1]))
    out = []
    for d in seeds:
        with open(os.path.join(workdir, d, "metrics.jsonl")) as f:
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
        ax.plot(steps, values, lw=1.2, label=f"seed {s}")
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
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = out or os.path.join(workdir, "success.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def final_success(workdir: str, window: int = 10) -> np.ndarray:
    """Mean of the last ``window`` logged success rates per seed, ``[S]``."""
    rows = read_metrics(workdir)
    return np.array([np.mean([r["charts/success_rate"] for r in seed
                              if "charts/success_rate" in r][-window:]) for seed in rows])


if __name__ == "__main__":
    print(plot_success(sys.argv[1]))
