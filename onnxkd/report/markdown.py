"""report.md: GitHub-flavoured tables to paste into a pull request."""

from __future__ import annotations

from onnxkd.report import fmt
from onnxkd.report.tables import Table, all_tables


def render(r: dict) -> str:
    lines = [f"# onnxkd validate: {_verdict(r)}", ""]
    lines.append(f"Teacher `{r['teacher']['path']}` vs student `{r['student']['path']}` on "
                 f"{', '.join(r['environment']['providers'])}, onnxruntime {r['environment']['onnxruntime_version']}.")
    lines.append("")
    for warning in r.get("warnings", []):
        lines.append(f"> **Warning:** {warning}")
        lines.append("")
    for table in all_tables(r):
        lines += _table(table)
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
