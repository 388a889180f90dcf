"""Runs examples/masked_scale_classifier.py and checks the numbers it reports."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from nbsp_jax.method import get_masks, masks_from_layers, num_selected, set_masks

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "masked_scale_classifier.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("masked_scale_classifier", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=[True, False], ids=["hard", "soft"])
def run(request, example):
    return request.param, example.main(hard=request.param, seed=0)


def test_mask_tree_for_the_example_model(example):
    params = example.model.init(jax.random.PRNGKey(0), jnp.zeros((1, example.DIM)))
    fc0 = jnp.arange(example.HIDDEN[0], dtype=jnp.float32) / 100
    masks = masks_from_layers(params, {"fc0": fc0})
    shapes = jax.tree.map(jnp.shape, masks)
    assert shapes == {
        "params": {
            "fc0": {"kernel": (64,), "bias": (64,)},
            "fc1": {"kernel": (64,), "bias": (64,)},
            "out": {"kernel": (example.CLASSES,), "bias": (example.CLASSES,)},
        }
    }
    assert (masks["params"]["fc0"]["kernel"] == fc0).all()
    assert (masks["params"]["fc0"]["bias"] == fc0).all()
    assert all((m == 1).all() for m in jax.tree.leaves(masks["params"]["fc1"]))
    # The tree fits the example's optimizer state, and set_masks installs it there.
    state = set_masks(example.opt.init(params), masks)
    assert (get_masks(state)["params"]["fc0"]["kernel"] == fc0).all()


def test_counts(run):
    _, r = run
    assert r["n_candidates"] == sum((64, 64))
    assert r["n_masked"] == num_selected(128, 0.2) == round(0.2 * 128) == 26


def test_one_compilation_for_all_three_trainings(run):
    assert run[1]["compiles"] == 1


def test_masked_update_is_mask_times_unmasked_update(run):
    assert run[1]["update_scale_error"] == 0.0


def test_selected_units_frozen_or_slowed(run):
    hard, r = run
    if hard:
        # Kernel columns and biases of the masked fc0/fc1 units are bit-identical after task B.
        assert r["mask_min"] == r["mask_max"] == 0.0
        assert r["selected_moved_masked"] == 0.0
    else:
        # alpha * (1 - score) with score in [0.5, 1] and alpha = 0.2: masks in [0, 0.1].
        assert 0.0 <= r["mask_min"] <= r["mask_max"] <= 0.1
        assert 0.0 < r["selected_moved_masked"] < 0.5 * r["selected_moved_unmasked"]
    assert r["selected_moved_unmasked"] > 0.1
    assert r["unselected_moved_fraction"] == 1.0


def test_accuracies(run):
    _, r = run
    for key in ("acc_a_after_a", "acc_b_masked", "acc_b_unmasked"):
        assert r[key] > 0.6, key  # 4 classes: chance is 0.25
    # The shared output layer is retrained on B: A is largely forgotten either way.
    assert r["acc_a_after_b_unmasked"] < r["acc_a_after_a"] - 0.2
    assert r["acc_a_after_b_masked"] < r["acc_a_after_a"] - 0.2


def test_docs_snippet_runs(example):
    text = (EXAMPLE.parents[1] / "README.md").read_text()
    section = text.split("## Using masked_scale in your own JAX project", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    (x_a, y_a), _ = example.make_task(jax.random.PRNGKey(1))
    (x_b, y_b), _ = example.make_task(jax.random.PRNGKey(2))
    ns = {"x_a": x_a, "y_a": y_a, "x_b": x_b, "y_b": y_b}
    exec(compile(snippet, "README.md", "exec"), ns)
    installed = get_masks(ns["opt_state"])
    assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), installed, ns["masks"]))
    hidden = jnp.concatenate([ns["layer_masks"]["fc0"], ns["layer_masks"]["fc1"]])
    assert int((hidden < 1).sum()) == 26 and float(hidden.max()) == 1.0
    assert float(hidden.min()) >= 0.0 and float(jnp.sort(hidden)[25]) <= 0.1
    assert all((m == 1).all() for m in jax.tree.leaves(installed["params"]["out"]))
    assert ns["step"]._cache_size() == 1  # tasks A and B ran on one compilation
