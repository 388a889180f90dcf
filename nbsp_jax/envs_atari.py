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

import difflib
import re

import numpy as np

from nbsp_jax.envs import EpisodeStats, Step

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
    close = difflib.get_close_matches(game, games, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"unknown Atari game {game!r}.{hint} Available games: {', '.join(games)}")


class AtariSeedVecEnv:
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
        self.num_seeds, self.num_envs = num_seeds, num_envs
        self.shape = (num_seeds, num_envs)
        n = num_seeds * num_envs
        self._env = envpool.make(
            f"{self.game}-v5", env_type="gymnasium", num_envs=n, seed=seed,
            episodic_life=episodic_life, reward_clip=reward_clip, full_action_space=True,
            noop_max=30, frame_skip=4, stack_num=4, img_height=84, img_width=84,
            gray_scale=True, repeat_action_probability=0.0,
            max_episode_steps=max_episode_steps,
        )
        self._reset_next = np.zeros(n, bool)
        self._ret = np.zeros(n)
        self._len = np.zeros(n, np.int64)
        self.raw_reward = np.zeros(self.shape, np.float32)
        self.game_over = np.zeros(self.shape, bool)

    def _split(self, x) -> np.ndarray:
        x = np.asarray(x)
        return x.reshape(self.shape + x.shape[1:])

    def reset(self) -> np.ndarray:
        obs, _ = self._env.reset()
        self._reset_next[:] = False
        self._ret[:] = 0.0
        self._len[:] = 0
        return self._split(obs)

    def step(self, actions: np.ndarray) -> tuple[Step, EpisodeStats]:
        flat = np.asarray(actions, np.int32).reshape(-1)
        obs, reward, term, trunc, info = self._env.step(flat)
        valid = ~self._reset_next
        raw = np.asarray(info["reward"], np.float64)
        self._ret = np.where(valid, self._ret + raw, 0.0)
        self._len = np.where(valid, self._len + 1, 0)
        # The game is over (and resets on the next step) at the last life or the time limit;
        # a life loss under episodic life only terminates the training episode.
        game_over = valid & ((term & (np.asarray(info["lives"]) == 0)) | trunc)
        seeds = np.repeat(np.arange(self.num_seeds), self.num_envs)
        stats = EpisodeStats(seeds[game_over], self._ret[game_over], self._len[game_over],
                             np.zeros(int(game_over.sum()), bool))
        self._reset_next = game_over
        self.game_over = self._split(game_over)
        self.raw_reward = self._split(np.where(valid, raw, 0.0).astype(np.float32))
        z = self._split(np.zeros_like(valid))
        step = Step(self._split(obs), self._split(reward.astype(np.float32)),
                    self._split(term & valid), self._split(trunc & valid), z,
                    self._split(valid))
        return step, stats

    def close(self) -> None:
        close = getattr(self._env, "close", None)
        if close is not None:
            close()


def bytes_per_seed(buffer_size: int, replay_store_size: int, num_phases: int) -> int:
    """Host/device bytes one seed's replay needs: the frame-once current-task buffer plus the
    earlier-task buffer (also frame-once) over ``num_phases - 1`` stored tasks."""
    from nbsp_jax.atari_replay import buffer_bytes

    return buffer_bytes(buffer_size) + buffer_bytes(replay_store_size * max(num_phases - 1, 1))


def machine_memory_bytes() -> int:
    """Physical memory of this machine."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(buffer_size: int, replay_store_size: int, num_phases: int, num_seeds: int,
                 budget: float = 0.8) -> int:
    """Raises ValueError, with the estimate, if the replay of all seeds would not fit in
    ``budget`` of physical memory; returns the estimate in bytes otherwise."""
    need = num_seeds * bytes_per_seed(buffer_size, replay_store_size, num_phases)
    have = machine_memory_bytes()
    if need > budget * have:
        raise ValueError(
            f"the replay buffers need about {need / 2**30:.1f} GiB ({num_seeds} seeds x "
            f"{bytes_per_seed(buffer_size, replay_store_size, num_phases) / 2**30:.2f} GiB: "
            f"buffer_size={buffer_size}, replay_store_size={replay_store_size} x "
            f"{max(num_phases - 1, 1)} earlier tasks), more than {budget:.0%} of this "
            f"machine's {have / 2**30:.1f} GiB; lower num_seeds or buffer_size"
        )
    return need
