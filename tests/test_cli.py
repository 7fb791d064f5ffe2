"""The command line as a user meets it: the tutorial's run, JSON, exit codes, bad usage, help and
version at every level, flags that do not apply, misspellings, the extras."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest

from pillpipe.cli import COMMANDS, EXTRAS, missing
from pillpipe.common.config import MODEL_FLAGS, Config, applicable
from pillpipe.variants import VARIANTS

from .conftest import MODULES, ROOT, cli


@pytest.fixture(autouse=True)
def _emoji_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read the tutorial's emoji lines: a NO_COLOR in the caller's environment would
    (rightly) turn them into plain markers."""
    monkeypatch.delenv("NO_COLOR", raising=False)

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
WALL = re.compile(r"^Wall time: \d+\.\d\d s\n", re.MULTILINE)  # the one line the report adds to the tutorial's block


def timeless(out: str) -> str:
    """``out`` without the report's wall-time line (it differs from run to run)."""
    assert len(WALL.findall(out)) == 1, out[-500:]
    return WALL.sub("", out)


def _check_tutorial_output(out: str, one_worker_each: bool = False) -> None:
    for expected in TUTORIAL_LINES:
        if one_worker_each and ("Worker-2" in expected or "Worker-3" in expected):
            continue
        # which S3 worker wins the first file is the scheduler's choice, in every model
        pattern = re.compile(re.escape(expected).replace("Worker\\-N", "Worker\\-[123]"))
        assert any(pattern.match(line) for line in out.splitlines()), expected
    for i in range(100, 108):
        assert f"✓ Verified: file_{i}.pdf - API_UPLOADED" in out
    assert timeless(out).endswith(REPORT_BLOCK)


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
    assert timeless(done.stdout) == REPORT_BLOCK


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


# Help and version at every level --------------------------------------------------------------
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    done = cli("pillpipe", flag)
    assert done.returncode == 0 and done.stdout == f"pillpipe {PYPROJECT['version']}\n" and done.stderr == ""


def test_top_level_help_names_every_command_and_every_extra_by_its_real_name():
    for args in (["--help"], ["-h"], ["help"]):
        done = cli("pillpipe", *args)
        assert done.returncode == 0 and done.stdout.startswith("usage: pillpipe [-h] [-V] COMMAND")
        for name, command in COMMANDS.items():
            assert f"  {name} {command.args}" in done.stdout
        extras = set(PYPROJECT["optional-dependencies"])
        assert set(EXTRAS) == extras  # each extra pyproject.toml declares is explained, none is invented
        for extra in extras:
            assert re.search(rf"^  {extra} +\S", done.stdout, re.M), extra
        assert "(extra: bench)" in done.stdout and "benchmarks extra" not in done.stdout


@pytest.mark.parametrize("args", [["run", "--help"], ["run", "-h"], ["help", "run"]])
def test_run_help_lists_the_variants_and_every_flag(args):
    done = cli("pillpipe", *args)
    assert done.returncode == 0 and done.stdout.startswith("usage: pillpipe run VARIANT")
    for name in VARIANTS:
        assert re.search(rf"^  {name} +The ", done.stdout, re.M), name
    for flag in ("--files", "--shutdown", "--loop", "--backend", "--details", "exit codes"):
        assert flag in done.stdout


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variants_help_names_itself_and_shows_only_its_flags(name):
    done = cli("pillpipe", "run", name, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: pillpipe run {name} ")
    for flag, variants in MODEL_FLAGS.items():
        assert (f"--{flag} " in done.stdout) is (name in variants), flag
    assert "--files" in done.stdout and "--details" in done.stdout


@pytest.mark.parametrize("command", ["compare", "bench"])
def test_the_benchmark_commands_usage_names_them(command):
    done = cli("pillpipe", command, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: pillpipe {command} "), done.stdout[:200]


# One rule for flags that do not apply -------------------------------------------------------
NON_DEFAULT = {"shutdown": "relay", "loop": "uvloop", "backend": "trio", "io": "real", "broker": "redis://127.0.0.1:1/0"}
MISAPPLIED = [(name, flag) for name in VARIANTS for flag in MODEL_FLAGS if name not in MODEL_FLAGS[flag]]


@pytest.mark.parametrize("name, flag", MISAPPLIED, ids=[f"{n} --{f}" for n, f in MISAPPLIED])
def test_a_flag_that_does_not_apply_is_rejected_in_one_line(name, flag):
    done = cli("pillpipe", "run", name, f"--{flag}", NON_DEFAULT[flag], "--files", "1", "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pillpipe run {name}: error: --{flag} {NON_DEFAULT[flag]} "
                                                   f"applies to the {' and '.join(MODEL_FLAGS[flag])} variant")


def test_backend_trio_on_threaded_is_rejected_on_every_entry_point():
    for command in (("threaded",), ("pillpipe", "run", "threaded")):
        done = cli(*command, "--backend", "trio", "--files", "1", "--time-scale", "0")
        assert done.returncode == 2 and "--backend trio applies to the anyio variant only" in done.stderr


def test_applicable_is_the_one_rule():
    for name in VARIANTS:
        assert applicable(Config(), name) is None  # the defaults run everywhere
        for flag, value in NON_DEFAULT.items():
            problem = applicable(Config(**{flag: value}), name)
            assert (problem is None) is (name in MODEL_FLAGS[flag]), (name, flag, problem)
    assert applicable(Config(backend="trio"), "anyio-trio") is None
    assert "asyncio only" in applicable(Config(shutdown="cancel"), "threaded")


# Misspellings get a suggestion ----------------------------------------------------------------
MISSPELLED = [
    (["rn"], "pillpipe: error: unknown command 'rn' (did you mean 'run'?)"),
    (["--verison"], "pillpipe: error: unknown option '--verison' (did you mean '--version'?)"),
    (["run", "thraeded"], "pillpipe run: error: unknown variant 'thraeded' (did you mean 'threaded'?)"),
    (["run", "threaded", "--fiels", "3"], "pillpipe run threaded: error: unrecognized arguments: --fiels (did you "
                                          "mean '--files'?) 3"),
    (["run", "asyncio", "--s3-wokers=2"], "unrecognized arguments: --s3-wokers=2 (did you mean '--s3-workers'?)"),
    (["run", "asyncio", "--shutdown", "relya"], "'relya' is not one of pills, relay, last-out, queue-shutdown, "
                                                "cancel (did you mean 'relay'?)"),
    (["run", "anyio", "--backend", "tiro"], "(did you mean 'trio'?)"),
    (["run", "--files", "3"], "pillpipe run: error: the variant comes first: pillpipe run "
                              "{threaded,asyncio,anyio,sequential} --files 3"),
    ([], "pillpipe: error: choose a command: run, compare, bench"),
    (["run"], "pillpipe run: error: choose a variant: threaded, asyncio, anyio, sequential"),
]


@pytest.mark.parametrize("args, expected", MISSPELLED, ids=[" ".join(a) or "nothing" for a, _ in MISSPELLED])
def test_usage_errors_are_one_line_with_a_suggestion(args, expected):
    done = cli("pillpipe", *args)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr


def test_a_word_far_from_any_command_gets_no_suggestion():
    done = cli("pillpipe", "frobnicate")
    assert done.returncode == 2 and "did you mean" not in done.stderr and "choose one of run" in done.stderr


# --details with the text report ---------------------------------------------------------------
def test_details_prints_a_per_file_table_after_the_text_report(variant):
    done = cli(MODULES[variant], "--files", "3", "--time-scale", "0", "--quiet", "--details",
               "--fault", "s3:id=2:raise")
    assert done.returncode == 1, done.stderr
    head, *rows = timeless(done.stdout).split("Failed: 1\n\n", 1)[1].split("\n\n=== Pipeline complete ===")[0].splitlines()
    assert head.split() == ["id", "name", "outcome", "s3", "tries", "api", "tries", "error"]
    assert [row.split()[:5] for row in rows] == [["1", "file_100.pdf", "success", "1", "1"],
                                                 ["2", "file_101.pdf", "failed", "1", "0"],
                                                 ["3", "file_102.pdf", "success", "1", "1"]]
    assert rows[1].split()[5] == "s3:"  # the stage it failed at, then the error


def test_details_table_lists_rejected_records_too(tmp_path):
    source = tmp_path / "records.jsonl"
    source.write_text('{"id": 1, "name": "a.pdf"}\n{"name": "no-id.pdf"}\n{"id": 1, "name": "again.pdf"}\n')
    done = cli("pillpipe", "run", "sequential", "--input", str(source), "--time-scale", "0", "--quiet", "--details")
    rows = done.stdout.split("\n\n")[-2].splitlines()[1:]
    assert [row.split()[:3] for row in rows] == [["1", "a.pdf", "success"], ["1", "again.pdf", "duplicate"],
                                                 ["-", "no-id.pdf", "invalid"]]


# Commands that need an extra ------------------------------------------------------------------
HIDE_RICH = ("import runpy, sys; sys.modules['rich'] = None; sys.argv[0] = 'pillpipe'; "
             "runpy.run_module('pillpipe', run_name='__main__')")


@pytest.mark.parametrize("command", ["compare", "bench"])
def test_a_command_without_its_extra_says_what_to_install(command):
    """As after ``pip install .`` alone: rich cannot be imported."""
    done = subprocess.run([sys.executable, "-c", HIDE_RICH, command, "--files", "3"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"pillpipe {command}: error: needs the bench extra (missing: rich): "
                                        "pip install 'pillpipe[bench]'"]


def test_missing_reads_the_extras_requirements():
    requires = ['anyio>=4', 'rich>=13; extra == "bench"', 'surely-not-installed-pillpipe-dep>=1; extra == "bench"',
                'trio>=0.22; extra == "trio"']
    assert missing("bench", requires) == ["surely-not-installed-pillpipe-dep"]
    assert missing("trio", requires) == []
    assert missing("bench") == []  # the test extra installs everything bench needs
