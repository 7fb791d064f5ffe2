"""The benchmark harness: compare's report-equality gate and outputs, ``bench``'s outputs, exit
codes and usage, the scenario registry, and the committed results staying readable."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest

from pillpipe.benchmarks import bare, compare, units
from pillpipe.benchmarks.harness import percentile, probe
from pillpipe.variants import CONCURRENT

from .conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
BENCH = [sys.executable, "-m", "pillpipe.benchmarks"]
RESULTS = ROOT / "benchmarks" / "results"
pytestmark = pytest.mark.slow


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _details(seed: int, variant: str = "threaded") -> dict:
    return probe(variant, ["--files", "30", "--time-scale", "0", "--quiet", "--details", "--seed", str(seed)])["report"]


def test_gate_passes_identical_runs_and_fails_loudly_on_a_different_run():
    same = {"threaded": _details(0, "threaded"), "asyncio": _details(0, "asyncio")}
    compare.check_identical(same)  # timing and variant differ, nothing else
    other = {"threaded": same["threaded"], "asyncio": _details(1, "asyncio")}
    with pytest.raises(compare.ReportMismatch, match=r"first differing file id 1 \(file_100.pdf\).*dest_key"):
        compare.check_identical(other)


def test_gate_without_details_names_the_differing_field():
    a = {"variant": "threaded", "success": 3, "digest": "aa", "timing": {"wall_s": 1}}
    b = {"variant": "asyncio", "success": 3, "digest": "bb", "timing": {"wall_s": 2}}
    with pytest.raises(compare.ReportMismatch, match="'digest'.*--details"):
        compare.check_identical({"threaded": a, "asyncio": b})
    compare.check_identical({"threaded": a, "asyncio": {**a, "variant": "asyncio", "timing": {}}})


def test_compare_exits_1_when_the_reports_differ(monkeypatch, tmp_path, capsys):
    real = compare.probe

    def skewed(kind, flags=(), timeout=600, **kw):  # a deliberately different run: another seed for asyncio
        return real(kind, [*flags, "--seed", "5"] if kind == "asyncio" else flags, timeout, **kw)

    monkeypatch.setattr(compare, "probe", skewed)
    assert compare.main(["--files", "10", "--time-scale", "0", "--out", str(tmp_path)]) == 1
    assert "first differing file id 1" in capsys.readouterr().err
    assert not (tmp_path / "compare.json").exists()  # no table or pictures for a meaningless comparison


def test_compare_end_to_end_writes_table_timelines_and_trace(tmp_path):
    done = _run([sys.executable, "-m", "pillpipe", "compare", "--files", "12", "--time-scale", "0.002",
                 "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    for label in ("efficiency vs ideal", "shutdown tail", "pill propagation: api", "OS threads", "peak RSS", "p95"):
        assert label in done.stdout
    for variant in CONCURRENT:  # one column per model
        assert variant in done.stdout.splitlines()[2]
    assert (tmp_path / "timelines.png").read_bytes()[:8] == PNG  # every model in one picture
    assert not list(tmp_path.glob("timeline-*.png"))
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert sum(e["name"] == "process_name" for e in trace["traceEvents"]) == len(CONCURRENT)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(CONCURRENT) * 12 * 3  # per variant: one per file per stage (S3, API, verify)
    assert sum(e["name"] == "pill" for e in trace["traceEvents"]) == len(CONCURRENT) * (3 + 2 + 1)
    result = json.loads((tmp_path / "compare.json").read_text())
    assert set(result["variants"]) == set(CONCURRENT)
    for variant in CONCURRENT:
        row = result["variants"][variant]
        assert row["processed"] == 12 and 0 < row["efficiency"] <= 1.0001


def test_timelines_share_one_time_axis_with_a_legend(tmp_path):
    import matplotlib

    from pillpipe.benchmarks import plots

    timings = {v: probe(v, ["--files", "4", "--time-scale", "0.002", "--quiet", "--trace"])["report"]["timing"]
               for v in CONCURRENT}
    captured = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kw):
        captured["fig"] = fig
        return real_savefig(fig, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", keep)
        plots.timelines(timings, "4 files", tmp_path / "t.png", files=4)
    fig = captured["fig"]
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == list(CONCURRENT)
    assert len({ax.get_xlim() for ax in panels}) == 1  # one shared time axis
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert [f"file {i}" for i in range(1, 5)] == [t for t in labels if t.startswith("file ")]
    assert any("end of stream" in t for t in labels) and "worker exited" in labels
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG


def test_compare_says_which_model_rejects_a_run_flag(tmp_path):
    done = _run([sys.executable, "-m", "pillpipe", "compare", "--files", "3", "--time-scale", "0", "--shutdown",
                 "relay", "--out", str(tmp_path)])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "anyio: --shutdown relay applies" in done.stderr and "--variants" in done.stderr
    assert "running" not in done.stderr  # refused before any model ran
    done = _run([sys.executable, "-m", "pillpipe", "compare", "--variants", "threaded", "asyncio", "--files", "3",
                 "--time-scale", "0", "--shutdown", "relay", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert set(json.loads((tmp_path / "compare.json").read_text())["variants"]) == {"threaded", "asyncio"}


def test_compare_passes_only_run_flags_to_the_models():
    argv = ["--files", "3", "--variants", "threaded", "anyio", "--out", "x", "--timeout=5", "--json", "--seed", "2",
            "--python", "py", "--variants=asyncio"]
    assert compare._strip(argv) == ["--files", "3", "--seed", "2"]


def test_pillpipe_compare_rejects_bad_flags():
    done = subprocess.run([sys.executable, "-m", "pillpipe", "compare", "--files", "-1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--files" in done.stderr


def test_quick_writes_json_markdown_and_plots(tmp_path):
    done = _run([*BENCH, "--quick", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr  # --quick: targets are information only
    assert done.stdout == ""  # no progress bar when stdout is not a terminal
    assert "information only" in done.stderr and "MISSED" not in done.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert {"cpu", "cores", "python", "libraries"} <= set(res["environment"])
    assert set(res["scenarios"]) == {"overhead", "latency", "scaling", "shutdown", "strategies"}
    cells = res["overhead"]["cells"]  # per queue size: each bare chain, each model, threaded --batch
    assert set(cells) == {"sequential", "bare-threaded q100", "bare-asyncio q100", "bare-anyio-nowait q100",
                          "threaded q100", "threaded --batch 16 q100", "asyncio q100", "anyio q100"}
    assert cells["asyncio q100"]["files_per_s"]["median"] > 0 and cells["threaded q100"]["switches_per_file"]
    assert cells["anyio q100"]["over_asyncio"] > 0
    assert res["targets"] and all("met" in t for t in res["targets"])
    assert not res["errors"]
    for name, steps in res["steps"].items():  # each scenario's count() agrees with what its run() did
        assert steps["planned"] == steps["ran"] > 0, name
    summary = (tmp_path / "summary.md").read_text()
    assert "## Performance targets (information only" in summary and "## Worker scaling" in summary
    for name in ("files-per-s-vs-workers", "memory-vs-workers", "shutdown-vs-workers", "efficiency-vs-latency"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG


def _results(tmp_path, source, **changes):
    """A copy of a committed results.json in its own directory, with ``changes`` applied."""
    res = json.loads(source.read_text())
    res.update(changes)
    (tmp_path / "results.json").write_text(json.dumps(res))
    return tmp_path, res


def test_bench_exits_1_when_a_checked_target_is_missed(tmp_path):
    out, res = _results(tmp_path, RESULTS / "overhead-rerun" / "results.json")
    assert res["overhead"]["runs"]["threaded"]["overhead_ratio"] > 1.25  # committed: a missed target
    done = _run([*BENCH, "--render", str(out)])
    assert done.returncode == 1, done.stderr
    assert "MISSED overhead threaded" in done.stderr
    assert "| overhead threaded: cost/file <= 1.25 x (bare chain + sequential) | 37.98 us vs 16.01 us: 2.37x | NO |" \
        in (out / "summary.md").read_text()


def test_bench_exits_0_when_every_target_is_met(tmp_path):
    out, res = _results(tmp_path, RESULTS / "overhead-rerun" / "results.json")
    runs = res["overhead"]["runs"]
    for kind in runs:
        runs[kind]["us_per_file"] = {"median": 1.0, "min": 1.0, "max": 1.0, "n": 1}
    for v in ("threaded", "asyncio"):
        runs[v].update(limit_us_per_file=2.0, overhead_ratio=0.5)
    (out / "results.json").write_text(json.dumps(res))
    done = _run([*BENCH, "--render", str(out)])
    assert done.returncode == 0, done.stderr
    assert "MISSED" not in done.stderr and done.stderr.count(" met ") == 3


def test_quick_targets_are_information_only(tmp_path):
    out, _ = _results(tmp_path, RESULTS / "overhead-rerun" / "results.json", quick=True)
    done = _run([*BENCH, "--render", str(out)])
    assert done.returncode == 0, done.stderr
    assert "information only" in done.stderr and "MISSED" not in done.stderr


def test_render_takes_no_measuring_flags(tmp_path):
    out, _ = _results(tmp_path, RESULTS / "overhead-rerun" / "results.json")
    done = _run([*BENCH, "--render", str(out), "--quick", "--only", "overhead"], timeout=60)
    assert done.returncode == 2 and "drop --quick, --only" in done.stderr
    assert not (out / "summary.md").exists()


def test_a_failed_scenario_fails_the_run(tmp_path):
    out, _ = _results(tmp_path, RESULTS / "overhead-rerun" / "results.json", quick=True,
                      errors={"latency": "threaded: exit 1: boom"}, scenarios=["overhead", "latency"])
    done = _run([*BENCH, "--render", str(out)])
    assert done.returncode == 1 and "FAILED scenario latency" in done.stderr
    assert "## latency: FAILED" in (out / "summary.md").read_text()


@pytest.mark.parametrize("name", [".", "overhead-rerun", "strategies", "overhead-queues", "batch", "peers", "real",
                                  "redis"])
def test_committed_results_stay_readable(tmp_path, name):
    """The results committed in benchmarks/results/ render with today's code (summary and plots)."""
    shutil.copy(RESULTS / name / "results.json", tmp_path / "results.json")
    done = _run([*BENCH, "--render", str(tmp_path)])
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    summary = (tmp_path / "summary.md").read_text()
    from pillpipe.benchmarks.scenarios import scenario

    for scenario_name in res["scenarios"]:
        assert scenario(scenario_name).summary(res[scenario_name]).splitlines()[0] in summary


@pytest.mark.parametrize("cmd, usage", [
    (["pillpipe", "bench"], "pillpipe bench"),
    (["pillpipe", "compare"], "pillpipe compare"),
    (["pillpipe.benchmarks"], "python -m pillpipe.benchmarks"),
    (["pillpipe.benchmarks", "bench"], "python -m pillpipe.benchmarks bench"),
    (["pillpipe.benchmarks", "compare"], "python -m pillpipe.benchmarks compare"),
])
def test_every_subcommand_usage_names_itself(cmd, usage):
    done = _run([sys.executable, "-m", *cmd, "--help"], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {usage} ["), done.stdout[:200]
    if "compare" not in usage:  # bench's help states its exit codes and how long it takes
        assert "exit codes:" in done.stdout and "--quick about" in done.stdout


def test_registry_one_module_per_scenario():
    from pillpipe.benchmarks.scenario import Bench, Scenario
    from pillpipe.benchmarks.scenarios import REGISTRY, all_scenarios

    bench = Bench(False, [{"path": sys.executable, "python": platform.python_version(), "queue_shutdown": False,
                           "libraries": {}}], quick=False)
    for name, s in all_scenarios().items():
        assert isinstance(s, Scenario) and s.name == name and type(s).__module__.endswith(f".scenarios.{name}")
        assert s.count(s.full, bench) > 0
        assert s.quick is None or s.count(s.quick, bench) < s.count(s.full, bench)
    assert list(all_scenarios()) == list(REGISTRY)


def test_strategies_count_only_the_cells_an_interpreter_can_run():
    from pillpipe.benchmarks.scenario import Bench
    from pillpipe.benchmarks.scenarios import scenario

    s, plan = scenario("strategies"), scenario("strategies").full
    libs = {"anyio": "4", "trio": "0.22", "uvloop": "0.19"}
    py311 = {"path": "python3.11", "python": "3.11.7", "queue_shutdown": False, "libraries": libs}
    py313 = {**py311, "path": "python3.13", "python": "3.13.0", "queue_shutdown": True}

    def count(*interpreters):
        return s.count(plan, Bench(False, list(interpreters), quick=False))

    per_cell = len(plan.workers) * plan.repeats + len(plan.faults) * plan.fault_repeats
    needs_313 = sum(c.needs_313 for c in plan.cells())
    side_313 = sum(label.endswith("queue-shutdown") for label in plan.interpreter_cells)
    assert needs_313 and side_313
    assert count(py313) - count(py311) == needs_313 * per_cell + side_313 * plan.repeats
    # a second interpreter adds its side-by-side runs, and lets queue-shutdown run under it
    assert count(py311, py313) == count(py311) + needs_313 * per_cell + len(plan.interpreter_cells) * plan.repeats


def test_units_show_the_spread_only_for_several_runs():
    three = {"median": 0.002, "min": 0.001, "max": 0.004, "n": 3}
    assert units.ms(three) == "2.000 (1.000-4.000)" and units.ms(three, spread=False) == "2.000"
    assert units.ms({**three, "n": 1}) == "2.000" and units.ms(None) == "-" and units.ms(0.5) == "500.000"
    assert units.rate(92234.4) == "92,234" and units.rate(23.04) == "23" and units.factor(1.137) == "1.14x"


def test_single_runs_get_no_whiskers():
    from pillpipe.benchmarks.plots import _spread

    one = {"median": 2.0, "min": 2.0, "max": 2.0, "n": 1}
    assert _spread([one, 3.0], 1.0) == ([2.0, 3.0], None, None)
    meds, lo, hi = _spread([{"median": 2.0, "min": 1.0, "max": 4.0, "n": 3}, one], 10.0)
    assert meds == [20.0, 20.0] and lo == [10.0, 0.0] and hi == [20.0, 0.0]


@pytest.mark.parametrize("kind", bare.CHAINS)
@pytest.mark.parametrize("queue_size", [0, 10])
def test_bare_chain_passes_every_item(kind, queue_size):
    assert bare.chain(kind)(2000, 3, 2, queue_size) > 0  # it asserts internally that the verifier counted every item


def test_bare_anyio_chain_runs_on_trio_too():
    assert bare.chain("bare-anyio-nowait", backend="trio")(500, 3, 2, 5) > 0


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([5], 99) == 5


# --python and the strategies scenario -------------------------------------------------------------
def test_probe_runs_under_the_interpreter_given_and_records_its_version():
    from pillpipe.benchmarks.harness import environment, interpreter

    info = interpreter(sys.executable)
    assert info["python"] == platform.python_version() and info["path"] == sys.executable
    assert info["queue_shutdown"] == (sys.version_info >= (3, 13))
    env = environment([sys.executable])
    assert env["python"] == platform.python_version() and env["interpreters"][0]["executable"]
    result = probe("threaded", ["--files", "5", "--time-scale", "0", "--quiet"], python=sys.executable)
    assert result["report"]["success"] == 5


def test_a_bad_python_path_is_a_probe_failure_not_a_traceback(tmp_path):
    from pillpipe.benchmarks.harness import ProbeFailed, interpreter

    with pytest.raises(ProbeFailed):
        interpreter(str(tmp_path / "no-such-python"))
    done = _run([*BENCH, "--quick", "--only", "strategies", "--python", str(tmp_path / "no-such-python"),
                 "--out", str(tmp_path)], timeout=60)
    assert done.returncode == 2 and "--python" in done.stderr and "Traceback" not in done.stderr


def test_variants_imports_only_what_is_asked_for():
    code = ("import sys; from pillpipe.variants import variants; r = variants('threaded', 'asyncio');"
            "print(sorted(r), 'anyio' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["['asyncio',", "'threaded']", "False"], done.stderr


def test_compare_passes_python_through_and_records_it(tmp_path):
    done = _run([sys.executable, "-m", "pillpipe", "compare", "--files", "6", "--time-scale", "0",
                 "--python", sys.executable, "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "compare.json").read_text())
    assert [i["python"] for i in result["environment"]["interpreters"]] == [platform.python_version()]
    assert set(result["variants"]) == set(CONCURRENT)


def test_strategies_smoke_case_produces_parseable_results(tmp_path):
    done = _run([*BENCH, "--quick", "--only", "strategies", "--python", sys.executable, "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["environment"]["interpreters"][0]["python"] == platform.python_version()
    cells = res["strategies"]["cells"]
    assert cells and all(c["throughput"][0]["files_per_s"]["median"] > 0 for c in cells)
    for c in cells:
        for run in c["faults"]:
            assert run["hung"] is False and run["lost"] == 0 and run["exit_code"] == 1
    assert "## Termination strategies" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "strategies.png").read_bytes()[:8] == PNG


def test_stream_end_measures_from_the_close_for_anyio_and_from_the_pills_otherwise():
    from pillpipe.benchmarks.metrics import stream_end
    from pillpipe.benchmarks.scenarios.strategies import cells

    timing = {"stages": {"s3": {"pills_put_s": [1.0]}, "api": {"pills_put_s": [2.5]}, "verify": {"pills_put_s": [3.0]}},
              "workers": {"D": {"stage": "dispatch", "exited_s": 0.9}, "S": {"stage": "s3", "exited_s": 2.0},
                          "A": {"stage": "api", "exited_s": 2.8}, "V": {"stage": "verify", "exited_s": 3.1}}}
    ends = stream_end(timing)
    assert ends["s3"]["end_to_exit_s"] == pytest.approx(1.0)  # pills at 1.0 -> last S3 exit at 2.0
    assert ends["api"]["end_to_exit_s"] == pytest.approx(0.3)  # pills at 2.5 -> last API exit at 2.8
    assert ends["api"]["handover_s"] == pytest.approx(0.8)  # last S3 exit at 2.0 -> last API exit at 2.8
    closed = stream_end(timing, closes=True)  # anyio: the stream ended when the last S3 worker exited
    assert closed["api"]["end_to_exit_s"] == pytest.approx(0.8) and closed["s3"]["end_to_exit_s"] == pytest.approx(1.1)
    labels = {c.label for c in cells()}
    assert len(labels) == 16 and "asyncio/uvloop/cancel" in labels and "anyio/trio/close" in labels
    assert not any(c.model == "threaded" and c.strategy == "cancel" for c in cells())


# The peers: pyper and pypeln on the same pipeline and work ------------------------------------
@pytest.mark.parametrize("name", ["pyper-thread", "pyper-async", "pypeln-thread", "pypeln-task"])
@pytest.mark.parametrize("time_scale, files", [(0, 300), (0.001, 40)])
def test_every_peer_does_the_projects_work(name, time_scale, files):
    """A peer's stages call the shared stage logic and ledger: its report is the sequential one,
    digest and per-file outcomes included (failures and retries too).  In a fresh process, as the
    benchmark runs it (pyper forks a multiprocessing manager: never from a threaded test process)."""
    flags = ["--files", files, "--time-scale", time_scale, "--queue-size", 10, "--fail-rate", 0.2, "--retries", 1,
             "--seed", 7, "--quiet", "--details"]
    theirs, ours = probe(name, flags)["report"], probe("sequential", flags)["report"]
    assert theirs["variant"] == name
    assert {k: v for k, v in theirs.items() if k not in ("variant", "timing")} == \
           {k: v for k, v in ours.items() if k not in ("variant", "timing")}
    assert theirs["success"] + theirs["failed"] == files and theirs["failed"] > 0


def test_a_missing_peer_library_is_one_line_and_exit_2():
    code = ("import sys; sys.modules['pyper'] = None\n"
            "from pillpipe.benchmarks.probe import main\n"
            "raise SystemExit(main(['pyper-thread', '--files', '3', '--time-scale', '0']))")
    done = _run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()] and "pip install 'pillpipe[peers]'" in done.stderr


def test_peers_scenario_measures_every_kind_and_writes_one_table_and_one_plot(tmp_path):
    from pillpipe.benchmarks.peers import PEERS
    from pillpipe.benchmarks.scenario import Bench
    from pillpipe.benchmarks.scenarios import scenario
    from pillpipe.benchmarks.scenarios.peers import BARE, PROJECT, Plan

    s = scenario("peers")
    plan = Plan(files=500, latency_files=20, time_scale=0.002, queue_size=10, rounds=1, warmup=0)
    bench = Bench(False, [{"path": sys.executable, "python": platform.python_version(), "queue_shutdown": False,
                           "libraries": {}}], quick=False)
    res = s.run(bench, plan)
    assert bench.steps == s.count(plan, bench) == 2 * len(PROJECT) + 2 * len(PEERS) + len(BARE)
    assert set(res["zero"]["rows"]) == {*BARE, *PROJECT, *PEERS} and set(res["latency"]["rows"]) == {*PROJECT, *PEERS}
    for row in (*res["zero"]["rows"].values(), *res["latency"]["rows"].values()):
        assert "error" not in row and row["files_per_s"]["median"] > 0 and row["cpu_us_per_file"]["median"] > 0
    assert all(r["same_report"] for r in res["latency"]["rows"].values())
    assert all(r["makespan_over_ideal"]["median"] > 0.9 for r in res["latency"]["rows"].values())
    targets = s.targets(res)
    assert len(targets) == 2 and all(t.met for t in targets)
    summary = s.summary(res).splitlines()
    assert summary[0].startswith("## Peers") and sum(line.startswith("| ") for line in summary) == 1 + 10
    assert [p.name for p in s.plots(res, tmp_path)] == ["peers.png"] and (tmp_path / "peers.png").read_bytes()[:8] == PNG


def test_batch_scenario_measures_every_model_and_batch_size():
    from pillpipe.benchmarks.scenario import Bench
    from pillpipe.benchmarks.scenarios import scenario
    from pillpipe.benchmarks.scenarios.batch import MODELS, Plan

    s = scenario("batch")
    plan = Plan(batches=(1, 8), files=400, latency_files=30, time_scale=0.002, queue_size=10, rounds=1)
    bench = Bench(False, [{"path": sys.executable, "python": platform.python_version(), "queue_shutdown": False,
                           "libraries": {}}], quick=False)
    res = s.run(bench, plan)
    assert bench.steps == s.count(plan, bench) == 2 * len(MODELS) * 2
    for key, files in (("zero", 400), ("latency", 30)):
        rows = res[key]["rows"]
        assert [(r["model"], r["batch"]) for r in rows] == [(m, b) for m in MODELS for b in (1, 8)]
        assert all(r["success"] == files and r["latency_p95_s"]["median"] > 0 for r in rows)
    assert all(0 < r["efficiency"]["median"] <= 1.0001 for r in res["latency"]["rows"])
    assert all(t.met for t in s.targets(res))
    assert sum(line.startswith("| ") for line in s.summary(res).splitlines()) == 1 + len(MODELS) * 2
