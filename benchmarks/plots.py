"""Pictures and traces: the models' timelines in one figure, a Chrome trace file, the scenario plots.

matplotlib runs on the Agg backend (no display needed); every figure is written as PNG.  Min-max
whiskers are drawn only for points measured more than once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from .metrics import STAGES  # noqa: E402
from .units import Value  # noqa: E402

MAX_LANES = 64
FILE_COLOURS = 20  # tab20: file id mod 20 picks the colour
PILL: dict[str, Any] = {"marker": "v", "color": "crimson", "markersize": 7}
EXIT: dict[str, Any] = {"marker": "|", "color": "black", "markersize": 12}
PUT: dict[str, Any] = {"color": "crimson", "linestyle": ":", "linewidth": 0.8}
LAST: dict[str, Any] = {"color": "green", "linestyle": "--", "linewidth": 0.8}


def _lanes(timing: dict[str, Any]) -> list[str]:
    """Worker names in pipeline order (the dispatcher has no spans, so no lane)."""
    workers = timing.get("workers", {})
    names = [n for n, w in workers.items() if w["stage"] != STAGES[0]]
    return sorted(names, key=lambda n: (STAGES.index(workers[n]["stage"]), len(n), n))


def _colour(file_id: int) -> Any:
    return plt.get_cmap("tab20")(file_id % FILE_COLOURS)


def _panel(ax: Any, timing: dict[str, Any], title: str) -> None:
    """One model's lanes: a bar per file per stage, a mark where the end of the stream reached each
    worker and where it exited, the coordinator's pill puts and the last verification."""
    workers = timing.get("workers", {})
    lanes = _lanes(timing)
    shown = lanes[:MAX_LANES]
    wall = timing.get("wall_s") or 0.0
    min_width = wall / 2000 if wall else 0.0
    bars: dict[str, list[tuple[float, float]]] = {n: [] for n in shown}
    colours: dict[str, list[Any]] = {n: [] for n in shown}
    for name, _stage, file_id, start, end in timing.get("spans") or []:
        if name in bars:
            bars[name].append((start, max(end - start, min_width)))
            colours[name].append(_colour(file_id))
    for y, name in enumerate(shown):
        if bars[name]:
            ax.broken_barh(bars[name], (y - 0.35, 0.7), facecolors=colours[name], edgecolor="black", linewidth=0.3)
        w = workers[name]
        if w.get("pill_s") is not None:
            ax.plot(w["pill_s"], y, zorder=3, **PILL)
        if w.get("exited_s") is not None:
            ax.plot(w["exited_s"], y, zorder=3, **EXIT)
    for puts in _pills_put(timing).values():
        for t in puts:
            ax.axvline(t, **PUT)
    if timing.get("last_verified_s") is not None:
        ax.axvline(timing["last_verified_s"], **LAST)
    ax.set_yticks(range(len(shown)), shown, fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    extra = f" (first {MAX_LANES} of {len(lanes)} workers)" if len(lanes) > len(shown) else ""
    ax.set_title(f"{title}{extra}", fontsize=10, loc="left")
    ax.grid(axis="x", alpha=0.3)


def _legend(files: int) -> list[Any]:
    """What the marks mean: one colour per file (shared by every panel), the pill and exit marks, the lines."""
    handles: list[Any] = [Patch(facecolor=_colour(i), edgecolor="black", linewidth=0.3, label=f"file {i}")
                          for i in range(1, min(files, FILE_COLOURS) + 1)]
    if files > FILE_COLOURS:
        handles.append(Patch(facecolor="white", edgecolor="white", label=f"(colour = file id mod {FILE_COLOURS})"))
    return handles + [
        Line2D([], [], linestyle="none", label="end of stream reached the worker (pill; anyio: last clone closed)",
               **PILL),
        Line2D([], [], linestyle="none", label="worker exited", **EXIT),
        Line2D([], [], label="coordinator starts ending a stage's stream", **PUT),
        Line2D([], [], label="last file verified", **LAST),
    ]


def timelines(timings: dict[str, dict[str, Any]], title: str, path: Path, files: int) -> Path:
    """The models' timelines in one figure, one panel per model, on one shared time axis: one lane
    per worker, one bar per file per stage (a file keeps its colour across stages and models), and
    one legend for the marks."""
    lanes = {label: min(len(_lanes(t)), MAX_LANES) or 1 for label, t in timings.items()}
    fig, axes = plt.subplots(len(timings), 1, sharex=True, squeeze=False,
                             figsize=(12, 2.2 + sum(0.3 * n + 0.6 for n in lanes.values())),
                             gridspec_kw={"height_ratios": [n + 1.5 for n in lanes.values()]})
    for ax, (label, timing) in zip(axes[:, 0], timings.items()):
        _panel(ax, timing, label)
    axes[-1, 0].set_xlabel("seconds since the run started")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    handles = _legend(files)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(5, len(handles)), fontsize=8,
               frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" takes in the legend below the panels
    plt.close(fig)
    return path


def _pills_put(timing: dict[str, Any]) -> dict[str, list[float]]:
    return {stage: s.get("pills_put_s") or [] for stage, s in timing.get("stages", {}).items()}


def chrome_trace(timings: dict[str, dict[str, Any]], path: Path) -> Path:
    """The Chrome trace event format (opens in Perfetto / chrome://tracing): one process per
    variant, one thread lane per worker, a complete event per file per stage, an instant event
    per pill arrival and per pill put."""
    events: list[dict[str, Any]] = []
    for pid, (variant, timing) in enumerate(timings.items(), start=1):
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": variant}})
        tids = {name: i for i, name in enumerate(_lanes(timing), start=1)}
        tids["coordinator"] = 0
        for name, tid in tids.items():
            events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}})
            events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
        for name, stage, file_id, start, end in timing.get("spans") or []:
            if name in tids:
                events.append({"ph": "X", "pid": pid, "tid": tids[name], "name": f"{stage} file {file_id}",
                               "cat": stage, "ts": start * 1e6, "dur": max(0.0, end - start) * 1e6,
                               "args": {"file_id": file_id}})
        for name, w in timing.get("workers", {}).items():
            if name in tids and w.get("pill_s") is not None:
                events.append({"ph": "i", "s": "t", "pid": pid, "tid": tids[name], "name": "pill",
                               "ts": w["pill_s"] * 1e6})
        for stage, puts in _pills_put(timing).items():
            for t in puts:
                events.append({"ph": "i", "s": "t", "pid": pid, "tid": 0, "name": f"pills put: {stage}", "ts": t * 1e6})
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path


def _spread(values: Sequence[Value], scale: float) -> tuple[list[float], list[float] | None, list[float] | None]:
    """Medians, and the distances to min and max (None when no value came from more than one run)."""
    meds, lo, hi, several = [], [], [], False
    for v in values:
        if isinstance(v, dict):
            meds.append(v["median"] * scale)
            lo.append((v["median"] - v["min"]) * scale)
            hi.append((v["max"] - v["median"]) * scale)
            several = several or v.get("n", 2) > 1
        else:
            meds.append(float(v or 0) * scale)
            lo.append(0.0)
            hi.append(0.0)
    return (meds, lo, hi) if several else (meds, None, None)


def line_plot(series: Mapping[str, Sequence[tuple[float, Value]]], xlabel: str, ylabel: str, title: str, path: Path,
              scale: float = 1.0, logx: bool = True, logy: bool = False, hlines: dict[str, float] | None = None) -> Path:
    """One line per series of (x, value) points, each value a number or a ``summ`` (times ``scale``),
    with min-max whiskers where a point was measured more than once."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        pts = [(x, v) for x, v in points if v is not None]
        if not pts:
            continue
        meds, lo, hi = _spread([v for _, v in pts], scale)
        whiskers: Any = None if lo is None else [lo, hi]
        ax.errorbar([x for x, _ in pts], meds, yerr=whiskers, marker="o", capsize=3, label=label)
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", color="grey", linewidth=0.8)
        ax.annotate(label, (ax.get_xlim()[0], y), fontsize=8, color="grey", va="bottom")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def strategies(res: dict[str, Any], path: Path) -> Path | None:
    """Files/s and shutdown tail per strategies cell, at each worker count: horizontal bars, with
    min-max whiskers only when a bar is the median of several runs."""
    rows = [c for c in res["cells"] if c.get("throughput")]
    if not rows:
        return None
    workers = sorted({t["api_workers"] for c in rows for t in c["throughput"] if "error" not in t})
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.5 + 0.42 * len(rows)), sharey=True)
    height = 0.8 / max(1, len(workers))
    for ax, key, scale, title in ((axes[0], "files_per_s", 1.0, "files/s (higher is better)"),
                                  (axes[1], "shutdown_tail_s", 1e3, "shutdown tail, ms (log; lower is better)")):
        for j, w in enumerate(workers):
            found = [(i, t[key]) for i, c in enumerate(rows)
                     for t in c["throughput"] if t["api_workers"] == w and t.get(key)]
            ys = [i + (j - (len(workers) - 1) / 2) * height for i, _ in found]
            meds, lo, hi = _spread([v for _, v in found], scale)
            ax.barh(ys, meds, height=height, xerr=None if lo is None else [lo, hi], label=f"{w:,} API workers",
                    capsize=2)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        if key == "shutdown_tail_s":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range would label every minor tick
    axes[0].set_yticks(range(len(rows)), [f"{c['label']} (py{c['python']})" for c in rows], fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    repeats = res["plan"]["repeats"]
    how = f"median of {repeats}, whiskers min-max" if repeats > 1 else "one run each"
    fig.suptitle(f"Termination strategies: {res['plan']['files']:,} files at zero latency, queue "
                 f"{res['plan']['queue_size']} ({how})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
