"""experiments/ablation.py: argument checks, collecting fake runs, dry-run commands; no training."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from experiments import ablation

# Two seeds of a two-task run: sr[seed][i][j] = success on phase j's task after phase i.
SR = [[[1.0, 0.0], [0.0, 1.0]],
      [[0.8, 0.0], [0.4, 1.0]]]


def _write_run(workdir, sr=SR, method="nbsp", phases=None, sr_last_step=None) -> None:
    """A fake finished run: results.json (as nbsp_jax.training writes it) and the two plots."""
    os.makedirs(workdir, exist_ok=True)
    results = {
        "tasks": ["window-open", "window-close"],
        "sr": sr,
        "metrics": {"ignored": True},
        "phases": phases if phases is not None else [
            {"task": "window-open", "train_success_rate": [1.0, 0.8]},
            {"task": "window-close", "train_success_rate": [1.0, 1.0]}],
        "num_seeds": len(sr),
        "method": method,
        "config": {"method": method, "selector": "goal", "mask_placement": "update"},
        "versions": {"nbsp_jax": "0.1.0", "jax": "x"},
        "wall_s": 1.0,
    }
    if sr_last_step is not None:
        results["sr_last_step"] = sr_last_step
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)
    for png in ("success.png", "sr.png"):
        with open(os.path.join(workdir, png), "wb") as f:
            f.write(b"png")


def _stderr(a: float, b: float) -> float:
    """Standard error of the mean of two values: std(ddof=1) / sqrt(2) = |a - b| / 2."""
    return abs(a - b) / 2.0


def test_bad_pair_and_arm_name_the_choices(capsys):
    with pytest.raises(ValueError, match=r"unknown pair 'nope'.*valid choices: .*window"):
        ablation.validate_pairs(["window", "nope"])
    with pytest.raises(ValueError, match=r"unknown arm 'nbsp_soft'.*valid choices: all, sac"):
        ablation.validate_arms(["sac,nbsp_soft"])
    assert "button_window" in ablation.valid_pairs()
    assert ablation.validate_arms(["all"]) == list(ablation.TABLES["ablation"])
    assert ablation.validate_arms(["nbsp_random,sac", "sac"]) == ["sac", "nbsp_random"]
    # The CLI reports the same message and exits 2 before running anything.
    assert ablation.main(["--pair", "nope", "--dry-run"]) == 2
    assert "unknown pair 'nope'" in capsys.readouterr().err
    assert ablation.main(["--pair", "window", "--arms", "bogus", "--dry-run"]) == 2
    assert "unknown arm 'bogus'" in capsys.readouterr().err


def test_collect_hand_computed_metrics(tmp_path):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    # Per-phase entries as nbsp_jax.training records them: per seed, actor drift on each earlier
    # task and {net/layer: [constant units, width]}.
    _write_run(os.path.join(runs, "window_nbsp"), phases=[
        {"task": "window-open", "actor_drift": [[], []],
         "constant_units": [{"actor/fc0": [2, 10], "qf1/fc0": [0, 10]},
                            {"actor/fc0": [4, 10], "qf1/fc0": [2, 10]}]},
        {"task": "window-close", "actor_drift": [[0.1], [0.3]], "constant_units": None}])
    # sac's success at the episode's last step: seed 0 dropped window-open's first success.
    _write_run(os.path.join(runs, "window_sac"), sr=[SR[1], SR[0]], method="sac",
               sr_last_step=[SR[1], [[0.5, 0.0], [0.0, 1.0]]])
    collected = ablation.collect(runs, "window")
    assert list(collected) == ["sac", "nbsp"]  # ARMS order; unfinished arms left out

    # By hand, H = 2. Seed 0: ASR = (1/2)(1 + (0 + 1)/2) = 0.75, FWT = (1 + 1)/2 = 1,
    # FM = max_{l in 0..0}(sr[l,0]) - sr[1,0] = 1 - 0 = 1.
    # Seed 1: ASR = (1/2)(0.8 + (0.4 + 1)/2) = 0.75, FWT = (0.8 + 1)/2 = 0.9, FM = 0.8 - 0.4.
    asr, fwt, fm = (0.75, 0.75), (1.0, 0.9), (1.0, 0.4)
    c = collected["nbsp"]
    assert c["seeds"] == 2
    for name, want in (("asr", asr), ("fm", fm), ("fwt", fwt)):
        assert c["per_seed"][name] == pytest.approx(list(want))
        s = c["summary"][name]
        assert s["mean"] == pytest.approx(sum(want) / 2)
        assert s["stderr"] == pytest.approx(_stderr(*want))
        lo, hi = s["ci"]
        assert min(want) - 1e-12 <= lo <= s["mean"] <= hi <= max(want) + 1e-12
    assert c["summary"]["fm"]["ci"][0] < c["summary"]["fm"]["ci"][1]  # seeds differ
    assert c["summary"]["asr"]["ci"] == pytest.approx([0.75, 0.75])  # seeds agree
    # Same numbers with the seeds swapped; the bootstrap is deterministic.
    assert collected["sac"]["summary"]["fm"]["mean"] == pytest.approx(0.7)
    assert ablation.bootstrap_ci([1.0, 0.4]) == ablation.bootstrap_ci([1.0, 0.4])
    assert ablation.collect(runs, "window")["nbsp"]["summary"] == c["summary"]
    assert all(math.isnan(v) for v in ablation.bootstrap_ci([1.0, math.nan]))
    # Per-phase entries: mean over phases and seeds, None where never recorded.
    assert c["actor_drift"] == pytest.approx(0.2)
    assert c["constant_units"] == pytest.approx({"count": 4.0, "fraction": 0.2})
    assert collected["sac"]["actor_drift"] is None
    assert c["mismatches"] == [] and collected["sac"]["mismatches"] == []

    text = ablation.write_pair(out, "window", collected, command="cmd", commit="abc1234",
                               missing=["nbsp_hard"])
    assert "| nbsp | 2 | 0.750 ± 0.000 [0.750, 0.750] | 0.700 ± 0.300 [" in text
    # The paper's column (Table 9 for the window pair's ablation arms and NBSP).
    assert text.split("\n| nbsp | 2 |")[1].split("\n")[0].endswith(
        "| 0.90 ± 0.04, 0.18 ± 0.01, 0.96 ± 0.02 (Table 9) |")
    assert "after window-open: 0.80, 0.00; after window-close: 0.40, 1.00" in text
    assert "abc1234" in text and '"nbsp_jax": "0.1.0"' in text and "`cmd`" in text
    assert "each run's code: not recorded (sac, nbsp)" in text
    collected["sac"]["versions"] = {"nbsp_jax_commit": "9ac73ec"}
    assert ablation.run_commits(collected) == "`9ac73ec` (sac); not recorded (nbsp)"
    assert "| nbsp | 0.2 | 4.0 (20.0 %) |" in text
    assert "| sac | - | - |" in text and "Not finished: nbsp_hard." in text
    # Last-step success (sac only): seed 1 now has ASR (1/2)(0.5 + (0 + 1)/2) = 0.5,
    # FM 0.5 - 0 = 0.5, FWT (0.5 + 1)/2 = 0.75; seed 0 as before (0.75, 0.4, 0.9).
    assert c["summary_last_step"] is None
    last = collected["sac"]["summary_last_step"]
    assert [last[m]["mean"] for m in ("asr", "fm", "fwt")] == pytest.approx([0.625, 0.45, 0.825])
    assert "| sac | 0.625 ± 0.125 [" in text.split("at the episode's last step")[1]
    with open(os.path.join(out, "window.json")) as f:
        saved = json.load(f)
    assert saved["arms"]["nbsp"]["per_seed"]["fm"] == pytest.approx([1.0, 0.4])
    # Seed by seed: nbsp's FM (1.0, 0.4) minus sac's (0.4, 1.0) = (+0.6, -0.6).
    (row,) = ablation.paired_differences(collected, "sac")
    assert row["arm"] == "nbsp" and row["diffs"] == pytest.approx([0.6, -0.6])
    assert (row["mean"], row["stderr"]) == pytest.approx((0.0, 0.6))
    assert (row["lower"], row["higher"], row["seeds"]) == (1, 1, 2)
    assert ablation.paired_differences(collected, "nbsp")[0]["diffs"] == pytest.approx(
        [-0.6, 0.6])
    assert ablation.paired_differences(collected, "replay_only") == []
    assert ablation._num(-1e-17) == "0.000" and ablation._num(-0.0004) == "0.000"
    assert ablation._num(-0.0006) == "-0.001" and ablation._num(0.25, "{:+.2f}") == "+0.25"
    assert "| nbsp | 0.000 ± 0.600 [" in text and "| +0.60, -0.60 | 1 / 1 of 2 |" in text
    assert "| sac | 0.000 ± 0.600 [" in text and "| -0.60, +0.60 | 1 / 1 of 2 |" in text
    for arm in ("sac", "nbsp"):
        for png in ("success", "sr"):
            assert os.path.exists(os.path.join(out, f"window_{arm}_{png}.png"))


def test_config_mismatch_is_reported(tmp_path):
    runs = str(tmp_path / "runs")
    _write_run(os.path.join(runs, "window_nbsp_random"), method="nbsp")  # selector 'goal'
    c = ablation.collect(runs, "window", ["nbsp_random"])["nbsp_random"]
    assert c["mismatches"] == ["selector: run has 'goal', arm wants 'random'"]


def test_dry_run_prints_commands_and_skips_finished(tmp_path, capsys):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    _write_run(os.path.join(runs, "window_nbsp"))
    rc = ablation.main(["--pair", "window", "--arms", "nbsp,nbsp_random,nbsp_gradient",
                        "--seeds", "3", "--runs", runs, "--out", out, "--dry-run",
                        "--", "--config.steps_per_task=100"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    # The fork source runs first and trains phase 1 for the others.
    sac = os.path.join(runs, "window_sac")
    assert "window sac (phase 1, the fork point):" in lines[0] and "fork_from" not in lines[0]
    assert "--config.stop_after_phase=1" in lines[0]
    assert "window nbsp: skip" in lines[1]
    random = os.path.join(runs, "window_nbsp_random")
    config = os.path.relpath(os.path.join(ablation.CONFIGS, "metaworld_window.py"))
    assert config.endswith(os.path.join("configs", "metaworld_window.py"))
    assert (f"-m nbsp_jax.train --config {config}:cpu --workdir {random} "
            "--config.num_seeds=3 --config.progress=False --config.method=nbsp "
            f"--config.selector=random --config.fork_from={sac} --config.steps_per_task=100 "
            f"> {random}.log 2>&1") in lines[2]
    assert "--config.method=nbsp --config.mask_placement=gradient" in lines[3]
    assert not os.path.exists(out)  # a dry run writes nothing
    cmd = ablation.train_command("button_window", "nbsp_hard", runs="r", seeds=5, variant="",
                                 python="python")
    assert cmd[:5] == ["python", "-m", "nbsp_jax.train", "--config",
                       os.path.relpath(os.path.join(ablation.CONFIGS,
                                                    "metaworld_button_window.py"))]
    assert cmd[5:] == ["--workdir", os.path.join("r", "button_window_nbsp_hard"),
                       "--config.num_seeds=5", "--config.progress=False",
                       "--config.method=nbsp_hard"]


def test_collect_only_writes_report(tmp_path, capsys):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    _write_run(os.path.join(runs, "window_sac"), method="sac")
    assert ablation.main(["--pair", "window", "--runs", runs, "--out", out,
                          "--collect-only"]) == 0
    with open(os.path.join(out, "window.md")) as f:
        text = f.read()
    assert "--collect-only" in text and "| sac | 2 |" in text
    assert "Not finished: replay_only, mask_only, nbsp, nbsp_hard" in text


def test_failed_arm_is_reported_and_the_next_one_runs(tmp_path, monkeypatch, capsys):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    calls = []

    def fake_run_arm(cmd, log_path):
        """Fails the sac arm; 'finishes' the others by writing their results.json."""
        workdir = cmd[cmd.index("--workdir") + 1]
        calls.append(os.path.basename(workdir))
        if workdir.endswith("_sac"):
            return 3
        _write_run(workdir, method="nbsp")
        return 0

    monkeypatch.setattr(ablation, "run_arm", fake_run_arm)
    rc = ablation.main(["--pair", "window", "--arms", "sac,nbsp", "--runs", runs, "--out", out])
    # sac's phase 1 (the fork point) fails; nbsp still runs; sac's later phases are not tried.
    assert rc == 1 and calls == ["window_sac", "window_nbsp"]
    printed = capsys.readouterr().out
    assert "window sac (phase 1, the fork point): FAILED with exit status 3" in printed
    assert "[3/3] window sac: skip (failed above)" in printed
    assert "1 arm(s) failed: window_sac (exit 3" in printed
    with open(os.path.join(out, "window.md")) as f:
        assert "Not finished: sac, replay_only, mask_only, nbsp_hard" in f.read()
    # Rerunning skips the finished arm and retries only the failed one.
    calls.clear()
    assert ablation.main(["--pair", "window", "--arms", "sac,nbsp", "--runs", runs,
                          "--out", out]) == 1
    assert calls == ["window_sac"]


def test_fork_order_runs_the_methods_before_the_source_phase_two(tmp_path, monkeypatch):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    calls = []

    def fake_run_arm(cmd, log_path):
        """Writes a fork point for a stop_after_phase=1 command, results.json otherwise."""
        workdir = cmd[cmd.index("--workdir") + 1]
        stop = "--config.stop_after_phase=1" in cmd
        calls.append((os.path.basename(workdir), stop))
        if stop:
            os.makedirs(os.path.join(workdir, ablation.FORK_POINT, "checkpoints", "0"))
        else:
            _write_run(workdir, method="sac" if workdir.endswith("_sac") else "nbsp")
        return 0

    monkeypatch.setattr(ablation, "run_arm", fake_run_arm)
    assert ablation.main(["--pair", "window", "--arms", "nbsp,sac", "--runs", runs,
                          "--out", out]) == 0
    assert calls == [("window_sac", True), ("window_nbsp", False), ("window_sac", False)]
    # Without sac among the arms, only its phase 1 runs; a written fork point is not redone.
    calls.clear()
    shutil.rmtree(os.path.join(runs, "window_sac"))
    os.makedirs(os.path.join(runs, "window_sac", ablation.FORK_POINT, "checkpoints", "0"))
    assert ablation.main(["--pair", "window", "--arms", "mask_only", "--runs", runs,
                          "--out", out]) == 0
    assert calls == [("window_mask_only", False)]
    # The report of a one-arm run keeps the arms finished before it.
    with open(os.path.join(out, "window.md")) as f:
        text = f.read()
    assert "| nbsp | 2 |" in text and "| mask_only | 2 |" in text
    assert ablation.run_order(["sac", "nbsp"], fork=False) == [("sac", 0), ("nbsp", 0)]


def test_baselines_table_forks_only_the_methods_that_act_after_phase_one(tmp_path, capsys):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    assert ablation.validate_arms(["all"], "baselines") == list(ablation.TABLES["baselines"])
    assert [a for a in ablation.ARMS if ablation.forks(a)] == [
        "sac", "replay_only", "mask_only", "nbsp", "nbsp_hard", "nbsp_random", "nbsp_gradient",
        "ewc", "ancl", "pi", "shrink_perturb"]
    with pytest.raises(ValueError, match=r"unknown table 'table9'; valid choices: ablation, "
                                         r"baselines"):
        ablation.validate_arms(["all"], "table9")
    assert ablation.main(["--pair", "window", "--table", "baselines", "--runs", runs,
                          "--out", out, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # sac's phase 1 first, then the table's arms in order, then sac's phase 2.
    names = [line.split(": ")[0].split("] ")[1] for line in lines]
    assert names == ["window sac (phase 1, the fork point)", "window ewc", "window npc",
                     "window ancl", "window crelu", "window cbp", "window pi", "window nbsp",
                     "window redo", "window shrink_perturb", "window sac"]
    by_arm = dict(zip(names, lines, strict=True))
    for arm in ("ewc", "ancl", "pi", "nbsp", "shrink_perturb"):
        assert "--config.fork_from=" in by_arm[f"window {arm}"]
    for arm in ("npc", "crelu", "cbp", "redo"):
        assert "--config.fork_from=" not in by_arm[f"window {arm}"]
    assert "--config.activation=crelu" in by_arm["window crelu"]
    _write_run(os.path.join(runs, "window_sac"), method="sac")
    assert ablation.main(["--pair", "window", "--table", "baselines", "--runs", runs,
                          "--out", out, "--collect-only"]) == 0
    with open(os.path.join(out, "window_baselines.md")) as f:
        text = f.read()
    assert text.startswith("# Table 1 baselines: window") and "Not finished: ewc, npc" in text


def test_arms_finished_in_an_earlier_session_count_from_the_report(tmp_path, monkeypatch):
    """A report keeps each arm's results.json; with the run folders gone (a new session),
    those arms are collected from it and not rerun, and the fork source's phase 1 is trained
    again only for the forking arms still missing."""
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")
    _write_run(os.path.join(runs, "window_sac"), method="sac")
    _write_run(os.path.join(runs, "window_nbsp"))
    assert ablation.main(["--pair", "window", "--arms", "sac,nbsp", "--runs", runs,
                          "--out", out, "--collect-only"]) == 0
    assert os.path.exists(os.path.join(out, "window_nbsp_results.json"))
    shutil.rmtree(runs)  # the next session: reports only
    collected = ablation.collect(runs, "window", ["sac", "nbsp", "mask_only"], out)
    assert list(collected) == ["sac", "nbsp"]
    assert collected["nbsp"]["per_seed"]["fm"] == pytest.approx([1.0, 0.4])
    calls = []

    def fake_run_arm(cmd, log_path):
        workdir = cmd[cmd.index("--workdir") + 1]
        calls.append((os.path.basename(workdir), "--config.stop_after_phase=1" in cmd))
        if calls[-1][1]:
            os.makedirs(os.path.join(workdir, ablation.FORK_POINT, "checkpoints", "0"))
        else:
            _write_run(workdir)
        return 0

    monkeypatch.setattr(ablation, "run_arm", fake_run_arm)
    argv = ["--pair", "window", "--arms", "sac,nbsp,mask_only", "--runs", runs, "--out", out]
    assert ablation.main(argv) == 0
    assert calls == [("window_sac", True), ("window_mask_only", False)]
    calls.clear()
    shutil.rmtree(runs)
    assert ablation.main(argv) == 0 and calls == []  # nothing left to run or to fork


def test_paper_numbers_by_pair_and_arm():
    """The paper's cells: ablation arms from Tables 9 / 10 / 2, random neurons from Table 3,
    baselines from Table 1; '-' where the paper has none."""
    assert ablation.paper_cell("window", "nbsp_hard") == (
        "0.71 ± 0.04, 0.54 ± 0.13, 0.91 ± 0.05 (Table 9)")
    assert ablation.paper_cell("drawer", "sac") == (
        "0.67 ± 0.05, 0.78 ± 0.10, 0.94 ± 0.04 (Table 10)")
    assert ablation.paper_cell("button_window", "nbsp_random") == (
        "0.72 ± 0.01, 0.70 ± 0.05, 0.96 ± 0.02 (Table 3)")
    assert ablation.paper_cell("window", "pi") == "0.61 ± 0.02, 0.91 ± 0.07, 0.95 ± 0.01 (Table 1)"
    assert ablation.paper_cell("button_window", "nbsp") == (
        "0.95 ± 0.05, 0.08 ± 0.12, 0.98 ± 0.01 (Table 2)")
    assert ablation.paper_cell("window", "nbsp_gradient") == "-"
    assert ablation.paper_cell("window_drawer4", "nbsp") == "-"
    # Every arm with a paper number is an arm of the tables (CoTASP aside: not built).
    for pair in ablation.PAPER.values():
        assert set(pair) - {"cotasp"} <= set(ablation.ARMS)


def test_plasticity_per_phase_means_and_report(tmp_path):
    runs, out = str(tmp_path / "runs"), str(tmp_path / "out")

    def nets(a_dormant, q1_rank, q2_rank, a_update):
        return {"actor": {"dormant_0": a_dormant, "dormant_0.1": a_dormant + 0.1,
                          "feature_srank": 10.0, "param_norm": 5.0, "update_norm": a_update},
                "qf1": {"dormant_0": 0.2, "dormant_0.1": 0.4, "feature_srank": q1_rank,
                        "param_norm": 7.0, "update_norm": 1.0},
                "qf2": {"dormant_0": 0.4, "dormant_0.1": 0.6, "feature_srank": q2_rank,
                        "param_norm": 9.0, "update_norm": 3.0}}

    # Per phase, per seed {network: metrics}, as nbsp_jax.training records them.
    _write_run(os.path.join(runs, "window_redo"), method="redo", phases=[
        {"task": "window-open", "plasticity": [nets(0.1, 20.0, 30.0, 2.0),
                                               nets(0.3, 40.0, 50.0, 4.0)]},
        {"task": "window-close"},  # a phase that recorded none is left out
        # Forked at its end: its update norm covers none of it.
        {"task": "window-open", "update_norm_from_step": 150, "plasticity": [
            nets(0.1, 20.0, 30.0, 0.0)]}])
    c = ablation.collect(runs, "window", ["redo"])["redo"]
    # By hand: actor over 2 seeds; critics over qf1, qf2 and 2 seeds.
    assert len(c["plasticity"]) == 2
    assert "update_norm" not in c["plasticity"][1]["actor"]
    assert c["plasticity"][1]["critics"]["feature_srank"] == pytest.approx(25.0)
    p = c["plasticity"][0]
    assert (p["phase"], p["task"]) == (1, "window-open")
    assert p["actor"] == pytest.approx({"dormant_0": 0.2, "dormant_0.1": 0.3,
                                        "feature_srank": 10.0, "param_norm": 5.0,
                                        "update_norm": 3.0})
    assert p["critics"] == pytest.approx({"dormant_0": 0.3, "dormant_0.1": 0.5,
                                          "feature_srank": 35.0, "param_norm": 8.0,
                                          "update_norm": 2.0})
    text = ablation.write_pair(out, "window", {"redo": c}, command="cmd", commit="abc1234",
                               table="baselines")
    assert ("| redo | 1: window-open | 0.20 / 0.30 | 10 | 0.30 / 0.50 | 35 | 5 / 8 | 3 / 2 |"
            in text)
    assert "| redo | 3: window-open | 0.10 / 0.20 | 10 | 0.30 / 0.50 | 25 | 5 / 8 | - / - |" in text
    assert ablation.plasticity([{"task": "t"}, {"task": "u", "plasticity": None}]) is None
