"""report.md: GitHub-flavoured tables to paste into a pull request."""

from __future__ import annotations

import json

from onnxkd.report import compress_tables, fmt
from onnxkd.report.tables import Table, all_tables


def render(r: dict) -> str:
    command = "compress" if "compress" in r else "validate"
    lines = [f"# onnxkd {command}: {_verdict(r)}", ""]
    lines.append(f"Teacher `{r['teacher']['path']}` vs student `{r['student']['path']}` on "
                 f"{', '.join(r['environment']['providers'])}, onnxruntime {r['environment']['onnxruntime_version']}.")
    lines.append("")
    for sentence in compress_tables.narrative(r) if "compress" in r else []:
        lines += [sentence, ""]
    for warning in r.get("warnings", []):
        lines.append(f"> **Warning:** {warning}")
        lines.append("")
    tables = all_tables(r)
    if "compress" in r:  # after the verdict tables; the layers table carries the channels, with MACs
        first = [t for t in tables if t.key in ("summary", "gates")]
        tables = first + compress_tables.compress_tables(r) + [t for t in tables if t not in first and t.key != "channels"]
    for table in tables:
        lines += _table(table)
    if "compress" in r:
        lines += ["## Recipe", "", "```json", json.dumps(r["compress"]["recipe"], indent=2), "```", ""]
    lines.append(f"<sub>report.json schema {r['schema_version']}; raw latency samples are in report.json.</sub>")
    return "\n".join(lines) + "\n"


def _verdict(r: dict) -> str:
    if not r.get("gates"):
        return f"{fmt.ratio(r['speedup']['p50'])} speed-up, {fmt.ratio(r['speedup']['macs_reduction'])} fewer MACs"
    return "all gates pass" if r["passed"] else "gates FAIL"


def _table(table: Table) -> list[str]:
    out = [f"## {table.title}", "", "| " + " | ".join(_cell(h) for h in table.headers) + " |",
           "|" + "|".join("---" if i < table.left else "---:" for i in range(len(table.headers))) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        out += ["", table.note]
    return out + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
