"""Tests for nbsp_jax.method scores and masks: skill scores (Eq. 1-4), top-m selection, Eq. 7."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax.method import (
    activation_scores,
    is_constant,
    neuron_masks,
    num_selected,
    random_scores,
    score_layers,
    select_top,
    skill_scores,
    weight_scores,
)
from nbsp_jax.networks import channel_mean

# Hand-computed example, T = 4 steps.
# goal = [0, 0, 1, 3]: mean_q = 1.0; goal > mean_q (strict) = [F, F, F, T]
#   (step 2 equals the mean and so counts as "not above").
GOAL = [0.0, 0.0, 1.0, 3.0]
ACT = np.array(
    [
        # n0: mean 2.5, above [F,F,T,T]; agree [T,T,F,T] -> R_over 0.75 -> score 0.75
        # n1: constant 2 = its mean, above [F,F,F,F]; agree [T,T,T,F] -> R_over 0.75
        #     (= fraction of steps with goal <= mean_q) -> score 0.75
        # n2: [5,5,5,-3], mean 3, above [T,T,T,F]; agree [F,F,F,F] -> R_over 0 -> score 1
        #     (perfectly anti-correlated)
        # n3: [4,0,0,0], mean 1, above [T,F,F,F]; agree [F,T,T,F] -> R_over 0.5 -> score 0.5
        # n4: [0,0,0,1], mean 0.25, above [F,F,F,T]; agree all -> R_over 1 -> score 1
        # n5: [0,2,2,4], mean 2, above [F,F,F,T] (the 2s are not above); score 1
        #     (with >= it would be [F,T,T,T] -> R_over 0.5 -> score 0.5)
        [1.0, 2.0, 5.0, 4.0, 0.0, 0.0],
        [2.0, 2.0, 5.0, 0.0, 0.0, 2.0],
        [3.0, 2.0, 5.0, 0.0, 0.0, 2.0],
        [4.0, 2.0, -3.0, 0.0, 1.0, 4.0],
    ]
)
EXPECTED = [0.75, 0.75, 1.0, 0.5, 1.0, 1.0]


def test_skill_scores_hand_example():
    scores = skill_scores(ACT, GOAL)
    assert scores.shape == (6,) and scores.dtype == jnp.float32
    np.testing.assert_allclose(scores, EXPECTED, atol=1e-7)
    np.testing.assert_allclose(jax.jit(skill_scores)(ACT, GOAL), EXPECTED, atol=1e-7)


def test_skill_scores_constant_neuron_with_inexact_mean():
    # 0.1 is not exact in float32, so the mean may round either side of the value; the max in
    # Eq. 4 makes the score 0.75 regardless (all-above and all-below give R and 1 - R).
    act = np.full((4, 1), 0.1, np.float32)
    np.testing.assert_allclose(skill_scores(act, GOAL), [0.75], atol=1e-7)
    act = np.full((7, 1), 0.3, np.float32)
    goal = [0, 0, 0, 0, 0, 1, 1]  # 2 of 7 above the mean -> score 5/7
    np.testing.assert_allclose(skill_scores(act, goal), [5 / 7], atol=1e-6)


def test_skill_scores_valid_mask_and_vmap():
    # Appending junk steps that are marked invalid must not change anything.
    junk = np.full((3, 6), 100.0)
    act = np.concatenate([ACT, junk])
    goal = np.array(GOAL + [50.0, -9.0, 7.0])
    valid = np.array([True] * 4 + [False] * 3)
    np.testing.assert_allclose(skill_scores(act, goal, valid), EXPECTED, atol=1e-7)
    np.testing.assert_allclose(skill_scores(act, goal, np.zeros(7, bool)), 0.5)
    # A leading seed axis under vmap gives the per-seed results.
    acts = np.stack([ACT, -ACT, ACT[::-1]])
    goals = np.stack([GOAL, GOAL, GOAL[::-1]])
    v = jax.jit(jax.vmap(skill_scores))(acts, goals)
    for s in range(3):
        np.testing.assert_allclose(v[s], skill_scores(acts[s], goals[s]), atol=1e-7)
    with pytest.raises(ValueError, match="expected act"):
        skill_scores(np.zeros((4, 2, 3)), GOAL)


def test_score_layers_and_channel_mean():
    conv = np.arange(4 * 2 * 2 * 3, dtype=np.float32).reshape(4, 2, 2, 3)
    np.testing.assert_allclose(channel_mean(conv), conv.mean(axis=(1, 2)))
    out = score_layers({"fc0": ACT, "conv0": channel_mean(conv)}, GOAL)
    assert set(out) == {"fc0", "conv0"}
    np.testing.assert_allclose(out["fc0"], EXPECTED, atol=1e-7)
    # Each channel increases with t: above [F,F,T,T] -> 0.75, as n0.
    np.testing.assert_allclose(out["conv0"], [0.75] * 3, atol=1e-7)


def test_is_constant():
    assert bool(is_constant(jnp.array([1.0, 1.0, 1.0])))
    assert not bool(is_constant(jnp.array([1.0, 1.0, 2.0])))
    assert bool(jax.jit(is_constant)(jnp.array([0.0, 0.0, 5.0]), jnp.array([1, 1, 0], bool)))
    np.testing.assert_array_equal(
        jax.vmap(is_constant)(jnp.array([[0.0, 0.0], [0.0, 1.0]])), [True, False]
    )


def test_num_selected_rounding():
    assert num_selected(2304, 0.2) == 461  # 460.8
    assert num_selected(5, 0.5) == 3  # half rounds up
    assert num_selected(100, 0.29) == 29  # 28.999... in float
    assert num_selected(7, 0.0) == 0 and num_selected(7, 1.0) == 7
    with pytest.raises(ValueError):
        num_selected(7, 1.5)


SCORES = {
    "b": jnp.array([0.8, 0.95, 0.6, 0.55]),
    "a": jnp.array([0.9, 0.5, 0.7]),
}


def test_neuron_masks_joint_ranking_across_layers():
    # 7 neurons, 0.3 * 7 = 2.1 -> 2 skill neurons: b[1] = 0.95 and a[0] = 0.9.
    masks = neuron_masks(SCORES, proportion=0.3, alpha=0.2)
    assert list(masks) == ["b", "a"]  # keys (and order) of the input
    np.testing.assert_allclose(masks["a"], [0.2 * (1 - 0.9), 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(masks["b"], [1.0, 0.2 * (1 - 0.95), 1.0, 1.0], rtol=1e-5)
    # 0.5 * 7 = 3.5 -> 4: 0.95, 0.9, 0.8, 0.7 -> a[0], a[2], b[0], b[1].
    sel = select_top(SCORES, 0.5)
    np.testing.assert_array_equal(sel["a"], [True, False, True])
    np.testing.assert_array_equal(sel["b"], [True, True, False, False])
    masks = neuron_masks(SCORES, proportion=0.5, alpha=0.5)
    np.testing.assert_allclose(masks["a"], [0.05, 1.0, 0.15], rtol=1e-5)
    np.testing.assert_allclose(masks["b"], [0.1, 0.025, 1.0, 1.0], rtol=1e-5)
    hard = neuron_masks(SCORES, proportion=0.5, hard=True)
    np.testing.assert_array_equal(hard["a"], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(hard["b"], [0.0, 0.0, 1.0, 1.0])
    for p, m in [(0.0, 0), (0.2, 1), (0.3, 2), (0.5, 4), (1.0, 7)]:
        sel = select_top(SCORES, p)
        assert sum(int(v.sum()) for v in sel.values()) == m


def test_select_top_ties_are_deterministic():
    # All equal: the lowest global indices win; layers are ordered by sorted key.
    tied = {"z": jnp.full((3,), 0.7), "a": jnp.full((2,), 0.7), "m": jnp.full((2,), 0.7)}
    sel = select_top(tied, 3 / 7)
    np.testing.assert_array_equal(sel["a"], [True, True])
    np.testing.assert_array_equal(sel["m"], [True, False])
    np.testing.assert_array_equal(sel["z"], [False, False, False])
    # Same answer for another insertion order, and under jit.
    reordered = {k: tied[k] for k in ("m", "a", "z")}
    jitted = jax.jit(functools.partial(select_top, proportion=3 / 7))(reordered)
    for k in tied:
        np.testing.assert_array_equal(jitted[k], sel[k])
    # A NaN score is never preferred over a finite one.
    sel = select_top({"a": jnp.array([jnp.nan, 0.6, 0.7])}, 2 / 3)
    np.testing.assert_array_equal(sel["a"], [False, True, True])


def test_neuron_masks_vmap_over_seeds():
    seeds = jax.tree.map(lambda x: jnp.stack([x, 1.5 - x, x[::-1]]), SCORES)
    fn = jax.jit(jax.vmap(functools.partial(neuron_masks, proportion=0.3, alpha=0.2)))
    v = fn(seeds)
    for s in range(3):
        ref = neuron_masks(jax.tree.map(lambda x, s=s: x[s], seeds), proportion=0.3)
        for k in SCORES:
            np.testing.assert_allclose(v[k][s], ref[k], rtol=1e-6)
    # Seed 1 has inverted scores: its top 2 are b[3] (0.95) and a[1] (1.0).
    np.testing.assert_allclose(v["a"][1], [1.0, 0.2 * (1 - 1.0), 1.0], atol=1e-6)


def test_mask_values_from_goal_scores():
    # Rank by weight norm (who is masked), use the goal scores in the formula (how much).
    rank = {"a": jnp.array([10.0, 30.0, 20.0])}
    goal = {"a": jnp.array([0.6, 0.9, 0.8])}
    masks = neuron_masks(rank, proportion=1 / 3, mask_values=goal)
    np.testing.assert_allclose(masks["a"], [1.0, 0.2 * (1 - 0.9), 1.0], rtol=1e-5)
    with pytest.raises(ValueError, match="mask_values keys"):
        neuron_masks(rank, mask_values={"b": goal["a"]})
    with pytest.raises(ValueError, match="has shape"):
        neuron_masks(rank, mask_values={"a": jnp.ones(2)})


def test_random_scores():
    sizes = {"fc1": 4, "fc0": 3}
    r = random_scores(jax.random.PRNGKey(0), sizes)
    assert {k: v.shape for k, v in r.items()} == {"fc0": (3,), "fc1": (4,)}
    flat = np.concatenate([r["fc0"], r["fc1"]])
    assert np.all((flat >= 0) & (flat < 1)) and len(np.unique(flat)) == 7
    again = random_scores(jax.random.PRNGKey(0), {"fc0": 3, "fc1": 4})
    np.testing.assert_array_equal(again["fc1"], r["fc1"])
    other = random_scores(jax.random.PRNGKey(1), sizes)
    assert not np.allclose(other["fc0"], r["fc0"])
    v = jax.vmap(lambda k: random_scores(k, sizes))(jax.random.split(jax.random.PRNGKey(0), 3))
    assert v["fc1"].shape == (3, 4) and not np.allclose(v["fc1"][0], v["fc1"][1])


def test_activation_scores():
    acts = {"fc0": jnp.array([[1.0, -2.0], [-3.0, 0.0], [2.0, 4.0]])}
    # mean |a|: (1 + 3 + 2) / 3 = 2, (2 + 0 + 4) / 3 = 2
    np.testing.assert_allclose(activation_scores(acts)["fc0"], [2.0, 2.0])
    acts = {"fc0": jnp.array([[1.0, -5.0], [1.0, 2.0]])}
    np.testing.assert_allclose(activation_scores(acts)["fc0"], [1.0, 3.5])


def test_weight_scores():
    dense = jnp.array([[3.0, 0.0], [4.0, 1.0], [0.0, 0.0]])  # norms 5, 1
    conv = jnp.zeros((2, 2, 1, 2)).at[0, 0, 0, 0].set(2.0).at[1, 1, 0, 1].set(-1.0)
    conv = conv.at[0, 1, 0, 1].set(1.0)  # norms 2, sqrt(2)
    inner = {
        "fc0": {"kernel": dense, "bias": jnp.ones(2) * 100},
        "trunk": {"conv0": {"kernel": conv, "bias": jnp.zeros(2)}},
    }
    for params in (inner, {"params": inner}):
        w = weight_scores(params, ["fc0", "trunk/conv0"])
        np.testing.assert_allclose(w["fc0"], [5.0, 1.0], rtol=1e-6)
        np.testing.assert_allclose(w["trunk/conv0"], [2.0, np.sqrt(2.0)], rtol=1e-6)
    with pytest.raises(ValueError, match=r"no kernel for layer 'fc9'; layers: \['fc0', "):
        weight_scores(inner, ["fc9"])


def test_neutral_constant_neurons():
    # goal 90 % ones: a dead neuron (all zeros) scores 0.9 as written, 0.5 when neutral.
    goal = jnp.array([1.0] * 9 + [0.0])
    act = jnp.stack([jnp.zeros(10), goal * 2.0, jnp.arange(10.0)], axis=1)  # dead, perfect, ramp
    paper = skill_scores(act, goal)
    np.testing.assert_allclose(paper, [0.9, 1.0, 0.6], rtol=1e-6)
    neutral = skill_scores(act, goal, neutral_constant=True)
    np.testing.assert_allclose(neutral, [0.5, 1.0, 0.6], rtol=1e-6)
    # A neuron that varies only on invalid steps is constant on the valid ones.
    valid = jnp.array([True] * 9 + [False])
    act2 = jnp.stack([jnp.array([0.0] * 9 + [5.0]), jnp.arange(10.0)], axis=1)
    np.testing.assert_allclose(skill_scores(act2, goal, valid, neutral_constant=True)[0], 0.5)


def test_activation_scores_skip_invalid_steps():
    acts = {"fc0": jnp.array([[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]])}
    out = activation_scores(acts, valid=jnp.array([True, True, False]))
    np.testing.assert_allclose(out["fc0"], [2.0, 3.0])
