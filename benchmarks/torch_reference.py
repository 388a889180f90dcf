"""An optional PyTorch reference: SAC gradient updates/s with CleanRL semantics, on random data.

    python benchmarks/torch_reference.py --setting continuous --hidden 256,256 --batch 256 \
        --updates 100 --repeats 5 --json out.json

Needs PyTorch, which is not part of the default install: ``pip install -e ".[bench]"``.

Eager PyTorch, written for this project (not copied from CleanRL), following the update rules of
CleanRL's two SAC scripts so that the JAX numbers of :mod:`update_throughput` /
``run_all.atari_updates`` have a side-by-side baseline:

- ``continuous`` (``sac_continuous_action.py``): actor MLP with a tanh-squashed Gaussian head
  (log-std squashed into [-5, 2] by a tanh), twin Q MLPs on ``concat(obs, action)``, Polyak
  target critics (``tau = 0.005``) after every critic update, autotuned temperature (target
  entropy ``-|A|``), Adam lr 3e-4 (actor) and 1e-3 (critics, temperature); Meta-World shapes
  (obs 39, action 4, action scale 1). ``policy_frequency = 2``: one *macro step* is two critic
  updates, each on a fresh batch, with two actor + temperature updates on the first batch
  right after its critic update (CleanRL's delayed update with its compensation loop). As in
  CleanRL the actor loss backpropagates through the (not frozen) critics too; their gradients
  are discarded.
- ``atari`` (``sac_atari.py``): actor and each critic own a Nature CNN (32 8x8/4, 64 4x4/2,
  64 3x3/1, ReLU) on uint8 ``[B, 4, 84, 84] / 255``, then the ``hidden`` ReLU layers, then 18
  outputs; Kaiming-normal weights, zero biases (CleanRL's ``layer_init``). One update = critic
  step (target: expectation over actions of ``min target Q - alpha * log pi``), actor step
  (``mean(pi * (alpha * log pi - min Q))``, Q detached), temperature step
  (``mean(pi * -exp(log_alpha) * (log pi + target_entropy))``, pre-update ``pi`` detached,
  target entropy ``0.89 * log 18``); Adam lr 1e-4, eps 1e-4 for all three; hard target copy
  every ``target_every = 2000`` updates (CleanRL: 8000 env steps / update_frequency 4).

Batches are drawn uniformly (``torch.randint`` + indexing) from a random buffer made once, so
sampling costs are included, as in the JAX benchmarks. ``updates_per_s`` counts critic updates
(= gradient steps); it is the median over ``repeats`` timed calls of ``updates`` updates each,
after one untimed warm-up call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Sequence

OBS_DIM, ACTION_DIM = 39, 4  # Meta-World
ATARI_SHAPE, ATARI_ACTIONS = (4, 84, 84), 18
INSTALL_HINT = 'pip install -e ".[bench]"'
SETTINGS = ("continuous", "atari")
# The training loop's updates per fused call (Meta-World chunk 50, Atari 64 steps / 4).
DEFAULT_UPDATES = {"continuous": 50, "atari": 16}


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "benchmarks/torch_reference.py needs PyTorch, which the default install leaves out; "
            f"install it with: {INSTALL_HINT}  (from the repository root)"
        ) from e
    return torch


def _mlp(torch, sizes: Sequence[int]):
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ReLU between (none after the last)."""
    nn = torch.nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _polyak_(torch, online, target, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target``, in place, parameter by parameter."""
    with torch.no_grad():
        for p, t in zip(online.parameters(), target.parameters(), strict=True):
            t.mul_(1.0 - tau).add_(p, alpha=tau)


class ContinuousReference:
    """CleanRL ``sac_continuous_action.py`` learner on a random Meta-World-shaped buffer."""

    updates_per_step = 2  # a macro step: policy_frequency critic updates

    def __init__(self, hidden: Sequence[int], batch: int, seed: int = 0, buffer_rows: int = 10_000,
                 policy_lr: float = 3e-4, q_lr: float = 1e-3, gamma: float = 0.99,
                 tau: float = 0.005, policy_frequency: int = 2):
        torch = self.torch = _import_torch()
        nn = torch.nn
        torch.manual_seed(seed)
        self.batch, self.gamma, self.tau = batch, gamma, tau
        self.policy_frequency = self.updates_per_step = policy_frequency
        self.log_std_min, self.log_std_max = -5.0, 2.0
        self.target_entropy = -float(ACTION_DIM)
        h = list(hidden)
        self.actor = nn.ModuleDict({
            "trunk": nn.Sequential(_mlp(torch, [OBS_DIM, *h]), nn.ReLU()),
            "mean": nn.Linear(h[-1], ACTION_DIM),
            "log_std": nn.Linear(h[-1], ACTION_DIM),
        })
        self.qf1 = _mlp(torch, [OBS_DIM + ACTION_DIM, *h, 1])
        self.qf2 = _mlp(torch, [OBS_DIM + ACTION_DIM, *h, 1])
        self.qf1_target = _mlp(torch, [OBS_DIM + ACTION_DIM, *h, 1])
        self.qf2_target = _mlp(torch, [OBS_DIM + ACTION_DIM, *h, 1])
        self.qf1_target.load_state_dict(self.qf1.state_dict())
        self.qf2_target.load_state_dict(self.qf2.state_dict())
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha = self.log_alpha.exp().item()
        self.q_opt = torch.optim.Adam([*self.qf1.parameters(), *self.qf2.parameters()], lr=q_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=policy_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=q_lr)

        n = buffer_rows
        self.buffer = {
            "obs": torch.randn(n, OBS_DIM),
            "action": torch.rand(n, ACTION_DIM) * 2 - 1,
            "reward": torch.rand(n) * 10,
            "next_obs": torch.randn(n, OBS_DIM),
            "terminated": torch.zeros(n),
        }
        self.losses: dict = {}

    def sample(self) -> dict:
        idx = self.torch.randint(0, self.buffer["obs"].shape[0], (self.batch,))
        return {k: v[idx] for k, v in self.buffer.items()}

    def get_action(self, obs):
        """Reparameterised tanh-Gaussian sample and its log-prob ``[B, 1]`` (action scale 1)."""
        torch = self.torch
        x = self.actor["trunk"](obs)
        mean = self.actor["mean"](x)
        log_std = torch.tanh(self.actor["log_std"](x))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        std = log_std.exp()
        x_t = mean + std * torch.randn_like(mean)
        y_t = torch.tanh(x_t)
        normal_logp = -0.5 * ((x_t - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = (normal_logp - torch.log(1 - y_t.pow(2) + 1e-6)).sum(1, keepdim=True)
        return y_t, log_prob

    def critic_update(self, data: dict) -> None:
        """One Adam step on ``MSE(Q1) + MSE(Q2)``, then Polyak update of both targets."""
        torch = self.torch
        with torch.no_grad():
            next_a, next_logp = self.get_action(data["next_obs"])
            sa_next = torch.cat([data["next_obs"], next_a], 1)
            min_next = torch.min(self.qf1_target(sa_next), self.qf2_target(sa_next))
            min_next = min_next - self.alpha * next_logp
            y = data["reward"] + (1 - data["terminated"]) * self.gamma * min_next.view(-1)
        sa = torch.cat([data["obs"], data["action"]], 1)
        qf1_loss = torch.nn.functional.mse_loss(self.qf1(sa).view(-1), y)
        qf2_loss = torch.nn.functional.mse_loss(self.qf2(sa).view(-1), y)
        qf_loss = qf1_loss + qf2_loss
        self.q_opt.zero_grad()
        qf_loss.backward()
        self.q_opt.step()
        _polyak_(torch, self.qf1, self.qf1_target, self.tau)
        _polyak_(torch, self.qf2, self.qf2_target, self.tau)
        self.losses["qf_loss"] = qf_loss.detach()

    def actor_alpha_update(self, obs) -> None:
        """One actor step, then one temperature step with fresh log-probs (CleanRL order)."""
        torch = self.torch
        pi, log_pi = self.get_action(obs)
        sa = torch.cat([obs, pi], 1)
        min_q = torch.min(self.qf1(sa), self.qf2(sa))
        actor_loss = (self.alpha * log_pi - min_q).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            _, log_pi = self.get_action(obs)
        alpha_loss = (-self.log_alpha.exp() * (log_pi + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        self.alpha = self.log_alpha.exp().item()
        self.losses["actor_loss"] = actor_loss.detach()
        self.losses["alpha_loss"] = alpha_loss.detach()

    def step(self) -> None:
        """One macro step: ``policy_frequency`` critic updates; after the first, as many actor
        updates on its batch (CleanRL's order, as ``sac.update_many``)."""
        for j in range(self.policy_frequency):
            data = self.sample()
            self.critic_update(data)
            if j == 0:
                for _ in range(self.policy_frequency):
                    self.actor_alpha_update(data["obs"])

    def modules(self) -> dict:
        return {"actor": self.actor, "qf1": self.qf1, "qf2": self.qf2,
                "qf1_target": self.qf1_target, "qf2_target": self.qf2_target}


class AtariReference:
    """CleanRL ``sac_atari.py`` learner (paper's lr 1e-4, hidden layers configurable)."""

    updates_per_step = 1

    def __init__(self, hidden: Sequence[int], batch: int, seed: int = 0, buffer_rows: int = 1024,
                 lr: float = 1e-4, adam_eps: float = 1e-4, gamma: float = 0.99,
                 target_entropy_scale: float = 0.89, target_every: int = 2000):
        torch = self.torch = _import_torch()
        torch.manual_seed(seed)
        self.batch, self.gamma, self.target_every = batch, gamma, target_every
        self.target_entropy = -target_entropy_scale * math.log(1 / ATARI_ACTIONS)
        self.hidden = list(hidden)
        self.actor = self._net()
        self.qf1, self.qf2 = self._net(), self._net()
        self.qf1_target, self.qf2_target = self._net(), self._net()
        self.qf1_target.load_state_dict(self.qf1.state_dict())
        self.qf2_target.load_state_dict(self.qf2.state_dict())
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha = self.log_alpha.exp().item()
        self.q_opt = torch.optim.Adam([*self.qf1.parameters(), *self.qf2.parameters()], lr=lr,
                                      eps=adam_eps)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr, eps=adam_eps)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr, eps=adam_eps)
        self.num_updates = 0

        n = buffer_rows
        self.buffer = {
            "obs": torch.randint(0, 256, (n, *ATARI_SHAPE), dtype=torch.uint8),
            "action": torch.randint(0, ATARI_ACTIONS, (n, 1)),
            "reward": torch.rand(n),
            "next_obs": torch.randint(0, 256, (n, *ATARI_SHAPE), dtype=torch.uint8),
            "terminated": torch.zeros(n),
        }
        self.losses: dict = {}

    def _net(self):
        """Nature CNN -> ReLU hidden layers -> 18 outputs, CleanRL ``layer_init`` weights."""
        torch = self.torch
        nn = torch.nn

        def init(m):
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.constant_(m.bias, 0.0)

        # CleanRL: conv stack, Flatten, then F.relu (the ReLU is moved before Flatten here).
        net = nn.Sequential(
            nn.Conv2d(ATARI_SHAPE[0], 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            _mlp(torch, [64 * 7 * 7, *self.hidden, ATARI_ACTIONS]),
        )
        net.apply(init)
        return net

    def sample(self) -> dict:
        idx = self.torch.randint(0, self.buffer["obs"].shape[0], (self.batch,))
        return {k: v[idx] for k, v in self.buffer.items()}

    def policy(self, obs):
        """``(probs, log_probs)`` of the categorical policy, each ``[B, 18]``."""
        logits = self.actor(obs / 255.0)
        log_prob = self.torch.nn.functional.log_softmax(logits, dim=1)
        return log_prob.exp(), log_prob

    def update(self, data: dict) -> None:
        """Critic step, actor step, temperature step on ``data``; hard target copy on schedule."""
        torch = self.torch
        F = torch.nn.functional
        obs, next_obs = data["obs"], data["next_obs"]
        q = lambda net, x: net(x / 255.0)  # every network scales its own uint8 input
        with torch.no_grad():
            next_probs, next_logp = self.policy(next_obs)
            min_next = torch.min(q(self.qf1_target, next_obs), q(self.qf2_target, next_obs))
            soft = (next_probs * (min_next - self.alpha * next_logp)).sum(1)
            y = data["reward"] + (1 - data["terminated"]) * self.gamma * soft
        q1 = q(self.qf1, obs).gather(1, data["action"]).view(-1)
        q2 = q(self.qf2, obs).gather(1, data["action"]).view(-1)
        qf_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.q_opt.zero_grad()
        qf_loss.backward()
        self.q_opt.step()

        probs, log_pi = self.policy(obs)
        with torch.no_grad():
            min_q = torch.min(q(self.qf1, obs), q(self.qf2, obs))
        actor_loss = (probs * (self.alpha * log_pi - min_q)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = (probs.detach() * (-self.log_alpha.exp()
                                        * (log_pi + self.target_entropy).detach())).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        self.alpha = self.log_alpha.exp().item()

        self.num_updates += 1
        if self.num_updates % self.target_every == 0:
            self.qf1_target.load_state_dict(self.qf1.state_dict())
            self.qf2_target.load_state_dict(self.qf2.state_dict())
        self.losses.update(qf_loss=qf_loss.detach(), actor_loss=actor_loss.detach(),
                           alpha_loss=alpha_loss.detach())

    def step(self) -> None:
        self.update(self.sample())

    def modules(self) -> dict:
        return {"actor": self.actor, "qf1": self.qf1, "qf2": self.qf2,
                "qf1_target": self.qf1_target, "qf2_target": self.qf2_target}


def make_reference(setting: str, hidden: Sequence[int], batch: int, seed: int = 0):
    """The learner object of ``setting`` (see module docstring)."""
    if setting == "continuous":
        return ContinuousReference(hidden, batch, seed)
    if setting == "atari":
        return AtariReference(hidden, batch, seed)
    raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")


def torch_updates_per_s(setting: str, hidden: Sequence[int], batch: int, updates: int,
                        repeats: int, threads: int | None = None, seed: int = 0) -> dict:
    """Median PyTorch updates/s over ``repeats`` calls of ``updates`` gradient steps each.

    One untimed warm-up call of ``updates`` steps runs first. ``threads`` sets
    ``torch.set_num_threads`` for the measurement (restored afterwards); None keeps torch's
    default. ``updates`` counts critic updates and must be a multiple of the setting's
    ``updates_per_step`` (2 for continuous: one macro step of CleanRL's delayed update).
    Raises ImportError (with the install command) when PyTorch is missing.
    """
    torch = _import_torch()
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    load_before = os.getloadavg()
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        ref = make_reference(setting, hidden, batch, seed)
        per = ref.updates_per_step
        if updates <= 0 or updates % per:
            raise ValueError(f"updates={updates} must be a positive multiple of {per}")

        def call() -> float:
            t0 = time.perf_counter()
            for _ in range(updates // per):
                ref.step()
            return time.perf_counter() - t0

        warmup_s = call()
        times = [call() for _ in range(repeats)]
        losses = {k: float(v) for k, v in ref.losses.items()}
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    med = statistics.median(times)
    return {
        "framework": "torch",
        "setting": setting,
        "hidden": list(hidden),
        "batch": batch,
        "seeds": 1,
        "updates_per_s": updates / med,
        "updates_per_call": updates,
        "repeats": repeats,
        "call_s": times,
        "warmup_s": warmup_s,
        "torch_version": torch.__version__,
        "threads": used_threads,
        # Context for shared machines: eager PyTorch's OpenMP threads spin-wait by default and
        # slow down many-fold when the cores are busy with other work.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_before_after": [load_before[0], os.getloadavg()[0]],
        "last_losses": losses,
    }


# The settings of run_all's ``update`` part, with the same update counts.
RUN_ALL_SETTINGS = (
    ("continuous", (256, 256), 256, 50, 50),
    ("continuous", (768, 768, 768), 256, 20, 50),
    ("atari", (768, 768), 64, 8, 16),
)


def torch_reference_rows(repeats: int, quick: bool = False,
                         threads: int | None = None) -> list[dict]:
    """PyTorch rows for run_all's ``update`` settings; ``[]`` when PyTorch is not installed."""
    try:
        _import_torch()
    except ImportError:
        return []
    return [torch_updates_per_s(s, h, b, q if quick else full, repeats, threads)
            for s, h, b, q, full in RUN_ALL_SETTINGS]


def ratio_markdown(jax_rows: Sequence[dict], torch_rows: Sequence[dict]) -> str:
    """A markdown table of JAX vs PyTorch updates/s for rows with equal setting/hidden/batch."""
    key = lambda r: (r["setting"], tuple(r["hidden"]), r["batch"])
    jx = {key(r): r for r in jax_rows if r.get("seeds", 1) == 1}
    lines = ["| update setting | JAX updates/s | PyTorch updates/s | JAX / PyTorch |",
             "|---|---|---|---|"]
    for t in torch_rows:
        j = jx.get(key(t))
        if j is None:
            continue
        lines.append(f"| {t['setting']} {t['hidden']} batch {t['batch']} | "
                     f"{j['updates_per_s']:.1f} | {t['updates_per_s']:.1f} | "
                     f"{j['updates_per_s'] / t['updates_per_s']:.2f}x |")
    if torch_rows:
        lines += ["", f"PyTorch {torch_rows[0]['torch_version']} (eager, CPU), "
                      f"{torch_rows[0]['threads']} threads."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=SETTINGS, default="continuous")
    p.add_argument("--hidden", default=None, help="comma-separated widths (default: 256,256 "
                   "continuous, 768,768 atari)")
    p.add_argument("--batch", type=int, default=None, help="default: 256 continuous, 64 atari")
    p.add_argument("--updates", type=int, default=None,
                   help="gradient steps per timed call (default: 100 continuous, 10 atari)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the record here")
    a = p.parse_args()
    cont = a.setting == "continuous"
    hidden = tuple(int(x) for x in (a.hidden or ("256,256" if cont else "768,768")).split(","))
    batch = a.batch or (256 if cont else 64)
    updates = a.updates or DEFAULT_UPDATES[a.setting]
    rec = torch_updates_per_s(a.setting, hidden, batch, updates, a.repeats, a.threads, a.seed)
    print(f"torch {rec['torch_version']} ({rec['threads']} threads) {a.setting} {list(hidden)} "
          f"batch {batch}: {rec['updates_per_s']:.1f} updates/s (median of {a.repeats} x "
          f"{updates}; calls {', '.join(f'{t:.3f}' for t in rec['call_s'])} s; load "
          f"{rec['loadavg_before_after'][0]:.1f} -> {rec['loadavg_before_after'][1]:.1f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
