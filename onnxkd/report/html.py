"""report.html: one self-contained file (inline CSS, plots as base64 PNG) that opens anywhere offline."""

from __future__ import annotations

import base64
import json
from html import escape

from onnxkd.report import compress_tables, fmt
from onnxkd.report.tables import Table, all_tables

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; margin: 0; background: #f6f8fa; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.sub { color: #59636e; margin: 0 0 16px; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 14px; }
.card .label { color: #59636e; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 600; }
.card .detail { color: #59636e; font-size: 12px; }
table { border-collapse: collapse; min-width: 60%; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 14px; border-bottom: 1px solid #eaeef2; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.left, th.left { text-align: left; }
td.wrap { white-space: normal; word-break: break-all; text-align: left; }
.note { color: #59636e; font-size: 12px; margin: 4px 0 0; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.verdict-pass { color: #1a7f37; } .verdict-fail { color: #cf222e; }
figure { margin: 12px 0; } figure img { max-width: 100%; }
.story { background: #f6f8fa; border-left: 4px solid #4C72B0; padding: 4px 14px; margin: 12px 0; }
pre { background: #f6f8fa; padding: 10px 14px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
"""


def render(r: dict, plots: dict[str, bytes]) -> str:
    tables = {t.key: t for t in all_tables(r) + compress_tables.compress_tables(r)}
    compress = "compress" in r
    parts = [_header(r)]
    if compress:
        parts.append('<div class="story">' + "".join(f"<p>{escape(s)}</p>" for s in compress_tables.narrative(r))
                     + "</div>")
    parts.append(_cards(r))
    parts += [f'<div class="warn"><b>Warning:</b> {escape(w)}</div>' for w in r.get("warnings", [])]
    for key in ("summary", "gates"):
        if key in tables:
            parts.append(_table(tables.pop(key)))
    if compress:
        parts.append(_table(tables.pop("pruning")))
        for key in ("speed_search", "latency_split", "int8"):
            if key in tables:
                parts.append(_table(tables.pop(key)))
        if "channels" in plots:
            parts.append(_img(plots["channels"], "channels kept per layer"))
        tables.pop("channels", None)  # the layers table below has the same rows, with MACs
        for key in ("layers", "frozen"):
            if key in tables:
                parts.append(_table(tables.pop(key)))
        if "training" in plots:
            parts.append(f"<h2>Training</h2>{_img(plots['training'], 'training curve')}")
        if "training" in tables:
            parts.append(_table(tables.pop("training"), heading="training" not in plots))
    for name, title in (("quality", "Accuracy and agreement"), ("latency", "Latency")):
        if name in plots:
            parts.append(f"<h2>{title}</h2>{_img(plots[name], title)}")
        if name in tables:
            parts.append(_table(tables.pop(name), heading=name not in plots))
    if "channels" in plots and not compress:
        parts.append(f"<h2>Channels kept per layer</h2>{_img(plots['channels'], 'channels kept per layer')}")
        if "channels" in tables:
            parts.append(_table(tables.pop("channels"), heading=False))
    parts += [_table(t) for t in tables.values()]
    if compress:
        recipe = json.dumps(r["compress"]["recipe"], indent=2)
        parts.append(f"<h2>Recipe</h2><p class=\"note\">Saved beside the student; replay it with "
                     f"<code>onnxkd compress TEACHER --recipe FILE</code>.</p><pre>{escape(recipe)}</pre>")
    body = "\n".join(parts)
    title = "onnxkd compress report" if compress else "onnxkd validate report"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{title}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n")


def _header(r: dict) -> str:
    if r.get("gates"):
        verdict = ('<span class="verdict-pass">all gates pass</span>' if r["passed"]
                   else '<span class="verdict-fail">gates fail</span>')
    else:
        verdict = "report"
    env = r["environment"]
    command = "compress" if "compress" in r else "validate"
    return (f"<h1>onnxkd {command} — {verdict}</h1>"
            f"<p class=\"sub\">teacher <code>{escape(r['teacher']['path'])}</code> vs student "
            f"<code>{escape(r['student']['path'])}</code><br>onnxruntime {escape(env['onnxruntime_version'])} on "
            f"{escape(', '.join(env['providers']))}, {escape(env['cpu_model'])}, {escape(env['timestamp_utc'])}</p>")


def _cards(r: dict) -> str:
    sp = r["speedup"]
    int8 = r["student"].get("macs_int8")
    cards = [("speed-up p50", fmt.ratio(sp["p50"]), f"batch {sp['batch_size']}, 95% CI {fmt.ci(sp['ci95'])}"),
             ("MACs reduction", fmt.ratio(sp["macs_reduction"]),
              f"{fmt.count(r['teacher']['macs'])} → {fmt.count(r['student']['macs'])}"
              + (f" ({fmt.count(int8)} int8)" if int8 else ""))]
    if r.get("accuracy"):
        acc = r["accuracy"]
        cards.append(("student accuracy", fmt.pct(acc["student"]), f"teacher {fmt.pct(acc['teacher'])}, "
                      f"change {fmt.points(-acc['drop'])}"))
    if r.get("agreement"):
        ag = r["agreement"]
        cards.append(("top-1 agreement", fmt.pct(ag["top1"]), f"95% CI {fmt.ci(ag['top1_ci95'], fmt.pct)}, n={ag['n']}"))
    cards.append(("params", fmt.count(r["student"]["params"]), f"teacher {fmt.count(r['teacher']['params'])}"))
    html = "".join(f'<div class="card"><div class="label">{escape(label)}</div><div class="value">{escape(value)}</div>'
                   f'<div class="detail">{escape(detail)}</div></div>' for label, value, detail in cards)
    return f'<div class="cards">{html}</div>'


def _table(table: Table, heading: bool = True) -> str:
    head = "".join(f'<th class="left">{escape(h)}</th>' if i < table.left else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(table.headers))
    rows = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            css = {"PASS": "pass", "FAIL": "fail"}.get(cell, "")
            if table.key == "environment" and i == 1:
                css = "wrap"
            elif i < table.left and not css:
                css = "left"
            cells.append(f'<td class="{css}">{escape(cell)}</td>' if css else f"<td>{escape(cell)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    title = f"<h2>{escape(table.title)}</h2>" if heading else ""
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'
