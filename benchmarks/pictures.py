"""The benchmark's figures as PNG pictures for docs/performance.md (matplotlib, Agg backend; the `dev` extra).

- `latency`: single-sync latency distributions (CDF) of one `make bench` run: the service idle, with the budget
  counted, during another business's batch, and the bare peer;
- `scale`: records/s of a 100 000-record batch, create and replace, and the own table's ceiling, against the size
  of the customers table; single-sync p99 against the same;
- `batch_sizes`: records/s and time to `completed` against the batch size.

Without matplotlib the benchmark still runs and says it drew nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
LATENCY_PNG = DOCS / "perf-latency.png"
SCALE_PNG = DOCS / "perf-scale.png"
BATCH_SIZES_PNG = DOCS / "perf-batch-size.png"


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[dev]'): no pictures drawn", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency(series: dict[str, list[float]], caption: str, path: Path = LATENCY_PNG) -> Path | None:
    """Each series' latencies (ms) as a cumulative distribution, log-scaled, p50 and p99 marked."""
    from benchmarks.bench import percentile

    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for name, values in series.items():
        if not values:
            continue
        ordered = sorted(values)
        count = len(ordered)
        fractions = [(i + 1) / count for i in range(count)]
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        ax.step(ordered, fractions, where="post", label=f"{name} (p50 {p50:.1f}, p99 {p99:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("latency of one POST, ms (log scale)")
    ax.set_ylabel("fraction of requests at most")
    ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.set_title("Single-record sync latency, 8 keep-alive clients", fontsize=10)
    fig.text(0.01, 0.01, caption, fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def scale(points: list[dict[str, Any]], caption: str, path: Path = SCALE_PNG) -> Path | None:
    """Records/s (end to end and the own table's ceiling) and single-sync p99 against the table's size.

    Points with `"extrapolated": true` are drawn hollow on dashed lines."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), dpi=110, sharex=True, height_ratios=(2, 1))
    measured = [p for p in points if not p.get("extrapolated")]
    guessed = [p for p in points if p.get("extrapolated")]
    lines = (
        ("end to end, create", "create_records_per_s", "tab:blue", "o"),
        ("end to end, replace", "replace_records_per_s", "tab:orange", "s"),
        ("own table's ceiling, create", "ceiling_create_rows_per_s", "tab:blue", "^"),
        ("own table's ceiling, replace", "ceiling_replace_rows_per_s", "tab:orange", "v"),
    )
    for label, key, colour, marker in lines:
        style = "-" if key.endswith("records_per_s") else ":"
        xs = [p["rows_millions"] for p in measured]
        top.plot(xs, [p[key] for p in measured], style, color=colour, marker=marker, label=label)
        if guessed and measured:
            tail = [measured[-1], *guessed]
            top.plot([p["rows_millions"] for p in tail], [p[key] for p in tail], "--", color=colour,
                     marker=marker, markerfacecolor="none")  # fmt: skip
    top.set_ylabel("records (rows) per second")
    top.set_ylim(bottom=0)
    top.grid(True, linewidth=0.3)
    top.legend(fontsize=8)
    top.set_title("A 100 000-record batch against the customers table's size", fontsize=10)
    xs = [p["rows_millions"] for p in measured]
    bottom.plot(xs, [p["single_p99_ms"] for p in measured], "-", color="tab:green", marker="o", label="p99")
    bottom.plot(xs, [p["single_p50_ms"] for p in measured], ":", color="tab:green", marker=".", label="p50")
    if guessed and measured:
        tail = [measured[-1], *guessed]
        bottom.plot([p["rows_millions"] for p in tail], [p["single_p99_ms"] for p in tail], "--",
                    color="tab:green", marker="o", markerfacecolor="none")  # fmt: skip
    bottom.set_ylabel("single sync, ms")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("rows in customers before the measurement, millions (hollow, dashed: extrapolated)")
    bottom.grid(True, linewidth=0.3)
    bottom.legend(fontsize=8)
    fig.text(0.01, 0.005, caption, fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def batch_sizes(points: list[dict[str, Any]], caption: str, path: Path = BATCH_SIZES_PNG) -> Path | None:
    """Records/s and time to `completed` against the number of records in the batch (log scale)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    xs = [p["records"] for p in points]
    ax.plot(xs, [p["records_per_s"] for p in points], "-o", color="tab:blue", label="records/s (median)")
    ax.set_xscale("log")
    ax.set_xlabel("records in the batch (log scale)")
    ax.set_ylabel("records per second, POST → completed")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", linewidth=0.3)
    right = ax.twinx()
    right.plot(xs, [p["total_s"] for p in points], "--s", color="tab:red", label="seconds to completed (median)")
    right.set_yscale("log")
    right.set_ylabel("seconds, POST → completed (log scale)")
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("End to end against batch size (create)", fontsize=10)
    fig.text(0.01, 0.01, caption, fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
