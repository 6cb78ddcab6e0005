"""The ONNX-zoo light models (opset 9 Caffe2 exports, weights behind ConstantOfShape) against the oracle."""

from __future__ import annotations

import onnx
import pytest
from light_models import light_model_path
from prune_oracle import assert_close, random_inputs, run, zeroed_original

from onnxkd.graph_passes.api import channel_groups, prune
from onnxkd.model import to_proto


@pytest.mark.parametrize("name", ["squeezenet", "resnet50", "inception_v1", "inception_v2", "bvlc_alexnet", "densenet121"])
def test_light_model_half_ratio_matches_oracle(name):
    path = light_model_path(name)
    result = prune(path, 0.5)
    assert result.summary["pruned"] >= 1
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    prepared, groups = channel_groups(path)
    feeds = random_inputs(path)
    assert_close(run(result.model, feeds), run(zeroed_original(prepared, groups, result.plan), feeds))
    bound = 0.8 if name == "bvlc_alexnet" else 0.5  # AlexNet's LRN layers keep conv1/conv2 whole
    assert result.summary["macs_after"] < bound * result.summary["macs_before"]


def test_channel_shuffle_and_lrn_freeze_with_reasons():
    _, groups = channel_groups(light_model_path("shufflenet"))
    assert not any(g.prunable for g in groups)
    # the shuffle itself is followed (an index mapping); the next grouped 1x1 conv would need whole conv
    # groups upstream but receives one channel of every shuffled group (see test_prune_shuffle.py)
    assert any("Conv at node 'n12'" in (g.frozen or "") for g in groups)
    _, groups = channel_groups(light_model_path("bvlc_alexnet"))
    assert any("LRN mixes channels" in (g.frozen or "") for g in groups)
