"""What every test shares: the one tiny config tests build on (two seeds of Meta-World reach,
[32, 32] networks, 600 env steps, learning after 200; every test overrides only the fields it
is about), and a persistent XLA compilation cache.

The cache (``.jax_cache/`` at the repository root, or ``$JAX_COMPILATION_CACHE_DIR``) is set
through the environment, so the training runs that tests start as subprocesses share it with
this process: the suite compiles the same tiny shapes in many fresh interpreters.
"""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from nbsp_jax.config import base_config  # noqa: E402  (after the cache settings above)


def tiny_config(**overrides):
    """``base_config()`` shrunk to run a phase in seconds, with ``overrides`` applied."""
    c = base_config()
    c.tasks = ("reach",)
    c.num_seeds = 2
    c.hidden = (32, 32)
    c.batch_size = 32
    c.steps_per_task = 600
    c.learning_starts = 200
    c.buffer_size = 2_000
    c.chunk_steps = 50
    c.eval_episodes = 1
    c.log_every_steps = 100
    c.progress = False
    for k, v in overrides.items():
        c[k] = v
    return c
