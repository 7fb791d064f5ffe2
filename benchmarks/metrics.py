"""What one probe run measured, read from the probe's JSON and its report's ``timing`` section.

The report's ``timing`` (``common/timing.py``, ``Timeline.to_dict``) is read through these keys
only: ``wall_s``, ``last_verified_s``, ``shutdown_tail_s``, ``stages[stage].pills_put_s`` /
``pills_s``, ``workers[name].stage`` / ``started_s`` / ``pill_s`` / ``exited_s`` and ``spans``
(``[worker, stage, file id, start, end]``, with ``--trace``).
"""
from __future__ import annotations

from typing import Any

from pillpipe.common.model import Stage
from pillpipe.common.simulate import Simulation

from .harness import percentile

STAGES = [s.value for s in Stage]  # pipeline order: dispatch, s3, api, verify
CONSUMERS = STAGES[1:]  # the stages with an input stream
PRODUCER = dict(zip(CONSUMERS, STAGES))  # consumer stage -> the stage feeding its input


def file_latencies(timing: dict[str, Any]) -> list[float]:
    """Per file: from its S3 copy starting to its verification, from the spans."""
    start: dict[int, float] = {}
    done: dict[int, float] = {}
    first, last = CONSUMERS[0], CONSUMERS[-1]
    for _worker, stage, file_id, s, e in timing.get("spans") or []:
        if stage == first:
            start[file_id] = s
        elif stage == last:
            done[file_id] = e
    return [done[f] - start[f] for f in done if f in start]


def pill_propagation(timing: dict[str, Any]) -> dict[str, float | None]:
    """Per stage: from the coordinator starting to put the pills to the last worker taking its pill."""
    out: dict[str, float | None] = {}
    for stage in CONSUMERS:
        s = timing.get("stages", {}).get(stage) or {}
        puts, got = s.get("pills_put_s") or [], s.get("pills_s") or []
        out[stage] = max(got) - puts[0] if puts and got else None
    return out


def startup(timing: dict[str, Any]) -> float | None:
    """Seconds from the run's start until every worker was running."""
    starts = [w.get("started_s") for w in timing.get("workers", {}).values()]
    known = [s for s in starts if s is not None]
    return max(known) if known else None


def stop(timing: dict[str, Any]) -> float | None:
    """From the coordinator's first pill to the last worker's exit (an idle run's stop time)."""
    puts = (timing["stages"].get(CONSUMERS[0]) or {}).get("pills_put_s") or []
    exits = [w["exited_s"] for w in timing["workers"].values() if w.get("exited_s") is not None]
    return max(exits) - puts[0] if puts and exits else None


def stream_end(timing: dict[str, Any], closes: bool = False) -> dict[str, dict[str, float | None]]:
    """Per stage: ``end_to_exit_s`` - from the stream starting to end (first ``pills_put_s``; for a
    stream that ends by closing (``closes``: anyio), the last producer's exit, since the coordinator
    only notes the close afterwards) to the stage's last consumer exiting; ``handover_s`` - from the
    last producer exiting to the last consumer exiting (comparable across every strategy)."""
    exits: dict[str, list[float]] = {}
    for w in timing.get("workers", {}).values():
        if w.get("exited_s") is not None:
            exits.setdefault(w["stage"], []).append(w["exited_s"])
    out: dict[str, dict[str, float | None]] = {}
    for stage, producer in PRODUCER.items():
        puts = (timing.get("stages", {}).get(stage) or {}).get("pills_put_s") or []
        last_in = max(exits[producer]) if exits.get(producer) else None
        last_out = max(exits[stage]) if exits.get(stage) else None
        start = puts[0] if puts else None
        if closes and last_in is not None:  # the last clone closed as its producer exited
            start = last_in
        out[stage] = {"end_to_exit_s": last_out - start if last_out is not None and start is not None else None,
                      "handover_s": last_out - last_in if last_out is not None and last_in is not None else None}
    return out


def metrics(result: dict[str, Any], ideal: Simulation | None = None,
            calibrated: Simulation | None = None) -> dict[str, Any]:
    """Everything the compare table, its JSON and the scenarios show about one probe run."""
    report = result["report"]
    timing = report["timing"]
    wall = timing["wall_s"]
    made = timing.get("last_verified_s")
    lat = file_latencies(timing)
    out = {
        "processed": report["processed"], "expected": report["expected"], "success": report["success"],
        "wall_s": wall, "makespan_s": made,
        "files_per_s": report["processed"] / wall if wall else None,
        "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
        "latency_max_s": max(lat) if lat else None,
        "rss_peak_mib": result["rss_peak_kib"] / 1024,
        "rss_extra_mib": (result["rss_peak_kib"] - result["rss_before_kib"]) / 1024,
        "cpu_s": result["cpu_user_s"] + result["cpu_sys_s"], "cpu_user_s": result["cpu_user_s"],
        "cpu_sys_s": result["cpu_sys_s"],
        "os_threads": result["os_threads"], "tasks": result["tasks_created"],
        "voluntary_switches": result.get("voluntary_switches"),
        "shutdown_tail_s": timing.get("shutdown_tail_s"),
        "pill_propagation_s": pill_propagation(timing),
        "startup_s": startup(timing),
    }
    if ideal is not None:
        out["ideal_makespan_s"] = ideal.makespan
        out["efficiency"] = ideal.makespan / made if made and ideal.makespan else None
    if calibrated is not None:
        out["calibrated_makespan_s"] = calibrated.makespan
        out["efficiency_calibrated"] = calibrated.makespan / made if made and calibrated.makespan else None
    return out
