"""Batch augmentation for distillation, checked against hand-built expectations (ramps, flips, one-hot
colours, numpy cross-entropy) rather than against the implementation's own arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxkd.distill.augment import AugmentPolicy, Augmenter, Mixed, mixed_cross_entropy, policy
from onnxkd.errors import OnnxkdError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n=6, c=3, h=16, w=20, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


def _ramps(n=8, h=16, w=16) -> torch.Tensor:
    """Channel 0 = column index, channel 1 = row index: bilinear resampling of a linear ramp is exact,
    so the output's step between neighbouring pixels reads off the crop's zoom and mirror."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    return torch.stack([cols, rows]).expand(n, 2, h, w).clone()


def _steps(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample x step of channel 0 and y step of channel 1, away from the border-clamped edge."""
    dx = out[:, 0, 4:-4, 5:-4] - out[:, 0, 4:-4, 4:-5]
    dy = out[:, 1, 5:-4, 4:-4] - out[:, 1, 4:-5, 4:-4]
    return dx, dy


# --- determinism ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["crop", "light", "strong"])
def test_same_seed_is_bit_identical_and_another_seed_differs(name):
    aug, x = Augmenter(policy(name), [0]), _images()
    (a,), mixed_a = aug([x], _gen(7))
    (b,), mixed_b = aug([x], _gen(7))
    (c,), _ = aug([x], _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    if name == "strong":
        assert torch.equal(mixed_a.partner, mixed_b.partner) and torch.equal(mixed_a.lam, mixed_b.lam)
    else:
        assert mixed_a is None


def test_no_global_rng_is_consumed():
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    Augmenter(policy("strong"), [0])([_images()], _gen(1))
    assert torch.equal(torch.rand(3), before)


# --- geometry ------------------------------------------------------------------------------------------

def test_full_box_without_flip_is_the_identity():
    pol = AugmentPolicy("full", crop=True, flip=False, mix=False, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    x = _images()
    (out,), _ = Augmenter(pol, [0])([x], _gen(0))
    assert torch.allclose(out, x, atol=1e-6, rtol=0)


def test_flip_mirrors_about_half_of_the_samples():
    pol = AugmentPolicy("flip", crop=False, flip=True, mix=False)
    x = _images(n=32)
    (out,), _ = Augmenter(pol, [0])([x], _gen(3))
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-5, rtol=0) for o, xi in zip(out, x)]
    kept = [torch.allclose(o, xi, atol=1e-5, rtol=0) for o, xi in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept))  # each sample is exactly one of the two
    assert 4 < sum(flipped) < 28


def test_crop_area_and_ratio_set_the_zoom_of_each_axis():
    # area 1/4, ratio 1: a half-width, half-height box, so each output pixel steps half an input pixel.
    pol = AugmentPolicy("zoom", crop=True, flip=False, mix=False, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    (out,), _ = Augmenter(pol, [0])([_ramps()], _gen(0))
    dx, dy = _steps(out)
    assert torch.allclose(dx, torch.full_like(dx, 0.5), atol=1e-4)
    assert torch.allclose(dy, torch.full_like(dy, 0.5), atol=1e-4)
    offsets = out[:, 0, 8, 8]
    assert offsets.unique().numel() == out.shape[0]  # the box is placed at random per sample
    # area 1/2, ratio (width/height) 2: full width, half height.
    pol = AugmentPolicy("wide", crop=True, flip=False, mix=False, scale=(0.5, 0.5), ratio=(2.0, 2.0))
    (out,), _ = Augmenter(pol, [0])([_ramps()], _gen(0))
    dx, dy = _steps(out)
    assert torch.allclose(dx, torch.ones_like(dx), atol=1e-4)
    assert torch.allclose(dy, torch.full_like(dy, 0.5), atol=1e-4)


def test_crop_with_flip_mirrors_the_zoomed_ramp():
    pol = AugmentPolicy("zf", crop=True, flip=True, mix=False, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    (out,), _ = Augmenter(pol, [0])([_ramps(n=16)], _gen(2))
    dx, _ = _steps(out)
    signs = {round(float(s), 4) for s in dx.flatten()}
    assert signs == {0.5, -0.5}


def test_crop_keeps_shape_dtype_and_value_range():
    # Four constant quadrants per channel: bilinear resampling can only blend them.
    x = torch.zeros(5, 3, 12, 14)
    x[:, :, :6, :7], x[:, :, :6, 7:], x[:, :, 6:, :7], x[:, :, 6:, 7:] = -2.0, 1.0, 3.0, 0.5
    (out,), _ = Augmenter(policy("light"), [0])([x], _gen(4))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= -2.0 - 1e-5 and float(out.max()) <= 3.0 + 1e-5  # fp32 weights: an ulp over
    assert not torch.equal(out, x)
    (half,), _ = Augmenter(policy("light"), [0])([x.to(torch.bfloat16)], _gen(4))
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), out, atol=0.05)


def test_nhwc_matches_nchw_on_the_permuted_tensor():
    x = _images()
    (nchw,), _ = Augmenter(policy("light"), [0], layout="nchw")([x], _gen(5))
    (nhwc,), _ = Augmenter(policy("light"), [0], layout="nhwc")([x.permute(0, 2, 3, 1)], _gen(5))
    assert torch.equal(nhwc, nchw.permute(0, 2, 3, 1))


def test_several_image_inputs_share_the_geometry():
    x = _images(c=3)
    (a, b), _ = Augmenter(policy("light"), [0, 1])([x, x[:, :1].clone()], _gen(6))
    assert torch.equal(a[:, :1], b)


# --- mixing --------------------------------------------------------------------------------------------

def _one_hot_colours(n=6, h=10, w=10) -> torch.Tensor:
    """Sample i is colour i: channel i is 1 everywhere, the others 0."""
    return torch.eye(n)[:, :, None, None].expand(n, n, h, w).clone()


def _mix_only() -> AugmentPolicy:
    return AugmentPolicy("mix", crop=False, flip=False, mix=True)


def test_mixup_and_cutmix_match_the_returned_labels():
    x = _one_hot_colours()
    n = x.shape[0]
    seen = set()
    for seed in range(40):
        (out,), mixed = Augmenter(_mix_only(), [0])([x], _gen(seed))
        partner, lam = mixed.partner, mixed.lam.double()
        assert sorted(partner.tolist()) == list(range(n)) and lam.shape == (n,)
        is_blend = bool(((out > 1e-6) & (out < 1 - 1e-6)).any())
        if is_blend:  # mixup: every pixel is lam * own colour + (1 - lam) * partner's colour
            seen.add("mixup")
            weight = lam[:, None, None, None]
            expected = weight * x.double() + (1 - weight) * x.double()[partner]
            assert torch.allclose(out.double(), expected, atol=1e-6)
        else:  # cutmix: every pixel is one colour; the partner's share of pixels is exactly 1 - lam
            for i in range(n):
                if partner[i] == i:
                    continue
                seen.add("cutmix")
                own = out[i, i].mean().item()
                theirs = out[i, partner[i]].mean().item()
                assert own + theirs == pytest.approx(1.0)
                assert theirs == pytest.approx(1 - lam[i].item(), abs=1e-6)
    assert seen == {"mixup", "cutmix"}


def test_mixing_leaves_non_image_inputs_alone_and_rejects_other_float_inputs():
    ids = torch.arange(6, dtype=torch.int64)
    x = _images()
    out, mixed = Augmenter(policy("strong"), [0])([x, ids], _gen(0))
    assert out[1] is ids and mixed is not None
    with pytest.raises(OnnxkdError, match="every float input"):
        Augmenter(policy("strong"), [0])([x, torch.zeros(6, 4)], _gen(0))


def test_mixed_cross_entropy_matches_hand_computation():
    scores = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 0.0]])
    labels = np.array([0, 2, 1])
    partner, lam = np.array([2, 0, 1]), np.array([0.7, 0.7, 0.7])
    log_p = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    ce = lambda y: -log_p[np.arange(3), y]  # noqa: E731
    expected = (lam * ce(labels) + (1 - lam) * ce(labels[partner])).mean()
    mixed = Mixed(torch.tensor(partner), torch.tensor(lam, dtype=torch.float32))
    got = mixed_cross_entropy(torch.tensor(scores, dtype=torch.bfloat16).float(), torch.tensor(labels), mixed)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(mixed_cross_entropy(torch.tensor(scores), torch.tensor(labels), None)) == pytest.approx(
        ce(labels).mean(), rel=1e-6)


# --- policies and pass-through -------------------------------------------------------------------------

def test_policies_and_their_descriptions():
    assert (policy("none").crop, policy("none").flip, policy("none").mix) == (False, False, False)
    assert (policy("crop").crop, policy("crop").flip, policy("crop").mix) == (True, False, False)
    assert (policy("light").crop, policy("light").flip, policy("light").mix) == (True, True, False)
    assert (policy("strong").crop, policy("strong").flip, policy("strong").mix) == (True, True, True)
    assert policy("none").describe() == "none: no augmentation"
    assert policy("light").describe() == (
        "light: random resized crop scale 0.35-1 ratio 0.75-1.33, horizontal flip p=0.5")
    strong = policy("strong").describe()
    assert "mixup alpha 0.2" in strong and "cutmix alpha 1" in strong and "p=0.5" in strong
    with pytest.raises(OnnxkdError, match="--augment 'bogus': choose none, crop, light or strong"):
        policy("bogus")


def test_identity_cases_return_the_inputs_untouched():
    x, ids = _images(), torch.arange(6)
    inputs = [x, ids]
    out, mixed = Augmenter(policy("none"), [0])(inputs, _gen(0))
    assert out[0] is x and out[1] is ids and mixed is None
    out, mixed = Augmenter(policy("strong"), [])(inputs, _gen(0))
    assert out[0] is x and out[1] is ids and mixed is None
    out, _ = Augmenter(policy("light"), [0])(inputs, _gen(0))
    assert out[1] is ids and not torch.equal(out[0], x)


def test_rank_or_dtype_mismatch_in_image_inputs_is_a_user_error():
    with pytest.raises(OnnxkdError, match="rank-4 float"):
        Augmenter(policy("light"), [0])([torch.zeros(2, 3, 4, 4, dtype=torch.int64)], _gen(0))


def test_the_config_names_a_callable_augmentation_and_refuses_bad_choices():
    from onnxkd.distill.config import DistillConfig

    def my_augment(inputs, generator):
        return inputs

    saved = DistillConfig(augment=my_augment).to_dict()
    assert saved["augment"] == "callable test_the_config_names_a_callable_augmentation_and_refuses_bad_choices." \
                               "<locals>.my_augment"
    with pytest.raises(OnnxkdError, match="Python function .* set its distill.augment to one of none, crop"):
        DistillConfig.from_dict(saved)
    with pytest.raises(OnnxkdError, match="--augment 'heavy': choose none, crop, light, strong"):
        DistillConfig(augment="heavy")
    with pytest.raises(OnnxkdError, match="--workers -1: must be >= 0"):
        DistillConfig(workers=-1)
    assert DistillConfig.from_dict(DistillConfig(augment="light", workers=3).to_dict()).augment == "light"
