"""BankHeist -> Alien x 2, the paper's Table 5 Atari cycle (discrete SAC + NBSP, 3 seeds).

3e6 env steps per game (our reading of Table 6, see configs/atari_pong_bowling.py).
"""

from nbsp_jax.config import atari_cycle


def get_config(variant: str = ""):
    return atari_cycle(("BankHeist", "Alien"), 3_000_000, variant)
