"""Our SAC update against its peers, timed in one process and interleaved.

    python benchmarks/peers.py [--hidden 256,256] [--updates 50] [--repeats 5] [--no-atari] \
        [--json F]

Peers, each a runner that performs one call of ``updates`` gradient steps on random data and
blocks until it is done:

- ``ours``: the training loop's fused update (:func:`nbsp_jax.training.make_learner`, one seed,
  every seed active), as :mod:`benchmarks.update_throughput` measures it;
- ``sbx``: SBX's jitted ``SAC._train`` (``sbx-rl``, the ``bench`` extra) on pre-sampled data
  already on the device, so that only its update is timed (its ``train`` would add a host-side
  replay sample and copies);
- ``torch``: the CleanRL-semantics PyTorch reference (:mod:`benchmarks.torch_reference`).

Calls alternate in two passes, ``A B C`` then ``C B A``, ``repeats`` rounds each, so that a
change of the machine's speed during the run reaches every peer alike; each peer's rate is the
median over both passes. The matmul peak of the same run (chained 2048^3 float32 products)
gives each JAX program's matrix-product FLOP rate as a share of it (FLOPs read off that
program's own compiled HLO, :func:`benchmarks.op_profile.program_flops`).

Semantics compared: twin critics, batch 256, obs 39, action 4, Adam, Polyak tau 0.005, an
actor and a temperature step per critic step (ours and PyTorch: CleanRL's delayed update with
``policy_frequency = 2``, two actor steps every two critic steps; SBX: ``policy_delay = 1``).

The Atari setting (on by default; SBX has no discrete SAC, so ours against PyTorch only):
CleanRL's ``sac_atari.py`` update with the Nature CNN and ``[768, 768]`` hidden layers, 18
actions, batch 64, one actor, temperature and critic step per call step, 16 updates per call
(the Atari loop's chunk), our frame-stacked replay against PyTorch's uint8 tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.op_profile import program_flops  # noqa: E402

OBS_DIM, ACTION_DIM = 39, 4
# The Atari setting: the paper's hidden layers after the Nature CNN, CleanRL's batch, and the
# Atari loop's updates per call.
ATARI_HIDDEN, ATARI_BATCH, ATARI_UPDATES = (768, 768), 64, 16


class Runner:
    """One peer: ``call()`` runs ``updates`` gradient steps and blocks; ``flops`` per update
    (None when not read off an XLA program)."""

    def __init__(self, name: str, call: Callable[[], None], updates: int,
                 flops: float | None, info: dict):
        self.name, self.call, self.updates, self.flops, self.info = name, call, updates, flops, info


def ours(hidden: Sequence[int], batch: int, updates: int, setting: str = "continuous",
         **options) -> Runner:
    """Our update as the training loop calls it (``setting``: 'continuous' or 'atari';
    ``options``: ``alpha_logp``, ``seed_axis``, ``conv_impl``)."""
    from benchmarks.update_throughput import _prepare

    p = _prepare(setting, tuple(hidden), batch, 1, updates, "sac",
                 options.get("seed_axis", "vmap"), options.get("conv_impl", "auto"),
                 100_000 if setting == "continuous" else 4_096,
                 alpha_logp=options.get("alpha_logp"))  # None: the config's default
    box = {"state": p["state"]}

    def call():
        box["state"] = p["run"](box["state"])

    flops = program_flops(p["compiled"].as_text()) / updates
    return Runner("ours" + "".join(f" {k}={v}" for k, v in options.items()), call, updates,
                  flops, {"compile_s": p["rec"]["compile_s"]})


def sbx(hidden: Sequence[int], batch: int, updates: int, seed: int = 0) -> Runner:
    """SBX's ``SAC._train`` on ``updates`` pre-sampled batches (raises ImportError with the
    install command when ``sbx-rl`` is missing)."""
    try:
        import gymnasium as gym
        import sbx as sbx_module
        from sbx.common.type_aliases import ReplayBufferSamplesNp
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ImportError('SBX is not installed: pip install -e ".[bench]"') from e

    class Box(gym.Env):  # only the spaces matter: _train never steps an env
        observation_space = gym.spaces.Box(-10.0, 10.0, (OBS_DIM,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    model = sbx_module.SAC("MlpPolicy", Box(), batch_size=batch, buffer_size=1_000,
                           learning_starts=0, gradient_steps=updates, seed=seed,
                           policy_kwargs={"net_arch": list(hidden)})
    rng = np.random.default_rng(seed)
    n = batch * updates
    data = ReplayBufferSamplesNp(
        jnp.asarray(rng.normal(size=(n, OBS_DIM)), jnp.float32),
        jnp.asarray(rng.uniform(-1, 1, (n, ACTION_DIM)), jnp.float32),
        jnp.asarray(rng.normal(size=(n, OBS_DIM)), jnp.float32),
        jnp.asarray(rng.random(n) < 0.01, jnp.float32),
        jnp.asarray(rng.normal(size=n), jnp.float32),
        jnp.full((n,), model.gamma, jnp.float32))
    box = {"states": (model.policy.qf_state, model.policy.actor_state, model.ent_coef_state,
                      model.key)}

    def step(*states):
        return model._train(model.tau, model.target_entropy, updates, data,
                            model.policy_delay, 0, *states)

    def call():
        qf, actor, ent, key, info = step(*box["states"])
        jax.block_until_ready(info)
        box["states"] = (qf, actor, ent, key)

    t0 = time.perf_counter()
    call()  # compiles
    compile_s = time.perf_counter() - t0
    text = jax.jit(step).lower(*box["states"]).compile().as_text()
    return Runner("sbx", call, updates, program_flops(text) / updates,
                  {"compile_s": compile_s, "sbx_version": sbx_module.__version__,
                   "policy_delay": model.policy_delay})


def torch(hidden: Sequence[int], batch: int, updates: int, seed: int = 0,
          setting: str = "continuous") -> Runner:
    """The CleanRL-semantics PyTorch reference of ``setting`` (ImportError without the
    ``bench`` extra)."""
    from benchmarks.torch_reference import _import_torch, make_reference

    torch_module = _import_torch()
    ref = make_reference(setting, hidden, batch, seed)
    per = ref.updates_per_step

    def call():
        for _ in range(updates // per):
            ref.step()

    call()  # warm-up
    return Runner("torch", call, updates, None,
                  {"torch_version": torch_module.__version__,
                   "threads": torch_module.get_num_threads()})


def matmul_peak(size: int = 2048, steps: int = 10, repeats: int = 10) -> float:
    """GFLOP/s of chained ``[size, size] @ [size, size]`` float32 products in one jitted scan,
    median of ``repeats`` calls."""
    x = jnp.full((size, size), 1e-3, jnp.float32)
    run = jax.jit(lambda x, w: jax.lax.scan(lambda c, _: ((c @ w) * 0.5, None), x, None,
                                            length=steps)[0])
    jax.block_until_ready(run(x, x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(x, x))
        times.append(time.perf_counter() - t0)
    return 2 * size**3 * steps / statistics.median(times) / 1e9


def interleaved(runners: Sequence[Runner], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of every runner: ``repeats`` rounds in the given order, then
    ``repeats`` rounds in the reverse order."""
    times = {r.name: [] for r in runners}
    for order in (list(runners), list(runners)[::-1]):
        for _ in range(repeats):
            for r in order:
                t0 = time.perf_counter()
                r.call()
                times[r.name].append(time.perf_counter() - t0)
    return times


def compare(runners: Sequence[Runner], repeats: int, peak: float) -> list[dict]:
    """One record per runner: updates/s (median over both passes), its ratio to each other
    runner, and its matrix-product FLOP rate as a share of ``peak`` GFLOP/s."""
    times = interleaved(runners, repeats)
    rate = {r.name: r.updates / statistics.median(times[r.name]) for r in runners}
    rows = []
    for r in runners:
        gflops = r.flops * rate[r.name] / 1e9 if r.flops else None
        rows.append({
            "peer": r.name, "updates_per_call": r.updates, "updates_per_s": rate[r.name],
            "call_s": times[r.name], "gflop_per_update": r.flops and r.flops / 1e9,
            "matmul_gflop_per_s": gflops, "share_of_peak": gflops and gflops / peak,
            "ratio_to": {o: rate[r.name] / rate[o] for o in rate if o != r.name}, **r.info})
    return rows


def peer_runners(hidden: Sequence[int], batch: int, updates: int,
                 variants: Sequence[dict] = ({},)) -> list[Runner]:
    """Our update (one runner per options dict of ``variants``), then SBX and PyTorch where
    installed (a missing one is left out, with a note on stderr)."""
    runners = [ours(hidden, batch, updates, **v) for v in variants]
    for make in (sbx, torch):
        try:
            runners.append(make(hidden, batch, updates))
        except ImportError as e:
            print(f"peers: {make.__name__} left out: {e}", file=sys.stderr)
    return runners


def atari_runners(hidden: Sequence[int] = ATARI_HIDDEN, batch: int = ATARI_BATCH,
                  updates: int = ATARI_UPDATES) -> list[Runner]:
    """Our Atari update, then the PyTorch reference where installed."""
    runners = [ours(hidden, batch, updates, setting="atari")]
    try:
        runners.append(torch(hidden, batch, updates, setting="atari"))
    except ImportError as e:
        print(f"peers: torch left out: {e}", file=sys.stderr)
    return runners


def markdown(results: Sequence[dict], peak: float) -> str:
    """The peers table: updates/s, ratio of ours to each peer, share of the peak."""
    lines = [f"Matmul peak of this run: {peak:.0f} GFLOP/s (chained 2048^3 float32).", "",
             "| setting | peer | updates/s | ours / peer | GFLOP/update | % of peak |",
             "|---|---|---|---|---|---|"]
    for res in results:
        rows = {r["peer"]: r for r in res["rows"]}
        base = rows[res["rows"][0]["peer"]]
        for r in res["rows"]:
            ratio = "" if r is base else f"{base['ratio_to'][r['peer']]:.2f}x"
            share = f"{100 * r['share_of_peak']:.0f} %" if r["share_of_peak"] else "-"
            gf = f"{r['gflop_per_update']:.2f}" if r["gflop_per_update"] else "-"
            name = "Atari CNN + " if res.get("setting") == "atari" else ""
            lines.append(f"| {name}{res['hidden']} batch {res['batch']} | {r['peer']} | "
                         f"{r['updates_per_s']:.1f} | {ratio} | {gf} | {share} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", action="append", default=None,
                   help="comma-separated widths; repeat for several (default 256,256 and "
                        "768,768,768)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--updates", type=int, default=50,
                   help="updates per call (default 50: the Meta-World loop's chunk)")
    p.add_argument("--repeats", type=int, default=5, help="rounds per pass")
    p.add_argument("--alpha-reuse", action="store_true",
                   help="also time ours with alpha_logp='reuse'")
    p.add_argument("--no-atari", dest="atari", action="store_false",
                   help="leave out the Atari setting (ours against PyTorch)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    hiddens = [tuple(int(x) for x in h.split(",")) for h in (a.hidden or ["256,256",
                                                                            "768,768,768"])]
    variants = ({}, {"alpha_logp": "reuse"}) if a.alpha_reuse else ({},)
    results = []
    peak_before = matmul_peak()
    for hidden in hiddens:
        runners = peer_runners(hidden, a.batch, a.updates, variants)
        results.append({"hidden": list(hidden), "batch": a.batch,
                        "rows": compare(runners, a.repeats, peak_before)})
    if a.atari:
        results.append({"setting": "atari", "hidden": list(ATARI_HIDDEN), "batch": ATARI_BATCH,
                        "rows": compare(atari_runners(), a.repeats, peak_before)})
    peak_after = matmul_peak()
    peak = max(peak_before, peak_after)
    for res in results:  # shares against the larger of the two peak readings
        for r in res["rows"]:
            if r["matmul_gflop_per_s"]:
                r["share_of_peak"] = r["matmul_gflop_per_s"] / peak
    out = {"peak_gflop_per_s": peak, "peak_before_after": [peak_before, peak_after],
           "load_avg": list(os.getloadavg()), "jax_version": jax.__version__,
           "cpu_count": os.cpu_count(), "results": results}
    print(markdown(results, peak))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
