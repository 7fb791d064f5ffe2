"""``pillpipe bench``: run the registered scenarios, write results.json, summary.md and plots, and
say in the exit code whether the performance targets were met.

Every measurement runs in a fresh process (``benchmarks.probe``); each point gets its warm-up and
repeats, reported as median with min-max.  The scenarios are in ``benchmarks/scenarios/``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console

from .harness import DEFAULT_OUT, ProbeFailed, environment, recorded
from .scenario import Bench, Scenario, Target, table
from .scenarios import REGISTRY, all_scenarios

# Measured on the 2-core machine of benchmarks/results/ (benchmarks/results/README.md says how).
QUICK_TAKES = "about 10 s"
FULL_TAKES = "about 30 minutes"


def parser(prog: str) -> argparse.ArgumentParser:
    scenarios = all_scenarios()
    width = max(map(len, scenarios))
    epilog = "\n".join([
        "scenarios (in the order they run):",
        *(f"  {name:<{width}}  {s.title}" for name, s in scenarios.items()),
        "",
        "exit codes:",
        "  0  every scenario ran and every target checked was met (--quick: every scenario ran)",
        "  1  a target was missed, or a scenario failed (each named on stderr and in summary.md)",
        "  2  bad usage",
        "",
        "--quick is a smoke run: it prints the targets as information only and never fails on them,",
        "since its runs are too small to judge them; the full run checks every target.",
        f"Durations on a 2-core machine: --quick {QUICK_TAKES}, the full run {FULL_TAKES}.",
        "",
        f"The other command: {prog.rsplit(' ', 1)[0] if prog.endswith(' bench') else prog} compare --help",
    ])
    p = argparse.ArgumentParser(prog=prog, description="Run the benchmark scenarios, every measurement in a fresh "
                                "process; write results.json, summary.md and the plots to --out.",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run of every scenario but memory, {QUICK_TAKES}; targets as information only")
    p.add_argument("--out", type=Path, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--only", nargs="+", choices=REGISTRY, metavar="SCENARIO",
                   help=f"run only these scenarios ({', '.join(REGISTRY)})")
    p.add_argument("--python", action="append", metavar="PATH", dest="pythons",
                   help="run the probes under this interpreter (default: this one). Repeatable: the first runs "
                        "every scenario; the strategies scenario also runs its headline cells under each one, "
                        "and queue-shutdown under the first 3.13+. Each one's version is recorded.")
    p.add_argument("--render", metavar="DIR", type=Path,
                   help="measure nothing: rewrite DIR/summary.md and DIR's plots from DIR/results.json, "
                        "and check its targets (the exit code as above)")
    return p


def main(argv: Sequence[str], prog: str = "pillpipe bench") -> int:
    p = parser(prog)
    ns = p.parse_args(list(argv))
    scenarios = all_scenarios()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if ns.render:
        given = [flag for flag, value in (("--quick", ns.quick), ("--only", ns.only), ("--python", ns.pythons),
                                          ("--out", ns.out)) if value]
        if given:
            p.error(f"--render measures nothing and writes into DIR: drop {', '.join(given)}")
        try:
            earlier = json.loads((ns.render / "results.json").read_text())
        except (OSError, ValueError) as exc:
            p.error(f"--render: cannot read {ns.render / 'results.json'}: {exc}")
        return report(earlier, ns.render, scenarios, err)
    out: Path = ns.out or DEFAULT_OUT
    chosen = [name for name, s in scenarios.items()
              if (ns.only is None or name in ns.only) and s.plan(ns.quick) is not None]
    pythons: list[str | None] = list(ns.pythons or [None])
    try:
        env = environment(pythons)
    except ProbeFailed as exc:
        p.error(f"--python: {exc.reason}")
    bench = Bench(sys.stdout.isatty(), env["interpreters"], ns.quick)
    planned = {name: scenarios[name].count(scenarios[name].plan(ns.quick), bench) for name in chosen}
    bench.progress.update(bench.task, total=sum(planned.values()))
    command = " ".join([prog, *(["--quick"] if ns.quick else []), *(["--only", *ns.only] if ns.only else []),
                        *(f"--python <python {i['python']}>" for i in env["interpreters"] if ns.pythons)])
    res: dict[str, Any] = {"environment": recorded(env), "quick": ns.quick, "scenarios": chosen, "command": command,
                           "steps": {}, "errors": {}}
    started = time.perf_counter()
    done = 0
    with bench.progress if not bench.progress.disable else nullcontext():
        for name in chosen:
            before = bench.steps
            try:
                res[name] = scenarios[name].run(bench, scenarios[name].plan(ns.quick))
            except ProbeFailed as exc:
                res["errors"][name] = str(exc)
            res["steps"][name] = {"planned": planned[name], "ran": bench.steps - before}
            done += planned[name]
            bench.progress.update(bench.task, completed=done)  # a scenario that stopped early
    res["elapsed_s"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    return report(res, out, scenarios, err, wrote=[out / "results.json"])


def measured(res: dict[str, Any], scenarios: dict[str, Scenario]) -> list[str]:
    """The scenarios ``res`` holds results of that this code knows (a results.json may be older)."""
    return [name for name in res["scenarios"] if name in res and name in scenarios]


def targets(res: dict[str, Any], scenarios: dict[str, Scenario]) -> list[Target]:
    return [t for name in measured(res, scenarios) for t in scenarios[name].targets(res[name])]


def report(res: dict[str, Any], out: Path, scenarios: dict[str, Scenario], err: Console,
           wrote: Sequence[Path] = ()) -> int:
    """Write summary.md and the plots from ``res``, print the targets, and return the exit code."""
    found = targets(res, scenarios)
    res["targets"] = [t.to_dict() for t in found]
    if wrote:  # a fresh run: results.json gets its targets too
        (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "summary.md").write_text(summary_md(res, found, scenarios))
    written = [*wrote, out / "summary.md"]
    for name in measured(res, scenarios):
        written += scenarios[name].plots(res[name], out)
    err.print("wrote " + ", ".join(str(w) for w in written))
    judged = not res.get("quick")
    err.print("targets:" if judged else "targets (information only: --quick is too small to judge them):")
    for t in found:
        mark = "[dim]info[/dim]" if t.met is None or not judged else "[green]met[/green]" if t.met else "[red]MISSED[/red]"
        err.print(f"  {mark} {t.target}: {t.measured}")
    for name, reason in (res.get("errors") or {}).items():
        err.print(f"  [red]FAILED[/red] scenario {name}: {reason}")
    missed = judged and any(t.met is False for t in found)
    return 1 if missed or res.get("errors") else 0


def summary_md(res: dict[str, Any], found: list[Target], scenarios: dict[str, Scenario]) -> str:
    env = res["environment"]
    command = res.get("command") or "python -m benchmarks" + (" --quick" if res.get("quick") else "") \
        + f" --only {' '.join(res['scenarios'])}"
    lines = ["# Benchmark results", "",
             f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory_mib']} MiB RAM, {env['os']}; "
             f"Python {env['python']} ({env['implementation']}); rich {env['libraries'].get('rich')}, "
             f"matplotlib {env['libraries'].get('matplotlib')}. Command: `{command}` ({res['elapsed_s']:.0f} s). "
             "Medians over repeats, (min-max) in brackets; every run in a fresh process.", ""]
    if found:
        if res.get("quick"):
            lines += ["## Performance targets (information only: --quick is a smoke run, too small to judge them)", "",
                      *table(["target", "measured"], [[t.target, t.measured] for t in found])]
        else:
            lines += ["## Performance targets", "",
                      *table(["target", "measured", "met"], [[t.target, t.measured, _met(t.met)] for t in found])]
        lines.append("")
    for name, reason in (res.get("errors") or {}).items():
        lines += [f"## {name}: FAILED", "", reason, ""]
    for name in res["scenarios"]:
        if name in measured(res, scenarios):
            lines.append(scenarios[name].summary(res[name]))
        elif name in res:
            lines += [f"## {name}", "", "(a scenario this version of the harness does not know: see results.json)", ""]
    return "\n".join(lines)


def _met(met: bool | None) -> str:
    return "reported" if met is None else "yes" if met else "NO"
