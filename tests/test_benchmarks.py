"""The benchmark harness: compare's report-equality gate, its outputs, and ``--quick``'s outputs."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from pillpipe.benchmarks import bare, compare
from pillpipe.benchmarks.harness import percentile, probe

from .conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow


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
    done = subprocess.run([sys.executable, "-m", "pillpipe", "compare", "--files", "12", "--time-scale", "0.002",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for label in ("efficiency vs ideal", "shutdown tail", "pill propagation: api", "OS threads", "peak RSS", "p95"):
        assert label in done.stdout
    for variant in ("threaded", "asyncio"):
        assert (tmp_path / f"timeline-{variant}.png").read_bytes()[:8] == PNG
    trace = json.loads((tmp_path / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 2 * 12 * 3  # per variant: one per file per stage (S3, API, verify)
    assert sum(e["name"] == "pill" for e in trace["traceEvents"]) == 2 * (3 + 2 + 1)
    result = json.loads((tmp_path / "compare.json").read_text())
    for variant in ("threaded", "asyncio"):
        row = result["variants"][variant]
        assert row["processed"] == 12 and 0 < row["efficiency"] <= 1.0001


def test_pillpipe_compare_rejects_bad_flags():
    done = subprocess.run([sys.executable, "-m", "pillpipe", "compare", "--files", "-1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--files" in done.stderr


def test_quick_writes_json_markdown_and_plots(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # no progress bar when stdout is not a terminal
    res = json.loads((tmp_path / "results.json").read_text())
    assert {"cpu", "cores", "python", "libraries"} <= set(res["environment"])
    assert set(res["scenarios"]) == {"overhead", "latency", "scaling", "shutdown", "strategies"}
    assert res["overhead"]["runs"]["asyncio"]["files_per_s"]["median"] > 0
    assert res["targets"] and all("met" in t for t in res["targets"])
    summary = (tmp_path / "summary.md").read_text()
    assert "## Performance targets" in summary and "## Worker scaling" in summary
    for name in ("files-per-s-vs-workers", "memory-vs-workers", "shutdown-vs-workers", "efficiency-vs-latency"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("chain", [bare.run_threads, bare.run_asyncio])
def test_bare_chain_passes_every_item(chain):
    assert chain(2000, 3, 2, 10) > 0  # it asserts internally that the verifier counted every item


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
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "strategies", "--python",
                           str(tmp_path / "no-such-python"), "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--python" in done.stderr and "Traceback" not in done.stderr


def test_variants_imports_only_what_is_asked_for():
    code = ("import sys; from pillpipe.variants import variants; r = variants('threaded', 'asyncio');"
            "print(sorted(r), 'anyio' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["['asyncio',", "'threaded']", "False"], done.stderr


def test_compare_passes_python_through_and_records_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pillpipe", "compare", "--files", "6", "--time-scale", "0",
                           "--python", sys.executable, "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "compare.json").read_text())
    assert [i["python"] for i in result["environment"]["interpreters"]] == [platform.python_version()]
    assert set(result["variants"]) == {"threaded", "asyncio"}


def test_strategies_smoke_case_produces_parseable_results(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "strategies",
                           "--python", sys.executable, "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["environment"]["interpreters"][0]["python"] == platform.python_version()
    cells = res["strategies"]["cells"]
    assert cells and all(c["throughput"][0]["files_per_s"]["median"] > 0 for c in cells)
    for c in cells:
        for run in c["faults"]:
            assert run["hung"] is False and run["lost"] == 0 and run["exit_code"] == 1
    loc = res["strategies"]["loc"]["totals"]
    assert all(loc[s] > 0 for s in ("pills", "relay", "last-out", "queue-shutdown", "cancel", "close (anyio)"))
    assert "## Termination strategies" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "strategies.png").read_bytes()[:8] == PNG


def test_stream_end_measures_from_the_close_for_anyio_and_from_the_pills_otherwise():
    from pillpipe.benchmarks.strategies import cells, stream_end

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
