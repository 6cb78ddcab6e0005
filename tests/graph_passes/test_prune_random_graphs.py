"""Random CNN graphs (convs, depthwise, BN, residual adds, SE gates, concat, split, slice, per-channel
constants) with random plans: the pruned model always equals the zero-at-consumers oracle."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import assert_close, random_inputs, random_plan, run, zeroed_original

from onnxkd.graph_passes.api import channel_groups, prune_with_plan

OPS = ["conv", "depthwise", "bn", "act", "add", "se", "concat", "split", "slice", "scale"]
GROUPED_OPS = OPS + ["grouped", "grouped"]


def _divisors(c: int) -> list[int]:
    return [g for g in range(2, c) if c % g == 0]


def random_graph(ops: list[str], seed: int):
    rng = np.random.default_rng(seed)
    nodes, inits, pool = [], {}, [("x", 3)]
    counter = iter(range(10_000))

    def fresh(prefix):
        return f"{prefix}{next(counter)}"

    def const(prefix, array):
        name = fresh(prefix)
        inits[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
        return name

    def conv(src, cin, cout, group=1, k=3):
        out = fresh("c")
        w = const("w", rng.standard_normal((cout, cin // group, k, k)) * 0.3)
        b = const("b", rng.standard_normal(cout) * 0.1)
        nodes.append(helper.make_node("Conv", [src, w, b], [out], name=out, group=group, pads=[k // 2] * 4))
        return out

    pool.append((conv("x", 3, 8), 8))
    for op in ops:
        src, c = pool[int(rng.integers(1, len(pool)))]
        if op == "conv":
            cout = int(rng.integers(2, 12))
            pool.append((conv(src, c, cout, k=int(rng.choice([1, 3]))), cout))
        elif op == "depthwise":
            pool.append((conv(src, c, c, group=c), c))
        elif op == "grouped" and _divisors(c):
            group = int(rng.choice(_divisors(c)))
            cout = group * int(rng.integers(1, 5))
            pool.append((conv(src, c, cout, group=group, k=int(rng.choice([1, 3]))), cout))
        elif op == "bn":
            out = fresh("bn")
            params = [const("p", rng.standard_normal(c) * 0.2 + offset) for offset in (1.0, 0.0, 0.0)]
            params.append(const("v", rng.uniform(0.5, 1.5, c)))
            nodes.append(helper.make_node("BatchNormalization", [src] + params, [out]))
            pool.append((out, c))
        elif op == "act":
            out = fresh("a")
            nodes.append(helper.make_node(str(rng.choice(["Relu", "Sigmoid", "HardSwish", "Tanh"])), [src], [out]))
            pool.append((out, c))
        elif op == "add":
            same = [t for t, cc in pool[1:] if cc == c and t != src]
            if same:
                out = fresh("add")
                nodes.append(helper.make_node(str(rng.choice(["Add", "Mul", "Sum"])), [src, same[-1]], [out]))
                pool.append((out, c))
        elif op == "se":
            gap, out = fresh("gap"), fresh("se")
            nodes.append(helper.make_node("GlobalAveragePool", [src], [gap]))
            squeeze = conv(gap, c, max(2, c // 2), k=1)
            excite = conv(squeeze, max(2, c // 2), c, k=1)
            gate = fresh("gate")
            nodes.append(helper.make_node("Sigmoid", [excite], [gate]))
            nodes.append(helper.make_node("Mul", [src, gate], [out]))
            pool.append((out, c))
        elif op == "concat":
            other, c2 = pool[int(rng.integers(1, len(pool)))]
            out = fresh("cat")
            nodes.append(helper.make_node("Concat", [src, other], [out], axis=1))
            pool.append((out, c + c2))
        elif op == "split" and c >= 2:
            first = int(rng.integers(1, c))
            a, b = fresh("sa"), fresh("sb")
            sizes = const("sz", np.array([first, c - first], np.int64))
            nodes.append(helper.make_node("Split", [src, sizes], [a, b], axis=1))
            pool += [(a, first), (b, c - first)]
        elif op == "slice" and c >= 2:
            start = int(rng.integers(0, c - 1))
            end = int(rng.integers(start + 1, c + 1))
            out = fresh("sl")
            args = [const("st", np.array([start], np.int64)), const("en", np.array([end], np.int64)),
                    const("ax", np.array([1], np.int64))]
            nodes.append(helper.make_node("Slice", [src] + args, [out]))
            pool.append((out, end - start))
        elif op == "scale":
            out = fresh("sc")
            shape = [(1, c, 1, 1), (c, 1, 1)][int(rng.integers(0, 2))]
            nodes.append(helper.make_node(str(rng.choice(["Mul", "Add", "Div"])), [src, const("k", rng.uniform(0.5, 1.5, shape))], [out]))
            pool.append((out, c))
    # every dangling tensor feeds the head, so that all channels are consumed somewhere
    used = {i for n in nodes for i in n.input}
    ends = [(t, c) for t, c in pool[1:] if t not in used] or [pool[-1]]
    outputs = []
    for t, c in ends:
        gap, flat, y = fresh("g"), fresh("f"), fresh("y")
        nodes += [helper.make_node("GlobalAveragePool", [t], [gap]), helper.make_node("Flatten", [gap], [flat]),
                  helper.make_node("Gemm", [flat, const("fc", rng.standard_normal((c, 3)) * 0.3)], [y])]
        outputs.append(y)
    graph = helper.make_graph(
        nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 6, 6])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", 3]) for y in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(OPS), min_size=3, max_size=10), seed=st.integers(0, 2**31 - 1))
def test_random_graphs_with_random_plans(ops, seed):
    model = random_graph(ops, seed)
    _, groups = channel_groups(model)  # strict: a rule that raises fails the test (conftest)
    # every op here has a rule: only the heads' outputs may freeze (a plan over prunable groups alone would
    # pass if everything froze)
    frozen = [g.frozen for g in groups if g.frozen]
    assert all(reason.startswith("graph output") for reason in frozen), frozen
    assert any(g.prunable for g in groups)
    plan = random_plan(groups, np.random.default_rng(seed))
    result = prune_with_plan(model, plan)
    prepared, fresh_groups = channel_groups(model)
    feeds = random_inputs(model)
    assert_close(run(result.model, feeds), run(zeroed_original(prepared, fresh_groups, plan), feeds))


# what a grouped conv may leave whole: conv groups that hold different numbers of cuttable channels
ALLOWED_FREEZES = ("graph output", "conv groups hold different numbers")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(GROUPED_OPS), min_size=3, max_size=10), seed=st.integers(0, 2**31 - 1))
def test_random_graphs_with_grouped_convs(ops, seed):
    """Grouped convs over concats, splits, slices and residual adds (conv groups that do not line up with the
    parts): every conv group keeps as many channels as the others, each at its own positions, and the pruned
    model still equals the oracle."""
    model = random_graph(ops, seed)
    _, groups = channel_groups(model)
    frozen = [g.frozen for g in groups if g.frozen]
    assert all(any(why in reason for why in ALLOWED_FREEZES) for reason in frozen), frozen
    plan = random_plan(groups, np.random.default_rng(seed))
    result = prune_with_plan(model, plan)
    prepared, fresh_groups = channel_groups(model)
    feeds = random_inputs(model)
    assert_close(run(result.model, feeds), run(zeroed_original(prepared, fresh_groups, plan), feeds))
