"""Default configuration and validation.

Config files in ``configs/`` start from :func:`base_config` and override fields; the CLI then
applies ``--config.<field>=<value>`` overrides and :func:`validate` checks the result before
any environment or network is built.
"""

from __future__ import annotations

import ml_collections

AGENTS = ("sac", "sac_atari")


def base_config() -> ml_collections.ConfigDict:
    """Continuous SAC on Meta-World with the paper's values (Table 6, SPEC section 1)."""
    c = ml_collections.ConfigDict()
    for fields in (_run_fields, _agent_fields, _nbsp_fields, _baseline_fields,
                   _loop_fields):
        fields(c)
    return c


def _run_fields(c: ml_collections.ConfigDict) -> None:
    """Seeds, tasks, environments, step budgets and the current-task buffer."""
    # Base seed: seed s of the vmapped axis uses PRNG key fold_in(seed, s) and env seeds
    # derived from (seed, s); runs with different `seed` are independent.
    c.seed = 0
    # Number of seeds trained side by side (vmapped) in this process.
    c.num_seeds = 1
    # Global index of this run's first seed: seed s uses PRNG key fold_in(seed, seed_offset + s)
    # and the env seeds of global seed seed_offset + s. Set per process by multi-process runs
    # (process i of P trains seeds i * num_seeds / P ...); 0 for a single process.
    c.seed_offset = 0
    # Meta-World v3 task names, trained in this order (e.g. ('window-open', 'window-close')).
    c.tasks = ("window-open",)
    # How many times the task sequence is repeated.
    c.cycles = 1
    # 'sac' (continuous SAC, Meta-World tasks) or 'sac_atari' (discrete SAC, EnvPool Atari
    # games; see atari_cycle).
    c.agent = "sac"
    # 'envpool' (EnvPool MetaWorld/<Task>-v3) or 'metaworld' (the metaworld package, gymnasium
    # subprocess vector env).
    c.env_backend = "envpool"
    # Environments per seed.
    c.num_envs = 1
    # Environment steps per seed per task (Table 6: 1e6).
    c.steps_per_task = 1_000_000
    # Random-action steps at the start of each task before learning (Table 6: 1e4).
    c.learning_starts = 10_000
    # Current-task replay capacity per seed (Table 6: 1e6).
    c.buffer_size = 1_000_000


def _agent_fields(c: ml_collections.ConfigDict) -> None:
    """The SAC agents: networks, hyper-parameters, update cadence (Atari fields too)."""
    # Hidden layer widths of actor and critics (SPEC: [768, 768, 768]).
    c.hidden = (768, 768, 768)
    # Hidden-layer activation: 'relu', or 'crelu' (Abbas et al. 2023, a baseline of Table 1:
    # [relu(z), relu(-z)]; every hidden layer of actor and critics, on Atari the dense ones).
    # With 'crelu' a layer of `hidden` h has round(h / sqrt(2)) units emitting 2 features
    # each, so the parameter count stays ReLU's (networks.hidden_widths); a unit is a neuron.
    c.activation = "relu"
    c.batch_size = 256
    c.policy_lr = 3e-4
    c.q_lr = 1e-3
    c.gamma = 0.99
    # Polyak coefficient for the target critics, applied after every critic update.
    c.tau = 0.005
    # CleanRL's delayed policy update: this many critic steps, then as many actor steps.
    # We read Table 6's "updates per environment step 2" for Meta-World as this value.
    c.policy_frequency = 2
    # Log-probabilities of the temperature loss: 'fresh' (CleanRL: the updated actor sampled
    # again) or 'reuse' (SBX: the actor step's, one actor forward fewer). Atari's discrete SAC
    # takes the actor step's probabilities (CleanRL sac_atari), so it accepts only 'reuse'.
    c.alpha_logp = "fresh"
    # Gradient updates per environment step (per env of a seed)...
    c.updates_per_step = 1
    # ...every `update_every` env steps (CleanRL sac_atari: one update every 4 steps).
    c.update_every = 1
    # Atari only: env steps between hard copies of the critics into the targets (CleanRL
    # sac_atari: 8000); Meta-World uses Polyak averaging with `tau` instead.
    c.target_update_every = 8000
    # Atari only: time limit of a game in agent steps (27k = 108k frames, EnvPool's default).
    c.max_episode_steps = 27_000
    # Atari only: convolution implementation of the Nature CNN (see nbsp_jax.networks.conv_matmul).
    c.conv_impl = "auto"
    # Env steps collected between two fused update calls; updates within a chunk run in one
    # lax.scan. Smaller is closer to CleanRL's interleaving, larger is faster.
    c.chunk_steps = 50


def _nbsp_fields(c: ml_collections.ConfigDict) -> None:
    """NBSP: skill neurons, masks, the scoring window, replay of earlier tasks."""
    # --- NBSP (SPEC sections 2-5) ---
    # 'sac' (vanilla), 'replay_only', 'mask_only', 'nbsp', 'nbsp_hard' (skill neurons masked
    # to 0, Table 2).
    c.method = "sac"
    # Who is a skill neuron (Table 3): 'goal' (ours), 'random', 'activation' (mean |a|),
    # 'weight' (incoming-weight norm). Mask values always come from the goal scores.
    c.selector = "goal"
    # Networks whose updates are masked (Table 4): 'actor', 'critic' or 'both'.
    c.mask_target = "both"
    # 'latest' (paper: masks from the last task) or 'min' (per neuron, smallest so far).
    c.mask_policy = "latest"
    # Score of a neuron whose activation is constant over the recorded steps (e.g. a dead
    # ReLU): 'neutral' (0.5: it carries no goal information) or 'paper' (Eq. 3-4 as written:
    # max(P(q > mean), P(q <= mean)), the goal's imbalance, so that dead units outrank
    # informative ones: in the first :cpu runs they filled the top 20 %; see the README).
    c.constant_neurons = "neutral"
    # Where the masks act: 'update' (after Adam: a masked unit moves mask times as far, the
    # form of Algorithm 2 line 13) or 'gradient' (before Adam, as a literal PyTorch port
    # `p.grad *= mask; opt.step()` does; Adam's second moment then undoes a constant factor
    # within about 1 / (1 - b2) steps). See the README's ablation table.
    c.mask_placement = "update"
    # Fraction of each network's hidden neurons that are skill neurons (Eq. 5, m = 20%).
    c.skill_proportion = 0.2
    # Restriction strength: skill neurons' updates are scaled by alpha * (1 - score) (Eq. 7).
    c.mask_alpha = 0.2
    # Which training steps of a task are scored (SPEC section 3): 'task' (a uniform sample of
    # `score_steps` rows over every step of the task, kept online by reservoir sampling at
    # bounded memory, so the window spans the task's learning, failures and successes) or
    # 'last' (the last `score_steps` steps; a phase that ends at the success threshold then
    # records ~90 % successes and Eq. 3-4 rank activation skew, see the permutation test).
    c.score_window = "task"
    # Rows per seed recorded to score neurons (T; the paper gives no value). Rounded up to a
    # multiple of num_envs.
    c.score_steps = 10_000
    # Also write each end-of-task record (obs, action, goal, episode ids) and the end-of-task
    # networks to <workdir>/neurons/phaseNN_<task>_record.npz, for
    # experiments/permutation_test.py (Meta-World: ~0.2 kB per row and seed).
    c.save_score_record = False
    # Transitions per task copied into the earlier-task buffer (Table 6: 1e5).
    c.replay_store_size = 100_000
    # Every k-th gradient step samples from the earlier-task buffer (Eq. 8, Table 6: k = 10).
    c.replay_interval = 10


def _baseline_fields(c: ml_collections.ConfigDict) -> None:
    """The baselines of the paper's Table 1 (``config.method``; appendix C.1)."""
    # --- EWC (method='ewc'; Kirkpatrick et al. 2017, nbsp_jax.method.ewc) ---
    # Penalty strength lambda on the actor; Continual World's (Wolczyk et al. 2021) SAC value
    # for EWC on Meta-World (cl_reg_coef = 1e4).
    c.ewc_lambda = 1e4
    # Penalty strength on the critics; 0 follows Continual World's default of regularising
    # the actor only (regularize_critic=False). The critics' Fisher is estimated either way.
    c.ewc_critic_lambda = 0.0
    # Online EWC (Schwarz et al. 2018): earlier tasks' terms are scaled by this at each new
    # task; 1.0 is EWC, every task at full weight.
    c.ewc_decay = 1.0
    # --- Shrink & Perturb (method='shrink_perturb'; Ash & Adams 2020) ---
    # At each task switch theta <- sp_shrink * theta + sp_perturb * theta_fresh (a new
    # initialisation) for actor, critics and targets; the values of Ash & Adams' warm-start
    # reference code.
    c.sp_shrink = 0.4
    c.sp_perturb = 0.1
    # --- ReDo (method='redo'; Sokar et al. 2023, nbsp_jax.method.redo) ---
    # Gradient steps between two resets (ReDo's F = 1000) and the dormancy threshold tau of a
    # unit's normalised activity on a batch (ReDo's 0.1).
    c.redo_every = 1000
    c.redo_tau = 0.1
    # --- CBP (method='cbp'; Dohare et al. 2024, nbsp_jax.method.cbp_step) ---
    # Running-mean factor of the utility per gradient step and replacement rate (the
    # reference GnT class's 0.99 and 1e-4), and the maturity threshold in gradient steps
    # (the reference code uses 20 in GnT and 100 in its ContinualBackprop class).
    c.cbp_decay = 0.99
    c.cbp_rate = 1e-4
    c.cbp_maturity = 100
    # --- NPC (method='npc'; Paik et al. 2019, nbsp_jax.method.npc) ---
    # Running-mean factor of each neuron's normalised Taylor importance per gradient step
    # (a horizon of ~1000 updates) and the importance at which a neuron's learning rate
    # reaches zero (factor max(0, 1 - C / c_max); C has mean square 1 in each layer). Our
    # choices: the values of the original code could not be checked here.
    c.npc_decay = 0.999
    c.npc_c_max = 2.0
    # --- ANCL (method='ancl'; Kim et al. 2023, nbsp_jax.method.ancl), on EWC (A-EWC) ---
    # Each task after the first begins with an auxiliary copy of the agent (fresh optimizers,
    # no penalty) trained on it for `ancl_aux_steps` env steps (0: steps_per_task, as the
    # original trains it for the main network's epochs); then the agent, from where it stood
    # before, trains on the task with EWC's penalty (ewc_* fields) and a pull of strength
    # lambda_a toward the auxiliary network, weighted by that network's Fisher. Actor: the
    # original A-EWC code's lamb_a = 10 (with its EWC lamb = 1e4, the same ratio to our
    # ewc_lambda); critics: 0, as ewc_critic_lambda.
    c.ancl_lambda = 10.0
    c.ancl_critic_lambda = 0.0
    c.ancl_aux_steps = 0


def _loop_fields(c: ml_collections.ConfigDict) -> None:
    """The training loop: early stop, forks, checkpoints, evaluation, devices, logging."""
    # Window (episodes) of the running training success rate.
    c.success_window = 10
    # End a seed's phase early when its success rate over the last `success_window` training
    # episodes reaches `success_threshold` (Table 6: 10 episodes, 0.9). Seeds move in lockstep:
    # a seed that met it stops learning and storing until every seed has met it or the step
    # budget ends (SPEC section 6).
    c.early_stop = True
    c.success_threshold = 0.9
    # Keep a checkpoint of the end of phase 1's training (before scoring, masks and replay
    # storage) in <workdir>/fork_point, so that other methods can start from it.
    c.save_fork_point = False
    # A workdir with a fork point: skip phase 1's training and start from that run's (same
    # seeds, same phase-1 data and network), so that methods are compared paired. Every field
    # that acts during phase 1's training must equal that run's (checked).
    c.fork_from = ""
    # Stop this invocation after this many phases of the sequence have trained (0: train them
    # all): it checkpoints and exits without results.json, and a rerun without it resumes. An
    # ablation uses it to fork its arms from phase 1 before the source's phase 2 has run.
    c.stop_after_phase = 0
    # Seconds between periodic checkpoints (one is also written at the end of every phase).
    c.checkpoint_every_s = 600.0
    # Evaluation episodes per seed at the end of each task (deterministic policy); 0 disables.
    c.eval_episodes = 10
    # How the seed axis of the gradient update is computed: 'vmap' (one batched computation)
    # or 'map' (seeds one after another in the same compiled call). On this project's 2-core
    # CPU 'vmap' was as fast or faster at 1-8 seeds (docs/performance.md); GPU not measured.
    c.seed_axis = "vmap"
    # Where the policy acts: 'learner' (on the learner's device, after each chunk's update) or
    # 'host' (on a host CPU device with the parameters from before the update in flight, so
    # env stepping overlaps the update; the policy is then one chunk older). On a CPU-only
    # machine 'host' needs XLA_FLAGS=--xla_force_host_platform_device_count=2.
    c.act_on = "learner"
    # Split the seed axis over all devices (jax.sharding; no-op on one device). num_seeds must
    # then be a multiple of the device count.
    c.shard_seeds = True
    # Write losses and SPS every this many env steps.
    c.log_every_steps = 5_000
    # Show a progress bar (rich) on stderr.
    c.progress = True



def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks steps and networks so the whole path runs in about two minutes on 2 CPU cores."""
    c.steps_per_task = 2_000
    c.learning_starts = 500
    c.buffer_size = 10_000
    c.hidden = (64, 64)
    c.batch_size = 64
    c.eval_episodes = 1
    c.log_every_steps = 500
    c.score_steps = 1_000
    c.replay_store_size = 1_000
    return c


VARIANTS = ("", "smoke", "cpu")


def metaworld_cycle(tasks: tuple[str, ...], variant: str = "") -> ml_collections.ConfigDict:
    """The paper's Meta-World cycling experiment on ``tasks`` (Table 1, Table 6 values).

    Variants:
      ``''``: the paper: NBSP, [768]x3 networks, 1e6 steps per phase, 2 cycles, 3 seeds.
      ``'smoke'``: the whole path in well under two minutes (tests).
      ``'cpu'``: the reduction that runs here on 2 CPU cores: 5 seeds, one pass through the
        sequence (cycles = 1, so H = n phases), [256, 256] networks, 150k steps per phase with
        no early end (the phase goes on past the success threshold), 5k initial random steps,
        a 20k-row scoring sample over the whole task, 20k-step earlier-task store, 20
        evaluation episodes per task; it keeps its end-of-phase-1 fork point and scoring
        records. The pilot in docs/results.md (``sac``, window-open -> window-close): window-open
        >= 0.9 after phase 1 in 4 of 5 seeds, window-close 1.0 in 5 of 5, window-open <= 0.3
        after phase 2 in 5 of 5. Measured on that pair, 5 seeds, sharing the 2 cores with other
        work: 9,722 s for both phases; a method forked from its end of phase 1 runs phase 2
        only. On 2026-12-05, a faster day: phase 1 2,134 s, sac's phase 2 1,789 s, a forked
        phase 2 1,872-2,344 s.
        (At 100k steps, 4,337 s, window-open reached >= 0.9 in 3 of 5 seeds only.)
        A pair's config may raise the steps: ``metaworld_button_window.py`` runs 200k.
    """
    c = base_config()
    c.tasks = tuple(tasks)
    c.cycles = 2
    c.num_seeds = 3
    c.method = "nbsp"
    c.eval_episodes = 20
    if variant == "smoke":
        c = smoke(c)
        c.num_seeds = 2
    elif variant == "cpu":
        c.num_seeds = 5
        c.cycles = 1
        c.hidden = (256, 256)
        c.steps_per_task = 150_000
        c.early_stop = False  # each phase continues past the threshold to its budget
        c.learning_starts = 5_000
        c.buffer_size = 100_000
        c.replay_store_size = 20_000
        c.score_steps = 20_000  # a uniform 1-in-5 sample of the task's steps
        c.eval_episodes = 20
        c.log_every_steps = 2_000
        c.save_score_record = True
        c.save_fork_point = True
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; valid choices: {VARIANTS}")
    return c


def atari_cycle(games: tuple[str, ...], steps_per_game: int, variant: str = ""):
    """The paper's Atari cycling experiment on ``games`` (Table 5, Table 6 values).

    Discrete SAC (CleanRL ``sac_atari.py``): lr 1e-4 for actor and critics, batch 64, buffer
    2e5 per seed, 2e4 random steps per game, one update every 4 env steps, hard target copy
    every 8000 env steps, target entropy 0.89 log|A|, Nature CNN + [768, 768]; 1e5 transitions
    per game kept for replay, every 10th batch from them; 3 seeds, 2 cycles.
    """
    c = base_config()
    c.agent = "sac_atari"
    c.tasks = tuple(games)
    c.cycles = 2
    c.num_seeds = 3
    c.method = "nbsp"
    c.steps_per_task = steps_per_game
    c.learning_starts = 20_000
    c.buffer_size = 200_000
    c.replay_store_size = 100_000
    c.hidden = (768, 768)
    c.batch_size = 64
    c.policy_lr = 1e-4
    c.q_lr = 1e-4
    c.update_every = 4
    c.chunk_steps = 64  # 16 updates per fused call
    c.alpha_logp = "reuse"  # discrete SAC: the actor step's probabilities (CleanRL sac_atari)
    c.target_update_every = 8000
    c.early_stop = False  # Table 6 gives no threshold for Atari
    c.eval_episodes = 10
    c.success_window = 10  # games in the running return shown on the progress bar
    if variant == "smoke":
        c = smoke(c)
        c.num_seeds = 2
        c.hidden = (64,)
        c.batch_size = 16
        c.steps_per_task = 1_000
        c.buffer_size = 2_000
        c.replay_store_size = 500
        c.learning_starts = 400
        c.target_update_every = 400
        c.score_steps = 300
        c.eval_episodes = 1
        # Short games, so evaluation of a random-ish policy ends quickly.
        c.max_episode_steps = 300
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}; valid choices: ('', 'smoke')")
    return c


def _positive(c, *names):
    for name in names:
        value = c[name]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"config.{name} must be a positive integer, got {value!r}")


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the bad field, its value and the valid choices.

    Runs before any environment or network is built, so bad input costs nothing.
    """
    from nbsp_jax.domains import domain_class

    _positive(c, "num_seeds", "num_envs", "steps_per_task", "buffer_size", "batch_size",
              "policy_frequency", "updates_per_step", "chunk_steps", "success_window",
              "log_every_steps", "cycles", "score_steps", "replay_store_size",
              "replay_interval")
    if not isinstance(c.seed, int) or c.seed < 0:
        raise ValueError(f"config.seed must be a non-negative integer, got {c.seed!r}")
    if not isinstance(c.learning_starts, int) or c.learning_starts < 0:
        raise ValueError(f"config.learning_starts must be >= 0, got {c.learning_starts!r}")
    if c.learning_starts >= c.steps_per_task:
        raise ValueError(
            f"config.learning_starts={c.learning_starts} leaves no learning steps: it must be "
            f"smaller than config.steps_per_task={c.steps_per_task}"
        )
    if not isinstance(c.seed_offset, int) or c.seed_offset < 0:
        raise ValueError(f"config.seed_offset must be an int >= 0, got {c.seed_offset!r}")
    if not isinstance(c.eval_episodes, int) or c.eval_episodes < 0:
        raise ValueError(f"config.eval_episodes must be >= 0, got {c.eval_episodes!r}")
    if c.agent not in AGENTS:
        raise ValueError(f"unknown config.agent {c.agent!r}; valid choices: {AGENTS}")
    _positive(c, "update_every", "max_episode_steps", "target_update_every")
    _check_choices(c)
    if not 0.0 < c.skill_proportion <= 1.0:
        raise ValueError(f"config.skill_proportion must lie in (0, 1], got {c.skill_proportion!r}")
    if not 0.0 < c.success_threshold <= 1.0:
        raise ValueError(
            f"config.success_threshold must lie in (0, 1], got {c.success_threshold!r}")
    for name in ("shard_seeds", "save_score_record", "save_fork_point"):
        if not isinstance(c[name], bool):
            raise ValueError(f"config.{name} must be True or False, got {c[name]!r}")
    if not (isinstance(c.stop_after_phase, int) and c.stop_after_phase >= 0):
        raise ValueError(f"config.stop_after_phase must be an integer >= 0 (0: every phase), "
                         f"got {c.stop_after_phase!r}")
    if not isinstance(c.fork_from, str):
        raise ValueError(f"config.fork_from must be a workdir path or '', got {c.fork_from!r}")
    if not c.checkpoint_every_s > 0:
        raise ValueError(f"config.checkpoint_every_s must be > 0, got {c.checkpoint_every_s!r}")
    if not 0.0 <= c.mask_alpha <= 1.0:
        raise ValueError(f"config.mask_alpha must lie in [0, 1], got {c.mask_alpha!r}")
    for name in ("ewc_lambda", "ewc_critic_lambda", "ancl_lambda", "ancl_critic_lambda"):
        if not c[name] >= 0:
            raise ValueError(f"config.{name} must be >= 0, got {c[name]!r}")
    if not isinstance(c.ancl_aux_steps, int) or c.ancl_aux_steps < 0:
        raise ValueError(f"config.ancl_aux_steps must be an int >= 0 (0: steps_per_task), "
                         f"got {c.ancl_aux_steps!r}")
    if not isinstance(c.redo_every, int) or c.redo_every < 1:
        raise ValueError(f"config.redo_every must be an int >= 1, got {c.redo_every!r}")
    if not 0.0 <= c.redo_tau < 1.0:
        raise ValueError(f"config.redo_tau must lie in [0, 1), got {c.redo_tau!r}")
    if not 0.0 < c.cbp_decay < 1.0:
        raise ValueError(f"config.cbp_decay must lie in (0, 1), got {c.cbp_decay!r}")
    if not 0.0 <= c.cbp_rate < 1.0:
        raise ValueError(f"config.cbp_rate must lie in [0, 1), got {c.cbp_rate!r}")
    if not 0.0 <= c.npc_decay < 1.0:
        raise ValueError(f"config.npc_decay must lie in [0, 1), got {c.npc_decay!r}")
    if not c.npc_c_max > 0:
        raise ValueError(f"config.npc_c_max must be > 0, got {c.npc_c_max!r}")
    if not isinstance(c.cbp_maturity, int) or c.cbp_maturity < 0:
        raise ValueError(f"config.cbp_maturity must be an int >= 0, got {c.cbp_maturity!r}")
    for name in ("sp_shrink", "sp_perturb"):
        if not 0.0 <= c[name] <= 1.0:
            raise ValueError(f"config.{name} must lie in [0, 1], got {c[name]!r}")
    if not 0.0 < c.ewc_decay <= 1.0:
        raise ValueError(f"config.ewc_decay must lie in (0, 1], got {c.ewc_decay!r}")
    if isinstance(c.tasks, str) or len(c.tasks) == 0:
        raise ValueError(f"config.tasks must be a non-empty tuple of task names, got {c.tasks!r}")
    if len(c.hidden) == 0 or any(not isinstance(h, int) or h <= 0 for h in c.hidden):
        raise ValueError(f"config.hidden must be positive layer widths, got {c.hidden!r}")
    for name in ("policy_lr", "q_lr"):
        if not c[name] > 0:
            raise ValueError(f"config.{name} must be > 0, got {c[name]!r}")
    for name in ("gamma", "tau"):
        if not 0.0 <= c[name] <= 1.0:
            raise ValueError(f"config.{name} must lie in [0, 1], got {c[name]!r}")
    rest = (c.chunk_steps * c.num_envs * c.updates_per_step) % c.update_every
    if rest:
        raise ValueError(
            f"chunk_steps * num_envs * updates_per_step = "
            f"{c.chunk_steps * c.num_envs * c.updates_per_step} must be a multiple of "
            f"config.update_every={c.update_every}"
        )
    if c.batch_size > c.buffer_size:
        raise ValueError(
            f"config.batch_size={c.batch_size} exceeds config.buffer_size={c.buffer_size}"
        )
    domain_class(c.agent).validate(c)  # task names, backends, memory: each domain its own


def _check_choices(c: ml_collections.ConfigDict) -> None:
    """Every field with a fixed set of values holds one of them."""
    from nbsp_jax.method import (
        MASK_PLACEMENTS,
        MASK_POLICIES,
        MASK_TARGETS,
        METHODS,
        SCORE_WINDOWS,
        SELECTORS,
    )
    from nbsp_jax.networks import ACTIVATIONS

    for name, choices in (("method", tuple(METHODS)), ("selector", SELECTORS),
                          ("seed_axis", ("vmap", "map")), ("act_on", ("learner", "host")),
                          ("alpha_logp", ("fresh", "reuse")), ("activation", ACTIVATIONS),
                          ("constant_neurons", ("paper", "neutral")),
                          ("mask_placement", MASK_PLACEMENTS), ("score_window", SCORE_WINDOWS),
                          ("mask_target", MASK_TARGETS), ("mask_policy", MASK_POLICIES)):
        if c[name] not in choices:
            raise ValueError(f"unknown config.{name} {c[name]!r}; valid choices: {choices}")
