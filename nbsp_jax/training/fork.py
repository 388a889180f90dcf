"""Paired runs: a method starts from the end of phase 1's training of another run (its fork
point, ``config.save_fork_point``), so that the methods of an ablation share phase 1."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from nbsp_jax.method import AuxAnchorState, EWCState, MaskedScaleState, method_spec
from nbsp_jax.training.learner import Learner, commit, make_learner
from nbsp_jax.training.phase import FORK_POINT
from nbsp_jax.training.state import DeviceState, HostState, init_run, place, restore
from nbsp_jax.workdir.checkpoint import Checkpointer
from nbsp_jax.workdir.results import read_config

# Fields that may differ from the run a fork starts from: they act only after phase 1's
# training (scoring, masks, replay storage, evaluation) or not on results at all.
FORK_FREE = ("method", "selector", "mask_target", "mask_policy", "mask_placement", "mask_alpha",
             "skill_proportion", "constant_neurons", "replay_store_size", "replay_interval",
             "fork_from", "save_fork_point", "save_score_record", "eval_episodes", "progress",
             "checkpoint_every_s", "log_every_steps", "stop_after_phase", "ewc_lambda",
             "ewc_critic_lambda", "ewc_decay", "sp_shrink", "sp_perturb", "ancl_lambda",
             "ancl_critic_lambda", "ancl_aux_steps")
# Not fork-free: redo_* and cbp_* act during phase 1's training.


def check_fork_source(config) -> dict:
    """The config fields of ``config.fork_from``'s run, checked before anything is written.

    Raises:
      FileNotFoundError: no run there, or it has no fork point (``config.save_fork_point``).
      ValueError: its config differs in a field that acts during phase 1's training (named,
        with both values).
    """
    src = os.path.abspath(config.fork_from)
    if not os.path.exists(os.path.join(src, "config.json")):
        raise FileNotFoundError(f"config.fork_from={config.fork_from!r}: no run there "
                                f"(no {os.path.join(src, 'config.json')})")
    points = os.path.join(src, FORK_POINT, "checkpoints")
    if not (os.path.isdir(points) and os.listdir(points)):
        raise FileNotFoundError(
            f"config.fork_from={config.fork_from!r} has no fork point ({FORK_POINT}/): run it "
            "with --config.save_fork_point=True, or wait until its phase 1 has trained")
    src_fields = read_config(os.path.join(src, "config.json"))
    if method_spec(config.method).acts_in_phase_one and src_fields.get("method") != config.method:
        raise ValueError(
            f"config.method={config.method!r} acts during phase 1's training, so it cannot "
            f"start from the fork point of a {src_fields.get('method')!r} run "
            f"(config.fork_from={config.fork_from!r}); train its phase 1 (fork_from='')")
    ours = json.loads(config.to_json_best_effort())
    diff = sorted(k for k in set(ours) | set(src_fields)
                  if k not in FORK_FREE and ours.get(k) != src_fields.get(k))
    if diff:
        detail = ", ".join(f"{k}: {src_fields.get(k)!r} (source) vs {ours.get(k)!r}"
                           for k in diff)
        raise ValueError(f"config.fork_from={config.fork_from!r} trained phase 1 with another "
                         f"config ({detail}); only {FORK_FREE} may differ")
    return src_fields


def fork(config, learner: Learner, template: DeviceState, num_phases: int,
         workdir: str) -> tuple[DeviceState, HostState]:
    """The run state at ``config.fork_from``'s fork point, in the structures of this run's
    initial state ``template`` (see :func:`check_fork_source`); copies phase 1's training
    curves into ``workdir``."""
    src = os.path.abspath(config.fork_from)
    src_fields = check_fork_source(config)
    fork_ckpt = Checkpointer(os.path.join(src, FORK_POINT))
    step = fork_ckpt.latest_step()
    src_config = ml_collections.ConfigDict(src_fields)
    src_config.tasks = tuple(src_config.tasks)
    src_config.hidden = tuple(src_config.hidden)
    src_learner = make_learner(src_config, learner.mesh)
    device, host = restore(fork_ckpt, step, init_run(src_config, src_learner, num_phases)[0])
    fork_ckpt.close()
    state = graft_state(device.state, template.state)
    device = device._replace(state=state,
                             pre=template.pre,  # empty at the end of phase 1 for every method
                             # ANCL's slot for the agent held while its auxiliary trains
                             held=None if template.held is None else
                             jax.tree.map(jnp.copy, state))
    # Restored arrays are committed, the template's are not: commit all, so that the first
    # calls after the fork compile as the later ones do.
    device = commit(device)
    for s in range(config.num_seeds):  # phase 1's training curves
        name = f"seed_{config.seed_offset + s}"
        shutil.copytree(os.path.join(src, name), os.path.join(workdir, name), dirs_exist_ok=True)
    return place(device, learner.mesh), dataclasses.replace(host, forked_from=src)


def graft_state(src, target):
    """``src``'s learner state in the structure of ``target``'s: the same parameters and keys;
    each optimizer state is ``src``'s Adam state, with the method's own states
    (``masked_scale``'s, EWC's) taken fresh from ``target`` (all-ones masks, no penalty, as
    before any task ended; plasticity injection's masks that train the base) or dropped where
    the two methods' optimizer chains differ. Into a plasticity-injection state, ``src``'s
    networks and moments become the base (:func:`into_base`)."""
    def added(x) -> bool:
        return isinstance(x, (MaskedScaleState, EWCState, AuxAnchorState))

    def core(x):
        """The optimizer state without the method's states (the domain's Adam)."""
        if isinstance(x, tuple) and any(added(y) for y in x):
            (inner,) = [y for y in x if not added(y)]
            return inner
        return x

    def graft(a, b):
        if jax.tree.structure(a) == jax.tree.structure(b):
            return a
        adam = core(a)
        if isinstance(b, tuple) and any(added(y) for y in b):
            return tuple(y if added(y) else into_base(adam, y) for y in b)
        return into_base(adam, b)

    opt = type(target.opt)(*(graft(a, b) for a, b in zip(src.opt, target.opt, strict=True)))
    return target._replace(params=into_base(src.params, target.params), opt=opt, key=src.key)


def into_base(src, target):
    """``src``'s tree in ``target``'s structure: ``src`` itself where the structures match;
    where ``target`` holds an :class:`~nbsp_jax.networks.Injected` network (a mapping with a
    ``base`` entry) and ``src`` the plain one, ``src`` becomes its ``base`` and the injected
    parts (``new{k}``, ``init{k}``) keep ``target``'s values. Applied to parameters and to
    Adam's moments alike: a plasticity-injection run forked from a plain run starts with the
    plain run's networks and moments as its base and fresh, not yet trained parts, whose
    output terms ``f_new - f_init`` are exactly zero, so the function is the source's.

    Raises:
      ValueError: the trees differ otherwise (both structures named).
    """
    if jax.tree.structure(src) == jax.tree.structure(target):
        return src
    if isinstance(target, Mapping) and isinstance(src, Mapping):
        if "base" in target and "base" not in src:
            return type(target)({**target, "base": into_base(src, target["base"])})
        if set(src) == set(target):
            return type(target)({k: into_base(src[k], target[k]) for k in target})
    if (isinstance(src, tuple) and type(src) is type(target)
            and len(src) == len(target)):
        parts = [into_base(a, b) for a, b in zip(src, target, strict=True)]
        return type(target)(*parts) if hasattr(target, "_fields") else tuple(parts)
    raise ValueError("graft_state: the states differ in more than the method's own states: "
                     f"{jax.tree.structure(src)} vs {jax.tree.structure(target)}")
