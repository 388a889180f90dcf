"""benchmarks/peers.py: the interleaving order and the ratios, on runners with a fake clock;
and SBX's update read as a peer (FLOPs from its own HLO)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import peers  # noqa: E402


def _fake_runners(monkeypatch, seconds):
    """Runners whose calls advance a fake clock by ``seconds[name]`` and log their order."""
    clock, order = [0.0], []
    monkeypatch.setattr(peers.time, "perf_counter", lambda: clock[0])

    def runner(name, updates, flops):
        def call():
            order.append(name)
            clock[0] += seconds[name]
        return peers.Runner(name, call, updates, flops, {})

    return clock, order, runner


def test_interleaved_runs_forward_then_backward(monkeypatch):
    _, order, runner = _fake_runners(monkeypatch, {"a": 1, "b": 1, "c": 1})
    times = peers.interleaved([runner(n, 10, None) for n in "abc"], repeats=2)
    assert "".join(order) == "abcabc" + "cbacba"
    assert times == {n: [1, 1, 1, 1] for n in "abc"}


def test_compare_rates_ratios_and_share_of_peak(monkeypatch):
    # ours: 50 updates in 0.5 s = 100/s at 2 GFLOP each = 200 GFLOP/s = 80 % of 250;
    # sbx: 50 in 0.4 s = 125/s; torch: 50 in 2 s = 25/s.
    _, _, runner = _fake_runners(monkeypatch, {"ours": 0.5, "sbx": 0.4, "torch": 2.0})
    rows = peers.compare([runner("ours", 50, 2e9), runner("sbx", 50, 1e9),
                          runner("torch", 50, None)], repeats=3, peak=250.0)
    ours, sbx, torch = rows
    assert ours["updates_per_s"] == pytest.approx(100.0)
    assert ours["share_of_peak"] == pytest.approx(0.8)
    assert ours["ratio_to"] == pytest.approx({"sbx": 0.8, "torch": 4.0})
    assert sbx["matmul_gflop_per_s"] == pytest.approx(125.0)
    assert torch["share_of_peak"] is None
    table = peers.markdown([{"hidden": [8], "batch": 4, "rows": rows}], 250.0)
    assert "| [8] batch 4 | sbx | 125.0 | 0.80x | 1.00 | 50 % |" in table


@pytest.mark.slow
def test_sbx_peer_runs_and_does_the_same_matrix_products_as_ours():
    """SBX's SAC._train at [64, 64]: its HLO's FLOPs per update lie within 5 % of ours (the
    same products, less the temperature loss's fresh actor forward that CleanRL adds)."""
    pytest.importorskip("sbx")
    ours, sbx = peers.ours((64, 64), 32, 4), peers.sbx((64, 64), 32, 4)
    sbx.call()
    assert 0.95 < sbx.flops / ours.flops < 1.0
    reuse = peers.ours((64, 64), 32, 4, alpha_logp="reuse")
    assert reuse.flops < ours.flops


def test_atari_rows_are_labelled_with_the_network():
    rows = [{"peer": "ours", "updates_per_s": 10.0, "gflop_per_update": 18.0,
             "share_of_peak": 0.5, "ratio_to": {"torch": 1.5}},
            {"peer": "torch", "updates_per_s": 10.0 / 1.5, "gflop_per_update": None,
             "share_of_peak": None, "ratio_to": {"ours": 1 / 1.5}}]
    table = peers.markdown([{"setting": "atari", "hidden": [768, 768], "batch": 64,
                             "rows": rows}], 250.0)
    assert "| Atari CNN + [768, 768] batch 64 | torch | 6.7 | 1.50x | - | - |" in table
    assert "| Atari CNN + [768, 768] batch 64 | ours | 10.0 |  | 18.00 | 50 % |" in table


@pytest.mark.slow
def test_atari_peers_run_the_same_update_count():
    """Ours and the PyTorch reference on the Atari setting, tiny: each call does ``updates``
    steps (ours: the compiled loop; PyTorch: one step per update)."""
    pytest.importorskip("torch")
    runners = peers.atari_runners((16,), 4, 2)
    assert [r.name for r in runners] == ["ours", "torch"]
    for r in runners:
        assert r.updates == 2
        r.call()
    assert runners[0].flops > 0
