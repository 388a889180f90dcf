"""Pong -> Bowling, the paper's Table 5 Atari cycle (discrete SAC).

Placeholder until issue 5 (discrete SAC on EnvPool Atari) lands: the file loads and names the
experiment, and training refuses it with a message naming that issue.
"""

from nbsp_jax.config import base_config, smoke


def get_config(variant: str = ""):
    c = base_config()
    c.agent = "sac_atari"  # not implemented yet: validate() names issue 5
    c.tasks = ("Pong", "Bowling")
    c.cycles = 2
    c.num_seeds = 3
    c.steps_per_task = 1_500_000
    c.learning_starts = 20_000
    c.buffer_size = 200_000
    c.hidden = (768, 768)
    c.batch_size = 64
    c.policy_lr = 1e-4
    c.q_lr = 1e-4
    if variant == "smoke":
        c = smoke(c)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; valid: '', 'smoke'")
    return c
