"""Accuracy control: the int8 model may lose at most ``max_drop`` against the float one, measured on
evaluation samples calibration did not see.

* With labels and class scores: top-1 accuracy (float minus int8).
* Without labels, class scores: 1 - top-1 agreement with the float model.
* Other outputs: the relative L2 error of the int8 outputs against the float ones; part by part where an output
  puts values of different kinds side by side (a detector's boxes and scores: ``output_parts``), the worst part
  counting, since the boxes' magnitude would hide scores that int8 rounded to 0.

When the drop is over budget, nodes go back to float most sensitive first (1, 2, 4, ... of them), as NNCF's
accuracy control does. Sensitivity comes from onnxruntime's ``qdq_loss_debug``: every quantized activation of
the int8 model is compared with the float model's (signal-to-quantization-noise ratio, dB), and a tensor's
loss is the dB lost since the measured tensor before it, and a node's sensitivity the largest loss of the
tensors it reads and writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxkd.data import Dataset, InputSpec
from onnxkd.data.labels import check_labels_fit, labelled_output
from onnxkd.graph_passes.analyze.classifier_heads import class_id_outputs, scores_behind
from onnxkd.graph_passes.analyze.data_shaped import data_shaped
from onnxkd.graph_passes.analyze.output_parts import OutputParts, output_parts
from onnxkd.model import load
from onnxkd.quantize.calibration import reader_for
from onnxkd.validate import quality
from onnxkd.validate.gates import within
from onnxkd.validate.inference import run_dataset
from onnxkd.validate.sessions import SessionConfig, create_session
from onnxkd.validate.shaped_outputs import session_exposing


@dataclass
class Quality:
    """The output that loses most: its metric, values and drop; ``outputs`` holds every compared output's."""

    metric: str  # "accuracy" | "agreement" | "relative error"
    float_value: float | None  # float model's accuracy (accuracy only)
    int8_value: float  # accuracy, agreement or relative error of the int8 model
    drop: float  # what the budget limits
    output: str | None = None  # the output it was measured on
    outputs: list[dict] = field(default_factory=list)  # with several outputs: each one's {output, metric, drop}

    def to_dict(self) -> dict:
        found = {"metric": self.metric, "float": self.float_value, "int8": self.int8_value, "drop": self.drop}
        if len(self.outputs) > 1:
            found.update(output=self.output, outputs=self.outputs)
        return found

    def describe(self) -> str:
        """``'agreement'``, or ``'relative error of box'`` where the model has several outputs."""
        return f"{self.metric} of {self.output}" if len(self.outputs) > 1 else self.metric


Evaluate = Callable[[Path], Quality]


def evaluator(float_path: Path, data: Dataset, specs: list[InputSpec], batch: int, config: SessionConfig) -> Evaluate:
    """``evaluate(candidate)``: the candidate's quality against the float model's outputs, computed once. Outputs
    whose shape follows their data (a detector's NonMaxSuppression) are judged by the tensors they come from."""
    float_model = load(float_path)
    shaped = data_shaped(float_model)
    outputs = [value.name for value in float_model.graph.outputs]
    exposed = [name for name in shaped.sources if name not in outputs]
    compared = [i for i, name in enumerate(outputs + exposed) if name not in shaped.outputs]
    class_ids = (outputs + exposed)[compared[0]] in class_id_outputs(float_model) if compared else False
    found = output_parts(float_model)
    parts = [found.get((outputs + exposed)[i]) for i in compared]

    def outputs_of(path: Path, label: str, model: ir.Model | None = None) -> list[np.ndarray]:
        session = session_exposing(model or load(path), exposed, config, label) if exposed else \
            create_session(str(path), config, label)[0]
        values = run_dataset(session, data, specs, batch, label)
        return [values[i] for i in compared]

    reference, labels = outputs_of(float_path, "float model", float_model), data.labels
    chosen = None if class_ids else _scored_output(reference, labels)
    if chosen is not None:
        check_labels_fit(labels, reference[chosen], (outputs + exposed)[compared[chosen]])
    names = [(outputs + exposed)[i] for i in compared]
    behind = scores_behind(float_model)
    sources = [behind.get(name, name) for name in names]
    return lambda candidate: compare(reference, outputs_of(candidate, "int8 model"), labels, class_ids, parts, names,
                                     sources)


def compare(reference: list[np.ndarray], outputs: list[np.ndarray], labels: np.ndarray | None,
            class_ids: bool = False, parts: list[OutputParts | None] | None = None,
            names: list[str] | None = None, sources: list[str] | None = None) -> Quality:
    """Every output's loss, the worst one counting against the budget: the class scores the labels belong to (an
    ArgMax's class ids where ``class_ids``, the first output; without labels: the first output, if it is class
    scores) lose accuracy or agreement; every other float output its relative error (``parts``: each output's, or
    None; an output with parts counts with its worst part's error). A second head int8 ruins (a box regression next
    to the class scores) is not hidden by the first's accuracy. ``sources``: the class scores each output is
    computed from (``scores_behind``); a deployment export's confidence, the maximum of the same probabilities as
    its class id, is judged with the class id."""
    names = names or [f"output {i}" for i in range(len(reference))]
    parts = parts or [None] * len(reference)
    sources = sources or names
    chosen = 0 if class_ids else _scored_output(reference, labels)
    found = []
    for i, (r, o) in enumerate(zip(reference, outputs)):
        if i == chosen:
            found.append(_classes_kept(r, o, labels, class_ids, names[i]))
        elif chosen is not None and sources[i] == sources[chosen]:
            continue
        elif r.dtype.kind == "f":
            error = max(quality.relative_error(r[piece], o[piece]) for piece in quality.part_slices(r.ndim, parts[i]))
            found.append(Quality("relative error", None, error, error, names[i]))
    if not found:
        return Quality("relative error", None, 0.0, 0.0)
    worst = max(found, key=lambda q: q.drop)
    worst.outputs = [{"output": q.output, "metric": q.metric, "drop": q.drop} for q in found]
    return worst


def _classes_kept(reference: np.ndarray, output: np.ndarray, labels: np.ndarray | None, class_ids: bool,
                  name: str) -> Quality:
    first, got = (quality.predicted_classes(o, class_ids) for o in (reference, output))
    if labels is not None:
        accuracy = quality.accuracy_comparison(first, got, labels)
        return Quality("accuracy", accuracy["teacher"], accuracy["student"], accuracy["drop"], name)
    agreement = float(np.mean(quality.agreeing(first, got)))
    return Quality("agreement", None, agreement, 1.0 - agreement, name)


def _scored_output(reference: list[np.ndarray], labels: np.ndarray | None) -> int | None:
    """The class-score output the labels belong to (a model may also return an embedding [N, D]); without labels,
    the first output, if it is class scores."""
    scores = [i for i, r in enumerate(reference) if quality.is_class_scores(r) and r.dtype.kind == "f"]
    if labels is None:
        return 0 if scores[:1] == [0] else None
    chosen = labelled_output([reference[i] for i in scores], labels)
    return None if chosen is None else scores[chosen]


def sensitivity(float_path: Path, graph: onnx.GraphProto, int8_path: Path, samples: Dataset, batch: int,
                folder: Path) -> dict[str, float]:
    """Quantized compute node -> dB of signal-to-quantization-noise lost across it (larger: more sensitive)."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    from onnxkd.quantize.ptq import quantized_nodes

    activations = {}
    for label, path in (("float", float_path), ("int8", int8_path)):
        augmented = folder / f"{label}-activations.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented))
        activations[label] = collect_activations(str(augmented), reader_for(float_path, samples, batch))
        augmented.unlink()
    errors = compute_activation_error(create_activation_matching(activations["int8"], activations["float"]))
    sqnr = {name: float(e["xmodel_err"]) for name, e in errors.items() if np.isfinite(e.get("xmodel_err", np.nan))}
    quantized = set(quantized_nodes(int8_path))
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    upstream = lambda t: [producer[t]] if t in producer else []  # noqa: E731
    downstream = lambda t: consumers.get(t, [])  # noqa: E731
    inputs_of, outputs_of = (lambda n: n.input[:1]), (lambda n: n.output[:1])
    # a tensor's loss: the dB lost since the measured tensor before it. Excluding only its producer or only its
    # consumer may leave the tensor quantized, so both are charged with it.
    loss = {}
    for tensor, value in sqnr.items():
        nodes = upstream(tensor)
        before = _nearest(nodes[0].input[0], sqnr, upstream, inputs_of) if nodes and nodes[0].input else None
        loss[tensor] = max(0.0, before - value) if before is not None else 0.0
    result = {}
    for node in graph.node:
        if node.name not in quantized:
            continue
        seen = [_nearest(node.input[0], loss, upstream, inputs_of), _nearest(node.output[0], loss, downstream, outputs_of)]
        result[node.name] = max((v for v in seen if v is not None), default=0.0)
    return result


def _nearest(tensor: str, sqnr: dict[str, float], step, next_tensors, limit: int = 8) -> float | None:
    """The SQNR of the first measured tensor walking from ``tensor`` (through single-path nodes)."""
    for _ in range(limit):
        if tensor in sqnr:
            return sqnr[tensor]
        nodes = step(tensor)
        if len(nodes) != 1 or not next_tensors(nodes[0]):
            return None
        tensor = next_tensors(nodes[0])[0]
    return None


@dataclass
class AccuracyDecision:
    path: Path | None  # None: no candidate within budget
    quality: Quality
    float_nodes: dict[str, str] = field(default_factory=dict)  # node -> why (accuracy)
    trials: list[dict] = field(default_factory=list)


def within_budget(quantize: Callable[[set[str]], Path], evaluate: Evaluate, path: Path, excluded: set[str],
                  ranking: Callable[[Path], dict[str, float]], max_drop: float,
                  max_share: float = 0.5, total: int = 1, partners: dict[str, list[str]] | None = None,
                  measured: Quality | None = None) -> AccuracyDecision:
    """Return the most sensitive nodes to float, doubling their number, until the drop is within ``max_drop``;
    give up (path None) once more than ``max_share`` of the ``total`` compute nodes would be float.
    ``partners``: node -> the nodes that go back to float with it (``feeders``); ``measured``: ``path``'s quality
    when the caller has it already."""
    measured = measured if measured is not None else evaluate(path)
    trials = [{"float_nodes": len(excluded), "drop": measured.drop}]
    if within(measured.drop, max_drop):
        return AccuracyDecision(path, measured, {}, trials)
    scores = ranking(path)
    order = [name for name, _ in sorted(scores.items(), key=lambda item: -item[1]) if name not in excluded]
    count = 1
    while count <= len(order):
        chosen = {}
        for name in order[:count]:
            chosen[name] = f"sensitive: {scores[name]:.1f} dB of SQNR lost"
            for feeder in (partners or {}).get(name, ()):  # else the tensor it reads stays quantized
                chosen.setdefault(feeder, f"feeds {name}, which is sensitive")
        if len(excluded | set(chosen)) > max_share * total:
            break
        candidate = quantize(excluded | set(chosen))
        measured = evaluate(candidate)
        trials.append({"float_nodes": len(excluded | set(chosen)), "drop": measured.drop})
        if within(measured.drop, max_drop):
            return AccuracyDecision(candidate, measured, {k: v for k, v in chosen.items() if k not in excluded}, trials)
        count *= 2
    return AccuracyDecision(None, measured, {}, trials)


def feeders(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """Compute node -> the compute nodes whose outputs it reads (through pooling, activations, reshapes).

    onnxruntime quantizes a compute node's output for its own sake too: a sensitive node left in float still
    reads a quantized tensor unless the node writing it is left in float as well."""
    from onnxkd.quantize.ptq import COMPUTE_OPS

    producer = {out: node for node in graph.node for out in node.output}
    result = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or not node.input:
            continue
        tensor, found = node.input[0], []
        for _ in range(8):
            source = producer.get(tensor)
            if source is None:
                break
            if source.op_type in COMPUTE_OPS:
                found.append(source.name)
                break
            tensor = source.input[0] if source.input else ""
        result[node.name] = found
    return result
