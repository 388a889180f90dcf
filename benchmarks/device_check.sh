#!/usr/bin/env bash
# The accelerator check (benchmarks/device_check.py), as run on a lent GPU machine.
#
#   bash benchmarks/device_check.sh OUT_DIR [--dry-run] [--budget-s 480]
#
# That machine has JAX (CUDA), flax, optax and orbax, but not EnvPool, Meta-World, MuJoCo,
# gymnasium, ml_collections or tensorboardX, and it reaches no package index. Carry them as
# wheels for its Python (3.12), downloaded here into .whl/ (kept out of git):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 --platform any -d .whl \
#       envpool==1.2.5 metaworld==3.1.1 mujoco==3.3.0 gymnasium==1.4.0 ml_collections==1.1.0 \
#       tensorboardX==2.6.5 dm-env dm-tree farama-notifications glfw pyopengl
#
# This script installs what .whl/ holds (no index), the package itself without dependencies,
# then runs the check under an 8-minute timeout; the JSON is written part by part, so a run cut
# short keeps what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: benchmarks/device_check.sh OUT_DIR [--dry-run] [--budget-s S]}"
shift
py="${PYTHON:-python3}"
if [ -d .whl ]; then
  "$py" -m pip install -q --no-index --find-links .whl .whl/*.whl
fi
"$py" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
timeout 480 "$py" -m benchmarks.device_check --out "$out" "$@"
