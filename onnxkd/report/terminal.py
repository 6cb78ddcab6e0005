"""The compact terminal view: summary and gates as rich tables, then warnings."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from onnxkd.report import compress_tables
from onnxkd.report.tables import Table, gates, quality, summary


def render(r: dict, console: Console) -> None:
    console.print(_rich(summary(r)))
    # the summary carries one classifier output's agreement; anything else (a map, boxes, an embedding, several
    # outputs) is only in this table, and a detector's validate showed no quality at all without it
    if r.get("quality") and (len(r["quality"]) > 1 or not r.get("agreement")):
        console.print(_rich(quality(r)))
    gate_table = gates(r)
    if gate_table.rows:
        console.print(_rich(gate_table, status_column=3))
    render_warnings(r, console)


def render_warnings(r: dict, console: Console) -> None:
    """One line each: the whole of the terminal view that --json still prints (to stderr), for CI logs."""
    for warning in r.get("warnings", []):
        console.print(f"[yellow]Warning:[/] {warning}", highlight=False, soft_wrap=True)


def render_compress(r: dict, console: Console) -> None:
    """After the summary: the pipeline's stages and the three-sentence verdict."""
    if "compress" not in r:
        return
    console.print(_rich(compress_tables.stages(r), wrap=1))
    for table in (compress_tables.latency_split(r), compress_tables.int8(r)):
        if table.rows:
            console.print(_rich(table, wrap=1))
    left_whole = compress_tables.frozen(r)  # the narrative's first sentence points at it
    if left_whole.rows:
        console.print(_rich(left_whole, wrap=0))
    for sentence in compress_tables.narrative(r, frozen_listed="above"):
        console.print(sentence, highlight=False)


def _rich(table: Table, status_column: int | None = None, wrap: int | None = None) -> RichTable:
    out = RichTable(title=table.title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold",
                     pad_edge=False)
    for i, header in enumerate(table.headers):
        out.add_column(header, justify="left" if i < table.left else "right", no_wrap=i != wrap)
    for row in table.rows:
        cells = list(row)
        if status_column is not None:
            colour = "green" if cells[status_column] == "PASS" else "bold red"
            cells[status_column] = f"[{colour}]{cells[status_column]}[/]"
        out.add_row(*cells)
    return out
