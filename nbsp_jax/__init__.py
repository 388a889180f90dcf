"""nbsp_jax: NBSP (neuron-level balance between stability and plasticity) in JAX/Flax.

Public API:

- Masking (optax): :func:`masked_scale`, :class:`MaskedScaleState`, :func:`set_masks`,
  :func:`get_masks`, :func:`masks_from_layers`.
- Skill neurons: :func:`skill_scores`, :func:`score_layers`, :func:`neuron_masks`,
  :func:`select_top`, :func:`constant_units` (dead units), and the ablation selectors
  :func:`random_scores`, :func:`activation_scores`, :func:`weight_scores`.
- Networks and capture: :class:`GaussianActor`, :class:`QNetwork`, :func:`record`.
- SAC: :func:`make_sac`, :func:`init_state`, :func:`update_many`.
- Replay: :class:`Transition`, :class:`ReplayBuffer`, :func:`init_buffer`, :class:`Sampler`.
- Environments: :class:`SeedVecEnv`, :func:`metaworld_tasks`.
- Atari: :func:`make_sac_discrete`, :class:`AtariSeedVecEnv`, the frame-once buffer module
  :mod:`nbsp_jax.buffers.frames` (also as ``nbsp_jax.atari_replay``).
- Devices: :func:`seed_mesh`, :func:`shard_seeds`, :func:`seed_parallel`.
- Continual-learning metrics: :func:`continual_metrics`, :func:`metrics_for`,
  :func:`normalize_atari`.
- Baselines: :func:`ewc`, :class:`EWCState`, :func:`consolidate`, :func:`diagonal_fisher`,
  :func:`get_ewc` (EWC as an optax transform), :func:`shrink_perturb`, :class:`CReLUDense`
  and :func:`hidden_widths` (CReLU), :func:`npc_importance`, :func:`npc_scales` and
  :func:`taylor_importance` (NPC as an optax transform), :class:`Injected` and
  :func:`injection_masks` (plasticity injection), :func:`aux_anchor`,
  :class:`AuxAnchorState`, :func:`set_aux_anchor` and :func:`get_aux_anchor` (ANCL's pull
  toward an auxiliary network, an optax transform); plasticity metrics
  :func:`plasticity_metrics`.
- Training: :func:`train_and_evaluate` (what ``python -m nbsp_jax.train`` calls).
"""

from nbsp_jax.agents import init_state, make_sac, make_sac_discrete, update_many
from nbsp_jax.buffers import ReplayBuffer, init_buffer
from nbsp_jax.buffers import frames as atari_replay
from nbsp_jax.envs import AtariSeedVecEnv, SeedVecEnv, metaworld_tasks
from nbsp_jax.method import (
    AuxAnchorState,
    EWCState,
    MaskedScaleState,
    activation_scores,
    aux_anchor,
    consolidate,
    constant_units,
    diagonal_fisher,
    ewc,
    get_aux_anchor,
    get_ewc,
    get_masks,
    injection_masks,
    masked_scale,
    masks_from_layers,
    neuron_masks,
    npc_importance,
    npc_scales,
    plasticity_metrics,
    random_scores,
    score_layers,
    select_top,
    set_aux_anchor,
    set_masks,
    shrink_perturb,
    skill_scores,
    taylor_importance,
    weight_scores,
)
from nbsp_jax.metrics import continual_metrics, metrics_for, normalize_atari
from nbsp_jax.networks import (
    CReLUDense,
    GaussianActor,
    Injected,
    QNetwork,
    hidden_widths,
    record,
)
from nbsp_jax.training import train_and_evaluate
from nbsp_jax.training.sharding import seed_mesh, seed_parallel, shard_seeds
from nbsp_jax.types import Sampler, Transition

__version__ = "0.1.0"

__all__ = [
    "AtariSeedVecEnv",
    "AuxAnchorState",
    "CReLUDense",
    "EWCState",
    "GaussianActor",
    "Injected",
    "MaskedScaleState",
    "QNetwork",
    "ReplayBuffer",
    "Sampler",
    "SeedVecEnv",
    "Transition",
    "activation_scores",
    "atari_replay",
    "aux_anchor",
    "consolidate",
    "constant_units",
    "continual_metrics",
    "diagonal_fisher",
    "ewc",
    "get_aux_anchor",
    "get_ewc",
    "get_masks",
    "hidden_widths",
    "injection_masks",
    "init_buffer",
    "init_state",
    "make_sac",
    "make_sac_discrete",
    "masked_scale",
    "masks_from_layers",
    "metaworld_tasks",
    "metrics_for",
    "neuron_masks",
    "npc_importance",
    "npc_scales",
    "normalize_atari",
    "plasticity_metrics",
    "random_scores",
    "record",
    "score_layers",
    "seed_mesh",
    "seed_parallel",
    "select_top",
    "set_aux_anchor",
    "set_masks",
    "shard_seeds",
    "shrink_perturb",
    "skill_scores",
    "taylor_importance",
    "train_and_evaluate",
    "update_many",
    "weight_scores",
]
