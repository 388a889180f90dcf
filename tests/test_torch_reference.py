"""The optional PyTorch reference update (benchmarks/torch_reference.py) on tiny configs."""

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import torch_reference as tr  # noqa: E402


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _snapshot(ref) -> dict:
    return {f"{m}.{n}": p.detach().clone() for m, mod in ref.modules().items()
            for n, p in mod.named_parameters()}


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not bool((before[k] == after[k]).all()) for k in before if k.startswith(prefix))


def test_missing_torch_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[bench\]"'):
        tr.torch_updates_per_s("continuous", (32,), 8, 2, 1)


def test_run_all_rows_without_torch_and_ratio_table(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert tr.torch_reference_rows(repeats=1, quick=True) == []
    jax_rows = [{"setting": "atari", "hidden": [768, 768], "batch": 64, "seeds": 1,
                 "updates_per_s": 30.0}]
    torch_rows = [{"setting": "atari", "hidden": [768, 768], "batch": 64, "updates_per_s": 10.0,
                   "torch_version": "x", "threads": 2}]
    assert "| atari [768, 768] batch 64 | 30.0 | 10.0 | 3.00x |" in tr.ratio_markdown(
        jax_rows, torch_rows)


@pytest.mark.parametrize("setting,updates", [("continuous", 2), ("atari", 2)])
def test_tiny_update_changes_params_with_finite_losses(torch, setting, updates):
    ref = tr.make_reference(setting, (32,), 8)
    before = _snapshot(ref)
    log_alpha = ref.log_alpha.item()
    for _ in range(updates // ref.updates_per_step):
        ref.step()
    after = _snapshot(ref)
    for name in ("actor.", "qf1.", "qf2."):
        assert _changed(before, after, name), name
    assert ref.log_alpha.item() != log_alpha
    assert set(ref.losses) == {"qf_loss", "actor_loss", "alpha_loss"}
    assert all(math.isfinite(float(v)) for v in ref.losses.values())
    # Atari targets are hard copies every 2000 updates: untouched after 2 updates.
    assert _changed(before, after, "qf1_target.") == (setting == "continuous")


def test_continuous_polyak_target_after_one_critic_update(torch):
    ref = tr.make_reference("continuous", (32, 32), 8)
    ref.qf1_target[0].weight.data.add_(1.0)  # make target != online, so the average shows
    before = _snapshot(ref)
    ref.critic_update(ref.sample())
    after = _snapshot(ref)
    for n, _ in ref.qf1.named_parameters():
        for q in ("qf1", "qf2"):
            expected = 0.995 * before[f"{q}_target.{n}"] + 0.005 * after[f"{q}.{n}"]
            torch.testing.assert_close(after[f"{q}_target.{n}"], expected, rtol=1e-6, atol=1e-6)
    assert not _changed(before, after, "actor.")  # a critic update leaves the actor alone


def test_macro_step_counts_and_first_adam_steps(torch):
    """A continuous macro step = 2 critic + 2 actor/alpha Adam steps; lrs and eps as CleanRL."""
    ref = tr.make_reference("continuous", (32,), 8)
    ref.step()
    steps = lambda opt: {int(s["step"]) for s in opt.state.values()}
    assert steps(ref.q_opt) == {2} and steps(ref.actor_opt) == {2} and steps(ref.alpha_opt) == {2}

    # Adam's first step is lr * g / (|g| + eps); at log_alpha = 0 the temperature loss
    # exp(log_alpha) * c equals its own gradient c.
    ref = tr.make_reference("continuous", (32,), 8)
    ref.actor_alpha_update(ref.sample()["obs"])
    g = float(ref.losses["alpha_loss"])
    assert -ref.log_alpha.item() == pytest.approx(1e-3 * g / (abs(g) + 1e-8), rel=1e-4)

    atari = tr.make_reference("atari", (32,), 8)
    atari.step()
    g = float(atari.losses["alpha_loss"])
    assert -atari.log_alpha.item() == pytest.approx(1e-4 * g / (abs(g) + 1e-4), rel=1e-4)
    assert atari.target_entropy == pytest.approx(0.89 * math.log(18))


def test_atari_hard_target_copy(torch):
    ref = tr.AtariReference((16,), 4, target_every=2)

    def same() -> bool:
        return all(torch.equal(p, t) for q in ("qf1", "qf2") for p, t in zip(
            getattr(ref, q).parameters(), getattr(ref, f"{q}_target").parameters(), strict=True))

    assert same()
    ref.step()
    assert not same()
    ref.step()
    assert same()


def test_updates_per_s_record(torch):
    rec = tr.torch_updates_per_s("continuous", (16,), 4, 2, 2, threads=1)
    assert rec["threads"] == 1 and rec["updates_per_s"] > 0 and len(rec["call_s"]) == 2
    assert rec["torch_version"] == torch.__version__
    with pytest.raises(ValueError, match="multiple of 2"):
        tr.torch_updates_per_s("continuous", (16,), 4, 3, 1)
