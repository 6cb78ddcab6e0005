"""The ONNX-zoo light models (opset 9 Caffe2 exports, weights behind ConstantOfShape) against the oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from light_models import light_model_path
from prune_oracle import assert_close, random_inputs, random_plan, run, zeroed_original

from onnxkd.graph_passes.api import channel_groups, prune, prune_with_plan
from onnxkd.model import to_proto


# MACs after / before at --ratio 0.5, a little above what the rules reach today (AlexNet's LRN layers keep
# conv1/conv2 whole): a rule that regresses into freezing a group fails here
MACS_CEILING = {"squeezenet": 0.35, "resnet50": 0.28, "inception_v1": 0.40, "inception_v2": 0.29,
                "bvlc_alexnet": 0.68, "densenet121": 0.28, "shufflenet": 0.31}


@pytest.mark.parametrize("name", sorted(MACS_CEILING))
def test_light_model_half_ratio_matches_oracle(name):
    path = light_model_path(name)
    result = prune(path, 0.5, round_to=1)
    assert result.summary["macs_after"] <= MACS_CEILING[name] * result.summary["macs_before"]
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    prepared, groups = channel_groups(path)
    feeds = random_inputs(path)
    assert_close(run(result.model, feeds), run(zeroed_original(prepared, groups, result.plan), feeds))


def test_shufflenet_v1_keeps_only_straddling_channels():
    """4 conv groups of 34 positions: after the shuffle, channels 8 and 25 of each unit's first grouped conv straddle
    the second's conv groups (34 is not a multiple of 4) and stay; everything else, the residual streams (a
    4 x 28 layout plus the stem's 24 channels, read in blocks of 34) included, is cut with every conv group keeping
    as many channels as the others. Random, unequal plans match the oracle."""
    path = light_model_path("shufflenet")
    prepared, groups = channel_groups(path)
    frozen = [g.frozen for g in groups if not g.prunable]
    assert sum("straddles two conv groups" in reason for reason in frozen) == len(frozen) - 1  # and the softmax
    assert len(frozen) == 2 * 4 + 1  # 2 in each of the 4 units with 34-wide conv groups, and the softmax
    feeds = random_inputs(path)
    rng = np.random.default_rng(0)
    for _ in range(2):
        plan = random_plan(groups, rng)
        result = prune_with_plan(path, plan)
        onnx.checker.check_model(to_proto(result.model), full_check=True)
        assert_close(run(result.model, feeds), run(zeroed_original(*channel_groups(path), plan), feeds))


def test_lrn_freezes_with_a_reason():
    _, groups = channel_groups(light_model_path("bvlc_alexnet"))
    assert any("LRN mixes channels" in (g.frozen or "") for g in groups)
