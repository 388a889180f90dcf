"""A 4-seed NBSP run with and without the seed axis sharded over 2 devices (for
tests/test_sharding.py); prints the two runs' sr and parameters as JSON."""

import json
import sys

import jax
import numpy as np

from nbsp_jax import training
from nbsp_jax.config import base_config, smoke

assert jax.device_count() == 2
out = {}
for shard in (False, True):
    c = smoke(base_config())
    c.tasks, c.num_seeds, c.method, c.seed_axis = ("reach", "drawer-close"), 4, "nbsp", "map"
    c.steps_per_task, c.learning_starts, c.eval_episodes, c.progress = 1000, 500, 2, False
    c.shard_seeds = shard
    r = training.train_and_evaluate(c, sys.argv[1] + f"/{shard}")
    leaves = jax.tree.leaves(r["state"].params)
    out[shard] = {"sr": r["sr"], "params": [np.asarray(x).tolist() for x in leaves],
                  "devices": sorted({len(x.sharding.device_set) for x in leaves})}
print(json.dumps(out))
