"""The ``strategies`` scenario: every model x termination strategy x event loop on the same workloads.

Cells (``cells()``): threaded with pills, relay, last-out, queue-shutdown; asyncio with those plus
cancel, each on the asyncio loop and on uvloop; anyio (no pills: closing the last send clone ends a
stream) on its asyncio and trio backends.  ``queue-shutdown`` needs Python 3.13: it runs under the
first ``--python`` interpreter that is 3.13+ (else it is recorded as skipped).

Per cell:
- throughput: files/s at ``--time-scale 0`` (fresh process each, median over repeats), at the default
  workers and at many API workers;
- shutdown tail (last file verified -> every worker exited) and stream-end propagation per stage:
  from the moment a stage's input stream starts ending (the coordinator or the last producer
  starting to put pills / shut the queue down / cancel; for anyio the last producer exiting, which
  closes the last clone) to the stage's last consumer exiting;
- a worker dying mid-run (``--fault``), run through the real command line with a timeout: exit code,
  whether it hung, files lost (expected minus the sum of terminal states), the counts;
- lines of code per strategy (``lines_of_code()``: how it counts is in its docstring).

Plus ``interpreters``: a few headline cells under every ``--python`` given, side by side.
"""
from __future__ import annotations

import ast
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .compare import metrics
from .harness import ROOT, ProbeFailed, _env, stat

TERMINAL = ("success", "failed", "cancelled", "aborted", "invalid", "duplicate")
MODULES = {"threaded": "pillpipe.threaded", "asyncio": "pillpipe.asyncio_version", "anyio": "pillpipe.anyio_version"}
PRODUCER = {"s3": "dispatch", "api": "s3", "verify": "api"}
FAULTS = ("api:worker=1:after=2:die", "s3:worker=*:after=3:die")


@dataclass(frozen=True)
class Cell:
    model: str      # threaded | asyncio | anyio
    strategy: str   # pills | relay | last-out | queue-shutdown | cancel | close (anyio)
    loop: str       # threading | asyncio | uvloop | trio

    @property
    def label(self) -> str:
        return f"{self.model}/{self.loop}/{self.strategy}" if self.model != "threaded" else f"threaded/{self.strategy}"

    @property
    def needs_313(self) -> bool:
        return self.strategy == "queue-shutdown"

    def flags(self) -> list[str]:
        if self.model == "anyio":
            return ["--backend", self.loop]
        out = ["--shutdown", self.strategy]
        if self.model == "asyncio":
            out += ["--loop", self.loop]
        return out


def cells() -> list[Cell]:
    """Every supported model x strategy x loop."""
    out = [Cell("threaded", s, "threading") for s in ("pills", "relay", "last-out", "queue-shutdown")]
    for loop in ("asyncio", "uvloop"):
        out += [Cell("asyncio", s, loop) for s in ("pills", "relay", "last-out", "queue-shutdown", "cancel")]
    out += [Cell("anyio", "close", b) for b in ("asyncio", "trio")]
    return out


@dataclass(frozen=True)
class StrategyPlan:
    files: int
    queue_size: int
    workers: tuple[int, ...]      # API workers
    repeats: int
    fault_files: int
    fault_repeats: int
    fault_timeout: float
    faults: tuple[str, ...]
    only: tuple[str, ...] | None  # cell labels (None: every cell)
    interpreter_cells: tuple[str, ...]

    @classmethod
    def make(cls, quick: bool) -> "StrategyPlan":
        if quick:  # the smoke case: two cells, tiny, one fault run
            return cls(300, 100, (2,), 1, 100, 1, 60, FAULTS[:1], ("threaded/pills", "asyncio/asyncio/last-out"), ())
        return cls(20_000, 100, (2, 1_000), 3, 2_000, 2, 30, FAULTS, None,
                   ("threaded/pills", "asyncio/asyncio/pills", "asyncio/uvloop/pills", "anyio/asyncio/close",
                    "anyio/trio/close", "threaded/queue-shutdown", "asyncio/asyncio/queue-shutdown"))


def _summ(values: Sequence[float | None]) -> dict[str, float] | None:
    s = stat(v for v in values if v is not None)
    return s.to_dict() if s else None


def stream_end(timing: dict[str, Any], closes: bool = False) -> dict[str, dict[str, float | None]]:
    """Per stage: ``end_to_exit_s`` - from the stream starting to end (first ``pills_put_s``; for a
    stream that ends by closing (``closes``: anyio), the last producer's exit, since the coordinator
    only notes the close afterwards) to the stage's last consumer exiting; ``handover_s`` - from the last producer
    exiting to the last consumer exiting (comparable across every strategy)."""
    exits: dict[str, list[float]] = {}
    for w in timing.get("workers", {}).values():
        if w.get("exited_s") is not None:
            exits.setdefault(w["stage"], []).append(w["exited_s"])
    out: dict[str, dict[str, float | None]] = {}
    for stage, producer in PRODUCER.items():
        puts = (timing.get("stages", {}).get(stage) or {}).get("pills_put_s") or []
        last_in = max(exits.get(producer) or [0.0]) if exits.get(producer) else None
        last_out = max(exits.get(stage) or [0.0]) if exits.get(stage) else None
        start = puts[0] if puts else None
        if closes and last_in is not None:  # the last clone closed as its producer exited
            start = last_in
        out[stage] = {"end_to_exit_s": last_out - start if last_out is not None and start is not None else None,
                      "handover_s": last_out - last_in if last_out is not None and last_in is not None else None}
    return out


def _pick_python(cell: Cell, interpreters: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The interpreter a cell runs under: the first one given (the primary), or for queue-shutdown
    the first 3.13+ one; None when none fits (or it lacks the cell's library)."""
    choices = [i for i in interpreters if i["queue_shutdown"]] if cell.needs_313 else interpreters[:1]
    for info in choices:
        libs = info.get("libraries") or {}
        need = {"uvloop": "uvloop", "trio": "trio"}.get(cell.loop)
        if cell.model == "anyio" and not libs.get("anyio"):
            continue
        if need and not libs.get(need):
            continue
        return info
    return None


def throughput(run_probe: Callable[..., dict[str, Any]], cell: Cell, python: str, plan: StrategyPlan,
               workers: int) -> dict[str, Any]:
    flags = ["--files", plan.files, "--time-scale", 0, "--queue-size", plan.queue_size, "--api-workers", workers,
             "--quiet", *cell.flags()]
    runs = [run_probe(f"strategies {cell.label} api={workers} ({i + 1}/{plan.repeats})", cell.model, flags, python)
            for i in range(plan.repeats)]
    ms = [metrics(x) for x in runs]
    ends = [stream_end(x["report"]["timing"], closes=cell.model == "anyio") for x in runs]
    row: dict[str, Any] = {
        "api_workers": workers, "files": plan.files, "queue_size": plan.queue_size,
        "success": [x["report"]["success"] for x in runs],
        "files_per_s": _summ([x["files"] / x["elapsed_s"] for x in runs]),
        "wall_s": _summ([m["wall_s"] for m in ms]),
        "cpu_s": _summ([m["cpu_s"] for m in ms]),
        "rss_peak_mib": _summ([m["rss_peak_mib"] for m in ms]),
        "shutdown_tail_s": _summ([m["shutdown_tail_s"] for m in ms]),
    }
    for stage in PRODUCER:
        row[f"end_{stage}_s"] = _summ([e[stage]["end_to_exit_s"] for e in ends])
        row[f"handover_{stage}_s"] = _summ([e[stage]["handover_s"] for e in ends])
        row[f"pill_arrival_{stage}_s"] = _summ([m["pill_propagation_s"][stage] for m in ms])
    return row


def fault_run(cell: Cell, python: str, fault: str, plan: StrategyPlan) -> dict[str, Any]:
    """The real command line with ``--fault``; a hang is a finding (killed after the timeout)."""
    cmd = [python, "-m", MODULES[cell.model], "--files", str(plan.fault_files), "--time-scale", "0",
           "--queue-size", str(plan.queue_size), "--quiet", "--json", "--fault", fault, *cell.flags()]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=plan.fault_timeout, env=_env())
    except subprocess.TimeoutExpired:
        return {"fault": fault, "hung": True, "exit_code": None, "seconds": plan.fault_timeout, "lost": None}
    out: dict[str, Any] = {"fault": fault, "hung": False, "exit_code": done.returncode,
                           "seconds": time.perf_counter() - t}
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out.update({"lost": None, "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]})
        return out
    counts = {k: report.get(k, 0) for k in ("expected", "processed", *TERMINAL)}
    out["counts"] = counts
    out["lost"] = counts["expected"] - sum(counts[k] for k in TERMINAL)
    out["stopped_by"] = report.get("stopped_by")
    return out


# Lines of code --------------------------------------------------------------------------------
MARKERS = {  # what names a strategy's own statements in the primitives and the rules
    "relay": ("relay",),
    "last-out": ("last_out", "check_out(", "next_stage", "_inside", "_ended"),
    "queue-shutdown": ('"queue-shutdown"', "STREAM_END"),
    "cancel": ('"cancel"', "marks_done", "task_done"),
}
WHOLE = {"check_out": "last-out", "coordinator_ends": "last-out", "pills_for": "pills"}


def _lines(node: ast.AST, source: list[str]) -> set[int]:
    return {n for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
            if source[n - 1].strip() and not source[n - 1].strip().startswith("#")}


def _classify(body: list[ast.stmt], source: list[str], text: Callable[[ast.AST], str],
              into: dict[str, set[int]], default: str) -> None:
    for i, stmt in enumerate(body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(getattr(stmt, "value", None), ast.Constant):
            continue  # a docstring is not code
        head = text(stmt.test) if isinstance(stmt, (ast.If, ast.While)) else (
            "" if isinstance(stmt, (ast.For, ast.Try, ast.With, ast.AsyncWith, ast.AsyncFor)) else text(stmt))
        owner = next((s for s, marks in MARKERS.items() if any(m in head for m in marks)), None)
        if owner is not None:
            into.setdefault(owner, set()).update(_lines(stmt, source))
        elif isinstance(stmt, (ast.If, ast.While, ast.For, ast.Try, ast.With, ast.AsyncWith, ast.AsyncFor)):
            header = set(range(stmt.lineno, (stmt.body[0].lineno if stmt.body else stmt.lineno)))
            into.setdefault(default, set()).update(n for n in header if source[n - 1].strip())
            for part in ("body", "orelse", "handlers", "finalbody"):
                inner = getattr(stmt, part, None) or []
                for sub in inner:
                    if isinstance(sub, ast.ExceptHandler):
                        into.setdefault(default, set()).add(sub.lineno)
                        _classify(sub.body, source, text, into, default)
                    else:
                        _classify([sub], source, text, into, default)
        else:
            into.setdefault(default, set()).update(_lines(stmt, source))


def lines_of_code(root: Path = ROOT) -> dict[str, Any]:
    """Count each strategy's own lines.  In ``threaded/`` and ``asyncio_version/pipeline.py``: the
    functions ``_end_stream``, ``_check_out``, ``_done``, the ``STREAM_END`` constant and the
    ``except STREAM_END`` clauses of the workers.  In ``common/shutdown.py``: ``unsupported`` and the
    ``Shutdown`` class.  A statement belongs to a strategy when its own text (an ``if``'s test, or a
    simple statement) names the strategy (``MARKERS``), and then with its whole block; ``check_out``
    and ``coordinator_ends`` are last-out's whole, ``pills_for`` the pills'.  Everything else in
    those functions - the pill loop, the signatures, the bookkeeping every strategy shares - is
    counted under ``pills`` (the default strategy, and the fallback of relay, last-out and cancel).
    Blank lines, comments and docstrings are not counted; a statement spanning several lines counts
    each of its lines."""
    out: dict[str, Any] = {"files": {}, "method": " ".join((lines_of_code.__doc__ or "").split())}
    targets = {"threaded/pipeline.py": ("_end_stream", "_check_out", "_done"),
               "asyncio_version/pipeline.py": ("_end_stream", "_check_out", "_done"),
               "common/shutdown.py": ("unsupported", "Shutdown")}
    for rel, names in targets.items():
        text_ = (root / rel).read_text()
        source = text_.splitlines()
        tree = ast.parse(text_)
        seg: Callable[[ast.AST], str] = lambda n: ast.get_source_segment(text_, n) or ""  # noqa: E731
        into: dict[str, set[int]] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
                into.setdefault("pills", set()).update(range(node.lineno, node.body[0].lineno))
                _classify(node.body, source, seg, into, "pills")
            elif isinstance(node, ast.ClassDef) and node.name in names:
                into.setdefault("pills", set()).add(node.lineno)
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        owner = WHOLE.get(item.name)
                        if owner:
                            lines = _lines(item, source)
                            doc = item.body[0]
                            if isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant):
                                lines -= set(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
                            into.setdefault(owner, set()).update(lines)
                        else:
                            into.setdefault("pills", set()).update(range(item.lineno, item.body[0].lineno))
                            _classify(item.body, source, seg, into, "pills")
            elif isinstance(node, ast.Assign) and any(m in seg(node) for m in MARKERS["queue-shutdown"]) and \
                    rel != "common/shutdown.py" and node.col_offset == 0:
                into.setdefault("queue-shutdown", set()).update(_lines(node, source))
            elif isinstance(node, ast.ExceptHandler) and node.type is not None and "STREAM_END" in seg(node.type):
                into.setdefault("queue-shutdown", set()).update(_lines(node, source))
        # a line claimed by a strategy is not also the default's
        claimed = set().union(*(v for k, v in into.items() if k != "pills")) if len(into) > 1 else set()
        into["pills"] = into.get("pills", set()) - claimed
        out["files"][rel] = {k: len(v) for k, v in sorted(into.items())}
    totals: dict[str, int] = {}
    for per in out["files"].values():
        for k, v in per.items():
            totals[k] = totals.get(k, 0) + v
    out["totals"] = totals
    return out


def anyio_close_lines(root: Path = ROOT) -> int:
    """anyio's end of stream is structural: the ``with`` statements that close a send end (each
    producer's clone, and the originals the pipeline closes once the clones are handed out)."""
    import re

    return sum(1 for line in (root / "anyio_version/pipeline.py").read_text().splitlines()
               if re.match(r"\s*with \w.*_send\b", line))


# The scenario -----------------------------------------------------------------------------------
def run(run_probe: Callable[..., dict[str, Any]], quick: bool, interpreters: list[dict[str, Any]]) -> dict[str, Any]:
    """``run_probe(label, kind, flags, python)`` runs one probe; ``interpreters``: the ``--python``
    interpreters (``harness.interpreter``), the first being the primary."""
    plan = StrategyPlan.make(quick)
    out: dict[str, Any] = {"plan": {k: v for k, v in vars(plan).items()}, "cells": [], "interpreters": [],
                           "loc": lines_of_code()}
    out["loc"]["totals"]["close (anyio)"] = anyio_close_lines()
    chosen = [c for c in cells() if plan.only is None or c.label in plan.only]
    for cell in chosen:
        row: dict[str, Any] = {"label": cell.label, "model": cell.model, "strategy": cell.strategy, "loop": cell.loop}
        info = _pick_python(cell, interpreters)
        if info is None:
            row["skipped"] = ("needs Python 3.13+ (give --python PATH to a 3.13 interpreter)" if cell.needs_313
                              else f"the interpreter lacks {cell.loop if cell.loop in ('uvloop', 'trio') else 'anyio'}")
            out["cells"].append(row)
            continue
        row["python"] = info["python"]
        row["throughput"] = []
        for workers in plan.workers:
            try:
                row["throughput"].append(throughput(run_probe, cell, info["path"], plan, workers))
            except ProbeFailed as exc:
                row["throughput"].append({"api_workers": workers, "error": exc.reason})
        row["faults"] = [fault_run(cell, info["path"], fault, plan) for fault in plan.faults
                         for _ in range(plan.fault_repeats)]
        out["cells"].append(row)
    by_label = {c.label: c for c in cells()}
    for label in plan.interpreter_cells:
        cell = by_label[label]
        for info in interpreters:
            entry: dict[str, Any] = {"label": label, "python": info["python"]}
            if (cell.needs_313 and not info["queue_shutdown"]) or (cell.model == "anyio" and not info["libraries"].get("anyio")) \
                    or (cell.loop in ("uvloop", "trio") and not info["libraries"].get(cell.loop)):
                entry["skipped"] = "not available on this interpreter"
            else:
                try:
                    entry.update(throughput(run_probe, cell, info["path"], plan, plan.workers[0]))
                except ProbeFailed as exc:
                    entry["error"] = exc.reason
            out["interpreters"].append(entry)
    return out


def count(quick: bool, interpreters: int) -> int:
    """Probes the scenario runs through the runner (the fault runs are not probes)."""
    plan = StrategyPlan.make(quick)
    n = len([c for c in cells() if plan.only is None or c.label in plan.only])
    return n * len(plan.workers) * plan.repeats + len(plan.interpreter_cells) * interpreters * plan.repeats


# Summary and plot --------------------------------------------------------------------------------
def _ms(d: dict[str, Any] | None) -> str:
    return "-" if not d else f"{d['median'] * 1e3:.3f}"


def _fps(d: dict[str, Any] | None) -> str:
    return "-" if not d else f"{d['median']:,.0f} ({d['min']:,.0f}-{d['max']:,.0f})"


def fault_text(runs: list[dict[str, Any]]) -> str:
    """One cell's fault runs for one fault, in a few words."""
    if not runs:
        return "-"
    hung = sum(r["hung"] for r in runs)
    if hung:
        return f"HUNG {hung}/{len(runs)}"
    broken = [r for r in runs if r.get("error")]
    if broken:  # no report at all: every file's outcome is unreported
        codes = sorted({r["exit_code"] for r in broken})
        return (f"NO REPORT {len(broken)}/{len(runs)}: exit {','.join(map(str, codes))}, traceback "
                f"`{broken[0]['error']}`")
    codes = sorted({r["exit_code"] for r in runs})
    lost = sorted({r["lost"] for r in runs}, key=lambda x: (x is None, x))
    c = runs[0].get("counts") or {}
    what = f"exit {','.join(map(str, codes))}, lost {','.join('?' if x is None else str(x) for x in lost)}"
    if c:
        what += f"; {c['success']} ok/{c['failed']} failed/{c['cancelled']} cancelled"
    return what


def summary_md(res: dict[str, Any]) -> str:
    plan = res["plan"]
    lines = ["## Termination strategies: every model x strategy x loop", "",
             f"{plan['files']:,} files at --time-scale 0, --queue-size {plan['queue_size']}, {plan['repeats']} "
             "fresh processes per point (median, min-max). Tail: last file verified -> every worker exited. End "
             "s3/api/verify: the stream starting to end (pills put, queue shut down, or the last clone closed) -> "
             "the stage's last consumer exited. Handover api: the last S3 worker exited -> the last API worker "
             "exited (comparable across strategies). Times in ms.", "",
             "| cell | python | API workers | files/s | tail | end s3 | end api | end verify | handover api |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        if "skipped" in c:
            lines.append(f"| {c['label']} | - | - | skipped: {c['skipped']} | | | | | |")
            continue
        for t in c["throughput"]:
            if "error" in t:
                lines.append(f"| {c['label']} | {c['python']} | {t['api_workers']:,} | error: {t['error']} | | | | | |")
                continue
            lines.append(f"| {c['label']} | {c['python']} | {t['api_workers']:,} | {_fps(t['files_per_s'])} | "
                         f"{_ms(t['shutdown_tail_s'])} | {_ms(t['end_s3_s'])} | {_ms(t['end_api_s'])} | "
                         f"{_ms(t['end_verify_s'])} | {_ms(t['handover_api_s'])} |")
    faults = list(dict.fromkeys(f["fault"] for c in res["cells"] for f in c.get("faults", [])))
    if faults:
        lines += ["", f"### A worker dies mid-run ({plan['fault_files']:,} files, time-scale 0, queue "
                      f"{plan['queue_size']}; {plan['fault_repeats']} runs each via the command line, "
                      f"killed after {plan['fault_timeout']:g} s = hung; lost = expected - sum of terminal states)", "",
                  "| cell | " + " | ".join(f"`{f}`" for f in faults) + " |", "|---" * (len(faults) + 1) + "|"]
        for c in res["cells"]:
            if "faults" in c:
                lines.append(f"| {c['label']} | " + " | ".join(
                    fault_text([r for r in c["faults"] if r["fault"] == f]) for f in faults) + " |")
    loc = res["loc"]
    lines += ["", "### Lines of code per strategy", "", loc.get("method", ""), "",
              "| strategy | " + " | ".join(loc["files"]) + " | total |", "|---" * (len(loc["files"]) + 2) + "|"]
    for s in ("pills", "relay", "last-out", "queue-shutdown", "cancel"):
        lines.append(f"| {s} | " + " | ".join(str(per.get(s, 0)) for per in loc["files"].values())
                     + f" | {loc['totals'].get(s, 0)} |")
    lines.append(f"| close (anyio) | `with` statements closing a send end, in anyio_version/pipeline.py | | | "
                 f"{loc['totals'].get('close (anyio)', 0)} |")
    if res["interpreters"]:
        lines += ["", "### Interpreters side by side (default workers; files/s, tail ms)", "",
                  "| cell | python | files/s | tail | end api |", "|---|---|---|---|---|"]
        for e in res["interpreters"]:
            if "skipped" in e or "error" in e:
                lines.append(f"| {e['label']} | {e['python']} | {e.get('skipped') or e.get('error')} | | |")
            else:
                lines.append(f"| {e['label']} | {e['python']} | {_fps(e['files_per_s'])} | "
                             f"{_ms(e['shutdown_tail_s'])} | {_ms(e['end_api_s'])} |")
    lines.append("")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> Path | None:
    """Files/s and shutdown tail per cell, at each worker count: horizontal bars with min-max whiskers."""
    from . import plots  # noqa: F401 - selects the Agg backend
    import matplotlib.pyplot as plt

    rows = [c for c in res["cells"] if c.get("throughput")]
    if not rows:
        return None
    workers = sorted({t["api_workers"] for c in rows for t in c["throughput"] if "error" not in t})
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.5 + 0.42 * len(rows)), sharey=True)
    labels = [f"{c['label']} (py{c['python']})" for c in rows]
    height = 0.8 / max(1, len(workers))
    for ax, key, scale, title in ((axes[0], "files_per_s", 1.0, "files/s (higher is better)"),
                                  (axes[1], "shutdown_tail_s", 1e3, "shutdown tail, ms (log; lower is better)")):
        for j, w in enumerate(workers):
            ys, vals, lo, hi = [], [], [], []
            for i, c in enumerate(rows):
                t = next((t for t in c["throughput"] if t["api_workers"] == w and t.get(key)), None)
                if t is None:
                    continue
                ys.append(i + (j - (len(workers) - 1) / 2) * height)
                vals.append(t[key]["median"] * scale)
                lo.append((t[key]["median"] - t[key]["min"]) * scale)
                hi.append((t[key]["max"] - t[key]["median"]) * scale)
            ax.barh(ys, vals, height=height, xerr=[lo, hi], label=f"{w:,} API workers", capsize=2)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        if key == "shutdown_tail_s":
            ax.set_xscale("log")
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Termination strategies: {res['plan']['files']:,} files at zero latency, queue "
                 f"{res['plan']['queue_size']} (median of {res['plan']['repeats']}, whiskers min-max)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
