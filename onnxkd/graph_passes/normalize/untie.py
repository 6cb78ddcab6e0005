"""Untie shared initializers and shape computations: give every consumer node its own copy.

Exporters share identical tensors (the legacy exporter through Identity nodes, the dynamo exporter
directly: one LayerNorm weight or one Reshape shape for several nodes). Pruning cuts each consumer
differently, so each needs its own tensor. Copies are named ``<name>__u<k>`` (``origin`` recovers
the exported name, e.g. to look up gradients).
"""

from __future__ import annotations

import onnx_ir as ir

SUFFIX = "__u"
_STATISTIC_SLOTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}


def origin(name: str) -> str:
    """The exported name of a (possibly untied) initializer."""
    head, sep, tail = name.rpartition(SUFFIX)
    return head if sep and tail.isdigit() else name


def _copy_name(name: str, k: int, taken: set[str]) -> str:
    """``<name>__u<k>`` (what ``origin`` undoes), made unique among ``taken`` and added to it."""
    copy = f"{name}{SUFFIX}{k}"
    while copy in taken:
        copy += "_"
    taken.add(copy)
    return copy


class UntieInitializersPass(ir.passes.InPlacePass):
    """Each initializer of rank >= 1 is read by one node only; copies are made for the others.

    A BatchNormalization running statistic is also untied from the other inputs of its own node (an
    exporter that deduplicates equal tensors may feed one zero tensor as both bias and running mean):
    training updates the one and trains the other. So is every piece of a Concat: a shape [batch, 2, 2, seq, 8]
    built from one constant [2] twice (the dynamo exporter's repeat_kv) must shrink the one entry alone.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = set(graph.initializers)
        modified = False
        for value in list(graph.initializers.values()):
            if value.const_value is None or len(value.const_value.shape) == 0:  # scalars are never cut
                continue
            readers: dict[tuple, list[int]] = {}  # (node, statistic slot or None) -> input indices
            for use in value.uses():
                own = (use.node.op_type, use.idx) in _STATISTIC_SLOTS or use.node.op_type == "Concat"
                slot = use.idx if own else None
                readers.setdefault((id(use.node), slot), [use.node]).append(use.idx)
            groups = list(readers.values())
            if value.is_graph_output():
                groups.insert(0, None)  # the output keeps the original
            for k, group in enumerate(groups[1:], start=1):
                node, indices = group[0], group[1:]
                name = _copy_name(value.name, k, names)
                copy = ir.Value(name=name, shape=value.shape, type=value.type,
                                const_value=ir.Tensor(value.const_value.numpy().copy(), name=name))
                graph.register_initializer(copy)
                for i in indices:
                    node.replace_input_with(i, copy)
                modified = True
        return ir.passes.PassResult(model, modified)


class UntieShapeConcatsPass(ir.passes.InPlacePass):
    """Each Concat that builds a Reshape's (or an Expand's) shape is read by that node only: copies are made for
    the others.

    The dynamo exporter computes a shape with dynamic dims once, as Concat(Shape(x)[0], Shape(x)[1], [64]), for
    every Reshape that needs it: q, k and v's head split in nn.MultiheadAttention, and the same [batch, seq, 64]
    in every layer. Cutting heads rewrites the constant entry (or makes it -1) for one Reshape; a shared Concat
    would rewrite it for all of them, so the analysis froze them. The copies read the same inputs, so the
    function is unchanged; ``UntieInitializersPass``, run after, gives each copy its own constant pieces.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = {v.name for node in graph for v in node.outputs} | set(graph.initializers)
        modified = False
        for node in list(graph):
            if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
                continue
            value = node.outputs[0]
            uses = list(value.uses())
            shapes = [use for use in uses if use.node.op_type in ("Reshape", "Expand") and use.idx == 1]
            if len(uses) < 2 or not shapes or value.is_graph_output():
                continue
            for k, use in enumerate(shapes[1:] if len(shapes) == len(uses) else shapes, start=1):
                name = _copy_name(value.name, k, names)
                copy = ir.Node(node.domain, "Concat", inputs=list(node.inputs), attributes=node.attributes.values(),
                               name=f"{node.name}{SUFFIX}{k}" if node.name else None, version=node.version)
                copy.outputs[0].name, copy.outputs[0].shape, copy.outputs[0].type = name, value.shape, value.type
                graph.insert_after(node, copy)
                use.node.replace_input_with(use.idx, copy.outputs[0])
                modified = True
        return ir.passes.PassResult(model, modified)


class RetieShapeConcatsPass(ir.passes.InPlacePass):
    """Undo ``UntieShapeConcatsPass`` where the copies of one Concat read the same inputs again (after
    ``RetieInitializersPass``: their Reshapes lost the same heads, or none): one shape computation, as exported."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        kept: dict[tuple, ir.Node] = {}
        modified = False
        for node in list(graph):
            if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
                continue
            key = (origin(node.outputs[0].name), node.attributes["axis"].value, tuple(id(v) for v in node.inputs))
            first = kept.setdefault(key, node)
            if first is not node:
                node.outputs[0].replace_all_uses_with(first.outputs[0])
                graph.remove(node, safe=True)
                modified = True
        return ir.passes.PassResult(model, modified)


class NameNodesPass(ir.passes.InPlacePass):
    """Unique names for every node: plans and edits refer to nodes by name."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        seen: set[str] = set()
        modified = False
        for node in model.graph:
            name = node.name or f"{node.op_type}_{node.outputs[0].name}"
            while name in seen:
                name += "_"
            seen.add(name)
            if name != node.name:
                node.name = name
                modified = True
        return ir.passes.PassResult(model, modified)


def _is_statistic(value: ir.Value) -> bool:
    """Read as BatchNormalization running statistics (directly or through Identity nodes)."""
    for use in value.uses():
        if (use.node.op_type, use.idx) in _STATISTIC_SLOTS:
            return True
        if use.node.op_type == "Identity" and _is_statistic(use.node.outputs[0]):
            return True
    return False


class RetieInitializersPass(ir.passes.InPlacePass):
    """Undo ``UntieInitializersPass`` where pruning left the copies of one exported tensor identical.

    Copies of one exported initializer (same ``origin``) that still have equal dtype, shape and bytes
    become one tensor again, as the exporter had them (a tied embedding and LM head stay tied). Two
    initializers the exporter kept apart are never merged, even when equal (two zero-initialised biases
    are two weights to train). BatchNormalization running statistics are never re-tied: each node's
    are its own, and training updates them in place (an exporter that deduplicates equal tensors may
    have shared one zero tensor between many layers' means and biases).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        copies: dict[tuple, list[ir.Value]] = {}
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or value.is_graph_output() or value.is_graph_input() or _is_statistic(value):
                continue
            copies.setdefault((origin(value.name), tensor.dtype, tuple(tensor.shape)), []).append(value)
        modified = False
        for values in copies.values():
            if len(values) < 2:
                continue  # the bytes of a tensor without copies are never read (weights can be GBs)
            kept: dict[bytes, ir.Value] = {}
            for value in values:
                first = kept.setdefault(value.const_value.tobytes(), value)
                if first is not value:
                    value.replace_all_uses_with(first)
                    graph.initializers.pop(value.name)
                    modified = True
        return ir.passes.PassResult(model, modified)
