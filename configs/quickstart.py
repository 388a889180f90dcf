"""Quickstart: continuous SAC learns Meta-World reach-v3, 2 seeds in one process, < 10 min CPU."""

from nbsp_jax.config import base_config, smoke


def get_config(variant: str = ""):
    c = base_config()
    c.tasks = ("reach",)
    c.num_seeds = 2
    c.hidden = (256, 256)
    c.steps_per_task = 30_000
    c.learning_starts = 5_000
    c.buffer_size = 100_000
    c.eval_episodes = 10
    c.log_every_steps = 2_000
    if variant == "smoke":
        c = smoke(c)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; valid: '', 'smoke'")
    return c
