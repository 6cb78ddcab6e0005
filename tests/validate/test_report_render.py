"""The report layer renders a plain dict (e.g. a report.json read back) without onnxruntime or torch."""

from __future__ import annotations

import json
import subprocess
import sys

from rich.console import Console

from onnxkd.report import plots, write_report
from onnxkd.report.terminal import render
from onnxkd.validate.api import validate


def test_rerender_from_json_and_plots(models, labelled, tmp_path):
    r = validate(models["teacher"], models["student"], labelled["path"], runs=5, warmup=1, budget_s=0.2).to_dict()
    r = json.loads(json.dumps(r))  # exactly what a report.json reader sees
    pngs = plots.render_all(r)
    assert set(pngs) == {"latency", "quality", "channels"} and all(p.startswith(b"\x89PNG") for p in pngs.values())
    write_report(r, tmp_path / "again")
    assert (tmp_path / "again" / "report.html").stat().st_size > 10_000
    console = Console(record=True, width=100)
    render(r, console)
    text = console.export_text()
    assert "Teacher vs student" in text and "75.0%" in text


def test_one_map_output_shows_its_quality_in_the_terminal(zoo_model):
    """A single output that is not a classifier's (a segmentation map here; a detector's boxes) has no agreement
    row in the summary: its cosine and errors are shown in the quality table (it was not shown at all)."""
    import numpy as np

    unet = zoo_model("unet")
    data = {"x": np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)}
    r = validate(unet, unet, data, runs=3, warmup=1, budget_s=0.1).to_dict()
    assert not r["agreement"] and len(r["quality"]) == 1
    console = Console(record=True, width=160)
    render(r, console)
    text = console.export_text()
    assert "Output agreement" in text and "cosine" in text and r["quality"][0]["name"] in text


def test_report_and_validate_import_neither_torch_nor_report_onnxruntime():
    code = ("import sys, onnxkd.report, onnxkd.report.html, onnxkd.report.markdown, onnxkd.report.plots, "
            "onnxkd.report.terminal; assert 'onnxruntime' not in sys.modules; "
            "import onnxkd.validate.api, onnxkd.commands.validate; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_speed_search_table_marks_the_chosen_candidate_and_the_groups_left_whole():
    from onnxkd.report.compress_tables import speed_search

    candidates = [{"ratio": 0.9, "round_to": 1, "speedup": 3.0, "macs_ratio": 0.05, "whole": []},
                  {"ratio": 0.5, "round_to": 16, "speedup": 1.6, "macs_ratio": 0.5, "whole": []},
                  {"ratio": 0.5, "round_to": 16, "speedup": 1.4, "macs_ratio": 0.6, "whole": [3]},
                  {"ratio": 0.6, "round_to": 16, "speedup": 1.55, "macs_ratio": 0.55, "whole": [0, 2]}]
    search = {"target": 1.5, "ratio": 0.6, "round_to": 16, "speedup": 1.55, "macs_ratio": 0.55, "max_ratio": 0.9,
              "group_ratios": {"0": 0.0, "2": 0.0}, "candidates": candidates, "warning": None}
    report = {"compress": {"prune": {"speed_search": search}, "recipe": {"prune": {"latency_batch": 1}}}}
    table = speed_search(report)
    chosen = [row for row in table.rows if row[-1] == "chosen"]
    assert chosen == [["0.600", "16", "0, 2", "55.0%", "1.55x", "chosen"]]
    assert len(table.rows) == 4 and "Groups 0, 2 are left whole" in table.note


def _report_with_groups_left_whole() -> dict:
    """A compress report where one group is frozen and two are left whole by round-to 16."""
    groups = [{"id": 0, "size": 16, "kept": 16, "status": "whole", "reason": "round-to 16"},
              {"id": 1, "size": 16, "kept": 16, "status": "whole", "reason": "round-to 16"},
              {"id": 2, "size": 64, "kept": 32, "status": "pruned", "reason": ""},
              {"id": 3, "size": 10, "kept": 10, "status": "frozen", "reason": "feeds a graph output"}]
    summary = {"groups": 4, "pruned": 1, "frozen": 1, "channels_before": 106, "channels_after": 74,
               "round_to": 16, "whole_by_rounding": [0, 1]}
    report = {"compress": {"prune": {"criterion": "l1", "ratio": 0.5, "steps": [], "summary": summary,
                                     "groups": groups}},
              "speedup": {"macs_reduction": 2.0, "params_reduction": 2.0, "p50": 1.5, "batch_size": 1},
              "environment": {"providers": ["CPUExecutionProvider"]}}
    return report


def test_groups_rounding_left_whole_are_said_in_the_narrative_and_listed_with_the_frozen_ones():
    from onnxkd.report.compress_tables import frozen, narrative

    report = _report_with_groups_left_whole()
    first = narrative(report)[0]
    assert ("1 group was left whole because cutting could not be proven safe, and 2 groups because round-to 16 "
            "keeps whole blocks of 16 channels (listed below)") in first
    assert sorted(frozen(report).rows) == [["feeds a graph output", "1", "10"], ["round-to 16", "2", "32"]]


def test_a_slower_student_is_said_to_be_slower_not_0_9x_faster():
    from onnxkd.report.compress_tables import narrative

    report = _report_with_groups_left_whole()
    report["speedup"].update(p50=0.8, batched={"p50": 1.6, "batch_size": 32})
    bought = narrative(report)[2]
    assert "a p50 latency 1.25x slower at batch 1 and 1.60x faster at batch 32" in bought, bought
    report["speedup"]["macs_reduction"] = None  # uncounted in one of the models
    assert narrative(report)[2].startswith("What it bought: MACs not counted, 2.00x fewer parameters")


def test_the_terminal_lists_the_groups_left_whole_above_the_sentence_pointing_at_them():
    from rich.console import Console

    from onnxkd.report.terminal import render_compress

    report = _report_with_groups_left_whole()
    report["compress"].update(stages=[], wall_s=1.0)
    console = Console(record=True, width=200)
    render_compress(report, console)
    text = console.export_text()
    assert "(listed above)" in text and "(listed below)" not in text
    assert text.index("feeds a graph output") < text.index("What was cut")
    assert text.index("round-to 16") < text.index("What was cut")


def test_the_int8_table_lists_padded_inputs_and_the_nodes_kept_float():
    from onnxkd.report.compress_tables import int8

    quantize = {"int8": True, "target": {"device": "cpu-x86", "activation": "uint8"},
                "calibration": {"method": "percentile", "samples": 128, "per_channel": True},
                "quantized_nodes": 10, "compute_nodes": 11, "speedups": {"1": 1.5, "8": 1.8},
                "quality": {"metric": "accuracy", "drop": 0.002}, "max_accuracy_drop": 0.01, "qat": None,
                "size_bytes": {"float": 4e6, "int8": 1e6}, "float_nodes": {"/fc/Gemm": "speed: slower in int8"},
                "padded_inputs": ["/stem/Conv"], "notes": []}
    rows = dict((row[0], row[1]) for row in int8({"compress": {"quantize": quantize}}).rows)
    assert rows["inputs padded to 4 channels (fast int8 kernel)"] == "/stem/Conv"
    assert rows["float: /fc/Gemm"] == "speed: slower in int8"
    del quantize["padded_inputs"]  # a report.json written before the padding existed
    assert not any("padded" in row[0] for row in int8({"compress": {"quantize": quantize}}).rows)
