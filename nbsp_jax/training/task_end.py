"""The end of a task: score neurons on its recorded steps and install masks (and write them
to ``neurons/``), and measure the actor's drift on earlier tasks' probe states."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from nbsp_jax.method import scoring_goal, srank_from_gram
from nbsp_jax.training.learner import Learner
from nbsp_jax.training.state import PROBES
from nbsp_jax.types import Recorded


def score_task(config, learner: Learner, state, rec: Recorded, keys, workdir: str, phase: int,
               task: str):
    """Scores neurons on the task's recorded steps, installs masks, saves them as .npz.

    The goal metric is :func:`nbsp_jax.method.scoring_goal`'s (a Meta-World seed with constant
    success falls back to the episode return; the switch is printed).

    Args:
      rec: the task's recorded steps ``[S, T, ...]``.
      keys: per-seed PRNG keys ``[S]`` (the ``random`` selector).

    Returns:
      The new state, per seed the goal metric used (``'success'`` or ``'return'``), per
      seed ``{'net/layer': [constant units, width]}``, and per seed ``{net: {metric: value}}``
      plasticity metrics of the end-of-task networks (:mod:`nbsp_jax.method.plasticity`).
    """
    goal, kinds = scoring_goal(rec, learner.domain.goal)
    for s, kind in enumerate(kinds):
        if kind == "return" and learner.domain.goal != "return":
            v = rec.valid[s]
            print(f"[nbsp] seed {config.seed_offset + s}, task {task}: episode success is "
                  f"constant ({rec.success[s][v].max():.0f}) over the {v.sum()} recorded steps; "
                  "scoring with episode return instead")
    out = learner.end_task(state, jnp.asarray(rec.obs), jnp.asarray(rec.action),
                           jnp.asarray(goal), jnp.asarray(rec.valid), keys)
    arrays = {"goal_metric_is_return": np.array([k == "return" for k in kinds])}
    trees = {"score": out.scores, "mask": out.masks, "skill": out.skill,
             "constant": out.constant}
    for name, tree in trees.items():
        for net, layers in tree.items():
            for layer, value in layers.items():
                arrays[f"{net}/{layer}/{name}"] = np.asarray(value)
    folder = os.path.join(workdir, "neurons")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"phase{phase + 1:02d}_{task}")
    np.savez(stem + ".npz", **arrays)
    if config.save_score_record:
        save_score_record(stem + "_record.npz", rec, goal, state)
    constant = [{f"{net}/{layer}": [int(v[s].sum()), int(v.shape[-1])]
                 for net, layers in out.constant.items() for layer, v in
                 jax.device_get(layers).items()} for s in range(goal.shape[0])]
    for s, counts in enumerate(constant):
        print(f"[nbsp] seed {config.seed_offset + s}, task {task}: units constant over the "
              "scoring window: " + ", ".join(f"{k} {c}/{n}" for k, (c, n) in counts.items()))
    plasticity = jax.device_get(out.plasticity)
    for m in plasticity.values():
        m["feature_srank"] = srank_from_gram(m.pop("feature_gram"))
    per_seed = [{net: {k: float(v[s]) for k, v in m.items()} for net, m in plasticity.items()}
                for s in range(goal.shape[0])]
    return out.state, kinds, constant, per_seed


def save_score_record(path: str, rec: Recorded, goal: np.ndarray, state) -> None:
    """The scoring record and the end-of-task networks, for experiments/permutation_test.py:
    ``obs, action, success, ret, goal, valid, episode, step`` ``[S, T, ...]`` and the
    networks' parameters as ``params/{actor,qf1,qf2}/<path>`` ``[S, ...]``."""
    p = jax.device_get(state.params)
    nets = {"actor": p.actor, "qf1": p.q["qf1"], "qf2": p.q["qf2"]}
    flat = traverse_util.flatten_dict(nets, sep="/")
    np.savez_compressed(path, obs=rec.obs, action=rec.action, success=rec.success, ret=rec.ret,
                        goal=goal, valid=rec.valid, episode=rec.episode, step=rec.step,
                        **{f"params/{k}": np.asarray(v) for k, v in flat.items()})


def probe_drift(config, learner: Learner, probes: dict | None, state, rec: Recorded,
                phase: int) -> tuple[list | None, dict | None]:
    """Actor drift on earlier tasks' probe states, then this task's probes.

    Args:
      probes: ``{'obs': [S, H, PROBES, ...], 'ref': [S, H, ...]}`` or None (no probes).

    Returns:
      Per seed ``[drift on task j for j < phase]`` (None without probes), and the probes with
      this task's ``PROBES`` states (valid recorded rows, drawn without replacement) and the
      policy's output on them.
    """
    if probes is None:
        return None, None
    drift = np.asarray(learner.drift(state.params.actor, probes["obs"], probes["ref"]))
    rng = np.random.default_rng([config.seed, config.seed_offset, phase])
    obs = np.zeros((config.num_seeds, PROBES, *rec.obs.shape[2:]), rec.obs.dtype)
    for s in range(config.num_seeds):
        rows = np.flatnonzero(rec.valid[s])
        rows = rng.choice(rows, PROBES, replace=rows.size < PROBES) if rows.size else rows
        obs[s, : rows.size] = rec.obs[s, rows]
    obs = jnp.asarray(obs)
    ref = learner.probe(state.params.actor, obs)
    probes = {"obs": probes["obs"].at[:, phase].set(obs),
              "ref": probes["ref"].at[:, phase].set(ref)}
    return drift[:, :phase].tolist(), probes
