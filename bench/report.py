"""``docs/BENCHMARKS.md`` from one run's results: tables, targets, machine, versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .servers import ROOT

STEP_COUNTS = ("10", "100", "1000")


def _med(s: dict[str, Any] | None) -> float | None:
    return None if not s else s.get("median")


def _fmt(s: dict[str, Any] | None, scale: float, digits: int = 1) -> str:
    """``median (min-max)`` scaled, or ``-``."""
    if not s or s.get("median") is None:
        return "-"
    return (f"{s['median'] * scale:.{digits}f} "
            f"({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})")


def _ratio_row(name: str, value: float | None, base: float | None, limit: float,
               kind: str, how: str) -> dict[str, Any]:
    """One target: ``value / base`` compared with ``limit`` (``le``: ≤, ``ge``: ≥)."""
    if value is None or base is None or base == 0:
        return {"name": name, "ratio": None, "limit": limit, "kind": kind,
                "verdict": "PENDING", "how": how}
    ratio = value / base
    ok = ratio <= limit if kind == "le" else ratio >= limit
    return {"name": name, "ratio": ratio, "limit": limit, "kind": kind,
            "verdict": "PASS" if ok else "FAIL", "how": how}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark targets, as ratios of figures measured in this run."""
    c = results["contenders"]
    out = []

    def ps(key: str, n: str) -> float | None:
        return _med((c.get(key, {}).get("per_step") or {}).get(n))

    def pr(key: str, n: str) -> float | None:
        return _med(((c.get(key, {}).get("paired") or {}).get(n) or {}).get("ratio"))

    for n in STEP_COUNTS:
        out.append(_ratio_row(f"Redis store per step ≤ 1.25 x raw HSET ({n}-step job, paired)",
                              pr("redis", n), 1.0, 1.25, "le",
                              "per-step time inside the task body, interleaved on one worker"))
    def pt(ref: str) -> float | None:
        return _med(((c.get("redis", {}).get("paired_throughput") or {}).get(ref) or {})
                    .get("ratio"))

    out.append(_ratio_row("10-step durable (Redis) throughput ≥ 0.8 x raw-HSET ideal (paired)",
                          pt("raw"), 1.0, 0.8, "ge", "jobs/s, alternated on one worker"))
    out.append(_ratio_row("10-step durable (Redis) throughput ≥ 6 x 10-link chain (paired)",
                          pt("chain"), 1.0, 6.0, "ge", "jobs/s, alternated on one worker"))
    for n in STEP_COUNTS:
        out.append(_ratio_row(f"Django store (PostgreSQL) per step ≤ 1.5 x INSERT+COMMIT "
                              f"({n}-step job, paired)", pr("django-pg", n), 1.0, 1.5, "le",
                              "per-step time vs raw psycopg INSERT+COMMIT, interleaved"))
    for key, label in (("django-mariadb", "Django store (MariaDB)"),
                       ("sql-pg", "SQL store (PostgreSQL)"),
                       ("sql-mariadb", "SQL store (MariaDB)")):
        for n in STEP_COUNTS:
            out.append(_ratio_row(f"{label} per step ≤ 1.5 x INSERT+COMMIT ({n}-step job, "
                                  "paired)", pr(key, n), 1.0, 1.5, "le",
                                  "per-step time vs a raw INSERT+COMMIT on the same database "
                                  "(psycopg / PyMySQL), interleaved"))
    for n in STEP_COUNTS:
        dbos, dj = ps("dbos", n), ps("django-pg", n)
        out.append(_ratio_row(f"Django store (PostgreSQL) ≥ 2 x faster per step than DBOS "
                              f"({n}-step job)", dbos, dj, 2.0, "ge",
                              "DBOS per-step / Django per-step"))
    dbos_recovery = _med(((c.get("dbos", {}).get("recovery") or {}).get("1000") or {})
                         .get("total"))
    for key, res in results["resume"].items():
        counts = res.get("counts") or {}
        big, small = _med(counts.get("1000", {}).get("total")), _med(
            counts.get("10", {}).get("total"))
        per_step = None if big is None or small is None else (big - small) / 990
        out.append(_ratio_row(f"Replay cost per completed step ≤ 3 µs ({res['label']})",
                              per_step, 1e-6, 3.0, "le",
                              "(resume at 1,000 - resume at 10) / 990, in-process"))
        if key == "django-pg":
            out.append(_ratio_row("Resume at step 1,000 ≥ 20 x faster than DBOS's recovery "
                                  "of the same 1,000-step workflow (PostgreSQL)",
                                  dbos_recovery, big, 20.0, "ge",
                                  "DBOS recovery until the result / our begin() + replay"))
        trips_big = counts.get("1000", {}).get("round_trips")
        trips_small = counts.get("10", {}).get("round_trips")
        out.append(_ratio_row(f"Resume round trips at step 1,000 = at step 10 ({res['label']})",
                              trips_big, trips_small, 1.0, "le",
                              "round trips of begin() + replay"))
    return out


def _contender_table(results: dict[str, Any]) -> list[str]:
    lines = ["| contender | jobs/s (many in flight) | latency, one at a time (ms) | "
             "per step @10 (µs) | per step @100 (µs) | per step @1,000 (µs) |",
             "|---|---|---|---|---|---|"]
    for res in results["contenders"].values():
        if "unavailable" in res or "error" in res:
            why = res.get("unavailable") or f"error: {res['error']}"
            lines.append(f"| {res['label']} | {why} | | | | |")
            continue
        steps = res.get("per_step") or {}
        cells = [_fmt(steps.get(n), 1e6) if steps else "n/a"
                 for n in STEP_COUNTS]
        lines.append(f"| {res['label']} | {_fmt(res['throughput'], 1, 1)} "
                     f"({res['throughput_jobs']} jobs) | {_fmt(res['latency'], 1e3, 2)} | "
                     + " | ".join(cells) + " |")
    return lines


def _paired_throughput_table(results: dict[str, Any]) -> list[str]:
    res = results["contenders"].get("redis", {})
    paired = res.get("paired_throughput")
    if not paired:
        return []
    lines = ["Throughput alternated round by round on the RedisStore worker (every worker runs "
             "the same app and pool, so this compares the jobs under the same load):", "",
             "| job | jobs/s | durable / this |", "|---|---|---|",
             f"| {res['label']} | {_fmt(paired['self'], 1)} | |"]
    labels = {"raw": "3. Raw HSET after each step (ideal)", "chain": "2. Celery chain of 10 tasks"}
    for key, v in paired.items():
        if key != "self":
            lines.append(f"| {labels.get(key, key)} | {_fmt(v['throughput'], 1)} | "
                         f"{_fmt(v['ratio'], 1, 2)} |")
    return [*lines, ""]


def _paired_table(results: dict[str, Any]) -> list[str]:
    lines = ["| store | reference | N | store per step (µs) | reference per step (µs) | "
             "ratio |", "|---|---|---|---|---|---|"]
    for res in results["contenders"].values():
        paired = res.get("paired")
        if not paired:
            continue
        for n in STEP_COUNTS:
            if n in paired:
                p = paired[n]
                lines.append(f"| {res['label']} | `{paired['reference']}` | {int(n):,} | "
                             f"{_fmt(p['self'], 1e6)} | {_fmt(p['reference'], 1e6)} | "
                             f"{_fmt(p['ratio'], 1, 2)} |")
    return lines


def _resume_table(results: dict[str, Any]) -> list[str]:
    lines = ["| store | N | begin() load (ms) | replay of N steps (ms) | total (ms) | "
             "round trips |", "|---|---|---|---|---|---|"]
    for res in results["resume"].values():
        if "unavailable" in res or "error" in res:
            lines.append(f"| {res['label']} | {res.get('unavailable') or res.get('error')} "
                         "| | | | |")
            continue
        for n, v in sorted(res["counts"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {res['label']} | {int(n):,} | {_fmt(v['load'], 1e3, 2)} | "
                         f"{_fmt(v['replay'], 1e3, 2)} | {_fmt(v['total'], 1e3, 2)} | "
                         f"{v['round_trips']} |")
    dbos = (results["contenders"].get("dbos", {}).get("recovery") or {}).get("1000")
    if dbos:
        lines += ["", "DBOS on the same PostgreSQL, recovering a 1,000-step workflow whose "
                  "steps all completed (flipped back to PENDING, then "
                  "`DBOS._recover_pending_workflows()` until the result): "
                  f"{_fmt(dbos['total'], 1e3, 1)} ms in all, of which the replay of the "
                  f"1,000 recorded steps inside the workflow {_fmt(dbos['body'], 1e3, 1)} ms "
                  "(one query per step); the rest is DBOS's queue handing the workflow to an "
                  "executor."]
    return lines


def _resume_worker_table(results: dict[str, Any]) -> list[str]:
    lines = ["| store | N | failure → redelivered (ms) | total: failure → step retried (ms) | "
             "total / total at N = 10 |", "|---|---|---|---|---|"]
    rows = 0
    for res in results["contenders"].values():
        measured = res.get("resume_worker")
        if not measured:
            continue
        base = _med(measured.get("10", {}).get("total"))
        for n in STEP_COUNTS:
            v = measured.get(n)
            if v:
                rows += 1
                ratio = _med(v["total"]) / base if base else None
                lines.append(f"| {res['label']} | {int(n):,} | {_fmt(v['delivery'], 1e3, 2)} | "
                             f"{_fmt(v['total'], 1e3, 2)} | "
                             f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    if not rows:
        return []
    return ["In a real worker (`bench/resume_worker.py`): a `bench.resumer` run does N steps, "
            "then a step that fails once (retry delay 0); the engine parks the run and "
            "publishes it again, and the new delivery takes the lease, loads the N "
            "checkpoints, replays them and retries the step. Times are taken inside the worker "
            "as the first attempt raises, as the redelivery reaches a pool process, and as the "
            "second attempt starts. Not a target: the targets above use the in-process "
            "figures.", "", *lines, ""]


def _reference_table(ref: dict[str, Any]) -> list[str]:
    pg = ref.get("pg_insert_commit", {})
    settings = pg.get("settings", {})
    return ["| operation | µs per op |", "|---|---|",
            f"| Redis PING (redis-py) | {_fmt(ref.get('ping'), 1e6)} |",
            f"| Redis HSET (redis-py) | {_fmt(ref.get('hset'), 1e6)} |",
            f"| PostgreSQL INSERT + COMMIT (psycopg; fsync={settings.get('fsync', '?')}, "
            f"synchronous_commit={settings.get('synchronous_commit', '?')}) | {_fmt(pg, 1e6)} |",
            f"| SQLite INSERT + COMMIT (WAL) | {_fmt(ref.get('sqlite_insert_commit'), 1e6)} |"]


def _extra_section(title: str, res: dict[str, Any] | None) -> list[str]:
    if not res:
        return []
    lines = [f"## {title}", ""]
    if "unavailable" in res:
        return [*lines, f"Pending: {res['unavailable']}.", ""]
    if "error" in res:
        return [*lines, f"Failed in this run: {res['error']}", ""]
    if "text" in res and title.startswith("Admin") and "1,000,000" not in res["text"]:
        lines.append("(quick run: fewer runs than the 1,000,000 of the full benchmark)")
    if "text" in res:
        return [*lines, f"Output of `{res['command']}`:", "", "```", res["text"].rstrip(), "```",
                ""]
    return lines


def _suspended_section(res: dict[str, Any]) -> list[str]:
    lines = ["## Worker memory with suspended runs", ""]
    if "unavailable" in res or "error" in res:
        return [*lines, f"Pending: {res.get('unavailable') or res.get('error')}.", ""]
    b, a = res["rss_before_kib"], res["rss_after_kib"]
    return [*lines,
            f"{res['suspended']:,} of {res['count']:,} runs of `bench.sleeper` (one step, then "
            f"`sleep(timedelta(days=1))`) suspended in {res['seconds']:.1f} s on the RedisStore "
            "worker (prefork -c 2).", "",
            "| | main (MiB) | pool (MiB) | total (MiB) |", "|---|---|---|---|",
            f"| before | {b['main'] / 1024:.1f} | {b['pool'] / 1024:.1f} | "
            f"{b['total'] / 1024:.1f} |",
            f"| with the runs suspended | {a['main'] / 1024:.1f} | {a['pool'] / 1024:.1f} | "
            f"{a['total'] / 1024:.1f} |", "",
            f"Growth: {res['delta_kib'] / 1024:+.1f} MiB, {res['bytes_per_run']:+.0f} bytes per "
            "suspended run.", "",
            "Worker RSS (MiB) as the runs got suspended: " + ", ".join(
                f"{n:,} → {kib / 1024:.0f}" for n, kib in res.get("samples", [])) + ".", ""]


def _meta_section(meta: dict[str, Any]) -> list[str]:
    m, v = meta["machine"], meta["versions"]
    lines = ["## Machine and versions", "",
             f"* Command: `{meta['command']}` ({'quick smoke run' if meta['quick'] else 'full run'}"
             f", {meta['trials']} trials per figure), {meta['started']} - {meta['finished']}, "
             f"{meta['seconds']:.0f} s.",
             f"* Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']:.1f} GiB RAM, "
             f"{m['kernel']}.",
             f"* Load average at start / end: {m['load_start']} / {m['load_end']}.",
             f"* Shared machine: {meta['shared']}",
             "* Servers: " + "; ".join(f"{k}: {val}" for k, val in meta["servers"].items()) + ".",
             "* Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", ""]
    return lines


def render(results: dict[str, Any], images: list[Path], notes: str | None) -> str:
    """The whole BENCHMARKS.md text."""
    meta = results["meta"]
    rows = targets(results)
    counts = {verdict: sum(r["verdict"] == verdict for r in rows)
              for verdict in ("PASS", "FAIL", "PENDING")}
    out = ["# Benchmarks", "",
           "Generated by `make bench` (`scripts/bench`, code in `bench/`); do not edit by hand —"
           " the prose that is kept between runs lives in `bench/NOTES.md`.",
           "Every contender runs the same trivial job (`x = x + 1` per step) in the same run on "
           "the same machine; Celery contenders run on a real `celery worker` (prefork `-c 2`, "
           "Redis broker and result backend), one fresh worker per contender; the Django "
           "contenders keep their connections across tasks (`CELERY_DB_REUSE_MAX`, "
           "`CONN_MAX_AGE=600`, health checks on). Figures are the "
           "median (min-max) of repeated trials.", "",
           f"**Targets: {counts['PASS']} pass, {counts['FAIL']} fail, {counts['PENDING']} "
           "pending.**", "",
           "## Results", "", *_contender_table(results), "",
           "* jobs/s: a queue pre-filled with 10-step jobs (the worker's consumer is paused "
           "while they are sent), from resuming the consumer to the last result.",
           "* latency: one 10-step job at a time, send → result, mean per trial.",
           "* per step: body time measured with `perf_counter` inside the task, divided by the "
           "step count (no broker latency in it). The chain has no body of its own.", "",
           f"![per-step cost]({'images/' + images[0].name})", "",
           f"![throughput]({'images/' + images[2].name})", "",
           "## Targets", "", "| target | ratio | limit | verdict |", "|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        sign = "≤" if r["kind"] == "le" else "≥"
        out.append(f"| {r['name']} | {ratio} | {sign} {r['limit']} | **{r['verdict']}** |")
    out += ["", "## Per-step cost against the physical ideal (paired)", "",
            "Each store's 10/100/1,000-step job interleaved, round by round, with its physical "
            "reference on the same worker: `bench.raw_hset` (one HSET per step) for Redis, "
            "`bench.raw_insert` (one psycopg INSERT + COMMIT per step) for PostgreSQL. "
            "Interleaving cancels the load drift of a shared machine; the ratio is taken per "
            "round.", "", *_paired_table(results), "", *_paired_throughput_table(results),
            "", "## Resume cost after a failure at step N", "",
            "The real resume path in-process: `store.begin()` (lease + all checkpoints in one "
            "round trip) and the replay of the N completed steps through "
            "`celery_durable.engine.steps.run_step`. Four times the suite's trials, the step "
            "counts interleaved round by round in a rotating order (a trial takes milliseconds; "
            "interleaving lands the machine's drift on every N alike).", "",
            *_resume_table(results), "",
            f"![resume cost]({'images/' + images[1].name})", "",
            *_resume_worker_table(results),
            "## Reference figures (same run)", "", *_reference_table(results["reference"]), "",
            *_suspended_section(results["suspended"]),
            *_extra_section("Admin changelist with 1,000,000 runs", results.get("admin")),
            *_extra_section("Step overhead micro-benchmark (bench/step_overhead.py)",
                            results.get("step_overhead")),
            *_extra_section("Transactional steps on PostgreSQL (bench/atomic_steps.py)",
                            results.get("atomic_steps")),
            *_extra_section("Async tasks and parallel steps (bench/async_steps.py)",
                            results.get("async_steps")),
            *_meta_section(meta)]
    if notes:
        out += [notes.rstrip(), ""]
    return "\n".join(out)


def write(results: dict[str, Any], images: list[Path], path: Path) -> None:
    """Write BENCHMARKS.md, appending ``bench/NOTES.md`` (profiling, before/after) if present."""
    notes_path = ROOT / "bench" / "NOTES.md"
    notes = notes_path.read_text() if notes_path.exists() else None
    path.write_text(render(results, images, notes))
