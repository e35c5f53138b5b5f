"""Metrics sinks for long jobs: one JSON line per step, TensorBoard scalars, and PNG plots beside them.

``MetricsWriter(workdir)`` appends to ``workdir/metrics.jsonl`` (append-only, so a resumed run continues the same
file; rows at or after the resume step are dropped first so curves never double back), mirrors scalars to
TensorBoard under ``workdir/tb``, and ``plot()`` draws ``workdir/metrics.png``. TensorBoard event files are
append-only, so a resumed writer opens a new one that starts with a ``SessionLog.START`` event at the resume step
(tensorboardX's ``purge_step``): TensorBoard then hides the older files' events at or after that step.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Iterable, Mapping

import numpy as np


def _scalar(value: Any) -> float | None:
    try:
        out = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a metrics file; a torn last line (crash mid-write) is ignored."""
    rows = []
    p = pathlib.Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsWriter:
    """Writes flat ``{name: scalar}`` dicts keyed by step."""

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True, resume_step: int | None = None):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("step", -1) < resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # deferred: only jobs that log pay the import

            self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=resume_step)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": int(step)}
        for name, value in metrics.items():
            v = _scalar(value)
            if v is not None:
                row[name] = v if math.isfinite(v) else str(v)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, v in row.items():
                if name != "step" and isinstance(v, float):
                    self._tb.add_scalar(name, v, step)

    def plot(self, names: Iterable[str] | None = None, filename: str = "metrics.png") -> pathlib.Path | None:
        """One panel per metric (all of them, or ``names``) over steps; returns the PNG path."""
        rows = read_jsonl(self.path)
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = list(names) if names is not None else sorted({k for r in rows for k in r if k != "step"})
        keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
        if not keys:
            return None
        cols = min(4, len(keys))
        nrows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
            ax.set_title(key, fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        out = self.dir / filename
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return out

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
