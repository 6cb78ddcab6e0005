"""``onnxkd inspect MODEL``: what a model holds (inputs, outputs, parameters) and which of its ops the bridge runs.

The report is a dict built from small section functions (``SECTIONS``: name -> function of the loaded
model) and rendered section by section (``RENDERERS``); ``--json`` prints the dict itself. A new section is
one function in SECTIONS (and, for a nicer look than the generic table, one renderer).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Callable

import click
import onnx_ir as ir
from rich.markup import escape

from onnxkd import model as model_io
from onnxkd.commands.options import input_shape_option
from onnxkd.errors import OnnxkdError


# --------------------------------------------------------------------------- sections


def summary(model: ir.Model, input_shapes: dict | None = None) -> dict[str, Any]:
    graph = model.graph
    initializers = set(graph.initializers)
    trainable, buffers = _weight_counts(model)
    distilled_on = _distilled_on(model)
    return {
        "producer": f"{model.producer_name or '?'} {model.producer_version or ''}".strip(),
        "ir_version": model.ir_version,
        "opsets": {(domain or "ai.onnx"): version for domain, version in sorted(model.opset_imports.items())},
        "inputs": [_value_info(v) for v in graph.inputs if v.name not in initializers],
        "outputs": [dict(_value_info(v), **distilled_on.get(v.name, {})) for v in graph.outputs],
        "nodes": sum(1 for _ in graph.all_nodes()),
        "initializers": len(initializers),
        "parameters": trainable,
        "buffer_elements": buffers,
        **_macs(model, input_shapes),
    }


def _macs(model: ir.Model, input_shapes: dict | None) -> dict[str, Any]:
    """MACs of Conv/ConvTranspose/Gemm/MatMul (and their integer forms; ``macs_int8`` is the part on 8-bit
    operands) at ``input_shapes``, else at the model's fixed batch or batch 1 (``macs_at``: the shapes used;
    other dynamic dims need a size: without one, the note says so)."""
    from onnxkd.graph_passes.metrics import mac_summary

    try:
        macs = mac_summary(model, input_shapes)
    except OnnxkdError as exc:  # dynamic dims that no size fixes
        return {"macs": None, "macs_by_op": {}, "macs_note": str(exc)}
    except Exception as exc:  # noqa: BLE001  (MACs are informative; an odd graph must not stop inspect)
        return {"macs": None, "macs_by_op": {}, "macs_note": f"not counted: {type(exc).__name__}"}
    return {"macs": macs["total"], "macs_int8": macs["int8"], "macs_by_op": macs["by_op"],
            "macs_unknown_nodes": macs["unknown_nodes"],
            "macs_at": {name: list(shape) for name, shape in macs["input_shapes"].items()}}


def ops(model: ir.Model) -> list[dict[str, Any]]:
    """One row per (domain, op type): opset, count, and whether the torch bridge runs every such node (the
    checks ``to_torch`` makes: an implementation at the opset, and every attribute the nodes carry)."""
    from onnxkd.torch_bridge.program import unsupported_reason
    from onnxkd.torch_bridge.registry import normalize_domain

    opsets = {normalize_domain(d): v for d, v in model.opset_imports.items()}
    counts: Counter = Counter()
    reasons: dict[tuple[str, str], str] = {}
    for node in model.graph.all_nodes():
        key = (normalize_domain(node.domain), node.op_type)
        counts[key] += 1
        if key not in reasons:
            reason = unsupported_reason(node, opsets)
            if reason:
                reasons[key] = reason
    rows = []
    for (domain, op_type), count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        rows.append({
            "op_type": op_type, "domain": domain or "ai.onnx", "opset": model_io.opset_of(model, domain),
            "count": count, "supported": (domain, op_type) not in reasons, "reason": reasons.get((domain, op_type), ""),
        })
    return rows


SECTIONS: dict[str, Callable[[ir.Model], Any]] = {
    "summary": summary,
    "ops": ops,
    "groups": lambda model: __import__("onnxkd.commands.prune", fromlist=["x"]).groups_section(model),
}


def inspect_model(path: str, input_shapes: dict | None = None, prune_normalized: bool = False) -> dict[str, Any]:
    """``prune_normalized``: the channel groups as ``prune --prune-normalized`` sees them (residual streams)."""
    from onnxkd.commands.prune import groups_section
    from onnxkd.data import check_input_shapes, input_specs
    from onnxkd.data.spec import seq_first_note

    model = model_io.load(path)
    proto = ir.to_proto(model)
    specs = input_specs(proto)
    shapes = check_input_shapes(input_shapes, specs)
    report: dict[str, Any] = {"model": str(path), "prune_normalized": prune_normalized}
    if note := seq_first_note(specs):
        report["note"] = note
    for name, section in SECTIONS.items():
        report[name] = (section(model, shapes) if section is summary
                        else groups_section(model, prune_normalized) if name == "groups" else section(model))
    return report


# --------------------------------------------------------------------------- rendering


def _distilled_note(value: dict[str, Any]) -> str:
    if not value.get("distilled_on"):
        return ""
    return f"  (distilled on {', '.join(value['distilled_on'])}: {value['why']})"


def render_summary(data: dict[str, Any], console) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False, title="Model", title_justify="left", title_style="bold")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("producer", data["producer"])
    table.add_row("opsets", ", ".join(f"{d} {v}" for d, v in data["opsets"].items()))
    for kind in ("inputs", "outputs"):
        table.add_row(kind, "\n".join(f"{v['name']}: {v['dtype']} {v['shape']}" + _distilled_note(v)
                                      for v in data[kind]) or "-")
    table.add_row("nodes", str(data["nodes"]))
    table.add_row("trainable parameters", f"{data['parameters']:,} ({_human(data['parameters'])})")
    table.add_row("buffers", f"{data['buffer_elements']:,} elements")
    if data.get("macs") is not None:
        unknown = f", {len(data['macs_unknown_nodes'])} node(s) of unknown shape" if data.get("macs_unknown_nodes") else ""
        at = data["macs_at"] if isinstance(data["macs_at"], str) else \
            ", ".join(f"{k}={','.join(map(str, v))}" for k, v in data["macs_at"].items())
        table.add_row("MACs", f"{data['macs']:,} ({_human(data['macs'])}) at {at}{unknown}")
        if data.get("macs_int8"):
            table.add_row("int8 MACs", f"{data['macs_int8']:,} ({data['macs_int8'] / data['macs']:.0%} of the MACs)")
    elif data.get("macs_note"):
        table.add_row("MACs", data["macs_note"])
    console.print(table)


def render_ops(rows: list[dict[str, Any]], console) -> None:
    from rich import box
    from rich.table import Table

    supported = sum(r["supported"] for r in rows)
    table = Table(title=f"Ops ({supported} of {len(rows)} op types supported by the torch bridge)",
                  title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify in [("op type", "left"), ("domain", "left"), ("opset", "right"), ("count", "right"), ("bridge", "left")]:
        table.add_column(header, justify=justify)
    for r in rows:
        mark = "[green]yes[/]" if r["supported"] else "[bold red]no[/]"
        table.add_row(r["op_type"], r["domain"], str(r["opset"]), str(r["count"]), mark)
    console.print(table)
    missing = [f"{r['op_type']} ({r['reason']})" for r in rows if not r["supported"]]
    if missing:
        console.print(f"[yellow]The torch bridge cannot convert this model yet:[/] {', '.join(missing)}", highlight=False)


def render_generic(name: str, data: Any, console) -> None:
    """Any section without its own renderer: a table for a list of dicts, else the JSON text."""
    from rich.table import Table

    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        table = Table(title=name.replace("_", " ").capitalize(), title_justify="left", title_style="bold", pad_edge=False)
        for key in data[0]:
            table.add_column(str(key))
        for row in data:
            table.add_row(*(str(row.get(key, "")) for key in data[0]))
        console.print(table)
    else:
        console.print(f"[bold]{name}[/]: {json.dumps(data, default=str)}", highlight=False)


RENDERERS: dict[str, Callable[[Any, Any], None]] = {
    "summary": render_summary,
    "ops": render_ops,
    "groups": lambda rows, console: __import__("onnxkd.commands.prune", fromlist=["x"]).render_groups(rows, console),
}


def render(report: dict[str, Any], console) -> None:
    console.print(f"[bold]{report['model']}[/]", highlight=False)
    for name in SECTIONS:
        renderer = RENDERERS.get(name)
        if renderer is None:
            render_generic(name, report[name], console)
        else:
            renderer(report[name], console)
    if hint := residual_stream_hint(report):
        console.print(hint, highlight=False)
    if report.get("note"):  # how the other commands feed this model
        console.print(f"[yellow]Note:[/] {escape(report['note'])}", highlight=False)


def residual_stream_hint(report: dict[str, Any]) -> str | None:
    """Groups frozen at residual Adds of a LayerNorm'd model are its residual stream, which the analysis leaves
    whole by default; the reason they show names the Add, not the LayerNorm behind it, so say it."""
    if report.get("prune_normalized") or not any(r["op_type"] == "LayerNormalization" for r in report["ops"]):
        return None
    at_adds = [r for r in report["groups"] if r.get("reason", "").startswith("combined with an operand")]
    if not at_adds:
        return None
    return (f"note: the {len(at_adds)} group(s) frozen at residual Adds write a residual stream that "
            "LayerNormalization normalises, left whole by default; --prune-normalized cuts it "
            "(inspect --prune-normalized shows the groups then)")


@click.command(name="inspect", short_help="Show a model's inputs, outputs, parameters and ops.")
@click.argument("model", type=click.Path())
@input_shape_option("Sizes of an input's dynamic dims for counting MACs (repeatable); a free batch is 1.")
@click.option("--prune-normalized", is_flag=True,
              help="Show the channel groups as prune --prune-normalized cuts them (LayerNorm'd hidden sizes too).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
def command(model: str, input_shapes, prune_normalized: bool, as_json: bool) -> None:
    """Show what MODEL holds: inputs, outputs, parameter count, and every op type with its count,
    opset and whether the torch bridge supports it.

    \b
    Example:
      onnxkd inspect model.onnx
      onnxkd inspect model.onnx --json | jq '.ops[] | select(.supported | not)'
      onnxkd inspect paddle_model.onnx --input-shape x=1,3,48,192
    """
    from onnxkd.data import parse_input_shapes

    report = inspect_model(model, parse_input_shapes(input_shapes), prune_normalized)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    from onnxkd.commands.console import make_console

    render(report, make_console())


# --------------------------------------------------------------------------- helpers


def _distilled_on(model: ir.Model) -> dict[str, dict[str, Any]]:
    """Output name -> what distillation learns instead of it: the class scores behind a class id, confidence
    or Softmax, the tensors a data-shaped op (NonMaxSuppression) reads, or the heads an output of boxes next to
    scores is decoded from."""
    from onnxkd.graph_passes.analyze.classifier_heads import scores_behind
    from onnxkd.graph_passes.analyze.data_shaped import data_shaped
    from onnxkd.graph_passes.analyze.output_parts import decodes

    shaped = data_shaped(model)
    found: dict[str, dict[str, Any]] = {name: {"distilled_on": list(shaped.sources), "why": f"rows follow the data "
                                               f"({op})"} for name, op in shaped.outputs.items()}
    for name, decode in decodes(model).items():
        found.setdefault(name, {"distilled_on": list(decode.heads), "why": "box coordinates next to class probabilities: the "
                                                              "heads they are decoded from"})
    for name, scores in scores_behind(model).items():
        found.setdefault(name, {"distilled_on": [scores], "why": "the class scores behind it"})
    return found


def _value_info(value: ir.Value) -> dict[str, Any]:
    dtype = value.dtype.name.lower() if value.dtype is not None else "?"
    shape = [d if isinstance(d, int) else (d.value or "?") for d in value.shape] if value.shape is not None else None
    return {"name": value.name, "dtype": dtype, "shape": shape}


_FLOATS = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}


def _weight_counts(model: ir.Model) -> tuple[int, int]:
    """(elements of trainable float weights, elements of other constants), without materialising folded weights.

    Mirrors the bridge: float initializers with dims and non-scalar float weights behind Constant /
    ConstantOfShape(constant shape) are parameters unless only read as statistics, scales or bounds.
    A quantized model's integer weights count as its float original's would, its scales and zero points
    do not (``metrics.is_parameter``).
    """
    from onnxkd.graph_passes.analyze.padded_channels import padded_weights
    from onnxkd.graph_passes.metrics import is_parameter
    from onnxkd.torch_bridge.module import _constant_only_names

    def weight(tensor, value: ir.Value, floats: bool) -> bool:
        return (floats or tensor.dtype.is_integer()) and is_parameter(tensor.dtype, value.uses())

    graph = model.graph
    sizes: dict[str, tuple[int, bool]] = {}  # name -> (elements, is a weight)
    for name, value in graph.initializers.items():
        tensor = value.const_value
        if tensor is not None:
            sizes[name] = (math.prod(tensor.shape.numpy()),
                           weight(tensor, value, tensor.dtype in _FLOATS and len(tensor.shape) > 0))
    for node in graph:
        if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            continue
        if node.op_type == "Constant" and "value" in node.attributes:
            tensor = node.attributes["value"].value
            count = math.prod(tensor.shape.numpy())
            # scalars are arithmetic
            sizes[node.outputs[0].name] = (count, weight(tensor, node.outputs[0], tensor.dtype in _FLOATS and count > 1))
        elif node.op_type == "ConstantOfShape" and node.inputs and node.inputs[0] is not None:
            shape = node.inputs[0].const_value
            if shape is None:
                continue
            fill = node.attributes.get("value")
            count = int(math.prod(int(d) for d in shape.numpy().reshape(-1)))
            sizes[node.outputs[0].name] = (count, (fill is None or fill.value.dtype in _FLOATS) and count > 1)
    constants = _constant_only_names(graph, set(sizes))
    trainable = sum(n for name, (n, is_weight) in sizes.items() if is_weight and name not in constants)
    trainable -= sum(map(padded_weights, graph))  # zeros meeting channels padded in for int8's fast kernel
    return trainable, sum(n for _, (n, _) in sizes.items()) - trainable


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)
