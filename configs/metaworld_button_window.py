"""Meta-World cycle (button-press-topdown -> window-open) x 2, the paper's Table 1 row, with NBSP.

Variants: '' (the paper's values, Table 6), ':smoke' (tests), ':cpu' (the 2-core reduction,
see nbsp_jax.config.metaworld_cycle). Ablations are overrides, e.g. --config.method=sac,
--config.selector=random, --config.mask_target=actor, --config.method=nbsp_hard.
':cpu' runs 200k steps per phase on this pair (150k on the window pair): at 150k and at 200k
vanilla SAC learned button-press-topdown to >= 0.9 in 3 of 5 seeds (0.80 in the others at
200k). Measured at 200k, sac, 5 seeds, 2026-12-05: phase 1 2,506 s, phase 2 3,483 s (partly
beside other work); a method forked from sac's end of phase 1 runs phase 2 only.
"""

from nbsp_jax.config import metaworld_cycle


def get_config(variant: str = ""):
    c = metaworld_cycle(("button-press-topdown", "window-open"), variant)
    if variant == "cpu":
        c.steps_per_task = 200_000  # see the docstring
    return c
