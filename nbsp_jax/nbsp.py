"""NBSP for a SAC agent: score skill neurons, build and install masks, replay earlier tasks.

Written for one seed (the training loop vmaps it). The three networks (actor, critic ``qf1``,
critic ``qf2``) are scored separately, each ranked jointly over its own hidden layers.

Methods (``config.method``), by what they switch on:

=============  =====  ======  ===========
method         masks  replay  mask values
=============  =====  ======  ===========
``sac``        no     no      -
``replay_only`` no    yes     -
``mask_only``  yes    no      alpha * (1 - score)
``nbsp``       yes    yes     alpha * (1 - score)
``nbsp_hard``  yes    yes     0
=============  =====  ======  ===========
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nbsp_jax import neurons, replay
from nbsp_jax.masking import get_masks, masks_from_layers, set_masks
from nbsp_jax.networks import record
from nbsp_jax.sac import SAC, SACState, Sampler
from nbsp_jax.sac_discrete import SACDiscrete

NETWORKS = ("actor", "qf1", "qf2")
SELECTORS = ("goal", "random", "activation", "weight")
MASK_TARGETS = ("actor", "critic", "both")
MASK_POLICIES = ("latest", "min")
MASK_PLACEMENTS = ("update", "gradient")


class MethodSpec(NamedTuple):
    """What a method switches on."""

    masks: bool
    replay: bool
    hard: bool


METHODS = {
    "sac": MethodSpec(False, False, False),
    "replay_only": MethodSpec(False, True, False),
    "mask_only": MethodSpec(True, False, False),
    "nbsp": MethodSpec(True, True, False),
    "nbsp_hard": MethodSpec(True, True, True),
}


def method_spec(name: str) -> MethodSpec:
    """Looks up a method; raises ValueError naming the valid choices."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid choices: {tuple(METHODS)}")
    return METHODS[name]


def record_networks(agent: SAC | SACDiscrete, state: SACState, obs: jax.Array,
                    action: jax.Array, chunk: int | None = None) -> dict:
    """Post-ReLU hidden activations of each network: ``{net: {layer: [T, N]}}``.

    The actor sees ``obs [T, ...]``; continuous critics see the recorded pairs ``(obs,
    action [T, A])``, discrete critics ``obs`` alone (they output every action's value).

    Args:
      chunk: record ``chunk`` steps at a time (``lax.map``), so that conv feature maps of
        ``T`` frames never coexist in memory (only their channel means are kept); ``None``
        records all ``T`` at once.
    """
    p = state.params
    critic_in = (lambda o, a: (o,)) if isinstance(agent, SACDiscrete) else (lambda o, a: (o, a))

    def rec(o, a):
        return {
            "actor": record(agent.actor, p.actor, o)[1],
            "qf1": record(agent.critic, p.q["qf1"], *critic_in(o, a))[1],
            "qf2": record(agent.critic, p.q["qf2"], *critic_in(o, a))[1],
        }

    t = obs.shape[0]
    if chunk is None or t <= chunk:
        return rec(obs, action)
    pad = lambda x: jnp.pad(x, [(0, -t % chunk)] + [(0, 0)] * (x.ndim - 1))
    split = lambda x: pad(x).reshape(-1, chunk, *x.shape[1:])
    out = jax.lax.map(lambda xs: rec(*xs), (split(obs), split(action)))
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:t], out)


def _net_params(state: SACState, net: str) -> dict:
    return state.params.actor if net == "actor" else state.params.q[net]


def score_networks(
    agent: SAC, state: SACState, obs: jax.Array, action: jax.Array, goal: jax.Array,
    valid: jax.Array, key: jax.Array, selector: str = "goal", neutral_constant: bool = False,
    chunk: int | None = None,
) -> tuple[dict, dict]:
    """Goal scores (Eq. 1-4) and ranking scores (by ``selector``) of every hidden neuron.

    Args:
      obs, action: recorded steps ``[T, D]``, ``[T, A]``.
      goal: goal metric ``[T]`` (episode success or return of the step's episode).
      valid: bool ``[T]``, which recorded rows are real.
      key: PRNG key for the ``random`` selector.
      selector: one of :data:`SELECTORS`; decides *which* neurons are skill neurons. The goal
        scores always give the mask values.
      neutral_constant: score neurons with constant activation 0.5 (see
        :func:`nbsp_jax.neurons.skill_scores`).
      chunk: see :func:`record_networks`.

    Returns:
      ``(goal_scores, rank_scores, constant)``, each ``{net: {layer: [N]}}``; ``constant``
      (bool) marks the neurons whose activation never changed over the valid steps.
    """
    acts = record_networks(agent, state, obs, action, chunk)
    goal_scores = {n: neurons.score_layers(a, goal, valid, neutral_constant)
                   for n, a in acts.items()}
    constant = {n: {k: neurons.constant_units(v, valid) for k, v in a.items()}
                for n, a in acts.items()}
    if selector == "goal":
        return goal_scores, goal_scores, constant
    rank = {}
    for i, (net, layer_acts) in enumerate(acts.items()):
        if selector == "random":
            sizes = {k: v.shape[-1] for k, v in layer_acts.items()}
            rank[net] = neurons.random_scores(jax.random.fold_in(key, i), sizes)
        elif selector == "activation":
            rank[net] = neurons.activation_scores(layer_acts, valid)
        elif selector == "weight":
            rank[net] = neurons.weight_scores(_net_params(state, net), list(layer_acts))
        else:
            raise ValueError(f"unknown selector {selector!r}; valid choices: {SELECTORS}")
    return goal_scores, rank, constant


def build_masks(goal_scores: dict, rank_scores: dict, proportion: float, alpha: float,
                hard: bool) -> tuple[dict, dict]:
    """Per-layer masks and skill-neuron sets of each network.

    Returns:
      ``(masks, skill)``: ``{net: {layer: [N] float32}}`` and ``{net: {layer: [N] bool}}``.
    """
    masks, skill = {}, {}
    for net in goal_scores:
        masks[net] = neurons.neuron_masks(rank_scores[net], proportion, alpha, hard,
                                          mask_values=goal_scores[net])
        skill[net] = neurons.select_top(rank_scores[net], proportion)
    return masks, skill


def install_masks(state: SACState, layer_masks: dict, target: str = "both",
                  policy: str = "latest") -> SACState:
    """Writes new masks into the ``masked_scale`` states of the actor and/or critic optimizers.

    Args:
      state: a learner state whose optimizers contain ``masked_scale``.
      layer_masks: ``{net: {layer: [N]}}`` from :func:`build_masks`.
      target: ``'actor'``, ``'critic'`` or ``'both'`` (Table 4); untargeted networks keep
        all-ones masks.
      policy: ``'latest'`` (the paper: masks from the last task only) or ``'min'`` (per
        neuron, the smallest mask over the tasks so far).
    """
    p = state.params
    actor_m = masks_from_layers(p.actor, layer_masks["actor"] if target != "critic" else {})
    q_m = {n: masks_from_layers(p.q[n], layer_masks[n] if target != "actor" else {})
           for n in ("qf1", "qf2")}
    if policy == "min":
        actor_m = jax.tree.map(jnp.minimum, get_masks(state.opt.actor), actor_m)
        q_m = jax.tree.map(jnp.minimum, get_masks(state.opt.q), q_m)
    opt = state.opt._replace(actor=set_masks(state.opt.actor, actor_m),
                             q=set_masks(state.opt.q, q_m))
    return state._replace(opt=opt)


def store_for_replay(pre: replay.ReplayBuffer, current: replay.ReplayBuffer, key: jax.Array,
                     store_size: int) -> replay.ReplayBuffer:
    """Appends ``store_size`` transitions drawn uniformly (without replacement) from ``current``
    to the earlier-task buffer ``pre`` (Eq. 8); all of them if ``current`` holds fewer."""
    capacity = current.data.reward.shape[0]
    n = min(store_size, capacity)
    u = jax.random.uniform(key, (capacity,))
    u = jnp.where(jnp.arange(capacity) < current.size, u, -1.0)
    _, idx = jax.lax.top_k(u, n)  # filled rows rank first
    rows = jax.tree.map(lambda x: x[idx], current.data)
    return replay.add(pre, rows, jnp.arange(n) < current.size)


def replay_step(step: jax.Array, interval: int, policy_frequency: int = 1) -> jax.Array:
    """Whether gradient step ``step`` draws its batch from the earlier-task buffer (Eq. 8).

    With ``policy_frequency`` ``pf = 1`` (one batch feeds the critics, the actor and the
    temperature, Algorithm 2) this is ``step % interval == 0``. With CleanRL's delayed policy
    update (``pf > 1``) the actor trains only on the batches of the steps ``g`` with
    ``g % pf == 0``; then ``g % interval == 0`` would miss them whenever ``interval`` and ``pf``
    share a factor (``k = 10, pf = 2``: no actor update would ever see a replayed batch). So a
    step is indexed by its group ``m = g // pf`` and its place ``j = g % pf`` in the group, and
    replays when ``(m + j * (interval // pf)) % interval == 0``: for each ``j`` exactly one
    group in ``interval`` replays, so exactly ``1 / interval`` of the critic batches and
    exactly ``1 / interval`` of the actor's (and temperature's) batches come from the
    earlier-task buffer, in every window of ``interval * pf`` steps, spread evenly.

    Args:
      step: int scalar (or array) of gradient-step indices.
      interval: ``k`` of Eq. 8 (Table 6: 10).
      policy_frequency: the agent's ``pf`` (1 for discrete SAC, which updates every network on
        every batch).

    Returns:
      bool, the shape of ``step``.
    """
    pf = int(policy_frequency)
    group, place = step // pf, step % pf
    return (group + place * (interval // pf)) % interval == 0


def replay_sampler(current: Sampler, pre: Sampler, pre_nonempty: jax.Array,
                   interval: int, policy_frequency: int = 1) -> Sampler:
    """A sampler that draws gradient step ``g``'s batch from ``pre`` when
    :func:`replay_step` says so and ``pre_nonempty``, else from ``current`` (Eq. 8).

    Args:
      current, pre: samplers of the current-task and the earlier-task buffer (e.g.
        :func:`buffer_sampler`).
      pre_nonempty: bool scalar, whether the earlier-task buffer holds anything.
      interval: ``k`` of Eq. 8 (Table 6: 10).
      policy_frequency: the agent's delayed-policy period (see :func:`replay_step`).
    """

    def from_pre_if_any(key, step):
        a, b = pre(key, step), current(key, step)
        return jax.tree.map(lambda x, y: jnp.where(pre_nonempty, x, y), a, b)

    def sampler(key, step):
        # `step` is shared by all seeds (unbatched under vmap), so this stays a real branch.
        return jax.lax.cond(replay_step(step, interval, policy_frequency), from_pre_if_any,
                            current, key, step)

    return sampler
