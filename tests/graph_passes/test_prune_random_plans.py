"""Random plans (any kept subset of any size in every prunable group) keep the oracle on every family."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prune_oracle import assert_close, random_inputs, run, zeroed_original

from onnxkd.graph_passes.api import channel_groups, prune_with_plan
from onnxkd.model import to_proto

CASES = [("resnet", "legacy"), ("mobilenetv3", "dynamo"), ("densenet", "dynamo"), ("transformer", "legacy"),
         ("gpt", "dynamo"), ("resnext", "legacy"), ("unet", "legacy")]


def random_plan(groups, seed: int) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    plan = {}
    for g in groups:
        if g.prunable:
            count = int(rng.integers(1, g.size + 1))
            plan[g.id] = sorted(rng.choice(g.size, size=count, replace=False).tolist())
    return plan


@pytest.mark.parametrize("name,exporter", CASES)
def test_random_plans_match_oracle(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    _, groups = channel_groups(path)
    feeds = random_inputs(path)

    @settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**31 - 1))
    def check(seed):
        plan = random_plan(groups, seed)
        result = prune_with_plan(path, plan)
        onnx.checker.check_model(to_proto(result.model), full_check=True)
        prepared, fresh_groups = channel_groups(path)
        assert [g.size for g in fresh_groups] == [g.size for g in groups]  # the analysis is deterministic
        assert_close(run(result.model, feeds), run(zeroed_original(prepared, fresh_groups, plan), feeds))

    check()


def test_bad_plans_are_rejected(zoo_model):
    from onnxkd.errors import OnnxkdError

    path = zoo_model("resnet", "legacy")
    _, groups = channel_groups(path)
    gid = next(g.id for g in groups if g.prunable)
    for kept in ([], [0, 0], [10_000]):
        with pytest.raises(OnnxkdError):
            prune_with_plan(path, {gid: kept})
