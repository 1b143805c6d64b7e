"""The library half of the ``malt-lake`` CLI: commands that need no orchestrator.

``assets.cli`` adds the Dagster-backed commands (ingest, materialize, ui, demo) to this app.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from malt_lake.errors import MaltLakeError
from malt_lake.lake import MIN_VACUUM_HOURS, Lake
from malt_lake.query import run_read_only
from malt_lake.settings import round_warehouse, warehouse_root

app = typer.Typer(
    name="malt-lake",
    help="MALT multi-agent training data as a lakehouse: materialize, query, inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def current_lake(round_index: int = 1) -> Lake:
    """The environment's lake, or a later MALT round's (``<warehouse>/rounds/round-<i>``)."""
    lake = Lake(round_warehouse(warehouse_root(), round_index))
    lake.storage.check()
    if round_index > 1 and not lake.storage.is_dir():
        raise MaltLakeError(f"round {round_index} has no lake yet ({lake.location}): run it "
                            f"first (`malt-lake rounds --k {round_index}`, or `materialize "
                            f"--round {round_index}`)")
    return lake


RoundOption = Annotated[int, typer.Option(
    "--round", min=1, help="MALT round i's lake (i >= 2: <warehouse>/rounds/round-<i>).")]


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One read-only statement (SELECT/DESCRIBE/...).")],
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    limit: Annotated[int, typer.Option(help="Rows to print in table format.")] = 50,
    as_of: Annotated[list[str] | None, typer.Option(
        "--as-of", metavar="TABLE=VERSION",
        help="Also read TABLE at an earlier Delta version, as the view TABLE_vVERSION "
             "(repeatable; `select * from lake_versions` lists them).")] = None,
    round_index: RoundOption = 1,
) -> None:
    """Query the lake's DuckDB views (questions, generations, credit, ...), read-only."""
    result = pl.from_arrow(run_read_only(current_lake(round_index), query,
                                         _versions(as_of or [])))
    assert isinstance(result, pl.DataFrame)
    if fmt == "csv":
        sys.stdout.write(result.write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(result.to_dicts(), default=str, indent=1) + "\n")
    elif fmt == "table":
        print_frame(result, limit)
    else:
        raise typer.BadParameter("--format must be table, csv or json")


def _versions(pairs: list[str]) -> list[tuple[str, int]]:
    out = []
    for pair in pairs:
        table, _, version = pair.partition("=")
        if not table or not (version.isascii() and version.isdigit()):
            raise typer.BadParameter(f"--as-of takes TABLE=VERSION (e.g. credit=3), got {pair!r}")
        out.append((table, int(version)))
    return out


@app.command()
def export(
    table: Annotated[str, typer.Argument(help="A lake table, e.g. sft_refiner or credit.")],
    to: Annotated[Path, typer.Option(help="The file to write: .parquet or .jsonl.")],
    version: Annotated[int | None, typer.Option(
        help="The Delta version to export (default: the latest).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset's rows.")] = None,
    round_index: RoundOption = 1,
) -> None:
    """Write one version of a table as one plain Parquet or JSON Lines file, for tools that
    do not read Delta (a Parquet glob over the table would also read replaced versions)."""
    from malt_lake.export import export_table

    path, rows = export_table(current_lake(round_index), table, to, version=version,
                              dataset=dataset)
    console.print(f"{rows} row(s) of {table} written to {path}")


@app.command()
def vacuum(
    retain_hours: Annotated[int, typer.Option(
        min=MIN_VACUUM_HOURS,
        help="Keep the files every version of the last this-many hours reads (at least 1: "
             "a running writer's file is in no version until it commits).")] = 168,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = True,
    round_index: RoundOption = 1,
) -> None:
    """Delete files older than --retain-hours that the latest versions do not read: replaced
    partitions' files and files of killed writers. Nothing is ever vacuumed unless you run
    this; after it, `--as-of` cannot read those older versions."""
    deleted = current_lake(round_index).vacuum(retain_hours, dry_run=dry_run)
    for table, files in deleted.items():
        if files:
            console.print(f"{table}: {len(files)} file(s)")
    total = sum(len(files) for files in deleted.values())
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {total} file(s)" + (" (pass --no-dry-run to delete)"
                                               if dry_run and total else ""))


@app.command()
def migrate() -> None:
    """Convert a warehouse written by malt-lake before Delta (plain Parquet) in place."""
    from malt_lake.migrate import migrate_plain_parquet

    converted = migrate_plain_parquet(current_lake())
    for table, files in converted.items():
        console.print(f"{table}: {files} partition file(s) converted")
    console.print(f"{len(converted)} table(s) converted" if converted
                  else "nothing to convert: every table is a Delta table")


@app.command()
def partitions() -> None:
    """List the (dataset, shard) partitions in the shard catalog."""
    frame = pl.from_arrow(run_read_only(
        current_lake(),
        "select partition_key, dataset, split, n_questions from shards order by partition_key",
    ))
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        err_console.print("no partitions yet: run `malt-lake ingest` first")
    print_frame(frame, limit=10_000)


@app.command()
def tree(
    question_id: Annotated[str, typer.Argument(help="A question id, e.g. arith-train-000003.")],
    width: Annotated[int, typer.Option(help="Characters of each node's text to show.")] = 70,
    round_index: RoundOption = 1,
) -> None:
    """Print one question's tree: every answer, critique and refinement with its extracted
    answer, reward (leaves), value and label (+ positive, − negative at the current θ)."""
    from malt_lake.tree_view import load_tree, render_tree

    question, nodes = load_tree(current_lake(round_index), question_id)
    console.print(render_tree(question, nodes, width))
    theta = next((n["theta"] for n in nodes if n["theta"] is not None), None)
    console.print(f"[dim]{len(nodes)} nodes; labels at theta = {theta}[/dim]")


def print_frame(frame: pl.DataFrame, limit: int) -> None:
    table = Table(show_lines=False)
    for column in frame.columns:
        table.add_column(column, overflow="fold")
    for row in frame.head(limit).iter_rows():
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(table)
    if frame.height > limit:
        console.print(f"... {frame.height - limit} more rows (use --limit or --format csv)")
    console.print(f"[dim]{frame.height} row(s)[/dim]")


# typer >= 0.20 vendors click: its usage errors are not click's
USAGE_ERRORS: tuple[type[Exception], ...] = tuple({
    click.ClickException,
    getattr(getattr(typer, "_click", None), "exceptions", click).ClickException,
})


def run(app_: typer.Typer) -> None:
    """Run a Typer app, turning our errors into one clear line and exit code 2."""
    try:
        app_(standalone_mode=False)
    except MaltLakeError as exc:
        # soft wrap: a message stays on its lines, whatever the terminal's width
        # escaped: the message may quote the user's own text (SQL with [brackets])
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(2) from None
    except USAGE_ERRORS as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
