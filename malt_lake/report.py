"""The evaluation report: the comparison table with confidence intervals as Markdown and a
chart, in the warehouse."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from malt_lake.plots import accuracy_intervals
from malt_lake.stats import LEVEL, Interval


def summary_markdown(summary: pa.Table, intervals: Mapping[str, Interval]) -> str:
    """Per system: accuracy mean ± std over seeds and its bootstrap interval."""
    lines = [f"| system | accuracy (mean ± std over seeds) | {LEVEL:.0%} CI | seeds | "
             "predictions |", "|---|---|---|---|---|"]
    for row in summary.to_pylist():
        interval = intervals.get(row["system"])
        ci = f"[{interval.low:.1%}, {interval.high:.1%}]" if interval else "n/a"
        lines.append(f"| {row['system']} | {row['accuracy_mean']:.1%} ± "
                     f"{row['accuracy_std']:.1%} | {ci} | {row['seeds']} | "
                     f"{row['predictions']} |")
    return "\n".join(lines)


def comparisons_markdown(comparisons: pa.Table) -> str:
    """Per pair: the mean paired difference in points, its interval, and how it reads."""
    lines = [f"| system − baseline | difference | {LEVEL:.0%} CI | cells | reads |",
             "|---|---|---|---|---|"]
    for row in comparisons.to_pylist():
        lines.append(f"| {row['system']} − {row['baseline']} | "
                     f"{points(row['difference'])} | [{points(row['ci_low'])}, "
                     f"{points(row['ci_high'])}] | {row['cells']} | {row['verdict']} |")
    return "\n".join(lines)


def points(fraction: float) -> str:
    """An accuracy difference in percentage points, signed."""
    return f"{fraction * 100:+.1f} pts"


def flips_markdown(flips: pa.Table) -> str:
    """Per adapter set: the generator's answer against the refined one, chain by chain."""
    lines = ["| adapters | chains | G right → R right | G right → R wrong | G wrong → R right "
             "| G wrong → R wrong | G accuracy | R accuracy |", "|---|---|---|---|---|---|---|---|"]
    for r in flips.to_pylist():
        lines.append(f"| {r['adapter_set']} | {r['chains']} | {r['correct_kept']} | "
                     f"{r['correct_to_incorrect']} | {r['incorrect_to_correct']} | "
                     f"{r['incorrect_kept']} | {r['generator_accuracy']:.1%} | "
                     f"{r['refiner_accuracy']:.1%} |")
    return "\n".join(lines)


def write_report(reports_dir: Path, dataset: str, summary: pa.Table,
                 intervals: Mapping[str, Interval], comparisons: pa.Table, flips: pa.Table,
                 context: dict[str, Any]) -> tuple[Path, Path, str]:
    """Write ``eval-<dataset>.md`` and ``.png``; returns (md path, png path, markdown)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    systems = [(name, i.mean, i.low, i.high) for name in summary.column("system").to_pylist()
               if (i := intervals.get(name))]
    differences = [(f"{r['system']} − {r['baseline']}", r["difference"], r["ci_low"],
                    r["ci_high"]) for r in comparisons.to_pylist()]
    split = summary.column("split")[0].as_py() if summary.num_rows else "?"
    resamples = comparisons.column("resamples")[0].as_py() if comparisons.num_rows else 0
    chart = accuracy_intervals(systems, differences, reports_dir / f"eval-{dataset}.png",
                               f"{dataset} ({split}): accuracy by system")
    settings = "\n".join(f"- {key}: {value}" for key, value in context.items())
    body = (f"# Evaluation: {dataset} ({split})\n\n{summary_markdown(summary, intervals)}\n\n"
            f"## Paired differences\n\n{comparisons_markdown(comparisons)}\n\n"
            f"Intervals: {LEVEL:.0%} paired cluster bootstrap over questions and seeds "
            f"({resamples} resamples: questions drawn with replacement, each with all of its "
            "seeds' cells). "
            "A difference whose interval holds 0 is within noise.\n\n"
            "## What V and R do to the generator's answer\n\n"
            f"{flips_markdown(flips)}\n\n"
            f"![accuracy by system]({chart.name})\n\n## Settings\n{settings}\n")
    report = reports_dir / f"eval-{dataset}.md"
    temp = report.with_suffix(".md.partial")
    temp.write_text(body, encoding="utf-8")
    temp.replace(report)
    return report, chart, body


def inline_image(path: Path) -> str:
    """The PNG as a Markdown image with a data URI (the Dagster UI renders these)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"
