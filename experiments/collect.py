"""Collects finished runs into one folder for the README: results.md table, JSON, plots.

    python -m experiments.collect runs/window_cpu_sac runs/window_cpu_nbsp --out results/x
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from nbsp_jax.training import results_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    runs = []
    for d in a.workdirs:
        path = os.path.join(d, "results.json")
        if not os.path.exists(path):
            print(f"skipping {d}: no results.json (unfinished)")
            continue
        with open(path) as f:
            r = json.load(f)
        runs.append(r)
        name = os.path.basename(os.path.normpath(d))
        shutil.copy(path, os.path.join(a.out, f"{name}.json"))
        for png in ("success.png", "sr.png"):
            if os.path.exists(os.path.join(d, png)):
                shutil.copy(os.path.join(d, png), os.path.join(a.out, f"{name}_{png}"))
    table = results_table(runs)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
