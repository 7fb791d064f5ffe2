"""Real I/O (``--io real``): the pipeline on real sockets, where a sleep cannot show the cost.

Every point is a fresh probe process that starts its own embedded services (our S3 subset and
metadata API, each in its own process on 127.0.0.1), runs, and stops them; the services' start-up
is outside the measurement.  Times count from the moment the clients were open (``ready_s``: their
import and making are a one-off per run), CPU is the pipeline process's own from then on (the
servers run in other processes).  Sections:

- latency-bound (time scale 0.1): files/s and efficiency vs the ideal (``common/simulate.py``'s
  zero-overhead replay of the same latencies), at the default workers and 10/100/1000 per stage;
- pool sizing: API workers 10..1000 with each client's pool equal to the workers, or botocore's
  default 10 (S3 latency 0: the API stage is the one waiting);
- the CPU ceiling (time scale 0: no latency at all): client CPU per file per model and per client
  library, files/s, and files per CPU-second (what one core can carry);
- TLS on vs off (a CA made for the run), at the CPU ceiling;
- the same job against SeaweedFS, a real S3 server we did not write (its own process, our API).
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pillpipe.common.config import Config
from pillpipe.common.simulate import simulate

from .. import plots, units
from ..harness import ProbeFailed, med, summ
from ..scenario import Bench, Scenario, Target, table

# model -> (variant, its flags, what it runs on)
MODELS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "threaded": ("threaded", (), "boto3 + urllib3"),
    "threaded-httpx": ("threaded", ("--http-client", "httpx"), "boto3 + httpx (sync)"),
    "asyncio": ("asyncio", (), "aiobotocore + aiohttp"),
    "asyncio-httpx": ("asyncio", ("--http-client", "httpx"), "aiobotocore on httpx + httpx"),
    "anyio": ("anyio", (), "aiobotocore on httpx + httpx, asyncio backend"),
    "anyio-trio": ("anyio", ("--backend", "trio"), "aiobotocore on httpx + httpx, trio backend"),
}
LATENCY_SCALE = 0.1
DEFAULT_WORKERS = (3, 2)  # the tutorial's S3 and API workers
BOTOCORE_POOL = 10  # botocore's max_pool_connections when nobody says


@dataclass(frozen=True, kw_only=True)
class Plan:
    repeats: int
    latency_models: tuple[str, ...]
    latency_workers: tuple[int, ...]  # workers per stage, after the default (3 S3, 2 API) point
    pool_models: tuple[str, ...]
    pool_workers: tuple[int, ...]  # API workers
    cpu_models: tuple[str, ...]
    cpu_files: int
    tls_models: tuple[str, ...]
    seaweed_models: tuple[str, ...]


def latency_files(workers: int) -> int:
    return max(40, 2 * workers)


def pool_files(workers: int) -> int:
    return max(40, workers)


CPU_WORKERS = 8  # per stage at the CPU ceiling: enough calls in flight to keep one process busy


class Real(Scenario):
    name = "real"
    title = "real I/O: latency-bound efficiency, pool sizing, client CPU per library, TLS, SeaweedFS"
    full = Plan(repeats=3, latency_models=("threaded", "asyncio", "anyio"), latency_workers=(10, 100, 1000),
                pool_models=("threaded", "asyncio", "anyio"), pool_workers=(10, 100, 1000),
                cpu_models=tuple(MODELS), cpu_files=400, tls_models=("threaded", "asyncio", "anyio"),
                seaweed_models=("threaded", "asyncio", "anyio"))
    quick = None  # it needs the real and seaweedfs extras, and starts services for every point

    def count(self, plan: Plan, bench: Bench) -> int:
        per = plan.repeats
        return per * (len(plan.latency_models) * (1 + len(plan.latency_workers)) * 2
                      + len(plan.pool_models) * len(plan.pool_workers) * 2
                      + len(plan.cpu_models) + len(plan.tls_models) + len(plan.seaweed_models))

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        out: dict[str, Any] = {"repeats": plan.repeats, "models": {m: MODELS[m][2] for m in MODELS},
                               "load_average": {"start": os.getloadavg()}, "latency": [], "pool": [], "cpu": [],
                               "tls": [], "seaweedfs": []}
        for workers in (None, *plan.latency_workers):
            s3, api = DEFAULT_WORKERS if workers is None else (workers, workers)
            files = 40 if workers is None else latency_files(workers)
            config = Config(files=files, s3_workers=s3, api_workers=api, time_scale=LATENCY_SCALE, quiet=True)
            ideal = simulate(config).makespan
            flags = ["--files", files, "--s3-workers", s3, "--api-workers", api, "--time-scale", LATENCY_SCALE]
            for io in ("real", "sim"):  # and the same flags simulated: what a sleep says about the same point
                for model, point in _points(bench, f"{io} latency {s3}/{api}", plan.latency_models, flags,
                                            plan.repeats, ideal, io).items():
                    out["latency"].append({"model": model, "io": io, "s3_workers": s3, "api_workers": api,
                                           "files": files, "ideal_makespan_s": ideal, "ideal_files_per_s": files / ideal,
                                           **point})
        for workers in plan.pool_workers:
            files = pool_files(workers)
            config = Config(files=files, api_workers=workers, s3_latency=(0, 0), time_scale=LATENCY_SCALE,
                            quiet=True)
            ideal = simulate(config).makespan
            for pool in (workers + 1, BOTOCORE_POOL):
                flags = ["--files", files, "--api-workers", workers, "--s3-latency", 0, 0, "--time-scale",
                         LATENCY_SCALE, "--pool", pool]
                for model, point in _points(bench, f"real pool {workers} pool {pool}", plan.pool_models, flags,
                                            plan.repeats, ideal).items():
                    out["pool"].append({"model": model, "api_workers": workers, "pool": pool, "files": files,
                                        "sized": pool != BOTOCORE_POOL, "ideal_makespan_s": ideal, **point})
        cpu_flags = ["--files", plan.cpu_files, "--s3-workers", CPU_WORKERS, "--api-workers", CPU_WORKERS,
                     "--time-scale", 0]
        for section, models, flags in (("cpu", plan.cpu_models, cpu_flags),
                                       ("tls", plan.tls_models, [*cpu_flags, "--tls"])):
            for model, point in _points(bench, f"real {section}", models, flags, plan.repeats).items():
                out[section].append({"model": model, "files": plan.cpu_files, **point})
        if plan.seaweed_models:
            out["seaweedfs"] = self._seaweed(bench, plan, cpu_flags)
        out["load_average"]["end"] = os.getloadavg()
        return out

    def _seaweed(self, bench: Bench, plan: Plan, flags: list[Any]) -> list[dict[str, Any]]:
        """The CPU-ceiling job with SeaweedFS as the S3 server (our API beside it): it ignores hints,
        and at time scale 0 there is nothing to hint."""
        from pillpipe.services.embedded import EmbeddedServices
        from pillpipe.services.seaweed import SeaweedFS

        with ExitStack() as stack:
            try:
                seaweed = stack.enter_context(SeaweedFS(objects=plan.cpu_files))
                api = stack.enter_context(EmbeddedServices())
            except Exception as exc:  # noqa: BLE001 - the section says why it has no rows
                raise ProbeFailed("seaweedfs", f"could not start: {exc}") from None
            assert seaweed.url is not None and api.endpoints is not None
            saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            os.environ.update(AWS_ACCESS_KEY_ID=seaweed.access_key, AWS_SECRET_ACCESS_KEY=seaweed.secret_key)
            stack.callback(_restore, saved)
            points = _points(bench, "real seaweedfs", plan.seaweed_models,
                             [*flags, "--s3-endpoint", seaweed.url, "--api-url", api.endpoints.api_url], plan.repeats)
        return [{"model": model, "files": plan.cpu_files, **point} for model, point in points.items()]

    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = []
        for section in ("latency", "pool", "cpu", "tls", "seaweedfs"):
            groups: dict[tuple[Any, ...], set[str]] = {}
            for p in result[section]:  # the same flags but the model, the library or the pool: one report
                key = (p.get("s3_workers"), p.get("api_workers"), p["files"])
                groups.setdefault(key, set()).update(p["digests"])
            if not groups:
                continue
            out.append(Target(f"{section}: every model, library and pool{', real or simulated,' if section == 'latency' else ''}"
                              " gives the same report at each point",
                              f"{sum(len(d) == 1 for d in groups.values())}/{len(groups)} points agree",
                              all(len(d) == 1 for d in groups.values())))
        default = [p for p in result["latency"]
                   if (p["s3_workers"], p["api_workers"]) == DEFAULT_WORKERS and p.get("io", "real") == "real"]
        for p in default:
            e = p["efficiency"]
            out.append(Target(f"latency-bound, default workers: {p['model']} efficiency >= 0.9",
                              units.ratio(e, False), e is not None and med(e) >= 0.9))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        load = result.get("load_average") or {}
        seen = " to ".join("/".join(f"{x:.1f}" for x in load[k]) for k in ("start", "end") if k in load)
        lines = ["## Real I/O: real sockets, our S3 subset and API (and SeaweedFS), every point a fresh process", "",
                 "Times count from the clients being open; CPU is the pipeline process's own from then on (the "
                 "servers run in other processes); the models take turns, run by run. "
                 + "; ".join(f"**{m}**: {what}" for m, what in result["models"].items()) + "."
                 + (f" Load average (1/5/15 min) {seen}." if seen else ""), ""]
        sim = {(p["model"], p["s3_workers"], p["api_workers"]): p for p in result["latency"] if p.get("io") == "sim"}
        real = [p for p in result["latency"] if p.get("io", "real") == "real"]
        lines += [f"### Latency-bound (time scale {LATENCY_SCALE:g}: S3 20-50 ms, API 100-200 ms per call), real "
                  "vs the same flags simulated", "",
                  *table(["model", "S3/API workers", "files", "ideal files/s", "simulated: files/s", "efficiency",
                          "real: files/s", "efficiency", "CPU ms/file (sim / real)", "API call p50 / p99 ms",
                          "connections s3/api"],
                         [[p["model"], f"{p['s3_workers']}/{p['api_workers']}", p["files"],
                           units.rate(p["ideal_files_per_s"]), units.rate(q.get("files_per_s")),
                           units.ratio(q.get("efficiency")), units.rate(p["files_per_s"]), units.ratio(p["efficiency"]),
                           f"{_ms(q.get('cpu_per_file_ms'), False)} / {_ms(p['cpu_per_file_ms'])}",
                           f"{_ms(p['api_p50_ms'], False)} / {_ms(p['api_p99_ms'], False)}", _conns(p)]
                          for p in real for q in [sim.get((p["model"], p["s3_workers"], p["api_workers"]), {})]]), ""]
        lines += ["### Pool sizing (API workers, S3 latency 0; pool = the workers + 1, or botocore's default 10)", "",
                  *table(["model", "API workers", "pool", "files", "files/s", "efficiency", "API call p50 / p99 ms",
                          "connections s3/api"],
                         [[p["model"], p["api_workers"], p["pool"], p["files"], units.rate(p["files_per_s"]),
                           units.ratio(p["efficiency"]),
                           f"{_ms(p['api_p50_ms'], False)} / {_ms(p['api_p99_ms'], False)}", _conns(p)]
                          for p in result["pool"]]), ""]
        tls = {p["model"]: p for p in result["tls"]}
        seaweed = {p["model"]: p for p in result["seaweedfs"]}
        lines += [f"### The CPU ceiling (time scale 0, {CPU_WORKERS} workers per stage; 4 calls per file: copy, "
                  "post, head, get)", "",
                  *table(["model", "libraries", "files/s", "CPU ms/file", "files per CPU-second",
                          "with TLS: files/s", "with TLS: CPU ms/file", "SeaweedFS: files/s", "SeaweedFS: CPU ms/file"],
                         [[p["model"], result["models"][p["model"]], units.rate(p["files_per_s"]),
                           _ms(p["cpu_per_file_ms"]), units.rate(p["files_per_cpu_s"]),
                           units.rate(tls[p["model"]]["files_per_s"]) if p["model"] in tls else "-",
                           _ms(tls[p["model"]]["cpu_per_file_ms"]) if p["model"] in tls else "-",
                           units.rate(seaweed[p["model"]]["files_per_s"]) if p["model"] in seaweed else "-",
                           _ms(seaweed[p["model"]]["cpu_per_file_ms"]) if p["model"] in seaweed else "-"]
                          for p in result["cpu"]]), ""]
        return "\n".join(lines)

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        latency: dict[str, list[tuple[float, Any]]] = {}
        for p in result["latency"]:
            label = f"{p['model']}{', simulated' if p.get('io') == 'sim' else ''}"
            latency.setdefault(label, []).append((p["api_workers"], p["files_per_s"]))
        first = result["latency"][0] if result["latency"] else {}
        latency["ideal"] = [(p["api_workers"], p["ideal_files_per_s"]) for p in result["latency"]
                            if (p["model"], p.get("io")) == (first.get("model"), first.get("io"))]
        pool: dict[str, list[tuple[float, Any]]] = {}
        for p in result["pool"]:
            label = f"{p['model']}, pool {'= workers' if p['sized'] else BOTOCORE_POOL}"
            pool.setdefault(label, []).append((p["api_workers"], p["files_per_s"]))
        written = [
            plots.line_plot(latency, "API workers (S3 workers the same; 2 = the default 3 S3 / 2 API)", "files/s",
                            f"Real I/O, latency-bound (time scale {LATENCY_SCALE:g})",
                            out / "real-files-per-s-vs-workers.png", logy=True),
            plots.line_plot(pool, "API workers", "files/s", "Real I/O: pool = workers vs botocore's default 10",
                            out / "real-pool-sizing.png", logy=True),
        ]
        if result["cpu"]:
            written.append(_bars(result, out / "real-cpu-per-file.png"))
        return written


def _points(bench: Bench, label: str, models: Sequence[str], flags: Sequence[Any], repeats: int,
            ideal: float | None = None, io: str = "real") -> dict[str, dict[str, Any]]:
    """Each model with ``flags`` and ``io``, ``repeats`` fresh probes each, summarised.  The models
    take turns (one run of each, then again): on a shared machine a burst of someone else's load
    then falls on every model, not on one."""
    runs: dict[str, list[dict[str, Any]]] = {model: [] for model in models}
    for i in range(repeats):
        for model in models:
            variant, extra, _ = MODELS[model]
            if io != "real" and "--http-client" in extra:  # a flag of real I/O only
                i = extra.index("--http-client")
                extra = extra[:i] + extra[i + 2:]
            runs[model].append(bench.probe(f"{label} {model} ({i + 1}/{repeats})", variant,
                                           [*flags, *extra, "--io", io, "--quiet"], timeout=1800))
    return {model: _summary([_measure(x, ideal) for x in found]) for model, found in runs.items()}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def s(key: str) -> dict[str, float] | None:
        return summ(r[key] for r in rows)

    return {"files_per_s": s("files_per_s"), "efficiency": s("efficiency"), "makespan_s": s("makespan_s"),
            "cpu_per_file_ms": s("cpu_per_file_ms"), "files_per_cpu_s": s("files_per_cpu_s"),
            "s3_p50_ms": s("s3_p50_ms"), "s3_p99_ms": s("s3_p99_ms"), "api_p50_ms": s("api_p50_ms"),
            "api_p99_ms": s("api_p99_ms"), "connections_s3": s("connections_s3"),
            "connections_api": s("connections_api"), "success": [r["success"] for r in rows],
            "digests": sorted({r["digest"] for r in rows}), "libraries": rows[0]["libraries"]}


def _measure(result: dict[str, Any], ideal: float | None) -> dict[str, Any]:
    """One probe's numbers; a simulated run has no ``io`` timing (no clients: ready at once)."""
    report = result["report"]
    timing = report["timing"]
    io = timing.get("io") or {}
    ready = io.get("ready_s") or 0.0
    makespan = (timing["last_verified_s"] or timing["wall_s"]) - ready
    wall = timing["wall_s"] - ready
    calls, connections = io.get("calls") or {}, io.get("connections") or {}
    cpu = io["cpu_s"] if io else result["cpu_user_s"] + result["cpu_sys_s"]
    return {"files_per_s": report["processed"] / wall if wall > 0 else None, "makespan_s": makespan,
            "efficiency": ideal / makespan if ideal and makespan > 0 else None,
            "cpu_per_file_ms": cpu * 1000 / report["processed"] if report["processed"] else None,
            "files_per_cpu_s": report["processed"] / cpu if cpu else None,
            "s3_p50_ms": (calls.get("s3") or {}).get("p50_ms"), "s3_p99_ms": (calls.get("s3") or {}).get("p99_ms"),
            "api_p50_ms": (calls.get("api") or {}).get("p50_ms"),
            "api_p99_ms": (calls.get("api") or {}).get("p99_ms"),
            "connections_s3": connections.get("s3"), "connections_api": connections.get("api"),
            "success": report["success"], "digest": report["digest"], "libraries": io.get("libraries")}


def _ms(value: Any, spread: bool = True) -> str:
    """Milliseconds already (the io timing stores them so)."""
    return units.us(value, spread)  # two decimals, the same spread rule


def _conns(p: dict[str, Any]) -> str:
    return f"{units.count(p['connections_s3'], False)}/{units.count(p['connections_api'], False)}"


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _bars(result: dict[str, Any], path: Path) -> Path:
    """Client CPU per file, per model and library: plain, with TLS, against SeaweedFS."""
    import matplotlib.pyplot as plt  # on the Agg backend: benchmarks.plots chose it when imported
    models = [p["model"] for p in result["cpu"]]
    sections = [(key, label) for key, label in (("cpu", "our S3, http"), ("tls", "our S3, https"),
                                                ("seaweedfs", "SeaweedFS, http"))
                if any(p["model"] in models for p in result[key])]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(models)))
    height = 0.8 / len(sections)
    for j, (key, label) in enumerate(sections):
        found = {p["model"]: p["cpu_per_file_ms"] for p in result[key]}
        ys = [i + (j - (len(sections) - 1) / 2) * height for i, m in enumerate(models) if found.get(m)]
        values = [found[m]["median"] for m in models if found.get(m)]
        ax.barh(ys, values, height=height, label=label)
    ax.set_yticks(range(len(models)), [f"{m}\n{result['models'][m]}" for m in models], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("client CPU per file, ms (copy + post + head + get; lower is better)")
    ax.set_title("Real I/O at the CPU ceiling (time scale 0): where one process's CPU goes", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SCENARIO = Real()
