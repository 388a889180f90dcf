"""Per-seed metric writers (JSONL + TensorBoard) and the progress bar.

Each seed ``s`` gets ``workdir/seed_{s}/metrics.jsonl`` (one JSON object per line:
``{"step": ..., "task": ..., "<tag>": value}``) and TensorBoard event files in the same folder,
with CleanRL's tag names (``charts/episodic_return``, ``charts/success_rate``, ``charts/SPS``,
``losses/qf1_loss``, ``losses/actor_loss``, ``losses/alpha``, ...).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np


class SeedWriters:
    """One JSONL file and one TensorBoard writer per seed."""

    def __init__(self, workdir: str, num_seeds: int, tensorboard: bool = True,
                 truncate_to: list[int] | None = None, first: int = 0):
        """Opens the writers; ``truncate_to`` (bytes per seed, from :meth:`sizes` at the last
        checkpoint) first cuts each JSONL file back, dropping rows a resumed run will redo.
        ``first``: global index of seed 0 (``config.seed_offset``; folders are named by it)."""
        self.workdir = workdir
        self._files = []
        self._tb = []
        for s in range(num_seeds):
            d = os.path.join(workdir, f"seed_{first + s}")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "metrics.jsonl")
            if truncate_to is not None and os.path.exists(path):
                os.truncate(path, truncate_to[s])
            self._files.append(open(path, "a"))
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb.append(SummaryWriter(d, flush_secs=30))

    def write(self, seed: int, step: int, scalars: dict, **fields) -> None:
        """Writes ``scalars`` ({tag: number}) for one seed at env step ``step``."""
        row = {"step": int(step), **fields, **{k: float(v) for k, v in scalars.items()}}
        self._files[seed].write(json.dumps(row) + "\n")
        if self._tb:
            for tag, value in scalars.items():
                self._tb[seed].add_scalar(tag, float(value), int(step))

    def write_all(self, step: int, per_seed: dict, **fields) -> None:
        """Writes ``per_seed`` ({tag: array [S]}) for every seed."""
        arrays = {k: np.asarray(v) for k, v in per_seed.items()}
        for s in range(len(self._files)):
            self.write(s, step, {k: v[s] for k, v in arrays.items()}, **fields)

    def sizes(self) -> list[int]:
        """Bytes written so far to each seed's JSONL file (after a flush)."""
        self.flush()
        return [f.tell() for f in self._files]

    def flush(self) -> None:
        for f in self._files:
            f.flush()
        for w in self._tb:
            w.flush()

    def close(self) -> None:
        self.flush()
        for f in self._files:
            f.close()
        for w in self._tb:
            w.close()


class Progress:
    """A rich progress bar over env steps (per seed) with steps/s, success rate and ETA."""

    def __init__(self, total: int, enabled: bool = True):
        self._bar = None
        self._start = time.perf_counter()
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("env steps | {task.fields[sps]:.0f} steps/s"),
                TextColumn("| success {task.fields[sr]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                refresh_per_second=2,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=total, sps=0.0, sr="-")

    def update(self, completed: int, description: str, sps: float, success: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, description=description,
                             sps=sps, sr=success)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
