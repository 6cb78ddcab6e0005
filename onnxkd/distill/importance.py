"""Teacher-guided channel importance (criterion ``kd``): the teacher's soft labels decide what to cut.

For every channel c of a group, with m_c a mask on the channel,

    score(c) = E_batches[ (dL/dm_c)^2 ],   dL/dm_c = sum over the channel's coupled weights of w * dL/dw,

where L is the negative log-likelihood, under the model being pruned, of labels *sampled from the
teacher's predictions softened at T* (for outputs that are not class scores: of Gaussian samples around
the teacher's output). This is Group Fisher pruning with the teacher as the label source:

- on a model still equal to its teacher (the first pruning step) the mean gradient is zero — the
  plain KD loss has zero gradient there — and the score is the Fisher information of the mask, the
  second-order rise of the loss when the channel is removed; no labels are needed;
- on a partly trained student, E over sampled labels of L is the cross-entropy to the teacher's
  softened predictions (the KD loss up to a constant), so the mean gradient is dL_KD/dw and the score
  adds the squared first-order Taylor term of the KD loss to the Fisher term.

The per-channel sums come from ``graph_passes.importance.channel_sums`` (numpy); the scores go back to
``graph_passes`` as numpy arrays keyed by group id, for ``prune(criterion="kd", scores=...)``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxkd.data import DataLike, Dataset, as_dataset, input_specs
from onnxkd.distill.data_fit import first_run_on_data
from onnxkd.distill.batch_first import batch_axes, batch_first, run_entering
from onnxkd.distill.loader import in_order
from onnxkd.distill.progress import reporter
from onnxkd.distill.trainer import named_outputs
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.compared import compared_tensors
from onnxkd.graph_passes.analyze.pairing import paired_teacher
from onnxkd.graph_passes.api import channel_groups
from onnxkd.graph_passes.prune.importance import channel_sums
from onnxkd.model import ModelLike, load
from onnxkd.torch_bridge import to_torch

MAX_SAMPLES = 1024
BATCH = 16  # small batches: each batch's squared mask gradient is one draw of the estimate


def kd_scores(model: ModelLike, data: DataLike, *, teacher: ModelLike | None = None, prune_normalized: bool = False,
              temperature: float = 4.0, batch_size: int = BATCH, max_samples: int = MAX_SAMPLES, seed: int = 0,
              device: str = "cpu", progress: Any = None) -> dict[int, np.ndarray]:
    """Scores per prunable group of ``model``, keyed like ``channel_groups(model, prune_normalized)``.

    ``teacher``: where the labels are sampled from (default: ``model`` itself, i.e. a model not yet
    pruned). At most ``max_samples`` samples of ``data`` are used.
    """
    model = load(model)  # once: the data's fit and the groups read it
    if not isinstance(data, Dataset):  # a path, arrays, (x, y): what every command's --data takes
        data = as_dataset(data, input_specs(ir.to_proto(model)))
    prepared, groups = channel_groups(model, prune_normalized)
    prunable = [g for g in groups if g.prunable]
    # the weights where the model holds them (a large model's weights file, mapped), with gradients: scoring
    # never writes to them, and a copy cost the model's size again (7.6 GB peak on a 2.4 GB MLP)
    student = to_torch(prepared, half_as_float32=True, frozen=True).to(device).eval()
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    # the teacher under the student's names: the logits behind a Softmax are another tensor in each graph
    oracle = student if teacher is None else to_torch(paired_teacher(load(teacher), prepared)[0],
                                                      half_as_float32=True, frozen=True).to(device).eval()
    compared = compared_tensors(prepared)
    capture = [t for t in compared if t not in student.output_names]
    named = list(student.onnx_parameters())
    if not named:
        raise OnnxkdError("the model has no float initializers to score")
    arrays = {name: p.detach().cpu().numpy() for name, p in named}
    generator = torch.Generator(device=device).manual_seed(seed)
    totals = {g.id: np.zeros(g.size) for g in prunable}
    subset = data.take(np.arange(min(len(data), max_samples)))
    report = reporter(progress)
    report.start("kd importance", len(subset))
    samples = 0
    batches = in_order(subset, student.input_names, batch_size, torch.device(device))
    probe = next(batches)
    # every tensor with its samples on axis 0, as distillation holds them (a seq-first model's outputs moved there)
    axes = first_run_on_data(student, prepared, probe.inputs, "the model",
                             lambda: batch_axes(student, probe.inputs, compared, run_entering))
    run = batch_first(run_entering, student.output_names, axes)
    for batch in itertools.chain([probe], batches):
        values = named_outputs(student, run(student, batch.inputs, capture))
        if oracle is student:
            reference = {k: v.detach() for k, v in values.items()}
        else:
            with torch.no_grad():
                reference = named_outputs(oracle, run(oracle, batch.inputs, capture))
        loss = _sampled_nll(values, reference, compared, temperature, generator)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        gradients = {name: g.detach().cpu().numpy() for (name, _), g in zip(named, grads) if g is not None}
        for group in prunable:
            totals[group.id] += np.square(channel_sums(group, arrays, gradients))
        del grads, gradients, loss, values  # else two batches' gradients (the model's size each) are alive at once
        samples += len(batch.indices)
        report.update(samples)
    report.stop()
    return {gid: total / max(samples, 1) for gid, total in totals.items()}


def _sampled_nll(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], tensors: list[str],
                 temperature: float, generator: torch.Generator) -> torch.Tensor:
    """-log p_student(y) summed over the batch, y drawn from the teacher (categorical or unit Gaussian)."""
    total = torch.zeros((), device=next(iter(student.values())).device)
    for name in tensors:
        s, t = student[name], teacher[name]
        if not s.is_floating_point():
            continue
        s, t = s.float(), t.float()
        if s.dim() == 2 and s.shape[1] > 1:  # class scores
            sampled = torch.multinomial(F.softmax(t / temperature, dim=1), 1, generator=generator).squeeze(1)
            total = total + F.cross_entropy(s / temperature, sampled, reduction="sum")
        else:  # maps, embeddings: Fisher of a unit Gaussian, J^T J
            noise = torch.randn(t.shape, generator=generator, device=t.device)
            total = total + 0.5 * (s - (t + noise)).square().sum()
    return total
