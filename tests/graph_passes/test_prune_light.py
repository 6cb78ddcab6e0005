"""The ONNX-zoo light models (opset 9 Caffe2 exports, weights behind ConstantOfShape) against the oracle."""

from __future__ import annotations

import onnx
import pytest
from light_models import light_model_path
from prune_oracle import assert_close, random_inputs, run, zeroed_original

from onnxkd.graph_passes.api import channel_groups, prune
from onnxkd.model import to_proto


# MACs after / before at --ratio 0.5, a little above what the rules reach today (AlexNet's LRN layers keep
# conv1/conv2 whole): a rule that regresses into freezing a group fails here
MACS_CEILING = {"squeezenet": 0.35, "resnet50": 0.28, "inception_v1": 0.40, "inception_v2": 0.29,
                "bvlc_alexnet": 0.74, "densenet121": 0.28}


@pytest.mark.parametrize("name", sorted(MACS_CEILING))
def test_light_model_half_ratio_matches_oracle(name):
    path = light_model_path(name)
    result = prune(path, 0.5)
    assert result.summary["macs_after"] <= MACS_CEILING[name] * result.summary["macs_before"]
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    prepared, groups = channel_groups(path)
    feeds = random_inputs(path)
    assert_close(run(result.model, feeds), run(zeroed_original(prepared, groups, result.plan), feeds))


def test_channel_shuffle_and_lrn_freeze_with_reasons():
    _, groups = channel_groups(light_model_path("shufflenet"))
    assert not any(g.prunable for g in groups)
    # the grouped 1x1 convs are producers and the shuffle is followed (an index mapping), but this ShuffleNet v1
    # has 34 positions per conv group for 4 groups: a shuffled channel's 4 copies straddle the next grouped
    # conv's groups (34 is not a multiple of 4), and the residual streams (a 4 x 28 periodic layout concatenated
    # with the stem's 24 channels) do not line up with the 4 x 34 layout of the units that add to them
    assert any("do not line up" in (g.frozen or "") for g in groups)
    _, groups = channel_groups(light_model_path("bvlc_alexnet"))
    assert any("LRN mixes channels" in (g.frozen or "") for g in groups)
