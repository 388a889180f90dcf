"""The one tiny config that tests build on: two seeds of Meta-World reach, [32, 32] networks,
600 env steps, learning after 200; every test overrides only the fields it is about."""

from nbsp_jax.config import base_config


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
