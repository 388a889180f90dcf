"""masked_scale outside RL: protect a classifier's skill neurons while it learns a second task.

1. Train a small MLP on task A (Gaussian blobs) with ``optax.chain(adam, masked_scale())``.
2. Score its hidden neurons by how well their activations track per-example correctness on A,
   and turn the top 20% into masks (0 with ``hard=True``, else ``alpha * (1 - score)``).
3. Install the masks in the optimizer state and train on task B with the *same* jitted step,
   next to an unmasked run of B from the same starting point.

The output layer is never masked and is retrained on B, so in this toy A is forgotten with or
without masks; what the masks guarantee is how far the selected units' weights can move.

Run: python examples/masked_scale_classifier.py [--soft]
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nbsp_jax.method import (
    masked_scale,
    masks_from_layers,
    neuron_masks,
    score_layers,
    select_top,
    set_masks,
)
from nbsp_jax.networks import ReLUDense, record

HIDDEN, CLASSES, DIM, STEPS = (64, 64), 4, 2, 300
PROPORTION, ALPHA = 0.2, 0.2


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i, features in enumerate(HIDDEN):  # fc0, fc1: the neuron candidates
            x = ReLUDense(features, name=f"fc{i}")(x)  # Dense+ReLU in one module
        return nn.Dense(CLASSES, name="out")(x)  # the last layer is never a candidate


def make_task(key, n=1024):
    """Four overlapping Gaussian blobs around random centres: ``(train, test)`` halves."""
    k_centres, k_labels, k_noise = jax.random.split(key, 3)
    centres = 2.0 * jax.random.normal(k_centres, (CLASSES, DIM))
    y = jax.random.randint(k_labels, (n,), 0, CLASSES)
    x = centres[y] + jax.random.normal(k_noise, (n, DIM))
    return (x[: n // 2], y[: n // 2]), (x[n // 2 :], y[n // 2 :])


model = Classifier()
opt = optax.chain(optax.adam(1e-2), masked_scale())  # masked_scale AFTER adam; masks start at 1


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, x), y).mean()


def accuracy(params, data):
    x, y = data
    return float((model.apply(params, x).argmax(-1) == y).mean())


def unit_change(old, new, layer):
    """Per unit of ``layer``: largest absolute change of its incoming weights and bias."""
    old, new = old["params"][layer], new["params"][layer]
    d_kernel = jnp.abs(new["kernel"] - old["kernel"]).max(axis=0)  # kernel is (in, units)
    return jnp.maximum(d_kernel, jnp.abs(new["bias"] - old["bias"]))


def main(hard: bool = True, seed: int = 0) -> dict:
    traces = []  # grows only when jax traces (and so compiles) the step

    @jax.jit
    def step(params, opt_state, x, y):
        traces.append(1)
        grads = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def train(params, opt_state, data):
        for _ in range(STEPS):
            params, opt_state = step(params, opt_state, *data)
        return params, opt_state

    k_init, k_a, k_b = jax.random.split(jax.random.PRNGKey(seed), 3)
    (a_train, a_test), (b_train, b_test) = make_task(k_a), make_task(k_b)
    params = model.init(k_init, a_train[0])
    params, opt_state = train(params, opt.init(params), a_train)

    # Score hidden neurons on task A; goal = 1 where an example is classified correctly.
    logits, acts = record(model, params, a_train[0])  # acts: {'fc0': [T, 64], 'fc1': [T, 64]}
    goal = (logits.argmax(-1) == a_train[1]).astype(jnp.float32)
    scores = score_layers(acts, goal)  # {'fc0': [64], 'fc1': [64]}, each in [0.5, 1]
    layer_masks = neuron_masks(scores, proportion=PROPORTION, alpha=ALPHA, hard=hard)
    masks = masks_from_layers(params, layer_masks)  # params-shaped tree, leaves (units,)
    masked_state = set_masks(opt_state, masks)  # same shapes and dtypes: no recompilation

    # Task B from the same point, with and without the masks (the same jitted step).
    params_m, _ = train(params, masked_state, b_train)
    params_u, _ = train(params, opt_state, b_train)

    # One update from the same state: masked update == mask * unmasked update, leaf by leaf.
    grads = jax.grad(loss_fn)(params, *b_train)
    upd_m, upd_u = (opt.update(grads, s, params)[0] for s in (masked_state, opt_state))
    errors = jax.tree.map(lambda m_, u_, k: jnp.abs(m_ - u_ * k).max(), upd_m, upd_u, masks)

    layers = sorted(scores)  # select_top: which units neuron_masks masked
    selected = jnp.concatenate([select_top(scores, PROPORTION)[k] for k in layers])
    moved_m = jnp.concatenate([unit_change(params, params_m, k) for k in layers])
    moved_u = jnp.concatenate([unit_change(params, params_u, k) for k in layers])
    mask_values = jnp.concatenate([layer_masks[k] for k in layers])[selected]
    return {
        "acc_a_after_a": accuracy(params, a_test),
        "acc_a_after_b_masked": accuracy(params_m, a_test),
        "acc_a_after_b_unmasked": accuracy(params_u, a_test),
        "acc_b_masked": accuracy(params_m, b_test),
        "acc_b_unmasked": accuracy(params_u, b_test),
        "n_candidates": int(selected.size),
        "n_masked": int(selected.sum()),
        "mask_min": float(mask_values.min()),
        "mask_max": float(mask_values.max()),
        "selected_moved_masked": float(moved_m[selected].max()),  # 0.0 with hard masks
        "selected_moved_unmasked": float(moved_u[selected].max()),
        "unselected_moved_fraction": float((moved_m[~selected] > 0).mean()),
        "update_scale_error": float(max(jax.tree.leaves(errors))),
        "compiles": len(traces),  # 1: task A, masked B and unmasked B share one compilation
    }


if __name__ == "__main__":
    for name, value in main(hard="--soft" not in sys.argv).items():
        print(f"{name:>26}: {value:.4f}" if isinstance(value, float) else f"{name:>26}: {value}")
