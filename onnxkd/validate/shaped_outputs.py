"""What the quality pass compares where outputs are not plain scores or maps.

An output whose shape follows its data (the boxes an end-to-end detector's NonMaxSuppression keeps) holds
different rows in the two models, none of them one sample's: it is compared by its row count only. What is
compared element by element instead are the per-sample tensors it comes from (the boxes and scores
NonMaxSuppression reads, which distillation learned), read in the quality pass as extra outputs of copies of both
models; latency is timed on the models as they are. An output of class ids (a deployment export's ArgMax) gives
agreement and accuracy when no output is class scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir
import onnxruntime as ort

from onnxkd.data.batch_axes import declared_batch_axes
from onnxkd.graph_passes.analyze.classifier_heads import class_id_outputs, token_score_outputs
from onnxkd.graph_passes.analyze.data_shaped import data_shaped
from onnxkd.graph_passes.analyze.output_parts import OutputParts, output_parts
from onnxkd.model import graph_copy, session_source
from onnxkd.validate.loaded import LoadedModel
from onnxkd.validate.sessions import SessionConfig, create_session


@dataclass
class QualityView:
    teacher: ort.InferenceSession  # what the quality pass runs: the models, or copies with ``exposed`` as outputs
    student: ort.InferenceSession
    shaped: dict[str, str] = field(default_factory=dict)  # output -> the op its shape follows
    exposed: dict[str, str] = field(default_factory=dict)  # tensor read as an extra output -> the op reading it
    class_ids: set[str] = field(default_factory=set)  # outputs that are an ArgMax's class ids
    token_scores: set[str] = field(default_factory=set)  # [N, T, C] outputs: class scores per position
    parts: dict[str, OutputParts] = field(default_factory=dict)  # outputs holding values of different kinds

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.teacher.get_outputs()]


def quality_view(teacher: LoadedModel, student: LoadedModel, t_session: ort.InferenceSession,
                 s_session: ort.InferenceSession, config: SessionConfig, expose: bool = True) -> QualityView:
    """The sessions the quality pass runs, with what ``data_shaped`` found in either model (``expose=False``:
    no quality pass will run, so no copies are made)."""
    t_shaped, s_shaped = data_shaped(teacher.model), data_shaped(student.model)
    shaped = {**s_shaped.outputs, **t_shaped.outputs}
    outputs = {value.name for value in teacher.model.graph.outputs}
    computed_by_student = {output.name for node in student.model.graph for output in node.outputs}
    exposed = {name: op for name, op in t_shaped.sources.items()
               if name not in outputs and name in computed_by_student}
    class_ids, token_scores = class_id_outputs(teacher.model), token_score_outputs(teacher.model)
    parts = output_parts(teacher.model) if expose else {}
    if not exposed or not expose:
        return QualityView(t_session, s_session, shaped, class_ids=class_ids, token_scores=token_scores, parts=parts)
    return QualityView(session_exposing(teacher.model, exposed, config, teacher.label),
                       session_exposing(student.model, exposed, config, student.label), shaped, exposed, class_ids,
                       token_scores, parts)


def session_exposing(model: ir.Model, names: Iterable[str], config: SessionConfig, label: str) -> ort.InferenceSession:
    """A session on a copy of ``model`` whose outputs are followed by the computed tensors ``names``."""
    copy = graph_copy(model)
    produced = {output.name: output for node in copy.graph for output in node.outputs}
    copy.graph.outputs.extend(produced[name] for name in names)
    # where the inputs' batches are is read from the model's own outputs, before the inner ones join them
    return create_session(session_source(copy), config, label, declared_batch_axes(model.graph))[0]

