"""Quickstart: NBSP on a two-task Meta-World cycle, reach -> drawer-close, 2 seeds in one
process, in about 5-9 minutes on 2 CPU cores.

Reach is learned first (about 20-35k steps here), then drawer-close (about 10-20k); the
evaluation after drawer-close shows how much of reach is kept. Each phase ends at 50k steps or
when the last 10 training episodes reach 90 % success. [128, 128] networks keep it fast; the
paper's values are in configs/metaworld_*.py.
"""

from nbsp_jax.config import base_config, smoke


def get_config(variant: str = ""):
    c = base_config()
    c.tasks = ("reach", "drawer-close")
    c.cycles = 1
    c.method = "nbsp"
    c.num_seeds = 2
    c.hidden = (128, 128)
    c.steps_per_task = 50_000
    c.learning_starts = 5_000
    c.buffer_size = 50_000
    c.replay_store_size = 10_000
    c.score_steps = 5_000
    c.eval_episodes = 10
    c.log_every_steps = 2_000
    if variant == "smoke":
        c = smoke(c)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; valid: '', 'smoke'")
    return c
