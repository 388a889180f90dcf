"""Per-op profile of the fused update: where XLA spends a gradient step, op by op.

    python benchmarks/op_profile.py --setting continuous --hidden 256,256 --json out.json
    python benchmarks/op_profile.py --setting atari --updates 8

Builds the same compiled update as ``update_throughput.py``, runs one call under
``jax.profiler`` (a Perfetto trace), and joins the trace's per-op events with the compiled HLO
(``Compiled.as_text()``) by op name. Prints, per gradient step:

- time per op category (``dot``/``conv`` = matrix products, however XLA fused them; ``rng``;
  ``while`` loops; ``copy``; ``elementwise`` = the other fusions), and their share;
- the largest other ops, grouped by their HLO name stem (XLA names a fusion after its ops,
  e.g. ``multiply_add_fusion``);
- the matrix products one by one: shapes, time per update (an op inside a loop body that
  holds several gradient steps runs once for all of them) and GFLOP/s; their summed FLOPs
  over their summed time is the update's achieved matmul rate.

Op times add up to more than the wall time when XLA runs independent ops on both cores at
once; shares are of the summed op time. The profiler adds overhead: compare rates between ops
of one profile, and take throughput from ``update_throughput.py``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.update_throughput import _prepare  # noqa: E402

_OP = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) (\w[\w\-]*)\((.*?)\)(.*)$")
_SHAPE = re.compile(r"[a-z]+\d*\[([\d,]*)\]")


def _dims(text: str) -> list[int]:
    m = _SHAPE.search(text)
    return [int(x) for x in m.group(1).split(",") if x] if m else []


def parse_hlo(text: str) -> tuple[dict, str]:
    """Parses an optimized HLO module's text.

    Returns ``(ops, entry)``: each op's ``{kind, flops, shapes, comp}`` (``flops`` =
    matrix-product FLOPs of one execution of the op, counting fused, called and looped
    computations, loops times their known trip count, conditionals as their costliest branch;
    ``comp``: the computation holding it)
    and the entry computation's name.
    """
    comps, name, body, entry = {}, None, [], ""
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{$", line)
        if head:
            name, body = head.group(2), []
            entry = name if head.group(1) else entry
        elif line.startswith("}") and name:
            comps[name] = body
            name = None
        elif name:
            body.append(line)
    shapes = {}  # op name -> result type text, over all computations
    for lines in comps.values():
        for line in lines:
            m = _OP.match(line)
            if m:
                shapes[m.group(1)] = m.group(2)
    ops = {}

    def visit(comp: str) -> int:
        """Matrix-product FLOPs of one execution of ``comp``; fills ``ops`` on the way."""
        total = 0
        for line in comps.get(comp, []):
            m = _OP.match(line)
            if not m:
                continue
            op, kind, args, rest = m.group(1), m.group(3), m.group(4), m.group(5)
            flops, dims = 0, []
            if kind in ("dot", "convolution"):
                out = _dims(m.group(2))
                operands = [a.strip().lstrip("%") for a in args.split(",")]
                lhs = _dims(shapes.get(operands[0], ""))
                rhs = _dims(shapes.get(operands[1], "")) if len(operands) > 1 else []
                if kind == "dot":
                    lc = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
                    k = math.prod(lhs[int(i)] for i in lc.group(1).split(",") if i) if (
                        lc and lhs) else 0
                else:  # each output element takes kernel size / out channels MACs
                    k = math.prod(rhs) // max(out[-1], 1) if rhs and out else 0
                flops, dims = 2 * math.prod(out) * k, [(lhs, rhs, out)]
            called = re.findall(r"(?:calls|body|to_apply)=%([\w.\-]+)", rest)
            # A conditional runs one of its branches: count the costliest (exact when one
            # branch holds all the products, as SBX's delayed actor update does).
            branches = re.findall(r"(?:true_computation|false_computation)=%([\w.\-]+)", rest)
            listed = re.search(r"branch_computations=\{([^}]*)\}", rest)
            branches += re.findall(r"%([\w.\-]+)", listed.group(1)) if listed else []
            costs = [visit(c) for c in branches if c in comps and c != comp]
            flops += max(costs, default=0)
            for c in called:
                if c in comps and c != comp:
                    inner = visit(c)
                    if kind == "while":
                        trip = re.search(r'known_trip_count":\{"n":"(\d+)"', rest)
                        inner *= int(trip.group(1)) if trip else 1
                    flops += inner
            for c in called + branches:
                dims += [d for o in ops.values() if o.get("comp") == c for d in o["shapes"]]
            ops[op] = {"kind": kind, "flops": flops, "shapes": dims, "comp": comp}
            total += flops
        return total

    visit(entry)
    return ops, entry


def program_flops(text: str) -> int:
    """Matrix-product FLOPs of one call of the program whose optimized HLO is ``text``."""
    ops, entry = parse_hlo(text)
    return sum(o["flops"] for o in ops.values() if o["comp"] == entry)


def category(name: str, info: dict | None) -> str:
    if info and info["flops"]:
        return "dot/conv"
    if "rng" in name or (info and "rng" in info["kind"]):
        return "rng"
    base = re.sub(r"[.\d]+$", "", name)
    if base in ("while", "copy", "call", "conditional"):
        return base
    return "elementwise/other"


def trace_events(fn) -> dict:
    """Runs ``fn()`` under the profiler; returns ``{event name: [durations in us]}``."""
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        jax.block_until_ready(fn())
        jax.profiler.stop_trace()
        path = sorted(glob.glob(os.path.join(d, "**", "*.json.gz"), recursive=True))[-1]
        with gzip.open(path) as f:
            data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    out = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            out[e["name"]].append(e["dur"])
    return out


def profile(setting: str, hidden, batch: int, updates: int, top: int) -> dict:
    """Profiles one call of the update; returns the record ``main`` prints (see module doc)."""
    prep = _prepare(setting, hidden, batch, 1, updates, "sac", "vmap", "auto",
                    20_000 if setting == "atari" else 100_000)
    ops, _ = parse_hlo(prep["compiled"].as_text())
    events = trace_events(lambda: prep["run"](prep["state"]))
    cats, names = collections.Counter(), collections.Counter()
    dots = []
    for name, durs in events.items():
        if name not in ops:
            continue  # runtime wrappers (executor, waits), not ops of the program
        us = sum(durs) / updates
        info = ops[name]
        cats[category(name, info)] += us
        if not info["flops"]:  # ops by HLO name stem, e.g. 'multiply_add_fusion'
            names[re.sub(r"[.\d]+$", "", name)] += us
        if info["flops"] and info["kind"] != "while":
            fl = info["flops"] * len(durs) / updates
            dots.append({"op": name, "us": us, "gflops": fl / 1e9,
                         "gflop_per_s": fl / us / 1e3, "shapes": info["shapes"]})
    total = sum(cats.values())
    dots.sort(key=lambda r: -r["us"])
    dot_us = sum(r["us"] for r in dots)
    dot_fl = sum(r["gflops"] for r in dots)
    return {
        "setting": setting, "hidden": list(hidden), "batch": batch, "updates": updates,
        "op_us_per_update": total,
        "categories_us_per_update": dict(cats.most_common()),
        "other_ops_us_per_update": dict(names.most_common(top)),
        "matmul_gflop_per_update": dot_fl,
        "matmul_gflop_per_s": dot_fl / dot_us * 1e6 if dot_us else None,
        "top_matmuls": dots[:top],
        "jax_version": jax.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="continuous", choices=["continuous", "atari"])
    p.add_argument("--hidden", default=None, help="default 256,256; atari 768,768")
    p.add_argument("--batch", type=int, default=None, help="default 256; atari 64")
    p.add_argument("--updates", type=int, default=None,
                   help="default 50 (the Meta-World loop's chunk); atari 16")
    p.add_argument("--top", type=int, default=15, help="matrix products listed")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    atari = a.setting == "atari"
    hidden = tuple(int(h) for h in (a.hidden or ("768,768" if atari else "256,256")).split(","))
    rec = profile(a.setting, hidden, a.batch or (64 if atari else 256),
                  a.updates or (16 if atari else 50), a.top)
    tot = rec["op_us_per_update"]
    print(f"{a.setting} {hidden} batch {rec['batch']}: summed op time {tot / 1e3:.2f} ms "
          f"per update")
    for c, us in rec["categories_us_per_update"].items():
        print(f"  {c:<18} {us / 1e3:7.3f} ms  {100 * us / tot:5.1f} %")
    print("largest other ops, by HLO name stem:")
    for n, us in rec["other_ops_us_per_update"].items():
        print(f"  {n:<32} {us / 1e3:7.3f} ms  {100 * us / tot:5.1f} %")
    print(f"matrix products: {rec['matmul_gflop_per_update']:.3f} GFLOP per update at "
          f"{rec['matmul_gflop_per_s']:.0f} GFLOP/s")
    for r in rec["top_matmuls"]:
        sh = " ".join(f"{lhs}x{rhs}->{out}" for lhs, rhs, out in r["shapes"])
        print(f"  {r['us']:8.0f} us/update {r['gflop_per_s']:6.0f} GFLOP/s  {sh}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
