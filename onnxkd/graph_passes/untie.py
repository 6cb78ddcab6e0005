"""Untie shared initializers: give every consumer node its own copy.

Exporters share identical tensors (the legacy exporter through Identity nodes, the dynamo exporter
directly: one LayerNorm weight or one Reshape shape for several nodes). Pruning cuts each consumer
differently, so each needs its own tensor. Copies are named ``<name>__u<k>`` (``origin`` recovers
the exported name, e.g. to look up gradients).
"""

from __future__ import annotations

import onnx_ir as ir

SUFFIX = "__u"


def origin(name: str) -> str:
    """The exported name of a (possibly untied) initializer."""
    head, sep, tail = name.rpartition(SUFFIX)
    return head if sep and tail.isdigit() else name


class UntieInitializersPass(ir.passes.InPlacePass):
    """Each initializer of rank >= 1 is read by one node only; copies are made for the others."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = set(graph.initializers)
        modified = False
        for value in list(graph.initializers.values()):
            if value.const_value is None or len(value.const_value.shape) == 0:  # scalars are never cut
                continue
            consumers = []
            for use in value.uses():
                if use.node not in consumers:
                    consumers.append(use.node)
            if value.is_graph_output():
                consumers.insert(0, None)  # the output keeps the original
            for k, node in enumerate(consumers[1:], start=1):
                name = f"{value.name}{SUFFIX}{k}"
                while name in names:
                    name += "_"
                names.add(name)
                copy = ir.Value(name=name, shape=value.shape, type=value.type,
                                const_value=ir.Tensor(value.const_value.numpy().copy(), name=name))
                graph.register_initializer(copy)
                for i, inp in enumerate(node.inputs):
                    if inp is value:
                        node.replace_input_with(i, copy)
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
