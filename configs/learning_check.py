"""Issue 2's learning check: SAC on Meta-World reach-v3, 3 seeds vmapped, ~30 min on 2 cores.

A reduction of the paper's single-task setting: [256, 256] networks instead of [768]x3 and
90k env steps per seed instead of 1e6; everything else as Table 6.
"""

from nbsp_jax.config import base_config, smoke


def get_config(variant: str = ""):
    c = base_config()
    c.tasks = ("reach",)
    c.num_seeds = 3
    c.hidden = (256, 256)
    c.steps_per_task = 90_000
    c.learning_starts = 5_000
    c.buffer_size = 200_000
    c.eval_episodes = 20
    c.log_every_steps = 2_000
    if variant == "smoke":
        c = smoke(c)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; valid: '', 'smoke'")
    return c
