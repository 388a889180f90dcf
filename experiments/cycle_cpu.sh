#!/usr/bin/env bash
# Issue 4's CPU-scale experiment: one Meta-World cycle at its ':cpu' reduction, 3 seeds vmapped
# per method, the methods side by side (one process each, sharing the cores); each run resumes
# if interrupted.
# Usage: bash experiments/cycle_cpu.sh NAME [methods...]
#   NAME: a configs/metaworld_NAME.py (window, drawer, button_window, ...); default methods: sac nbsp
# Results: runs/NAME_cpu_<method>/, collected into results/NAME_cpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; shift
methods="${*:-sac nbsp}"
for m in $methods; do
  python -m nbsp_jax.train --config "configs/metaworld_$name.py:cpu" \
    --workdir "runs/${name}_cpu_$m" --config.method="$m" --config.progress=False &
done
wait
python -m experiments.collect runs/"${name}"_cpu_* --out "results/${name}_cpu"
