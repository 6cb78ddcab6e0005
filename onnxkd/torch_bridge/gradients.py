"""Gradients of a loss with respect to every float initializer, keyed by ONNX initializer name.

They feed the ``taylor`` pruning criterion (``graph_passes.importance``), which stays torch-free: the
gradients cross the layer boundary as plain numpy arrays.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxkd.data import as_dataset, input_specs
from onnxkd.data.labels import labelled_output
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.compared import compared_tensors
from onnxkd.model import ModelLike, load
from onnxkd.torch_bridge.module import OnnxModule, to_torch

Feeds = Mapping[str, np.ndarray]
STAGE = "gradients"


def initializer_gradients(model: ModelLike | OnnxModule, batches: Any, labels: np.ndarray | None = None, *,
                          batch_size: int = 32, max_batches: int | None = None, progress: Any = None,
                          device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """d(loss)/d(initializer), averaged over the samples, for every float initializer the bridge trains.

    ``batches``: a ``onnxkd.data.Dataset`` (cut into ``batch_size`` samples), one feeds dict
    (input name -> array, samples on axis 0), an iterable of feeds dicts or ``(feeds, labels)``
    pairs (what ``Dataset.batches`` yields), or what every command's ``--data`` takes (a path, one array,
    ``(x, y)``, a dict of arrays with ``labels``), read with ``onnxkd.data.as_dataset`` for ``model``
    (a model, not an ``OnnxModule``: fitting the data needs its graph's inputs). ``labels``: int class ids for all samples in batch order,
    for batches that carry none. ``max_batches`` stops early. ``progress``: a rich ``Console`` (a bar
    with samples/s and ETA on a terminal) or a callable ``progress(stage, samples_done, samples_total)``.

    The model runs in eval mode: BatchNormalization uses its running statistics and Dropout is off,
    as in the deployed model whose channels are being ranked (train mode would score a different
    function and update the running statistics).

    Loss, summed over samples and divided by their count, over the tensors the model is held to
    (``graph_passes.analyze.compared``: the outputs, or the logits behind a class id, or the tensors a
    NonMaxSuppression reads; an ``OnnxModule`` given: its outputs):

    - with labels, when one looks like class scores (``[N, C]``, C >= 2): cross-entropy of the one the labels
      belong to (``data.labels.labelled_output``: where the model's top-1 matches them most)
      (on the log of the output when its rows are already probabilities);
    - otherwise the squared L2 norm of the float outputs, ``sum ||f(x)||^2``: a label-free proxy
      used by Taylor/saliency pruning on unlabeled data; the gradient measures how much each weight
      moves the output, so a channel nothing downstream reads scores zero.

    Returns float32 arrays keyed by initializer name; a trainable initializer no output depends on
    gets zeros. Nothing on a given ``OnnxModule`` changes (mode, ``.grad`` and ``requires_grad``
    are restored).
    """
    if isinstance(model, OnnxModule):
        if _needs_fitting(batches):
            raise OnnxkdError("initializer_gradients: data given as a path, an array or (x, y) is fitted to the "
                              "model's inputs; give the model (a path or a ModelProto), not an OnnxModule, or "
                              "give an onnxkd.data.Dataset")
        module, compared = model, list(model.output_names)
    else:
        graph = load(model)
        if _needs_fitting(batches):
            batches = as_dataset(batches, input_specs(ir.to_proto(graph)))
        module, compared = to_torch(graph, half_as_float32=True), compared_tensors(graph)
        if device is not None:
            module = module.to(device)
    capture = [name for name in compared if name not in module.output_names]
    named = list(module.onnx_parameters())
    if not named:
        raise OnnxkdError("the model has no float initializers to compute gradients for")
    params = [p for _, p in named]
    totals = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params]
    was_training, frozen = module.training, [p for p in params if not p.requires_grad]
    module.eval()
    for p in frozen:
        p.requires_grad_(True)
    samples, total = 0, _sample_total(batches, batch_size, max_batches)
    report = _reporter(progress, total)
    try:
        for feeds, batch_labels in _batches(batches, labels, batch_size, max_batches):
            inputs = _inputs(module, feeds)
            outputs, captured = module(*module.samples_entering(inputs), capture=capture)
            values = {**dict(zip(module.output_names, outputs)), **captured}
            loss = _loss([values[name] for name in compared], batch_labels, compared)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, grad in zip(totals, grads):
                if grad is not None:
                    acc += grad.float()
            samples += _count(feeds)
            report(samples)
    finally:
        report(None)
        module.train(was_training)
        for p in frozen:
            p.requires_grad_(False)
    if samples == 0:
        raise OnnxkdError("no samples to compute gradients on")
    return {name: (acc / samples).cpu().numpy() for (name, _), acc in zip(named, totals)}


# --------------------------------------------------------------------------- batches


def _needs_fitting(batches: Any) -> bool:
    """Data in a form of the commands' ``--data`` (read by ``as_dataset``), not already cut into feeds."""
    if isinstance(batches, (str, os.PathLike, np.ndarray)):
        return True
    if isinstance(batches, tuple) and len(batches) == 2 and all(isinstance(b, np.ndarray) for b in batches):
        return True  # (x, y): a list of (feeds, labels) pairs is a list, and its pairs hold dicts
    return isinstance(batches, Mapping) and "labels" in batches


def _batches(batches: Any, labels: np.ndarray | None, batch_size: int,
             max_batches: int | None) -> Iterator[tuple[Feeds, np.ndarray | None]]:
    if hasattr(batches, "batches") and hasattr(batches, "arrays"):  # onnxkd.data.Dataset
        labels = batches.labels if labels is None else labels
        batches = (feeds for feeds, _ in batches.batches(batch_size))
    elif isinstance(batches, Mapping):
        batches = [batches]
    offset = 0
    for index, item in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            return
        feeds, batch_labels = item if isinstance(item, tuple) else (item, None)
        n = _count(feeds)
        if batch_labels is None and labels is not None:
            batch_labels = np.asarray(labels)[offset:offset + n]
        offset += n
        yield feeds, batch_labels


def _count(feeds: Feeds) -> int:
    first = np.asarray(next(iter(feeds.values()))) if feeds else np.zeros(0)
    return len(first) if first.ndim else 1


def _sample_total(batches: Any, batch_size: int, max_batches: int | None) -> int | None:
    if hasattr(batches, "batches") and hasattr(batches, "arrays"):
        n = len(batches)
        return n if max_batches is None else min(n, max_batches * batch_size)
    if isinstance(batches, Mapping):
        return _count(batches)
    if isinstance(batches, (list, tuple)):
        chosen = batches if max_batches is None else batches[:max_batches]
        return sum(_count(b[0] if isinstance(b, tuple) else b) for b in chosen)
    return None


def _inputs(module: OnnxModule, feeds: Feeds) -> list[torch.Tensor]:
    missing = [name for name in module.input_names if name not in feeds]
    if missing:
        raise OnnxkdError(f"no array for input {missing[0]!r}; the model's inputs are "
                          f"{', '.join(map(repr, module.input_names))}")
    device = next(iter(module.parameters())).device
    return [torch.as_tensor(np.ascontiguousarray(feeds[name]), device=device) for name in module.input_names]


# --------------------------------------------------------------------------- loss


def _loss(outputs: tuple, labels: np.ndarray | None, names: list[str]) -> torch.Tensor:
    floats = [o for o in outputs if isinstance(o, torch.Tensor) and o.is_floating_point() and o.requires_grad]
    if not floats:
        raise OnnxkdError("no float output of the model depends on its weights: nothing to differentiate")
    candidates = [i for i, o in enumerate(outputs) if _class_scores(o)]
    if labels is not None and candidates:
        chosen = candidates[labelled_output([outputs[i].detach().float().cpu().numpy() for i in candidates],
                                            np.asarray(labels))]  # an embedding may come first
        scores = outputs[chosen].float()
        classes = scores.shape[1]
        target = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=scores.device)
        if len(target) != len(scores):
            raise OnnxkdError(f"labels: {len(target)} labels for a batch of {len(scores)} samples")
        if len(target) and int(target.max()) >= classes:
            raise OnnxkdError(f"labels: class id {int(target.max())} but output {names[chosen]!r} has {classes} "
                              "classes")
        if _probabilities(scores):
            return F.nll_loss(torch.log(scores.clamp_min(1e-12)), target, reduction="sum")
        return F.cross_entropy(scores, target, reduction="sum")
    return sum(o.float().square().sum() for o in floats)


def _class_scores(output) -> bool:
    return (isinstance(output, torch.Tensor) and output.is_floating_point() and output.requires_grad
            and output.dim() == 2 and output.shape[1] >= 2)


def _probabilities(scores: torch.Tensor) -> bool:
    with torch.no_grad():
        return bool(scores.min() >= 0 and torch.allclose(scores.sum(1), torch.ones_like(scores[:, 0]), atol=1e-3))


# --------------------------------------------------------------------------- progress


def _reporter(progress: Any, total: int | None) -> Callable[[int | None], None]:
    """report(samples_done) while running, report(None) once at the end."""
    if progress is None:
        return lambda done: None
    if callable(progress) and not hasattr(progress, "is_terminal"):
        return lambda done: None if done is None else progress(STAGE, done, total)
    if not progress.is_terminal:  # a rich Console writing to a pipe or a file: no live bar
        return lambda done: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=progress, transient=True)
    task = bar.add_task(f"{STAGE} (samples)", total=total, rate="")
    start = time.perf_counter()
    bar.start()

    def report(done: int | None) -> None:
        if done is None:
            bar.stop()
            return
        rate = done / max(time.perf_counter() - start, 1e-9)
        bar.update(task, completed=done, rate=f"{rate:,.1f} samples/s")

    return report
