"""Pong -> Bowling x 2, the paper's Table 5 Atari cycle (discrete SAC + NBSP, 3 seeds).

Table 6 gives 1.5e6 or 3e6 env steps per game without saying which game gets which; we read
1.5e6 for this cycle and 3e6 for BankHeist -> Alien. About 185 h on 2 CPU cores (README,
Atari); ':smoke' runs the whole path in about 1.5 minutes.
"""

from nbsp_jax.config import atari_cycle


def get_config(variant: str = ""):
    return atari_cycle(("Pong", "Bowling"), 1_500_000, variant)
