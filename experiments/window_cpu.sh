#!/usr/bin/env bash
# Issue 4's CPU-scale experiment: window-open -> window-close x 2, 3 seeds vmapped per method,
# the ':cpu' reduction of configs/metaworld_window.py. Each method resumes if interrupted.
# Usage: bash experiments/window_cpu.sh [methods...]   (default: sac nbsp)
set -euo pipefail
cd "$(dirname "$0")/.."
methods="${*:-sac nbsp}"
for m in $methods; do
  python -m nbsp_jax.train --config configs/metaworld_window.py:cpu \
    --workdir "runs/window_cpu_$m" --config.method="$m" --config.progress=False
done
python -m experiments.collect runs/window_cpu_* --out results/window_cpu
