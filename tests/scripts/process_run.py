"""One process of a (possibly multi-process) run for tests/test_multiprocess.py: argv =
workdir, num_seeds, seed_offset; prints its results as JSON."""

import json
import sys

from nbsp_jax.training.sharding import maybe_initialize_distributed

maybe_initialize_distributed()
import jax
import numpy as np

from nbsp_jax import training
from nbsp_jax.config import base_config

c = base_config()
c.tasks, c.hidden, c.batch_size, c.buffer_size, c.chunk_steps = ("reach",), (32, 32), 32, 2000, 50
c.steps_per_task, c.learning_starts, c.eval_episodes, c.progress = 600, 200, 1, False
c.num_seeds, c.seed_offset = int(sys.argv[2]), int(sys.argv[3])
r = training.train_and_evaluate(c, sys.argv[1])
kernel = r["state"].params.actor["params"]["fc0"]["kernel"]
print(json.dumps({"process": jax.process_index(), "sr": r["sr"], "phases": r["phases"],
                  "metrics": r["metrics"],
                  "kernel_sums": np.asarray(kernel).sum(axis=(1, 2)).tolist()}))
