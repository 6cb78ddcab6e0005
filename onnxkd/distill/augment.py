"""Seeded batch augmentation for distillation with "consistent teaching".

The caller runs the teacher and the student on the SAME augmented batch, so this module only transforms
a batch: random resized crop and horizontal flip (one resampling per batch), then optionally mixup or
cutmix. Every random draw comes from the caller's CPU ``torch.Generator`` (small parameter tensors are
drawn on CPU, then moved to the batch's device), so one generator state gives one bit-identical batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onnxkd.errors import OnnxkdError

from onnxkd.distill.config import AUGMENTS
LAYOUTS = ("nchw", "nhwc")


def _num(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class AugmentPolicy:
    """What to do to each batch; ``policy(name)`` builds the named ones."""

    name: str  # one of AUGMENTS for the built-in policies
    crop: bool  # random resized crop (no flip)
    flip: bool  # horizontal flip with p=0.5
    mix: bool  # mixup or cutmix (one of the two per batch, p=0.5 each)
    scale: tuple[float, float] = (0.35, 1.0)  # crop area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (width / height)
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0

    def __post_init__(self):
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"augment scale {self.scale}: need 0 < low <= high <= 1")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"augment ratio {self.ratio}: need 0 < low <= high")
        if self.mixup_alpha <= 0 or self.cutmix_alpha <= 0:
            raise ValueError("augment mixup/cutmix alpha must be > 0")

    def describe(self) -> str:
        """One line naming every parameter in use (for logs and reports)."""
        parts = []
        if self.crop:
            parts.append(f"random resized crop scale {_num(self.scale[0])}-{_num(self.scale[1])} "
                         f"ratio {_num(self.ratio[0])}-{_num(self.ratio[1])}")
        if self.flip:
            parts.append("horizontal flip p=0.5")
        if self.mix:
            parts.append(f"mixup alpha {_num(self.mixup_alpha)} or cutmix alpha "
                         f"{_num(self.cutmix_alpha)} (p=0.5 each)")
        return f"{self.name}: {', '.join(parts) or 'no augmentation'}"


def policy(name: str) -> AugmentPolicy:
    """The named policy: crop = crop only; light = crop + flip; strong = light + mixup/cutmix."""
    if name not in AUGMENTS:
        raise OnnxkdError(f"--augment {name!r}: choose none, crop, light or strong")
    level = AUGMENTS.index(name)
    return AugmentPolicy(name, crop=level >= 1, flip=level >= 2, mix=level >= 3)


@dataclass
class Mixed:
    """What mixing did to the labels of one batch."""

    partner: torch.Tensor  # long [N]: index of the sample each one was mixed with (a permutation)
    lam: torch.Tensor  # float [N]: weight of the sample's own label (1 - lam goes to partner's label)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _beta(alpha: float, generator: torch.Generator) -> float:
    # torch's Beta/Gamma samplers take no generator; a numpy Generator seeded from ours keeps the draw
    # reproducible without touching any global RNG.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _crop_boxes(n: int, pol: AugmentPolicy, generator: torch.Generator) -> torch.Tensor:
    """Per-sample crop boxes [N, 4] = (x0, y0, width, height), as fractions of the image.

    Torchvision-style: area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``;
    sides are clipped to the image (rather than retried) so that one vectorised draw always succeeds.
    """
    if not pol.crop:
        return torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64).repeat(n, 1)
    area = _uniform(n, *pol.scale, generator)
    aspect = torch.exp(_uniform(n, math.log(pol.ratio[0]), math.log(pol.ratio[1]), generator))
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    x0 = torch.rand(n, generator=generator, dtype=torch.float64) * (1 - width)
    y0 = torch.rand(n, generator=generator, dtype=torch.float64) * (1 - height)
    return torch.stack([x0, y0, width, height], dim=1)


def _geometry(n: int, pol: AugmentPolicy, generator: torch.Generator) -> torch.Tensor:
    """theta [N, 2, 3] mapping output to input in affine_grid's [-1, 1] coordinates: crop + flip."""
    x0, y0, width, height = _crop_boxes(n, pol, generator).unbind(1)
    flip = torch.ones(n, dtype=torch.float64)
    if pol.flip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = width * flip  # negating the x scale mirrors the crop about its centre
    theta[:, 0, 2] = 2 * x0 + width - 1  # box centre in [-1, 1]
    theta[:, 1, 1] = height
    theta[:, 1, 2] = 2 * y0 + height - 1
    return theta.float()


def _resample(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Crop + flip + resize back to the input size in one bilinear pass (fp32 math, dtype kept)."""
    theta = theta.to(image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(image.dtype)


def _mixup(images: list[torch.Tensor], partner: torch.Tensor, lam: float) -> list[torch.Tensor]:
    return [(lam * x.float() + (1 - lam) * x.float()[partner.to(x.device)]).to(x.dtype) for x in images]


def _cutmix(images: list[torch.Tensor], partner: torch.Tensor, lam: float,
            generator: torch.Generator) -> tuple[list[torch.Tensor], float]:
    """Paste one box of area ~(1 - lam) from each sample's partner; returns lam corrected to the exact
    pasted fraction (of the first image, when several image inputs have different sizes)."""
    side = math.sqrt(1 - lam)
    cx, cy = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    # The box centre is uniform over the image and the box is clipped there, as in the CutMix paper.
    box = [max(cx - side / 2, 0.0), min(cx + side / 2, 1.0), max(cy - side / 2, 0.0), min(cy + side / 2, 1.0)]
    out, pasted = [], None
    for x in images:
        h, w = x.shape[2], x.shape[3]
        left, right, top, bottom = round(box[0] * w), round(box[1] * w), round(box[2] * h), round(box[3] * h)
        x = x.clone()
        x[:, :, top:bottom, left:right] = x[partner.to(x.device), :, top:bottom, left:right]
        out.append(x)
        if pasted is None:
            pasted = (right - left) * (bottom - top) / (h * w)
    return out, 1 - pasted


class Augmenter:
    """Transforms one batch of model inputs; non-image inputs pass through unchanged."""

    def __init__(self, policy: AugmentPolicy, image_inputs: list[int], layout: str = "nchw"):
        if layout not in LAYOUTS:
            raise OnnxkdError(f"augment layout {layout!r}: choose nchw or nhwc")
        self.policy, self.image_inputs, self.layout = policy, list(image_inputs), layout

    def __call__(self, inputs: list[torch.Tensor],
                 generator: torch.Generator) -> tuple[list[torch.Tensor], Mixed | None]:
        pol = self.policy
        if not self.image_inputs or not (pol.crop or pol.flip or pol.mix):
            return inputs, None
        self._check(inputs)
        images = [self._to_nchw(inputs[i]) for i in self.image_inputs]
        n = images[0].shape[0]
        if pol.crop or pol.flip:
            theta = _geometry(n, pol, generator)  # shared: the image inputs are views of one scene
            images = [_resample(x, theta) for x in images]
        mixed = None
        if pol.mix:
            images, mixed = self._mix(images, generator)
        out = list(inputs)
        for i, x in zip(self.image_inputs, images):
            out[i] = self._from_nchw(x)
        return out, mixed

    def _mix(self, images: list[torch.Tensor],
             generator: torch.Generator) -> tuple[list[torch.Tensor], Mixed]:
        n, device = images[0].shape[0], images[0].device
        use_mixup = bool(torch.rand(1, generator=generator) < 0.5)
        partner = torch.randperm(n, generator=generator)
        if use_mixup:
            lam = _beta(self.policy.mixup_alpha, generator)
            images = _mixup(images, partner, lam)
        else:
            images, lam = _cutmix(images, partner, _beta(self.policy.cutmix_alpha, generator), generator)
        return images, Mixed(partner.to(device), torch.full((n,), lam, dtype=torch.float32, device=device))

    def _check(self, inputs: list[torch.Tensor]) -> None:
        for i in self.image_inputs:
            x = inputs[i]
            if x.dim() != 4 or not x.is_floating_point():
                raise OnnxkdError(f"augment: input {i} is not a rank-4 float image (shape "
                                  f"{tuple(x.shape)}, {x.dtype})")
        if self.policy.mix:
            # Mixing the images but not another float input would feed the models an inconsistent sample.
            others = [i for i, x in enumerate(inputs) if x.is_floating_point() and i not in self.image_inputs]
            if others:
                raise OnnxkdError(f"--augment {self.policy.name}: mixup/cutmix needs every float input to "
                                  f"be an image, but input(s) {others} are not")

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.layout == "nhwc" else x

    def _from_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.layout == "nhwc" else x


def mixed_cross_entropy(scores: torch.Tensor, labels: torch.Tensor, mixed: Mixed | None) -> torch.Tensor:
    """Mean over samples of lam*CE(own label) + (1-lam)*CE(partner's label), in fp32; plain CE unmixed."""
    scores = scores.float()
    if mixed is None:
        return F.cross_entropy(scores, labels)
    own = F.cross_entropy(scores, labels, reduction="none")
    other = F.cross_entropy(scores, labels[mixed.partner], reduction="none")
    lam = mixed.lam.float()
    return (lam * own + (1 - lam) * other).mean()
