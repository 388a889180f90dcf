"""The paper's method, as pieces another JAX project can import.

==================  =====================================================================
module              what
==================  =====================================================================
``switches``        which parts a ``config.method`` turns on, and every option's choices
``scores``          skill-neuron scores (Eq. 1-4), the ablation's selectors, dead units
``masks``           top-``m`` selection and mask values (Eq. 5, 7), their installation
``masking``         ``masked_scale``: the optax transform scaling each neuron's update
``replay``          which gradient steps replay earlier tasks (Eq. 8), a replaying sampler
``goal``            the record of a task's steps and the goal metric they are scored by
``ewc``             baseline: elastic weight consolidation as an optax transform
``ancl``            baseline: ANCL's pull toward an auxiliary network (optax), on EWC
``plasticity``      plasticity metrics: dormant units, feature rank, parameter norms
``resets``          baselines: Shrink & Perturb at task switches, ReDo's dormant-unit resets
``injection``       baseline: which parts of a plasticity-injected network train
``npc``             baseline: neuron-level plasticity control's Taylor importance (optax)
==================  =====================================================================

Nothing here knows an agent class, a buffer, an environment or the training loop: networks
come in as Flax modules, batches through :data:`nbsp_jax.types.Sampler` functions.
"""

from nbsp_jax.method.ancl import AuxAnchorState, aux_anchor, get_aux_anchor, set_aux_anchor
from nbsp_jax.method.ewc import EWCState, consolidate, diagonal_fisher, ewc, get_ewc
from nbsp_jax.method.goal import SCORE_WINDOWS, GoalRecorder, scoring_goal
from nbsp_jax.method.injection import injection_masks
from nbsp_jax.method.masking import (
    MaskedScaleState,
    get_masks,
    layer_paths,
    masked_scale,
    masks_from_layers,
    ones_masks,
    set_masks,
)
from nbsp_jax.method.masks import (
    build_masks,
    install_masks,
    neuron_masks,
    num_selected,
    select_top,
)
from nbsp_jax.method.npc import NPCState, get_npc, npc_importance, npc_scales, taylor_importance
from nbsp_jax.method.plasticity import (
    DORMANT_TAUS,
    dormant_fraction,
    feature_gram,
    feature_srank,
    forward_order,
    plasticity_metrics,
    srank_from_gram,
    tree_norm,
)
from nbsp_jax.method.replay import replay_sampler, replay_step
from nbsp_jax.method.resets import (
    CBPState,
    cbp_init,
    cbp_step,
    contribution_utility,
    dormant_units,
    redo,
    reset_adam_moments,
    shrink_perturb,
)
from nbsp_jax.method.scores import (
    activation_scores,
    constant_units,
    is_constant,
    random_scores,
    record_networks,
    score_layers,
    score_networks,
    skill_scores,
    weight_scores,
)
from nbsp_jax.method.switches import (
    MASK_PLACEMENTS,
    MASK_POLICIES,
    MASK_TARGETS,
    METHODS,
    NETWORKS,
    SELECTORS,
    MethodSpec,
    method_spec,
)

__all__ = [
    "DORMANT_TAUS", "dormant_fraction", "dormant_units", "feature_gram", "feature_srank",
    "forward_order", "plasticity_metrics", "srank_from_gram", "redo", "reset_adam_moments",
    "tree_norm", "CBPState", "cbp_init", "cbp_step", "contribution_utility",
    "MASK_PLACEMENTS", "MASK_POLICIES", "MASK_TARGETS", "METHODS", "NETWORKS", "SCORE_WINDOWS",
    "SELECTORS", "EWCState", "GoalRecorder", "MaskedScaleState", "MethodSpec",
    "activation_scores", "build_masks", "consolidate", "constant_units", "diagonal_fisher",
    "ewc", "get_ewc", "get_masks", "install_masks", "is_constant",
    "layer_paths", "masked_scale", "masks_from_layers", "method_spec", "neuron_masks",
    "num_selected", "ones_masks", "random_scores", "record_networks", "replay_sampler",
    "replay_step", "shrink_perturb", "score_layers", "score_networks", "scoring_goal",
    "select_top", "set_masks", "NPCState", "get_npc", "npc_importance", "npc_scales",
    "taylor_importance", "injection_masks", "skill_scores", "weight_scores",
    "AuxAnchorState", "aux_anchor", "get_aux_anchor", "set_aux_anchor",
]
