"""SAC agents as pure functions over :class:`nbsp_jax.types.SACState`: continuous
(:mod:`~nbsp_jax.agents.sac`, CleanRL ``sac_continuous_action.py``) and discrete
(:mod:`~nbsp_jax.agents.sac_discrete`, CleanRL ``sac_atari.py``).

They take batches through a :data:`nbsp_jax.types.Sampler` and their optimizers from outside
(e.g. ``optax.chain(optax.adam(lr), nbsp_jax.masked_scale())``); they know no buffer, env or
method.
"""

from nbsp_jax.agents import sac, sac_discrete
from nbsp_jax.agents.sac import SAC, init_state, make_sac, update_many
from nbsp_jax.agents.sac_discrete import SACDiscrete, make_sac_discrete

__all__ = ["SAC", "SACDiscrete", "init_state", "make_sac", "make_sac_discrete", "sac",
           "sac_discrete", "update_many"]
