"""Meta-World cycle (window-open -> window-close) x 2, the paper's Table 1 row, with NBSP.

Variants: '' (the paper's values, Table 6), ':smoke' (tests), ':cpu' (the 2-core reduction,
see nbsp_jax.config.metaworld_cycle). Ablations are overrides, e.g. --config.method=sac,
--config.selector=random, --config.mask_target=actor, --config.method=nbsp_hard.
':cpu' measured here (sac, 5 seeds, 2 shared cores, 150k steps per phase): 9,722 s; on a faster
day (2026-12-05) sac's phase 1 took 2,134 s, its phase 2 1,789 s, and a forked method's
phase 2 1,872-2,344 s.
"""

from nbsp_jax.config import metaworld_cycle


def get_config(variant: str = ""):
    return metaworld_cycle(("window-open", "window-close"), variant)
