"""experiments/permutation_test.py: the null of label permutations across episodes."""

import numpy as np
import pytest

from experiments.permutation_test import permutation_test, window_rows


def _episodes(seed):
    rng = np.random.default_rng(seed)
    episode = np.repeat(np.arange(40), 25)  # 40 episodes of 25 steps
    goal = np.repeat(rng.permutation(np.r_[np.ones(20), np.zeros(20)]), 25).astype(np.float32)
    return rng, episode, goal


def test_informative_neurons_lie_above_the_null_and_noise_inside_it():
    rng, episode, goal = _episodes(0)
    noise = rng.normal(size=(goal.size, 10)).astype(np.float32)
    informative = noise.copy()
    informative[:, :2] += 3 * goal[:, None]  # 2 of 10 neurons (= the top 20 %) follow the goal
    hit = permutation_test(informative, goal, episode, 200, neutral=True, proportion=0.2)
    assert hit["mean_selected"]["observed"] > 0.9
    assert hit["mean_selected"]["percentile"] == 100.0 and hit["cut"]["percentile"] == 100.0
    miss = permutation_test(noise, goal, episode, 200, neutral=True, proportion=0.2)
    assert 5.0 < miss["mean_selected"]["percentile"] < 95.0
    # The null is computed: its mean lies above 0.5 (top-k of noisy scores) and below 0.9.
    assert 0.5 < miss["mean_selected"]["null_mean"] < 0.9


def test_windows():
    arrays = {"valid": np.array([[1, 1, 0, 1, 1]], bool), "step": np.array([[0, 5, 6, 8, 9]])}
    np.testing.assert_array_equal(window_rows(arrays, 0, "task"), [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(window_rows(arrays, 0, "last:4"), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="valid choices"):
        window_rows(arrays, 0, "first:3")
