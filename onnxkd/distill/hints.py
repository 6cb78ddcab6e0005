"""Feature hints without adapters: the student's tensor against the teacher's tensor of the same name,
taken at the channels the prune plan kept.

A pruned student is the teacher with channels removed, and the plan stored in it says which: for every
cut group, the member tensors (name, axis, offset, block) and the kept teacher channel indices. So the
teacher's feature map, indexed at the kept channels along each cut axis, has exactly the student's shape
and meaning — no learned projection is needed (FitNets needs one because its student is a different net).

``--hint auto`` picks up to three tensors of cut groups spread through the depth of the graph: the
candidates are the tensors of cut groups that both graphs compute (outputs of activations and residual
Adds preferred, since they are what the next layer reads), ordered by their producer's position in the
graph; the ones nearest to 1/4, 1/2 and 3/4 of the way through are chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx_ir as ir
import torch

from onnxkd.errors import OnnxkdError

AUTO = "auto"
AUTO_COUNT = 3
_PREFERRED_PRODUCERS = {"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu",
                        "Gelu", "Mish", "Add", "Mul", "Concat", "MaxPool", "AveragePool"}


@dataclass
class Hint:
    tensor: str
    removed: dict[int, list[int]] = field(default_factory=dict)  # axis -> teacher channel indices cut there
    keep: dict[int, torch.Tensor] = field(default_factory=dict)  # axis -> kept teacher indices (set on first batch)

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "removed": {str(a): len(r) for a, r in self.removed.items()},
                "kept": {str(a): len(k) for a, k in self.keep.items()}}

    def samples_first(self, batch_axis: int) -> "Hint":
        """This hint on its tensor held with the samples moved from ``batch_axis`` to axis 0 (as distillation holds
        a seq-first model's tensors): the axes before the batch axis move one later."""
        return replace(self, removed={axis + (axis < batch_axis): r for axis, r in self.removed.items()})

    def fit(self, teacher: torch.Tensor, student: torch.Tensor) -> None:
        """Fix the kept indices from one batch's shapes, and check they give the student's shape."""
        want = list(teacher.shape)
        for axis, removed in self.removed.items():
            kept = np.setdiff1d(np.arange(teacher.shape[axis]), np.asarray(removed, dtype=np.int64))
            self.keep[axis] = torch.as_tensor(kept, dtype=torch.long, device=teacher.device)
            want[axis] = len(kept)
        if want[1:] != list(student.shape[1:]):
            raise OnnxkdError(
                f"--hint {self.tensor}: the teacher's tensor {list(teacher.shape)} at the plan's kept channels is "
                f"{want}, but the student's is {list(student.shape)}; is the student pruned from this teacher?")

    def select(self, teacher: torch.Tensor) -> torch.Tensor:
        for axis, index in self.keep.items():
            teacher = teacher.index_select(axis, index.to(teacher.device))
        return teacher


def removed_channels(details: dict, tensor: str) -> dict[int, list[int]]:
    """axis -> teacher indices the plan removed from ``tensor`` (empty when no cut group touches it)."""
    removed: dict[int, set[int]] = {}
    for group in details.get("groups", []):
        cut = sorted(set(range(group["size"])) - set(group["kept"]))
        for name, axis, offset, block in group["members"]:
            if name != tensor or not cut:
                continue
            indices = removed.setdefault(int(axis), set())
            for channel in cut:
                indices.update(range(offset + channel * block, offset + (channel + 1) * block))
    return {axis: sorted(indices) for axis, indices in removed.items()}


def resolve(names: list[str], teacher: ir.Model, student: ir.Model, details: dict) -> list[Hint]:
    """The hints named by ``--hint`` (``auto`` expands), each checked against both graphs and the plan."""
    teacher_tensors, student_tensors = tensor_names(teacher), tensor_names(student)
    chosen: list[str] = []
    for name in names:
        expanded = auto_hints(student, teacher_tensors, details) if name == AUTO else [name]
        if name == AUTO and not expanded:
            raise OnnxkdError("--hint auto: the student's prune plan cuts no tensor both graphs compute "
                              "(a student pruned by onnxkd carries its plan in its metadata)")
        chosen += [n for n in expanded if n not in chosen]
    hints = []
    for name in chosen:
        for graph, tensors in (("teacher", teacher_tensors), ("student", student_tensors)):
            if name not in tensors:
                raise OnnxkdError(f"--hint {name}: no tensor of that name in the {graph} graph")
        hints.append(Hint(name, removed_channels(details, name)))
    return hints


def check_covered(hint: Hint, teacher: torch.Tensor, student: torch.Tensor) -> None:
    """A hint on a tensor the plan does not cut must have the same shape in both models."""
    if not hint.removed and list(teacher.shape) != list(student.shape):
        raise OnnxkdError(
            f"--hint {hint.tensor}: the student's prune plan does not cover this tensor, and its shape differs "
            f"(teacher {list(teacher.shape)}, student {list(student.shape)}); hints need the plan onnxkd stores "
            "in a pruned student")


def check_finite(hint: Hint, teacher: torch.Tensor) -> None:
    """A hint tensor holding ±inf or NaN (a masked attention score: a causal mask adds -inf) makes the hint loss
    NaN from the first step, whatever the learning rate: refused, naming it."""
    if not bool(torch.isfinite(teacher).all()):
        raise OnnxkdError(f"--hint {hint.tensor}: the teacher's tensor holds inf or NaN values (a masked attention "
                          "score?), which a feature hint cannot match; choose another tensor")


def auto_hints(student: ir.Model, teacher_tensors: set[str], details: dict, count: int = AUTO_COUNT) -> list[str]:
    """Up to ``count`` cut tensors spread through the depth (see the module docstring for the rule)."""
    cut = {name for group in details.get("groups", []) if len(group["kept"]) < group["size"]
           for name, *_ in group["members"]}
    outputs = {v.name for v in student.graph.outputs}
    position, producer = {}, {}
    for index, node in enumerate(student.graph):
        for value in node.outputs:
            # not a Softmax's input: attention scores, where a mask puts -inf (see check_finite)
            into_softmax = any(user.op_type in ("Softmax", "LogSoftmax") for user, _ in value.uses())
            if value.name in cut and value.name in teacher_tensors and value.name not in outputs and not into_softmax:
                position[value.name], producer[value.name] = index, node.op_type
    if not position:
        return []
    preferred = [n for n in position if producer[n] in _PREFERRED_PRODUCERS]
    candidates = sorted(preferred or position, key=position.__getitem__)
    total = max(len(student.graph), 1)
    chosen: list[str] = []
    for k in range(1, count + 1):
        goal = total * k / (count + 1)
        best = min(candidates, key=lambda n: abs(position[n] - goal))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen, key=position.__getitem__)


def tensor_names(model: ir.Model) -> set[str]:
    names = {v.name for v in model.graph.inputs}
    for node in model.graph:
        names.update(v.name for v in node.outputs)
    return names
