"""The evaluation report: the comparison table as Markdown and a bar chart, in the warehouse."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pyarrow as pa

from malt_lake.plots import accuracy_bars


def summary_markdown(summary: pa.Table) -> str:
    lines = ["| system | accuracy (mean ± std) | seeds | predictions |", "|---|---|---|---|"]
    for row in summary.to_pylist():
        lines.append(f"| {row['system']} | {row['accuracy_mean']:.1%} ± "
                     f"{row['accuracy_std']:.1%} | {row['seeds']} | {row['predictions']} |")
    return "\n".join(lines)


def write_report(reports_dir: Path, dataset: str, summary: pa.Table,
                 context: dict[str, Any]) -> tuple[Path, Path, str]:
    """Write ``eval-<dataset>.md`` and ``.png``; returns (md path, png path, markdown)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    rows = [(r["system"], r["accuracy_mean"], r["accuracy_std"]) for r in summary.to_pylist()]
    split = summary.column("split")[0].as_py() if summary.num_rows else "?"
    chart = accuracy_bars(rows, reports_dir / f"eval-{dataset}.png",
                          f"{dataset} ({split}): accuracy, mean ± std over seeds")
    settings = "\n".join(f"- {key}: {value}" for key, value in context.items())
    body = (f"# Evaluation: {dataset} ({split})\n\n{summary_markdown(summary)}\n\n"
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
