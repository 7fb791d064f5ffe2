"""The command line as a user meets it: the tutorial's run, JSON, exit codes, bad usage."""
from __future__ import annotations

import json
import re

import pytest

from .conftest import MODULES, cli

TUTORIAL_LINES = [
    "🔖 Dispatcher: dispatching file file_100.pdf",
    "    Uploader S3-Worker-N copy file file_100.pdf S3 -> S3",
    "💾 Uploader S3-Worker-N stored file [file_100.pdf] in S3 bucket=[dest-bucket-proj] and key=[2025/01/15/",
    "🔝 API Uploader: file [file_100.pdf] uploaded ! API_UPLOADED",
    "✓ Verified: file_100.pdf - API_UPLOADED",
    "☑️ Uploader S3-Worker-1 is DONE. Finishing work ... Finished",
    "☑️ Uploader S3-Worker-2 is DONE. Finishing work ... Finished",
    "☑️ Uploader S3-Worker-3 is DONE. Finishing work ... Finished",
    "☑️  - 🔝 API Uploader API-Worker-1 got DONE signal. Finishing ... Finished",
    "☑️  - 🔝 API Uploader API-Worker-2 got DONE signal. Finishing ... Finished",
]
REPORT_BLOCK = "\n=== VERIFICATION REPORT ===\nExpected: 8\nProcessed: 8\nSuccess: 8\nFailed: 0\n\n=== Pipeline complete ===\n"


def _check_tutorial_output(out: str, one_worker_each: bool = False) -> None:
    for expected in TUTORIAL_LINES:
        if one_worker_each and ("Worker-2" in expected or "Worker-3" in expected):
            continue
        # which S3 worker wins the first file is the scheduler's choice, in every model
        pattern = re.compile(re.escape(expected).replace("Worker\\-N", "Worker\\-[123]"))
        assert any(pattern.match(line) for line in out.splitlines()), expected
    for i in range(100, 108):
        assert f"✓ Verified: file_{i}.pdf - API_UPLOADED" in out
    assert out.endswith(REPORT_BLOCK)


@pytest.mark.slow
def test_no_flags_reproduce_the_tutorials_run(variant):
    """The real default: 8 files, 3 S3 workers, 2 API workers, real latencies (a few seconds)."""
    done = cli(MODULES[variant])
    assert done.returncode == 0, done.stderr
    _check_tutorial_output(done.stdout)
    assert done.stderr == ""


def test_pillpipe_runs_every_variant_the_same_way():
    for name in ("threaded", "asyncio", "sequential"):
        done = cli("pillpipe", "run", name, "--time-scale", "0.005")
        assert done.returncode == 0, done.stderr
        _check_tutorial_output(done.stdout, one_worker_each=name == "sequential")


def test_json_report_on_stdout_events_on_stderr(variant):
    done = cli(MODULES[variant], "--files", "20", "--time-scale", "0", "--json", "--details", "--fail-rate", "0.3")
    report = json.loads(done.stdout)
    assert report["variant"] == variant
    assert {"expected", "processed", "success", "failed", "digest", "timing", "files"} <= set(report)
    assert len(report["files"]) == 20 == report["expected"]
    assert "Dispatcher: dispatching" in done.stderr
    assert done.returncode == (0 if report["success"] == 20 else 1)


def test_json_reports_of_both_variants_are_equal_but_for_variant_and_timing():
    args = ("--files", "60", "--time-scale", "0", "--json", "--quiet", "--seed", "9", "--fail-rate", "0.2",
            "--retries", "1", "--queue-size", "3", "--s3-workers", "5", "--api-workers", "4", "--details")
    reports = [json.loads(cli(MODULES[v], *args).stdout) for v in MODULES]
    for report in reports:
        del report["variant"], report["timing"]
    assert reports[0] == reports[1]


def test_failed_files_exit_1(variant):
    done = cli(MODULES[variant], "--time-scale", "0", "--fail-rate", "1", "--quiet")
    assert done.returncode == 1
    assert "Failed: 8" in done.stdout and "Success: 0" in done.stdout


def test_quiet_prints_only_the_report(variant):
    done = cli(MODULES[variant], "--time-scale", "0", "--quiet")
    assert done.returncode == 0
    assert done.stdout == REPORT_BLOCK


BAD_USAGE = [
    ["--s3-workers", "0"],
    ["--api-workers", "-1"],
    ["--files", "-3"],
    ["--fail-rate", "1.5"],
    ["--fail-rate", "nan"],
    ["--s3-latency", "0.5", "0.2"],
    ["--api-latency", "x", "2"],
    ["--files", "ten"],
    ["--queue-size", "-1"],
    ["--time-scale", "-1"],
    ["--retries", "-1"],
    ["--bogus"],
    ["--fault", "s3:id=x:raise"],
    ["--input", "/nonexistent/files.jsonl"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=[" ".join(a) for a in BAD_USAGE])
def test_bad_usage_is_one_line_and_exit_2(variant, args):
    done = cli(MODULES[variant], *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_pillpipe_usage_errors():
    assert cli("pillpipe", "run", "nope").returncode == 2
    assert cli("pillpipe").returncode == 2
    assert cli("pillpipe", "--help").returncode == 0


def test_help_explains_the_flags(variant):
    done = cli(MODULES[variant], "--help")
    assert done.returncode == 0
    for flag in ("--files", "--s3-workers", "--api-workers", "--s3-latency", "--api-latency", "--time-scale",
                 "--queue-size", "--seed", "--fail-rate", "--retries", "--json", "--details", "--quiet", "--fault",
                 "exit codes"):
        assert flag in done.stdout
