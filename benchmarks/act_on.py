"""End-to-end time of a short training run with the policy acting on the learner's device
or on a separate host device (``config.act_on``), alternated.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python benchmarks/act_on.py learner host learner host
"""

import json
import sys
import tempfile

from nbsp_jax.config import base_config
from nbsp_jax.training import train_and_evaluate

for act_on in sys.argv[1:]:
    c = base_config()
    c.tasks, c.num_seeds, c.hidden = ("reach",), 2, (256, 256)
    c.steps_per_task, c.learning_starts, c.buffer_size = 6000, 1000, 50_000
    c.eval_episodes, c.progress, c.early_stop, c.act_on = 0, False, False, act_on
    with tempfile.TemporaryDirectory() as d:
        p = train_and_evaluate(c, d)["phases"][0]
    print(json.dumps({"act_on": act_on, **{k: round(p[k], 1) for k in
                                           ("wall_s", "env_s", "act_s", "learn_s")},
                      "steps_per_s_per_seed": round(6000 / p["wall_s"], 1)}))
