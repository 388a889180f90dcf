"""EnvPool Atari with the paper's preprocessing, one pool of ``num_seeds * num_envs`` games.

Preprocessing (appendix C, CleanRL ``sac_atari.py``): 84x84 grayscale, frame skip 4, 4 stacked
frames (uint8 ``[4, 84, 84]``, oldest first), up to 30 no-op starts, the full 18-action set for
every game (one network serves the whole sequence). Training may use episodic life (a life loss
ends the *training* episode: ``terminated``, no bootstrap) and reward clipping; the goal metric
and evaluation use the raw game score of whole games (all lives), from EnvPool's
``info['reward']``.

EnvPool resets a game on the step after it ends (game over or time limit); that step ignores the
action and is marked ``valid = False``. A life loss under episodic life is *not* followed by a
reset step: the game goes on and the next step is valid.
"""

from __future__ import annotations

import re

import numpy as np

from nbsp_jax.envs.common import PoolView, unknown_name
from nbsp_jax.types import EpisodeStats, Step

NUM_ACTIONS = 18
OBS_SHAPE = (4, 84, 84)


def atari_games() -> list[str]:
    """Names of the Atari games EnvPool ships (``'Pong'``, ``'Bowling'``, ...), sorted."""
    from envpool.registration import registry

    # EnvPool's registry names each env's spec module; Atari's is 'envpool.atari' (the -v5
    # suffix alone would also match MuJoCo's Ant-v5 and friends).
    return sorted(m.group(1) for e, spec in registry.specs.items()
                  if spec[0] == "envpool.atari" and (m := re.fullmatch(r"(\w+)-v5", e)))


def check_game(game: str) -> str:
    """Returns the EnvPool spelling of ``game`` (case-insensitive, ``-v5`` optional), or
    raises ValueError naming the closest games and the full list."""
    games = atari_games()
    key = re.sub(r"-v\d+$", "", game).replace("ALE/", "").lower()
    for g in games:
        if g.lower() == key:
            return g
    raise unknown_name("Atari game", game, games, "Available games")


class AtariSeedVecEnv(PoolView):
    """One EnvPool pool of ``S * E`` Atari games seen as ``[S, E, ...]`` arrays.

    Same interface as :class:`nbsp_jax.envs.SeedVecEnv`: ``reset() -> obs [S, E, 4, 84, 84]``
    uint8; ``step(actions [S, E] int) -> (Step, EpisodeStats)``. ``Step.reward`` is the training
    reward (clipped to {-1, 0, 1} when ``reward_clip``); :attr:`raw_reward` holds the game's own
    reward of the last step and :attr:`game_over` whether it ended a whole game (last life lost or
    time limit). ``EpisodeStats`` reports whole games: raw return and length in
    agent steps. ``Step.success`` is always False (Atari has no success signal).
    """

    def __init__(self, game: str, num_seeds: int, num_envs: int, seed: int,
                 episodic_life: bool = True, reward_clip: bool = True,
                 max_episode_steps: int = 27_000):
        import envpool

        self.game = check_game(game)
        super().__init__(num_seeds, num_envs)
        n = num_seeds * num_envs
        self._env = envpool.make(
            f"{self.game}-v5", env_type="gymnasium", num_envs=n, seed=seed,
            episodic_life=episodic_life, reward_clip=reward_clip, full_action_space=True,
            noop_max=30, frame_skip=4, stack_num=4, img_height=84, img_width=84,
            gray_scale=True, repeat_action_probability=0.0,
            max_episode_steps=max_episode_steps,
        )
        self._reset_next = np.zeros(n, bool)
        self.raw_reward = np.zeros(self.shape, np.float32)
        self.game_over = np.zeros(self.shape, bool)

    def reset(self) -> np.ndarray:
        obs, _ = self._env.reset()
        self._reset_next[:] = False
        self.reset_episodes()
        return self.split(obs)

    def step(self, actions: np.ndarray) -> tuple[Step, EpisodeStats]:
        flat = np.asarray(actions, np.int32).reshape(-1)
        obs, reward, term, trunc, info = self._env.step(flat)
        valid = ~self._reset_next
        raw = np.asarray(info["reward"], np.float64)
        self.count(valid, raw)
        # The game is over (and resets on the next step) at the last life or the time limit;
        # a life loss under episodic life only terminates the training episode.
        game_over = valid & ((term & (np.asarray(info["lives"]) == 0)) | trunc)
        stats = self.finished(game_over, np.zeros_like(game_over))
        self._reset_next = game_over
        self.game_over = self.split(game_over)
        self.raw_reward = self.split(np.where(valid, raw, 0.0).astype(np.float32))
        z = self.split(np.zeros_like(valid))
        step = Step(self.split(obs), self.split(reward.astype(np.float32)),
                    self.split(term & valid), self.split(trunc & valid), z,
                    self.split(valid))
        return step, stats

    def close(self) -> None:
        close = getattr(self._env, "close", None)
        if close is not None:
            close()
