"""benchmarks/method_cost.py builds each arm as the CPU Table 1 runs it."""

import pytest

from benchmarks.method_cost import arm_config


@pytest.mark.parametrize("arm, method, activation", [("crelu", "sac", "crelu"),
                                                     ("pi", "pi", "relu"),
                                                     ("sac", "sac", "relu")])
def test_arm_config_applies_the_arms_overrides_to_the_cpu_reduction(arm, method, activation):
    c = arm_config(arm)
    assert (c.method, c.activation) == (method, activation)
    assert (c.num_seeds, tuple(c.hidden), c.steps_per_task) == (5, (256, 256), 150_000)
