"""Hand-worked checks of nbsp_jax.metrics (SPEC section 6, paper Eq. 9-13 and Table 7)."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

from nbsp_jax import metrics
from nbsp_jax.metrics import (
    ATARI_SCORES,
    canonical_atari_game,
    continual_metrics,
    continual_metrics_batch,
    metrics_for,
    normalize_atari,
    summarize,
)

# Two-task cycle A -> B -> A -> B (H = 4 phases; phases 0 and 2 train A, 1 and 3 train B).
# Full forgetting: a task scores 1 right after it is trained and 0 once the other is trained.
# sr[i, j] = score on phase j's task after phase i, so sr[i, j] = 1 iff task(j) == task(i).
FULL_FORGET = np.array(
    [
        [1, 0, 1, 0],
        [0, 1, 0, 1],
        [1, 0, 1, 0],
        [0, 1, 0, 1],
    ],
    dtype=float,
)
# ASR rows (mean of sr[i, :i+1]): 1, (0+1)/2, (1+0+1)/3, (0+1+0+1)/4
#   = (1 + 1/2 + 2/3 + 1/2) / 4 = (8/3) / 4 = 2/3.
# FWT = mean of the diagonal = 1.
# FM, terms max_{l=j..i-1} sr[l, j] - sr[i, j]:
#   i=1: j=0: 1 - 0 = 1                               -> mean 1
#   i=2: j=0: max(1, 0) - 1 = 0; j=1: 1 - 0 = 1       -> mean 1/2
#   i=3: j=0: max(1,0,1) - 0 = 1; j=1: max(1,0) - 1 = 0; j=2: 1 - 0 = 1 -> mean 2/3
#   FM = (1 + 1/2 + 2/3) / 3 = (13/6) / 3 = 13/18.
FULL_FORGET_EXPECTED = {"asr": 2 / 3, "fm": 13 / 18, "fwt": 1.0}

# Same cycle, no forgetting: A is learned in phase 0, B in phase 1, both stay at 1.
# Before phase 1, B (tasks of phases 1 and 3) is unlearned -> 0 in row 0.
NO_FORGET = np.array(
    [
        [1, 0, 1, 0],
        [1, 1, 1, 1],
        [1, 1, 1, 1],
        [1, 1, 1, 1],
    ],
    dtype=float,
)
# ASR: every row's lower triangle is all ones -> 1. FWT = 1.
# FM: every sr[i, j] (j < i) is 1 and every earlier max is 1 -> all terms 0 -> FM = 0.
NO_FORGET_EXPECTED = {"asr": 1.0, "fm": 0.0, "fwt": 1.0}

# Fractional values; the upper triangle (not read) is filled with 9 to prove it is ignored.
FRACTIONAL = np.array(
    [
        [0.5, 9.0, 9.0, 9.0],
        [0.8, 0.4, 9.0, 9.0],
        [0.2, 0.9, 0.6, 9.0],
        [0.6, 0.1, 0.7, 1.0],
    ]
)
# ASR rows: 0.5; (0.8+0.4)/2 = 0.6; (0.2+0.9+0.6)/3 = 17/30; (0.6+0.1+0.7+1.0)/4 = 0.6
#   sum = 1.7 + 17/30 = 68/30 -> ASR = 68/120 = 17/30.
# FWT = (0.5 + 0.4 + 0.6 + 1.0) / 4 = 2.5 / 4 = 0.625.
# FM:
#   i=1: j=0: max(0.5) - 0.8 = -0.3                                -> mean -0.3
#   i=2: j=0: max(0.5, 0.8) - 0.2 = 0.6; j=1: max(0.4) - 0.9 = -0.5 -> mean 0.05
#   i=3: j=0: max(0.5, 0.8, 0.2) - 0.6 = 0.2   (peak at the intermediate phase 1)
#        j=1: max(0.4, 0.9) - 0.1 = 0.8        (peak at phase 2, after training phase 1)
#        j=2: max(0.6) - 0.7 = -0.1                                  -> mean 0.9/3 = 0.3
#   FM = (-0.3 + 0.05 + 0.3) / 3 = 0.05 / 3 = 1/60.
FRACTIONAL_EXPECTED = {"asr": 17 / 30, "fm": 1 / 60, "fwt": 0.625}


def _assert_metrics(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert isinstance(got[k], float), k
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_full_forgetting_cycle():
    _assert_metrics(continual_metrics(FULL_FORGET), FULL_FORGET_EXPECTED)


def test_no_forgetting_cycle():
    _assert_metrics(continual_metrics(NO_FORGET), NO_FORGET_EXPECTED)


def test_fractional_max_over_intermediate_phases():
    _assert_metrics(continual_metrics(FRACTIONAL), FRACTIONAL_EXPECTED)
    # Comparing only with the most recent phase (l = i-1) would give a different FM:
    #   i=1: -0.3; i=2: (0.8-0.2, 0.4-0.9) -> 0.05; i=3: (0.2-0.6, 0.9-0.1, 0.6-0.7) -> 0.1
    #   -> (-0.3 + 0.05 + 0.1)/3 = -0.05, so the max over l really matters.
    assert continual_metrics(FRACTIONAL)["fm"] != pytest.approx(-0.05)


def test_upper_triangle_ignored_and_list_input():
    garbage = FULL_FORGET.copy()
    garbage[np.triu_indices(4, k=1)] = -123.0
    _assert_metrics(continual_metrics(garbage.tolist()), FULL_FORGET_EXPECTED)


def test_single_phase_fm_is_nan():
    out = continual_metrics([[0.7]])
    assert out["asr"] == pytest.approx(0.7)
    assert out["fwt"] == pytest.approx(0.7)
    assert math.isnan(out["fm"])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(3), r"\(3,\)"),
        (np.zeros((2, 3)), r"\(2, 3\)"),
        (np.zeros((2, 2, 2)), r"\(2, 2, 2\)"),
        (np.zeros((0, 0)), r"at least one phase"),
        ([[1.0, 0.0], [np.nan, 1.0]], r"nan at index \(1, 0\)"),
        ([[1.0, np.inf], [0.0, 1.0]], r"inf at index \(0, 1\)"),
        ([["a", "b"], ["c", "d"]], r"numeric"),
    ],
)
def test_validation_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        continual_metrics(bad)


def test_batch_validation():
    with pytest.raises(ValueError, match=r"\[S, H, H\].*\(4, 4\)"):
        continual_metrics_batch(FULL_FORGET)
    with pytest.raises(ValueError, match=r"square"):
        continual_metrics_batch(np.zeros((2, 3, 4)))


def test_batch_and_summarize_three_seeds():
    sr = np.stack([FULL_FORGET, NO_FORGET, FRACTIONAL])
    per_seed = continual_metrics_batch(sr)
    assert set(per_seed) == {"asr", "fm", "fwt"}
    for k in ("asr", "fm", "fwt"):
        assert per_seed[k].shape == (3,)
        expected = [FULL_FORGET_EXPECTED[k], NO_FORGET_EXPECTED[k], FRACTIONAL_EXPECTED[k]]
        np.testing.assert_allclose(per_seed[k], expected, rtol=0, atol=1e-12)

    # ASR per seed = 60/90, 90/90, 51/90 -> mean = 201/270 = 67/90.
    # Deviations: -7/90, 23/90, -16/90; squares sum to (49 + 529 + 256)/8100 = 834/8100.
    # var(ddof=1) = 417/8100, stderr = sqrt(417/8100 / 3) = sqrt(139)/90.
    s = summarize(per_seed["asr"])
    assert s["mean"] == pytest.approx(67 / 90, abs=1e-12)
    assert s["stderr"] == pytest.approx(math.sqrt(139) / 90, abs=1e-12)
    assert s["per_seed"] == pytest.approx([2 / 3, 1.0, 17 / 30], abs=1e-12)

    # FWT per seed = 1, 1, 5/8 -> mean = (21/8)/3 = 7/8; deviations 1/8, 1/8, -1/4;
    # squares (1 + 1 + 4)/64 = 6/64, var = 3/64, stderr = sqrt(3/64 / 3) = 1/8.
    all_stats = summarize(per_seed)
    assert all_stats["fwt"]["mean"] == pytest.approx(7 / 8, abs=1e-12)
    assert all_stats["fwt"]["stderr"] == pytest.approx(1 / 8, abs=1e-12)
    # plain Python types -> JSON round trip
    assert json.loads(json.dumps(all_stats)) == all_stats
    assert type(all_stats["fm"]["mean"]) is float
    assert all(type(v) is float for v in all_stats["fm"]["per_seed"])


def test_summarize_scaled_seeds_and_single_seed():
    # Metrics are positively homogeneous: metrics(c * sr) = c * metrics(sr), c >= 0.
    sr = np.stack([c * FRACTIONAL for c in (0.25, 0.5, 0.75)])
    fm = summarize(continual_metrics_batch(sr)["fm"])
    # values (1/60) * [1/4, 1/2, 3/4]: mean (1/60)/2, std(ddof=1) (1/60)/4,
    # stderr (1/60) / (4 sqrt 3)
    assert fm["mean"] == pytest.approx(1 / 120, abs=1e-12)
    assert fm["stderr"] == pytest.approx(1 / (240 * math.sqrt(3)), abs=1e-12)

    one = summarize([0.4])
    assert one == {"mean": 0.4, "stderr": 0.0, "per_seed": [0.4]}
    with pytest.raises(ValueError, match="1-D"):
        summarize([])
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        summarize(np.zeros((2, 2)))


def test_metrics_for_naming():
    m = metrics_for(FRACTIONAL)
    assert set(m) == {"asr", "fm", "fwt"}
    a = metrics_for(FRACTIONAL, atari=True)
    assert set(a) == {"ar", "fm", "fwt"}
    assert a["ar"] == pytest.approx(17 / 30)
    b = metrics_for(np.stack([FULL_FORGET, NO_FORGET]), atari=True)
    assert set(b) == {"ar", "fm", "fwt"}
    np.testing.assert_allclose(b["ar"], [2 / 3, 1.0])
    with pytest.raises(ValueError, match=r"\(4,\)"):
        metrics_for(np.zeros(4))


def test_atari_table7_values():
    # Paper Table 7 (Mnih et al., 2015 scores).
    assert ATARI_SCORES == {
        "Bowling": (23.1, 154.8),
        "Pong": (-20.7, 9.3),
        "BankHeist": (14.2, 734.4),
        "Alien": (227.5, 6875.0),
    }


def test_normalize_atari_pong():
    # Pong: random -20.7, human 9.3, range 30.
    assert normalize_atari("Pong", 9.3) == pytest.approx(1.0)
    assert normalize_atari("Pong", -20.7) == pytest.approx(0.0)
    # (-5.7 + 20.7) / 30 = 15 / 30 = 0.5; (21 + 20.7) / 30 = 41.7 / 30 = 1.39
    assert isinstance(normalize_atari("pong", -5.7), float)
    assert normalize_atari("pong", -5.7) == pytest.approx(0.5)
    assert normalize_atari("PONG-v5", 21) == pytest.approx(1.39)
    out = normalize_atari("Pong-v5", np.array([[-20.7, -5.7], [9.3, -21.0]]))
    assert out.shape == (2, 2)
    # (-21 + 20.7) / 30 = -0.01
    np.testing.assert_allclose(out, [[0.0, 0.5], [1.0, -0.01]], atol=1e-12)
    # Alien: (3551.25 - 227.5) / (6875 - 227.5) = 3323.75 / 6647.5 = 0.5
    assert normalize_atari("ALE/Alien-v5", 3551.25) == pytest.approx(0.5)


def test_atari_game_names():
    assert canonical_atari_game("bankheist-v5") == "BankHeist"
    assert canonical_atari_game("Bank_Heist") == "BankHeist"
    assert canonical_atari_game("Bowling-V5") == "Bowling"
    with pytest.raises(ValueError, match="Alien, BankHeist, Bowling, Pong") as err:
        normalize_atari("Breakout-v5", 10.0)
    assert "'Breakout-v5'" in str(err.value)


def test_docstring_examples():
    failures, tried = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0
    assert failures == 0
