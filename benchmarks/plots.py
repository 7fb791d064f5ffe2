"""Pictures and traces: per-variant timelines, a Chrome trace file, and the scenario plots.

matplotlib runs on the Agg backend (no display needed); every figure is written as PNG.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGE_ORDER = {"dispatch": 0, "s3": 1, "api": 2, "verify": 3}
MAX_LANES = 64


def _lanes(timing: dict[str, Any]) -> list[str]:
    workers = timing.get("workers", {})
    names = [n for n, w in workers.items() if w["stage"] != "dispatch"]
    return sorted(names, key=lambda n: (STAGE_ORDER[workers[n]["stage"]], len(n), n))


def timeline(timing: dict[str, Any], title: str, path: Path) -> Path:
    """One lane per worker, one bar per file per stage (coloured by file, so a file can be
    followed across stages), a marker where each pill arrived and where each worker exited."""
    workers = timing.get("workers", {})
    lanes = _lanes(timing)
    shown = lanes[:MAX_LANES]
    row = {name: i for i, name in enumerate(shown)}
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.38 * max(1, len(shown))))
    cmap = plt.get_cmap("tab20")
    bars: dict[str, list[tuple[float, float]]] = {n: [] for n in shown}
    colors: dict[str, list[Any]] = {n: [] for n in shown}
    wall = timing.get("wall_s") or 0.0
    min_width = wall / 2000 if wall else 0.0
    for name, _stage, file_id, start, end in timing.get("spans") or []:
        if name in bars:
            bars[name].append((start, max(end - start, min_width)))
            colors[name].append(cmap(file_id % 20))
    for name in shown:
        y = row[name]
        if bars[name]:
            ax.broken_barh(bars[name], (y - 0.35, 0.7), facecolors=colors[name], edgecolor="black", linewidth=0.3)
        w = workers[name]
        if w.get("pill_s") is not None:
            ax.plot(w["pill_s"], y, marker="v", color="crimson", markersize=7, zorder=3)
        if w.get("exited_s") is not None:
            ax.plot(w["exited_s"], y, marker="|", color="black", markersize=12, zorder=3)
    for puts in _pills_put(timing).values():
        for t in puts:
            ax.axvline(t, color="crimson", linestyle=":", linewidth=0.8)
    if timing.get("last_verified_s") is not None:
        ax.axvline(timing["last_verified_s"], color="green", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(shown)), shown)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since start")
    extra = f" (first {MAX_LANES} of {len(lanes)} workers)" if len(lanes) > len(shown) else ""
    ax.set_title(f"{title}{extra}\nbars: one per file per stage; ▼ pill arrived; | worker exited; "
                 "dotted: pills put; dashed: last file verified", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def line_plot(series: dict[str, Sequence[tuple[float, float, float, float]]], xlabel: str, ylabel: str, title: str,
              path: Path, logx: bool = True, logy: bool = False, hlines: dict[str, float] | None = None) -> Path:
    """One line per series; each point (x, median, min, max) with a min-max error bar."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        pts = [p for p in points if p[1] is not None]
        if not pts:
            continue
        xs, med, lo, hi = zip(*pts)
        ax.errorbar(xs, med, yerr=[[m - l for m, l in zip(med, lo)], [h - m for m, h in zip(med, hi)]],
                    marker="o", capsize=3, label=label)
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
