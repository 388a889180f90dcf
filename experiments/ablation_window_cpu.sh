#!/usr/bin/env bash
# The window ablation table: the sac arm (fork source) first, then two chains of forked arms
# side by side on the 2 cores. Rerunning resumes every arm from its checkpoints.
cd "$(dirname "$0")/.."  # the repository root
python=${PYTHON:-python}
$python -m experiments.ablation --pair window --arms sac
(for a in nbsp nbsp_random nbsp_hard; do $python -m experiments.ablation --pair window --arms $a; done) &
(for a in replay_only mask_only nbsp_gradient; do $python -m experiments.ablation --pair window --arms $a; done) &
wait
$python -m experiments.ablation --pair window --collect-only
