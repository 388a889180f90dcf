"""EnvPool Atari wrapper: game names, reset steps with episodic life, raw game returns, memory."""

import numpy as np
import pytest

from nbsp_jax.config import validate
from nbsp_jax.domains import check_memory
from nbsp_jax.envs import AtariSeedVecEnv, atari_games, check_game


def test_game_names():
    games = atari_games()
    assert {"Pong", "Bowling", "BankHeist", "Alien"} <= set(games)
    assert "Ant" not in games  # MuJoCo's -v5 envs are not Atari games
    assert check_game("pong") == "Pong" and check_game("Bowling-v5") == "Bowling"
    with pytest.raises(ValueError, match=r"unknown Atari game 'Pongg'.*\['Pong'.*Bowling"):
        check_game("Pongg")


def test_life_loss_continues_game_over_resets():
    env = AtariSeedVecEnv("Breakout", num_seeds=2, num_envs=1, seed=3, max_episode_steps=2000)
    obs = env.reset()
    assert obs.shape == (2, 1, 4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    ret, length, games = np.zeros(2), np.zeros(2, int), []
    prev_end = np.zeros(2, bool)
    life_losses = 0
    for _ in range(1500):
        step, stats = env.step(rng.integers(0, 18, size=(2, 1)))
        valid = step.valid[:, 0]
        # Only the step after a game over is a reset step.
        np.testing.assert_array_equal(valid, ~prev_end)
        life_losses += int((step.terminated[:, 0] & valid).sum())
        ret += np.where(valid, env.raw_reward[:, 0], 0.0)
        length += valid
        ended = np.zeros(2, bool)
        ended[stats.seed] = True
        for s, r, n in zip(stats.seed, stats.ret, stats.length, strict=True):
            assert r == ret[s] and n == length[s]  # whole game: all lives
            games.append(r)
            ret[s], length[s] = 0.0, 0
        prev_end = ended
        if len(games) >= 3:
            break
    assert len(games) >= 3
    assert life_losses > len(games)  # several lives per game, each a training termination


def test_memory_check():
    # The paper's config: 3 seeds, 2e5 buffer, 1e5 kept per game over 3 earlier phases.
    need = check_memory(200_000, 100_000, 4, 3, budget=1e9)
    assert 3 * 1.3e9 < need < 3 * 1.6e9 * 3  # frame-once storage, not 56 kB stacks
    with pytest.raises(ValueError, match=r"GiB.*lower num_seeds or buffer_size"):
        check_memory(2_000_000, 100_000, 4, 3)


def test_atari_config_checks_game_and_memory_first():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                        "atari_pong_bowling.py")
    spec = importlib.util.spec_from_file_location("apb", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.tasks = ("Pong", "Bowlin")
    with pytest.raises(ValueError, match="Bowling"):
        validate(c)
    c = mod.get_config()
    c.buffer_size = 10_000_000
    with pytest.raises(ValueError, match="GiB"):
        validate(c)
    validate(mod.get_config())  # the paper's config: 3 seeds fit here
