"""Constant folding and simplification: onnxsim when it can, onnxscript's folder when it cannot.

onnxsim runs in a child process with a timeout (it can hang or abort on odd graphs, and importing it
imports torch). It only folds constants and infers shapes here: its optimizer would fuse BatchNorm into
Conv and attention into contrib ops. Weights it could not fold anyway bypass it (see ``run_onnxsim``);
when the rest is still above protobuf's 2 GB limit, or onnxsim fails, ``onnxscript.optimizer`` folds
instead when it is installed (it is a test dependency, imported only here).
"""

from __future__ import annotations

import contextlib
import logging

import subprocess
import sys
import tempfile
from pathlib import Path

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxkd.model import PROTOBUF_LIMIT

_WORKER = Path(__file__).with_name("_onnxsim_worker.py")


class SimplifyFailed(Exception):
    pass


class SimplifyPass(ir.passes.FunctionalPass):
    """Fold constants; afterwards ``used`` is "onnxsim", "onnxscript" or "none" and ``note`` says why
    onnxsim was not used (None when it was)."""

    def __init__(self, use_onnxsim: bool = True, timeout_s: float = 300.0, size_limit: int = PROTOBUF_LIMIT):
        super().__init__()
        self.use_onnxsim = use_onnxsim
        self.timeout_s = timeout_s
        self.size_limit = size_limit
        self.used = "none"
        self.note: str | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.used, self.note = "none", None
        if not self.use_onnxsim:
            self.note = "onnxsim not requested"
        elif (size := _initializer_bytes(model)) > self.size_limit:
            self.note = f"onnxsim skipped: {size / 2**30:.2f} GiB of foldable weights exceed protobuf's 2 GB limit"
        else:
            try:
                simplified = run_onnxsim(model, self.timeout_s)
            except SimplifyFailed as exc:
                self.note = f"onnxsim failed: {exc}"
            else:
                self.used = "onnxsim"
                return ir.passes.PassResult(simplified, modified=True)
        return self._fallback(model.clone())

    def _fallback(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript import optimizer  # a runtime dependency; imported here because it is slow to import

        folded = model.clone()
        try:
            with quiet_logger("onnxscript.optimizer._constant_folding"):  # "skipping Split": weights we fold later
                result = optimizer.fold_constants(folded, onnx_shape_inference=True,
                                                  should_fold=_fold_constant_of_shape)
        except Exception as exc:  # a folder bug must not cost the user the rest of normalisation
            self.note = f"{self.note}; no constant folding (onnxscript failed: {_first_line(exc)})"
            return ir.passes.PassResult(model, modified=False)
        model = folded
        RemoveUnusedNodesPass()(model)
        self.used = "onnxscript"
        self.note = f"{self.note}; folded with onnxscript.optimizer instead"
        return ir.passes.PassResult(model, modified=bool(result.modified))


@contextlib.contextmanager
def quiet_logger(logger_name: str):
    """Hide a library's warnings about what it chose not to fold (not the user's business) for one call."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fold_constant_of_shape(node: ir.Node) -> bool | None:
    # Old exporters store weights as ConstantOfShape(shape); onnxscript keeps those unfolded to save
    # space, but a weight must become an initializer. None = onnxscript's default size rule.
    if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
        return True
    return None


def run_onnxsim(model: ir.Model, timeout_s: float) -> ir.Model:
    """The onnxsim-simplified copy of ``model``; raises SimplifyFailed with a one-line reason.

    Weights that onnxsim could not fold anyway (every consumer also takes a runtime tensor) travel as
    typed graph inputs without data and are put back by name: onnxsim's cost no longer grows with the
    model's size, and a model above 2 GB can be simplified as long as the rest is small.
    """
    work = model.clone()
    held = _hold_out_weights(work)
    with tempfile.TemporaryDirectory(prefix="onnxkd-sim-") as folder:
        source, target = Path(folder, "in.onnx"), Path(folder, "out.onnx")
        ir.save(work, source, external_data="in.onnx.data")
        command = [sys.executable, str(_WORKER), str(source), str(target)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SimplifyFailed(f"timed out after {timeout_s:g} s") from None
        if done.returncode != 0 or not target.exists():
            raise SimplifyFailed(_reason(done))
        simplified = ir.load(target)
        ir.external_data.load_to_model(simplified)  # the temporary folder is about to go
    _put_back(simplified, held)
    return simplified


def _hold_out_weights(model: ir.Model, min_bytes: int = 2**16) -> dict[str, ir.TensorProtocol]:
    """Turn large initializers that no foldable node reads into data-less graph inputs; return them."""
    graph = model.graph
    runtime = _runtime_values(graph)
    held: dict[str, ir.TensorProtocol] = {}
    for name, value in list(graph.initializers.items()):
        tensor = value.const_value
        if tensor is None or tensor.nbytes < min_bytes or value.is_graph_output():
            continue
        if all(any(i in runtime for i in user.inputs if i is not None) for user, _ in value.uses()):
            graph.initializers.pop(name)
            value.const_value = None
            graph.inputs.append(value)
            held[name] = tensor
    return held


def _runtime_values(graph: ir.Graph) -> set[ir.Value]:
    """Values that depend on a graph input; Shape/Size outputs excepted, since onnxsim resolves
    static dims to constants."""
    runtime = {value for value in graph.inputs if value.name not in graph.initializers}
    for node in graph:
        if node.op_type in ("Shape", "Size") or not any(i in runtime for i in node.inputs if i is not None):
            continue
        runtime.update(node.outputs)
    return runtime


def _put_back(model: ir.Model, held: dict[str, ir.TensorProtocol]) -> None:
    graph = model.graph
    for value in list(graph.inputs):
        if value.name in held:
            graph.inputs.remove(value)
            value.const_value = held[value.name]
            graph.register_initializer(value)
    missing = set(held) - set(graph.initializers)
    if any(value.name in missing for node in graph for value in node.inputs if value is not None):
        raise SimplifyFailed(f"onnxsim lost weights {sorted(missing)[:3]}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _reason(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()]
    if lines:
        return lines[-1][:300]
    return f"exit status {done.returncode}"


def _initializer_bytes(model: ir.Model) -> int:
    """Bytes of the weights that onnxsim would receive (held-out ones excluded)."""
    work = model.clone()
    _hold_out_weights(work)
    return sum(v.const_value.nbytes for v in work.graph.initializers.values() if v.const_value is not None)
