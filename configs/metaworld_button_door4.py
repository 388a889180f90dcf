"""Meta-World cycle (button-press-topdown -> window-close -> door-open -> drawer-close)
x 2: the paper's Table 1 row, with NBSP.

Variants: '' (the paper's values, Table 6), ':smoke' (tests), ':cpu' (the 2-core reduction,
see nbsp_jax.config.metaworld_cycle). Ablations are overrides, e.g. --config.method=sac,
--config.selector=random, --config.mask_target=actor, --config.method=nbsp_hard.
':cpu' wall time not measured here.
"""

from nbsp_jax.config import metaworld_cycle


def get_config(variant: str = ""):
    return metaworld_cycle(
        ("button-press-topdown", "window-close", "door-open", "drawer-close"), variant
    )
