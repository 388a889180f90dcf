"""Permutation test of the skill-neuron scores: do they carry goal information?

    python -m experiments.permutation_test runs/ablation/window_sac \
        [--phase 1] [--permutations 200] [--windows task last:5000] [--out results/perm]

Reads an end-of-task record that a run wrote with ``config.save_score_record``
(``<workdir>/neurons/phaseNN_<task>_record.npz``: the recorded steps, their goal metric and
episode ids, and the end-of-task networks). For each seed, network (actor, critic 1,
critic 2) and window it records the hidden activations with the end-of-task network, scores
every neuron (Eq. 1-4, as the run did), and takes two statistics of the selection (Eq. 5):
the top-20 % cut (the lowest selected score) and the mean selected score. Then it shuffles the
goal labels *across episodes* (each episode keeps one label, so the within-episode structure
stays) ``--permutations`` times, rescoring each time, and reports where the observed
statistics lie in that null distribution (percentile: share of null values below, ties
counted half). A score that carries goal information puts them near the 100th percentile; one
that ranks only activation skew or sparsity lies inside the null.

Windows: ``task`` is the record as the run scored it; ``last:N`` keeps only the rows of each
seed's last ``N`` recorded steps (``last:5000`` with a ``'task'`` record: the last 10
episodes of a Meta-World task, as the earlier ``score_window='last'`` with 5k steps scored,
but subsampled as the record was). As in the training loop, a window whose episode success is
constant is scored against episode return. Also reported: the goal's mean (balance) and, per
layer, the units that were constant over the window.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from nbsp_jax import method
from nbsp_jax.domains import get_domain


def load_record(workdir: str, phase: int) -> tuple[ml_collections.ConfigDict, str, dict]:
    """The run's config, the record's path and its arrays (``{name: array}``)."""
    with open(os.path.join(workdir, "config.json")) as f:
        fields = json.load(f)
    config = ml_collections.ConfigDict(fields)
    config.tasks, config.hidden = tuple(config.tasks), tuple(config.hidden)
    paths = sorted(glob.glob(os.path.join(workdir, "neurons", f"phase{phase:02d}_*_record.npz")))
    if not paths:
        have = sorted(glob.glob(os.path.join(workdir, "neurons", "*_record.npz")))
        raise FileNotFoundError(
            f"no record of phase {phase} in {workdir}/neurons (records there: "
            f"{[os.path.basename(p) for p in have] or 'none'}); the run needs "
            "--config.save_score_record=True")
    with np.load(paths[0]) as z:
        return config, paths[0], {k: z[k] for k in z.files}


def networks_of(arrays: dict) -> dict:
    """``{'actor': params, 'qf1': params, 'qf2': params}`` (leaves ``[S, ...]``) from a record."""
    flat = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    return traverse_util.unflatten_dict(flat, sep="/")


def window_rows(arrays: dict, seed: int, window: str) -> np.ndarray:
    """Bool ``[T]``: the valid rows of ``seed`` that lie in ``window`` (``task`` | ``last:N``)."""
    valid = arrays["valid"][seed].astype(bool)
    if window == "task":
        return valid
    if window.startswith("last:"):
        n = int(window.split(":", 1)[1])
        step = arrays["step"][seed]
        return valid & (step >= step[valid].max() - n + 1)
    raise ValueError(f"unknown window {window!r}; valid choices: 'task', 'last:<steps>'")


def _selection_stats(acts: jax.Array, goal: jax.Array, neutral: bool, m: int):
    """(top-m cut, mean of the top m) of the joint scores of ``acts [T, N]`` (all layers)."""
    scores = method.skill_scores(acts, goal, None, neutral)
    top = jax.lax.top_k(scores, m)[0]
    return top[-1], top.mean()


_stats = jax.jit(_selection_stats, static_argnums=(2, 3))
_null = jax.jit(lambda acts, goals, neutral, m: jax.lax.map(
    lambda g: _selection_stats(acts, g, neutral, m), goals), static_argnums=(2, 3))


def permutation_test(acts: np.ndarray, goal: np.ndarray, episode: np.ndarray,
                     permutations: int, neutral: bool, proportion: float, seed: int = 0
                     ) -> dict:
    """Observed and null selection statistics of one network.

    Args:
      acts: ``[T, N]`` activations of all candidate neurons of the network (window rows only).
      goal: ``[T]`` goal metric; constant within an episode.
      episode: ``[T]`` episode ids.
      permutations: size of the null sample.
      neutral: ``config.constant_neurons == 'neutral'``.
      proportion: skill proportion (Eq. 5).

    Returns:
      ``{'cut': {...}, 'mean_selected': {...}}``, each with ``observed``, ``null_mean``,
      ``null_p95`` and ``percentile``.
    """
    m = method.num_selected(acts.shape[1], proportion)
    ids, index = np.unique(episode, return_inverse=True)
    labels = np.array([goal[index == i][0] for i in range(len(ids))], np.float32)
    rng = np.random.default_rng(seed)
    perms = np.stack([labels[rng.permutation(len(ids))][index] for _ in range(permutations)])
    acts_j = jnp.asarray(acts)  # an argument, not a constant folded into the program
    observed = [float(x) for x in _stats(acts_j, jnp.asarray(goal, jnp.float32), neutral, m)]
    null = np.asarray(_null(acts_j, jnp.asarray(perms), neutral, m))  # [2, P]
    out = {}
    for i, name in enumerate(("cut", "mean_selected")):
        below = (null[i] < observed[i]).mean() + 0.5 * (null[i] == observed[i]).mean()
        out[name] = {"observed": observed[i], "null_mean": float(null[i].mean()),
                     "null_p95": float(np.percentile(null[i], 95)),
                     "percentile": float(100 * below)}
    return out


def run(workdir: str, phase: int, permutations: int, windows: list[str]) -> dict:
    """The test for every seed, network and window of one record (see the module doc)."""
    config, path, arrays = load_record(workdir, phase)
    for w in windows:
        window_rows(arrays, 0, w)  # bad window names fail before any work
    agent = get_domain(config).make_agent(None, None)
    nets = networks_of(arrays)
    neutral = config.constant_neurons == "neutral"
    rows = []
    for s in range(arrays["obs"].shape[0]):
        params = jax.tree.map(lambda x, s=s: x[s], nets)
        state = types.SimpleNamespace(params=types.SimpleNamespace(
            actor=params["actor"], q={"qf1": params["qf1"], "qf2": params["qf2"]}))
        acts = method.record_networks(agent, state, jnp.asarray(arrays["obs"][s]),
                                    jnp.asarray(arrays["action"][s]))
        for w in windows:
            keep = window_rows(arrays, s, w)
            goal, episode = arrays["success"][s][keep], arrays["episode"][s][keep]
            kind = "success"
            if goal.min() == goal.max() or not np.array_equal(arrays["goal"][s],
                                                               arrays["success"][s]):
                # As the loop does: a constant success carries no goal information, so the
                # window is scored against episode return (Atari: always return).
                goal, kind = arrays["ret"][s][keep], "return"
            for net, layers in acts.items():
                a = np.concatenate([np.asarray(v)[keep] for v in layers.values()], axis=1)
                constant = {k: int(np.asarray(method.constant_units(np.asarray(v)[keep])).sum())
                            for k, v in layers.items()}
                res = permutation_test(a, goal, episode, permutations, neutral,
                                       config.skill_proportion, seed=s)
                rows.append({"seed": s, "window": w, "net": net, "goal": kind,
                             "rows": int(keep.sum()),
                             "episodes": int(len(np.unique(episode))),
                             "goal_mean": float(goal.mean()), "constant_units": constant,
                             "neurons": int(a.shape[1]), **res})
    return {"workdir": workdir, "record": path, "phase": phase, "permutations": permutations,
            "constant_neurons": config.constant_neurons, "score_window": config.score_window,
            "score_steps": config.score_steps, "rows": rows}


def markdown(result: dict) -> str:
    """A table: one line per window, network and seed."""
    lines = [f"Permutation test of `{result['record']}` ({result['permutations']} label "
             f"permutations across episodes; constant_neurons={result['constant_neurons']!r})",
             "",
             "| window | net | seed | rows | episodes | goal (mean) | constant units | "
             "cut (null mean, p95) | cut pct | mean selected (null mean) | mean pct |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        c, ms = r["cut"], r["mean_selected"]
        const = ", ".join(f"{k} {v}" for k, v in r["constant_units"].items())
        lines.append(
            f"| {r['window']} | {r['net']} | {r['seed']} | {r['rows']} | {r['episodes']} | "
            f"{r['goal']} ({r['goal_mean']:.2f}) | {const} | {c['observed']:.3f} "
            f"({c['null_mean']:.3f}, {c['null_p95']:.3f}) | {c['percentile']:.1f} | "
            f"{ms['observed']:.3f} ({ms['null_mean']:.3f}) | {ms['percentile']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.permutation_test",
                                description=__doc__.split("\n")[0])
    p.add_argument("workdir", help="a run with config.save_score_record=True")
    p.add_argument("--phase", type=int, default=1, help="phase of the record (1-based)")
    p.add_argument("--permutations", type=int, default=200, help="size of the null sample")
    p.add_argument("--windows", nargs="+", default=["task", "last:5000"],
                   help="'task' (the whole record) and/or 'last:<steps>'")
    p.add_argument("--out", default=None, help="folder for permutation_phaseNN.{json,md}")
    a = p.parse_args(argv)
    result = run(a.workdir, a.phase, a.permutations, a.windows)
    table = markdown(result)
    print(table)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        stem = os.path.join(a.out, f"permutation_phase{a.phase:02d}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=2)
        with open(stem + ".md", "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
