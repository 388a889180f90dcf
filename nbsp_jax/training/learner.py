"""The learner: one agent's jitted, seed-vmapped functions, built once per run from a config.

The seed axis is mapped with ``vmap`` or ``lax.map`` (:func:`over_seeds`) and, with a mesh,
split over devices (:mod:`nbsp_jax.training.sharding`). The optimizers are the domain's Adam,
chained with :func:`nbsp_jax.masked_scale` when the method masks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nbsp_jax import method
from nbsp_jax.domains import Domain, get_domain
from nbsp_jax.method import masked_scale
from nbsp_jax.training import sharding as sh


class Learner(NamedTuple):
    """Jitted, seed-vmapped functions of one agent (built once per run). Shapes: ``[S, ...]``."""

    domain: Domain  # what differs between Meta-World and Atari
    mesh: jax.sharding.Mesh | None  # devices the seed axis is split over (None: one device)
    actor_device: jax.Device | None  # where the policy acts during updates (None: after them)
    agent: object  # sac.SAC or sac_discrete.SACDiscrete
    spec: method.MethodSpec
    act: callable  # (actor_params, obs [S,E,...], keys) -> (actions [S,E,...], keys)
    act_eval: callable  # (actor_params, obs [S,E,...], keys) -> (actions [S,E,...], keys)
    act_sampled_eval: callable  # the same with the training (sampled) policy, eval shapes
    add: callable  # (buffer, staged rows [S,...]) -> buffer
    update: callable  # (state, buffer, pre_buffer, step0, active [S] host bools) -> (state, info)
    update_all: callable  # jitted (state, buffer, pre_buffer, step0): every seed active
    update_gated: callable  # jitted (..., active [S]): inactive seeds keep their state
    end_task: callable  # (state, obs, action, goal, valid, keys) -> EndOfTask
    store: callable  # (pre_buffer, buffer, keys, slot) -> pre_buffer
    probe: callable  # (actor_params, obs [S, n, ...]) -> policy outputs [S, n, ...]
    drift: callable  # (actor_params, obs [S, H, n, ...], ref [S, H, n, ...]) -> [S, H]
    change: callable  # (params, params0) -> {net: [S]}: L2 norm of each network's change
    task_switch: callable  # (state, keys [S], phase) -> state: the method's switch of tasks
    redo: callable  # (state, buffer, keys [S]) -> (state, {net: [S] units reset}): ReDo
    cbp: callable  # (state, cbp, buffer, keys [S]) -> (state, cbp, {net: [S] replaced}): CBP
    aux_start: callable  # (state) -> state: ANCL's auxiliary agent (fresh optimizers)
    aux_end: callable  # (main, aux, obs, action, valid, keys) -> main with the aux pull set


class EndOfTask(NamedTuple):
    """What scoring at the end of a task gives, each ``[S, ...]``: the state with its new
    masks, and ``{net: {layer: [S, N]}}`` goal scores, masks, skill-neuron and constant-unit
    flags, and ``{net: {metric: [S]}}`` plasticity metrics (:mod:`nbsp_jax.method.plasticity`).
    """

    state: object
    scores: dict
    masks: dict
    skill: dict
    constant: dict
    plasticity: dict  # {net: {metric: [S]}}: method.plasticity_metrics, before the masks
    #                   (with 'feature_gram' [S, N, N] in place of 'feature_srank')


def over_seeds(fn, mode: str, in_axes):
    """Maps ``fn`` over the leading seed axis.

    ``'vmap'`` batches the seeds into one computation (best on accelerators). ``'map'`` runs
    them one after another inside the same compiled call (``lax.map``), each seed's matmuls
    then use the whole CPU; on XLA:CPU this is faster than vmap's batched matmuls (see the
    README's throughput section). Both give the same values.
    """
    if mode == "vmap":
        batched = jax.vmap(fn, in_axes=in_axes)

        def vmapped(*args):
            # One seed (a size known when tracing) is squeezed instead of vmapped: a vmap of
            # size 1 lays the weight gradients out [out, in], and every Adam and Polyak fusion
            # then reads its gradient through a transpose (+12-14 % update time at [768]x3).
            sizes = {x.shape[0] for a, ax in zip(args, in_axes, strict=True) if ax == 0
                     for x in jax.tree.leaves(a)}
            if sizes != {1}:
                return batched(*args)
            out = fn(*(jax.tree.map(lambda x: x[0], a) if ax == 0 else a
                       for a, ax in zip(args, in_axes, strict=True)))
            return jax.tree.map(lambda x: x[None], out)

        return vmapped

    def mapped(*args):
        seeded = tuple(a for a, ax in zip(args, in_axes, strict=True) if ax == 0)

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes,
                                                                    strict=True)))

        return jax.lax.map(one, seeded)

    return mapped


def actor_device(config) -> jax.Device | None:
    """The device the policy runs on while the update is in flight (``config.act_on='host'``),
    or None (``'learner'``: act on the learner's device, after its update).

    With an accelerator this is the host CPU. On a CPU-only machine it is the last of the
    host's devices (start with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``): XLA
    runs the computations of one device one after another, so acting on the learner's own
    device would wait for the update.
    """
    if config.act_on == "learner":
        return None
    if jax.default_backend() != "cpu":
        return jax.local_devices(backend="cpu")[0]
    if jax.local_device_count() < 2:
        raise ValueError(
            "config.act_on='host' needs a host device besides the learner's; on a CPU-only "
            "machine start with XLA_FLAGS=--xla_force_host_platform_device_count=2, or use "
            "config.act_on='learner'")
    return jax.local_devices()[-1]


def learner_devices(config) -> list:
    """Devices the learner uses: all of this process's, less the acting device on a CPU-only
    machine."""
    devices, actor = jax.local_devices(), actor_device(config)
    return [d for d in devices if d != actor] if actor in devices else devices


def run_mesh(config) -> jax.sharding.Mesh | None:
    """The device mesh the seed axis is split over, or None (one learner device, or
    ``config.shard_seeds`` off). Raises ValueError when ``num_seeds`` does not divide."""
    devices = learner_devices(config)
    if not config.shard_seeds or len(devices) == 1:
        return None
    mesh = sh.seed_mesh(devices)
    sh.check_divisible(config.num_seeds, mesh)
    return mesh


def optimizer(config, domain: Domain, spec: method.MethodSpec, lr: float,
              ewc_strength: float = 0.0,
              ancl_strength: float = 0.0) -> optax.GradientTransformation | None:
    """A method's optimizer (None: the domain's plain Adam). Masking: ``masked_scale`` after
    Adam (``mask_placement='update'``: it scales Adam's step, Algorithm 2 line 13) or before it
    (``'gradient'``: a literal port that scales the gradient Adam sees). EWC: its penalty
    gradient (strength ``ewc_strength``) added before Adam, as a term of the loss; ANCL adds
    its pull toward the auxiliary network (``ancl_strength``) beside it. NPC: its
    importance accumulated from the gradient before Adam, its scales applied after it."""
    if spec.ancl:
        return optax.chain(method.ewc(ewc_strength), method.aux_anchor(ancl_strength),
                           domain.adam(lr))
    if spec.ewc:
        return optax.chain(method.ewc(ewc_strength), domain.adam(lr))
    if spec.npc:  # importance from the raw gradient; its scales on Adam's step
        return optax.chain(method.npc_importance(config.npc_decay), domain.adam(lr),
                           masked_scale())
    if spec.inject:  # plasticity injection: masks freeze every part but the training one
        return optax.chain(domain.adam(lr), masked_scale())
    if not spec.masks:
        return None
    if config.mask_placement == "gradient":
        return optax.chain(masked_scale(), domain.adam(lr))
    return optax.chain(domain.adam(lr), masked_scale())


def end_of_task(config, domain: Domain, agent, spec: method.MethodSpec):
    """One seed's ``(state, obs [T,...], action [T,...], goal [T], valid [T], key) ->
    EndOfTask``: scores (by ``config.selector``), masks and their installation when the method
    masks."""
    def end_task(state, obs, action, goal, valid, key):
        acts = method.record_networks(agent, state, obs, action, domain.record_chunk,
                                      domain.critic_takes_action)
        scores, rank, constant = method.score_networks(
            agent, state, obs, action, goal, valid, key, config.selector,
            config.constant_neurons == "neutral", domain.record_chunk,
            domain.critic_takes_action, acts=acts)
        # The feature rank from the Gram matrix, on the host (no SVD in a sharded program).
        plasticity = method.plasticity_metrics(acts, valid, _nets(state.params), "gram")
        masks, skill = method.build_masks(scores, rank, config.skill_proportion,
                                          config.mask_alpha, spec.hard)
        if spec.masks:
            state = method.install_masks(state, masks, config.mask_target, config.mask_policy)
        if spec.ewc:
            state = consolidate_task(config, domain, agent, state, obs, action, valid, key)
        if spec.npc:  # its learning-rate factors replace the goal-score masks in the record
            state = install_npc_scales(
                config, state, {n: {k: a.shape[-1] for k, a in layers.items()}
                                for n, layers in acts.items()})
            masks = installed_masks(state, {n: list(layers) for n, layers in acts.items()})
        return EndOfTask(state, scores, masks, skill, constant, plasticity)

    return end_task


# Per-example gradients held at once when estimating a Fisher (floats, ~64 MB).
FISHER_FLOATS = 1 << 24


def consolidate_task(config, domain: Domain, agent, state, obs, action, valid, key):
    """EWC at a task's end, one seed: the task's diagonal Fishers (:func:`task_fishers`)
    added to each optimizer's :class:`nbsp_jax.method.EWCState` with the end-of-task
    parameters as anchors.

    Args:
      obs, action: ``[T, ...]`` recorded steps; valid: ``[T]`` bool; key: PRNG key.

    Returns:
      The state with both optimizers' penalties consolidated (``config.ewc_decay``).
    """
    p = state.params
    f_actor, f_q = task_fishers(domain, agent, p, obs, action, valid, key)
    opt = state.opt._replace(
        actor=method.consolidate(state.opt.actor, f_actor, p.actor, config.ewc_decay),
        q=method.consolidate(state.opt.q, f_q, p.q, config.ewc_decay))
    return state._replace(opt=opt)


def task_fishers(domain: Domain, agent, params, obs, action, valid, key) -> tuple:
    """One seed's diagonal Fishers over a task's valid recorded rows: of the actor (score of
    ``log pi(a|s)`` for an action the policy ``params.actor`` draws on each recorded state)
    and of the critics (gradient of ``Q(s, a)`` at the recorded action: a unit-variance
    Gaussian model of the return).

    Args:
      obs, action: ``[T, ...]`` recorded steps; valid: ``[T]`` bool; key: PRNG key.

    Returns:
      ``(F_actor, F_q)``, shaped like ``params.actor`` and ``params.q``.
    """
    mod = domain.agent_module
    T = valid.shape[0]
    noise = mod.fisher_noise(agent, jax.random.fold_in(key, 7), T)
    one = lambda x: x[None]  # the networks take a batch axis

    def actor_nll(actor, ex):
        o, n = ex
        return -mod.fisher_log_prob(agent, actor, one(o), one(n))[0]

    def critic_out(q, ex):
        o, a = ex
        return mod.q_taken(agent, q, one(o), one(a))[0]

    def fisher(loss, params, examples):
        size = sum(x.size for x in jax.tree.leaves(params))
        chunk = int(max(1, min(256, FISHER_FLOATS // size)))
        return method.diagonal_fisher(loss, params, examples, chunk, valid.astype(jnp.float32))

    return fisher(actor_nll, params.actor, (obs, noise)), fisher(critic_out, params.q,
                                                                 (obs, action))


def aux_start(agent):
    """One seed's ``state -> state``: ANCL's auxiliary network at the start of a task, a copy
    of the agent with fresh optimizer states (new Adam moments, no EWC penalty, no auxiliary
    pull: it learns the new task alone, as the original's new trainer does)."""
    def start(state):
        p = state.params
        opt = type(state.opt)(agent.actor_opt.init(p.actor), agent.q_opt.init(p.q),
                              agent.alpha_opt.init(p.log_alpha))
        return state._replace(opt=opt)

    return start


def aux_end(domain: Domain, agent):
    """One seed's ``(main, aux, obs, action, valid, key) -> main``: the held agent ``main``
    with ANCL's pull toward the trained auxiliary agent ``aux`` installed in both optimizers
    (:func:`nbsp_jax.method.set_aux_anchor`: its parameters, weighted by its Fishers on the
    auxiliary training's recorded rows ``[T, ...]``)."""
    def end(main, aux, obs, action, valid, key):
        f_actor, f_q = task_fishers(domain, agent, aux.params, obs, action, valid, key)
        opt = main.opt._replace(
            actor=method.set_aux_anchor(main.opt.actor, f_actor, aux.params.actor),
            q=method.set_aux_anchor(main.opt.q, f_q, aux.params.q))
        return main._replace(opt=opt)

    return end


def install_npc_scales(config, state, hidden: dict):
    """NPC at a task's end, one seed: each hidden neuron's learning-rate factor from its
    importance so far (:func:`nbsp_jax.method.npc_scales`), installed into ``masked_scale``
    of the actor's and the critics' optimizers as the smaller of it and the earlier factor
    (every finished task's important neurons stay consolidated). Output layers keep 1.

    Args:
      hidden: ``{net: {layer: N}}``, the hidden layers' widths of ``'actor'``, ``'qf1'``,
        ``'qf2'``.
    """
    p = state.params

    def scales(opt, params_of: dict):
        s = method.npc_scales(method.get_npc(opt), config.npc_decay, config.npc_c_max)
        # 0 on the hidden layers' leaves, 1 on the others (output heads).
        where = {n: method.masks_from_layers(pn, {k: jnp.zeros(w) for k, w in hidden[n].items()})
                 for n, pn in params_of.items()}
        return s, where

    def combine(opt, s, where):
        new = jax.tree.map(lambda f, w: jnp.where(w == 0, f, 1.0), s, where)
        return method.set_masks(opt, jax.tree.map(jnp.minimum, method.get_masks(opt), new))

    s_a, w_a = scales(state.opt.actor, {"actor": p.actor})
    s_q, w_q = scales(state.opt.q, {"qf1": p.q["qf1"], "qf2": p.q["qf2"]})
    opt = state.opt._replace(actor=combine(state.opt.actor, s_a, w_a["actor"]),
                             q=combine(state.opt.q, s_q, w_q))
    return state._replace(opt=opt)


def installed_masks(state, hidden: dict) -> dict:
    """``{net: {layer: [N]}}``: the per-neuron factors ``masked_scale`` holds for the hidden
    layers ``hidden`` (``{net: [layer, ...]}``) of one seed's actor and critics."""
    trees = {"actor": method.get_masks(state.opt.actor), **method.get_masks(state.opt.q)}

    def kernel_mask(tree, layer):
        node = tree["params"]
        for part in layer.split("/"):
            node = node[part]
        return node["kernel"]

    return {n: {k: kernel_mask(trees[n], k) for k in layers} for n, layers in hidden.items()}


def task_switch(config, domain: Domain, agent, spec: method.MethodSpec):
    """One seed's ``(state, key, phase) -> state`` between phase ``phase`` and the next
    (0-based; ``-1``: before the first). Shrink & Perturb: the actor, the critics and their
    targets shrink toward a fresh initialisation drawn with ``key`` (``config.sp_shrink``,
    ``config.sp_perturb``); the temperature and the optimizer states are kept. Plasticity
    injection: the actor's and critics' ``masked_scale`` masks train part ``new{phase}``
    (``base`` for ``-1``) and freeze the rest (:func:`nbsp_jax.method.injection_masks`); the
    function, and so the output, is unchanged. Only those two methods call it."""
    def inject(state, phase):
        p = state.params
        opt = state.opt._replace(
            actor=method.set_masks(state.opt.actor, method.injection_masks(p.actor, phase)),
            q=method.set_masks(state.opt.q, method.injection_masks(p.q, phase)))
        return state._replace(opt=opt)

    def switch(state, key, phase):
        if spec.inject:
            return inject(state, phase)
        fresh = domain.init_state(agent, key).params
        sp = lambda a, b: method.shrink_perturb(a, b, config.sp_shrink, config.sp_perturb)
        p = state.params
        params = p._replace(actor=sp(p.actor, fresh.actor), q=sp(p.q, fresh.q),
                            q_target=sp(p.q_target, fresh.q))
        return state._replace(params=params)

    return switch


def _reset_batch(domain: Domain, agent, state, buffer, key):
    """One seed's batch of ``batch_size`` current-task transitions, its hidden activations
    ``{net: {layer: [B, N]}}`` (forward order), every row valid, and a fresh init of the
    networks as ``{net: params}``."""
    k_batch, k_init = jax.random.split(key)
    sampler = domain.sampler(agent, buffer)
    batch = sampler.take(jax.tree.map(lambda x: x[0], sampler.draw(k_batch, 1)), 0)
    acts = method.record_networks(agent, state, batch.obs, batch.action,
                                  domain.record_chunk, domain.critic_takes_action)
    acts = {net: {k: a[k] for k in method.forward_order(a)} for net, a in acts.items()}
    fresh = _nets(domain.init_state(agent, k_init).params)
    return acts, jnp.ones(batch.obs.shape[0], bool), fresh


def _nets(params) -> dict:
    """``{'actor', 'qf1', 'qf2'}``: the three trained networks of one seed's params."""
    return {"actor": params.actor, "qf1": params.q["qf1"], "qf2": params.q["qf2"]}


def _with_resets(state, new: dict, touched: dict):
    """``state`` with the networks ``new`` (``{net: params}``) and zero Adam moments where
    ``touched``."""
    p = state.params
    opt = state.opt._replace(
        actor=method.reset_adam_moments(state.opt.actor, touched["actor"]),
        q=method.reset_adam_moments(state.opt.q, {"qf1": touched["qf1"],
                                                  "qf2": touched["qf2"]}))
    q = {"qf1": new["qf1"], "qf2": new["qf2"]}
    return state._replace(params=p._replace(actor=new["actor"], q=q), opt=opt)


def redo_step(config, domain: Domain, agent):
    """One seed's ``(state, buffer, key) -> (state, {net: units reset})``: ReDo on a batch
    of ``batch_size`` transitions of the current-task buffer: every unit of the actor and
    the critics with normalised activity ``<= config.redo_tau`` gets a fresh initialisation
    of its incoming weights, zero outgoing weights and zero Adam moments
    (:func:`nbsp_jax.method.redo`). Targets follow by Polyak averaging (or the next copy)."""
    def step(state, buffer, key):
        acts, valid, fresh = _reset_batch(domain, agent, state, buffer, key)
        old, new, touched, counts = _nets(state.params), {}, {}, {}
        for net, layer_acts in acts.items():
            dormant = method.dormant_units(layer_acts, valid, config.redo_tau)
            new[net], touched[net] = method.redo(old[net], fresh[net], dormant)
            counts[net] = sum(d.sum() for d in dormant.values())
        return _with_resets(state, new, touched), counts

    return step


def cbp_widths(domain: Domain, agent, state) -> dict:
    """``{net: {layer: N}}``: the hidden widths of one seed's networks (shapes only)."""
    obs = jnp.zeros((1, *domain.obs_shape), domain.obs_dtype)
    action = jnp.zeros((1, *domain.action_shape), domain.action_dtype)
    acts = jax.eval_shape(lambda s: method.record_networks(
        agent, s, obs, action, domain.record_chunk, domain.critic_takes_action), state)
    return {net: {k: a.shape[-1] for k, a in layers.items()} for net, layers in acts.items()}


def cbp_chunk(config, domain: Domain, agent):
    """One seed's ``(state, cbp, buffer, key) -> (state, cbp, {net: units replaced})``:
    continual backprop over one chunk of ``updates_per_chunk`` gradient steps, with the
    contribution utility of a batch of the current-task buffer
    (:func:`nbsp_jax.method.cbp_step`; ``cbp`` is ``{net: CBPState}``)."""
    steps = domain.updates_per_chunk()

    def step(state, cbp, buffer, key):
        acts, valid, fresh = _reset_batch(domain, agent, state, buffer, key)
        old, new, touched, counts, stats = _nets(state.params), {}, {}, {}, {}
        for net, layer_acts in acts.items():
            util = method.contribution_utility(layer_acts, valid, old[net])
            new[net], touched[net], stats[net], replaced = method.cbp_step(
                old[net], fresh[net], cbp[net], util, steps, config.cbp_decay,
                config.cbp_rate, config.cbp_maturity)
            counts[net] = sum(r.sum() for r in replaced.values())
        return _with_resets(state, new, touched), stats, counts

    return step


def param_change(params, params0) -> dict:
    """One seed's ``{net: ||theta - theta0||_2}`` for the actor and both critics."""
    new, old = _nets(params), _nets(params0)
    return {k: method.tree_norm(jax.tree.map(jnp.subtract, new[k], old[k])) for k in new}


def make_learner(config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh | None = None) -> Learner:
    """Builds the agent and its jitted, vmapped step functions from ``config``.

    With a ``mesh`` (see :func:`run_mesh`), each device runs its own block of seeds
    (``shard_map``), with no communication between devices.
    """
    spec = method.method_spec(config.method)
    domain = get_domain(config)
    actor = actor_device(config)
    agent = domain.make_agent(
        optimizer(config, domain, spec, config.policy_lr, config.ewc_lambda, config.ancl_lambda),
        optimizer(config, domain, spec, config.q_lr, config.ewc_critic_lambda,
                  config.ancl_critic_lambda))
    num_updates = domain.updates_per_chunk()

    def seeded(fn, in_axes):
        return fn if mesh is None else sh.seed_parallel(fn, mesh, in_axes)

    def acting(action_fn):
        def act(actor_params, obs, key):
            key, sub = jax.random.split(key)
            return action_fn(agent, actor_params, obs, sub), key
        if actor is not None:  # on its own device, with its own copy of the params
            return jax.jit(jax.vmap(act))
        return jax.jit(seeded(jax.vmap(act), (0, 0, 0)))

    def update_all(state, buffer, pre, step0):
        sampler = domain.sampler(agent, buffer)
        if spec.replay:
            sampler = method.replay_sampler(sampler, domain.sampler(agent, pre),
                                            domain.nonempty(pre), config.replay_interval,
                                            # discrete SAC: every network on every batch
                                            getattr(agent, "policy_frequency", 1))
        return domain.update_many(agent, state, sampler, num_updates, step0)

    def update_gated(state, buffer, pre, step0, active):
        new, info = update_all(state, buffer, pre, step0)
        # A seed that met the success threshold keeps its state (lockstep seeds still compute).
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), info

    def jitted(fn, in_axes):
        return jax.jit(seeded(over_seeds(fn, config.seed_axis, in_axes), in_axes),
                       donate_argnums=0)

    # Two compiled updates: selecting between old and new state needs the old one after the
    # scan, so XLA copies every donated buffer first (60-80 ms per call at [768]x3). The host
    # knows which seeds are active; when all are, the update runs without the select.
    all_active = jitted(update_all, (0, 0, 0, None))
    some_active = jitted(update_gated, (0, 0, 0, None, 0))

    def update(state, buffer, pre, step0, active):
        if np.all(np.asarray(active)):
            return all_active(state, buffer, pre, step0)
        return some_active(state, buffer, pre, step0, active)

    def drift(actor_params, obs, ref):
        # Mean squared change of the policy's output on each earlier task's probe states.
        now = jax.vmap(lambda o: domain.probe_action(agent, actor_params, o))(obs)
        return ((now - ref) ** 2).mean(axis=tuple(range(1, now.ndim)))

    return Learner(
        domain=domain,
        mesh=mesh,
        actor_device=actor,
        agent=agent,
        spec=spec,
        act=acting(domain.sample_action),
        act_eval=acting(domain.eval_action),
        act_sampled_eval=acting(domain.sample_action),  # its own jit: no retrace of `act`
        add=jax.jit(seeded(jax.vmap(domain.add), (0, 0)), donate_argnums=0),
        update=update,
        update_all=all_active,
        update_gated=some_active,
        end_task=jax.jit(seeded(jax.vmap(end_of_task(config, domain, agent, spec)), (0,) * 6)),
        probe=jax.jit(jax.vmap(lambda p, o: domain.probe_action(agent, p, o))),
        drift=jax.jit(jax.vmap(drift)),
        change=jax.jit(jax.vmap(param_change)),
        task_switch=jax.jit(seeded(jax.vmap(task_switch(config, domain, agent, spec),
                                            in_axes=(0, 0, None)), (0, 0, None))),
        redo=jax.jit(seeded(jax.vmap(redo_step(config, domain, agent)), (0, 0, 0))),
        cbp=jax.jit(seeded(jax.vmap(cbp_chunk(config, domain, agent)), (0, 0, 0, 0))),
        store=jax.jit(seeded(jax.vmap(domain.store, in_axes=(0, 0, 0, None)), (0, 0, 0, None)),
                      donate_argnums=0),
        aux_start=jax.jit(seeded(jax.vmap(aux_start(agent)), (0,))),
        aux_end=jax.jit(seeded(jax.vmap(aux_end(domain, agent)), (0,) * 6)),
    )


def compilations(learner: Learner) -> dict:
    """How many times each jitted learner function was compiled in this process (1 each when
    nothing recompiled after the first phase; new masks, tasks and buffers are new values)."""
    names = ["act", "act_eval", "add", "update_all", "end_task", "store"]
    if learner.domain.metric == "asr":  # Atari evaluates the sampled policy anyway
        names.append("act_sampled_eval")
    if learner.domain.probe_action is not None:
        names += ["probe", "drift"]
    if learner.spec.shrink_perturb or learner.spec.inject:
        names.append("task_switch")
    if learner.spec.redo:
        names.append("redo")
    if learner.spec.cbp:
        names.append("cbp")
    if learner.spec.ancl:
        names += ["aux_start", "aux_end"]
    if learner.update_gated._cache_size():  # compiled once some seed stopped early
        names.append("update_gated")
    counts = {name: getattr(learner, name)._cache_size() for name in names}
    counts["update"] = counts.pop("update_all")
    return counts


def seed_keys(seed: int, num_seeds: int, offset: int = 0) -> jax.Array:
    """Per-seed PRNG keys ``[S]``: seed ``s`` of the axis uses ``fold_in(key(seed), offset + s)``
    (``offset``: ``config.seed_offset``, the global index of seed 0)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(offset + jnp.arange(num_seeds))


def placed_like(x: jax.Array, ref: jax.Array) -> jax.Array:
    """``x`` (leading seed axis) placed as ``ref``'s leading axis is: committed to its device
    or its mesh when ``ref`` is committed, as is otherwise. A jitted function compiles once
    per placement of its arguments, so keys made fresh on the host must match the parameters
    they are called with (committed after a restore or a fork, uncommitted in a fresh run)."""
    if not getattr(ref, "committed", False):
        return x
    s = ref.sharding
    if isinstance(s, jax.sharding.NamedSharding):
        s = jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(*s.spec[:1]))
    return jax.device_put(x, s)


def commit(tree):
    """Every array of ``tree`` committed where it lies (restored and fresh arrays then call
    jitted functions with one placement: no second compilation)."""
    return jax.tree.map(lambda x: x if getattr(x, "committed", True)
                        else jax.device_put(x, x.sharding), tree)

