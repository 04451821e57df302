"""PNG plots of a benchmark run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

US = 1e6
MS = 1e3


def _errorbars(points: list[tuple[int, dict[str, Any]]], scale: float) -> tuple[
        list[int], list[float], list[list[float]]]:
    xs = [n for n, _ in points]
    med = [s["median"] * scale for _, s in points]
    err = [[(s["median"] - s["min"]) * scale for _, s in points],
           [(s["max"] - s["median"]) * scale for _, s in points]]
    return xs, med, err


def per_step(results: dict[str, Any], path: Path) -> None:
    """Per-step cost (µs, log scale) versus step count, one line per contender."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, res in results["contenders"].items():
        points = [(int(n), s) for n, s in (res.get("per_step") or {}).items()
                  if s.get("median") is not None]
        if not points or key == "plain":
            continue
        xs, med, err = _errorbars(sorted(points), US)
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=res["label"])
    for name, label, style in (("hset", "one Redis HSET round trip", ":"),
                               ("pg_insert_commit", "one PostgreSQL INSERT+COMMIT", "--")):
        ref = results["reference"].get(name)
        if ref and ref.get("median"):
            ax.axhline(ref["median"] * US, linestyle=style, color="grey", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("steps per job")
    ax.set_ylabel("cost per step (µs, measured inside the task body)")
    ax.set_title("Per-step cost versus step count (median, min-max over trials)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def resume(results: dict[str, Any], path: Path) -> None:
    """Resume cost (ms) after a failure at step N, per store."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for res in results["resume"].values():
        if "unavailable" in res or "error" in res:
            continue
        points = sorted((int(n), v["total"]) for n, v in res["counts"].items())
        xs, med, err = _errorbars(points, MS)
        bars = ax.errorbar(xs, med, yerr=err, marker="o", capsize=3,
                           label=f"{res['label']}: total")
        loads = sorted((int(n), v["load"]) for n, v in res["counts"].items())
        xs, med, _ = _errorbars(loads, MS)
        ax.plot(xs, med, linestyle="--", marker=".", color=bars.lines[0].get_color(),
                label=f"{res['label']}: begin() load only")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("completed steps before the failure (N)")
    ax.set_ylabel("resume: begin() + replay of N steps (ms)")
    ax.set_title("Resume cost after a failure at step N")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(results: dict[str, Any], path: Path) -> None:
    """10-step jobs per second with many in flight, one bar per contender."""
    items = [(res["label"], res["throughput"]) for res in results["contenders"].values()
             if res.get("throughput", {}).get("median") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [label for label, _ in items]
    med = [s["median"] for _, s in items]
    err = [[s["median"] - s["min"] for _, s in items], [s["max"] - s["median"] for _, s in items]]
    ax.barh(labels, med, xerr=err, capsize=3, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("10-step jobs per second (many in flight)")
    ax.set_title("Throughput (median, min-max over trials)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict[str, Any], image_dir: Path) -> list[Path]:
    """Write every plot; return their paths."""
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = [image_dir / "bench_per_step.png", image_dir / "bench_resume.png",
             image_dir / "bench_throughput.png"]
    per_step(results, paths[0])
    resume(results, paths[1])
    throughput(results, paths[2])
    return paths
