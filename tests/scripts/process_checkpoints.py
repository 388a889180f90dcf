"""One process of a 2-process run for tests/test_multiprocess.py: argv = workdir, saves. Saves
``saves`` process-local checkpoints in quick succession (both processes at once, as a run's
timed checkpoints may fall), then restores the latest through a new Checkpointer, as a resumed
run does; prints what it read back as JSON."""

import json
import os
import sys

from nbsp_jax.training.sharding import maybe_initialize_distributed

maybe_initialize_distributed()
import jax
import jax.numpy as jnp
import numpy as np

from nbsp_jax.workdir.checkpoint import Checkpointer

workdir, saves = sys.argv[1], int(sys.argv[2])
i = jax.process_index()
own = os.path.join(workdir, f"process_{i}")


def tree(step):
    # A value that tells process and step apart in every kind of leaf a run's state holds.
    v = 100.0 * i + step
    return {"loose": jnp.full((3,), v), "pinned": jax.device_put(jnp.full((2,), v),
                                                                 jax.local_devices()[0]),
            "key": jax.random.key(int(v)), "host_side": np.full((2,), v, np.float32)}


ckpt = Checkpointer(own, process_local=True)
for step in range(saves):
    ckpt.save(step, tree(step), {"step": step, "process": i})
ckpt.close()
again = Checkpointer(own, process_local=True)
latest = again.latest_step()
device, host = again.restore(latest, tree(0))
again.close()
print(json.dumps({
    "process": i, "latest": latest, "host": host, "kept": sorted(os.listdir(again.directory)),
    "loose": device["loose"].tolist(), "pinned": device["pinned"].tolist(),
    "host_side": device["host_side"].tolist(), "numpy": type(device["host_side"]).__name__,
    "committed": [device["loose"].committed, device["pinned"].committed],
    "key_matches": bool((jax.random.key_data(device["key"])
                         == jax.random.key_data(tree(latest)["key"])).all())}))
