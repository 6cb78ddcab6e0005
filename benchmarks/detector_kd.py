"""Compressing a trained YOLO-style detector: what each way of distilling its output keeps of its mAP.

A YOLOv8-style detector (tests/yolo.py: C2f, SPPF, an upsampling neck, a decoupled head with DFL, 3 classes) is
trained here from scratch on a generated task ("shapes": rectangles, ellipses and rings of random colours and
sizes, 1-4 per 128x128 image, on a smooth coloured clutter with noise; class = shape, never colour), exported
with torch's default exporter and dynamic batch, height and width, then cut with ``onnxkd prune --ratio R`` and
distilled from the teacher with ``onnxkd.distill``:

- ``output``: MSE on the output tensor as it is (``--loss output0=mse``): box coordinates in pixels next to
  class probabilities;
- ``default``: what onnxkd does by default;
- with ``--augment A``, also the default with that augmentation (the teacher sees each augmented batch too);
- with ``--unlabeled N``, also the default on the teacher's 2,000 training images plus N new ones without labels
  (distillation needs none): the teacher fits its training images far better than new ones (mAP@0.5 0.91
  against 0.50), and a student distilled on those alone learns that fit rather than the teacher's behaviour.

Every figure is measured here with onnxruntime on 500 held-out images: mAP@0.5 against the ground truth (VOC
all-point AP per class, class-aware NMS at IoU 0.6, confidence above 0.001, at most 100 boxes), and against the
teacher's own detections (confidence above 0.25) as the ground truth (agreement).

    python benchmarks/detector_kd.py [--ratio 0.5] [--epochs 30] [--teacher-epochs 40] [--cache DIR] [--seeds 0,1]
                                     [--augment light] [--unlabeled 4000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import yolo  # noqa: E402  (the architecture lives with the tests)

SIZE, CLASSES, BINS = 128, 3, 16
TRAIN, TEST = 2000, 500
THREADS = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the task


def scenes(count: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images [N, 3, SIZE, SIZE] (normalised, about zero mean and unit spread) and per image [K, 5] rows of
    (x1, y1, x2, y2, class) in pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    images = np.empty((count, 3, SIZE, SIZE), np.float32)
    labels = []
    for i in range(count):
        coarse = rng.random((3, 4, 4)).astype(np.float32)
        image = np.stack([np.kron(c, np.ones((32, 32), np.float32)) for c in coarse])
        image = 0.5 * image + 0.25 + 0.08 * rng.standard_normal((3, SIZE, SIZE)).astype(np.float32)
        rows = []
        for _ in range(rng.integers(1, 5)):
            w, h = rng.uniform(10, 60, 2)
            x1, y1 = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            cx, cy = x1 + w / 2, y1 + h / 2
            kind = int(rng.integers(CLASSES))
            if kind == 0:
                mask = (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
            else:
                r = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2
                mask = r <= 1 if kind == 1 else (r <= 1) & (r >= 0.45)
            colour = rng.uniform(0, 1, 3).astype(np.float32)
            image[:, mask] = colour[:, None] + 0.05 * rng.standard_normal((3, int(mask.sum()))).astype(np.float32)
            rows.append((x1, y1, x1 + w, y1 + h, kind))
        images[i] = (image - 0.5) / 0.3
        labels.append(np.array(rows, np.float32))
    return images, labels


# --------------------------------------------------------------------------- training the teacher


def level_of(side: float) -> int:
    return 0 if side <= 24 else 1 if side <= 48 else 2


def assign(labels: list[np.ndarray], shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor (all levels, flattened as the model's output): positive mask [N, A], class target [N, A, C],
    distances (l, t, r, b) in strides [N, A, 4]. An anchor is positive for the smallest object of its level whose
    box holds it within 1.5 strides of the centre (the centre's anchor always)."""
    points, strides = [], []
    for (h, w), stride in zip(shapes, yolo.YoloV8.strides):
        sy, sx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        points.append(np.stack([sx.ravel(), sy.ravel()], 1) * stride)
        strides.append(np.full(h * w, stride, np.float32))
    level = np.concatenate([np.full(len(p), i) for i, p in enumerate(points)])
    points, strides = np.concatenate(points), np.concatenate(strides)
    n, a = len(labels), len(points)
    positive, classes, ltrb = np.zeros((n, a), bool), np.zeros((n, a, CLASSES), np.float32), np.zeros((n, a, 4), np.float32)
    for i, rows in enumerate(labels):
        area = np.full(a, np.inf)
        for x1, y1, x2, y2, kind in rows:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            on = level == level_of(max(x2 - x1, y2 - y1))
            near = (np.abs(points[:, 0] - cx) < 1.5 * strides) & (np.abs(points[:, 1] - cy) < 1.5 * strides)
            inside = (points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2)
            chosen = on & ((near & inside) | (np.abs(points[:, 0] - cx) <= strides / 2)
                           & (np.abs(points[:, 1] - cy) <= strides / 2))
            chosen &= (x2 - x1) * (y2 - y1) < area
            area[chosen] = (x2 - x1) * (y2 - y1)
            positive[i, chosen] = True
            classes[i, chosen] = np.eye(CLASSES, dtype=np.float32)[int(kind)]
            distances = np.stack([points[:, 0] - x1, points[:, 1] - y1, x2 - points[:, 0], y2 - points[:, 1]], 1)
            ltrb[i, chosen] = np.clip(distances[chosen] / strides[chosen, None], 0, BINS - 1.01)
    return torch.from_numpy(positive), torch.from_numpy(classes), torch.from_numpy(ltrb)


def detection_loss(levels: list[torch.Tensor], labels: list[np.ndarray]) -> torch.Tensor:
    """BCE on the class logits of every anchor, DFL on the positives' distance bins, both per positive."""
    flat = torch.cat([f.flatten(2) for f in levels], 2).transpose(1, 2)  # [N, A, 4 * BINS + C]
    positive, classes, ltrb = assign(labels, [tuple(f.shape[2:]) for f in levels])
    count = max(int(positive.sum()), 1)
    cls = F.binary_cross_entropy_with_logits(flat[..., 4 * BINS:], classes, reduction="sum") / count
    bins = flat[..., :4 * BINS][positive].view(-1, 4, BINS)
    target = ltrb[positive]
    left = target.floor().long()
    weight = target - left
    dfl = (F.cross_entropy(bins.reshape(-1, BINS), left.view(-1), reduction="none") * (1 - weight.view(-1))
           + F.cross_entropy(bins.reshape(-1, BINS), (left + 1).view(-1), reduction="none") * weight.view(-1))
    return cls + dfl.sum() / count


def train_teacher(cache: Path, epochs: int, seed: int = 0) -> Path:
    path = cache / f"teacher-e{epochs}-s{seed}.onnx"
    if path.exists():
        return path
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    net = yolo.YoloV8(classes=CLASSES, w=8)
    x, labels = scenes(TRAIN, seed=100 + seed)
    steps = epochs * (TRAIN // 32)
    optimizer = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    started = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(TRAIN)
        total = 0.0
        for start in range(0, TRAIN - 31, 32):
            chosen = order[start:start + 32]
            loss = detection_loss(net.heads(torch.from_numpy(x[chosen])), [labels[i] for i in chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss)
        log(f"teacher epoch {epoch + 1}/{epochs}: loss {total / (TRAIN // 32):.3f} "
            f"({time.perf_counter() - started:.0f} s)")
    cache.mkdir(parents=True, exist_ok=True)
    yolo.export(path, net=net.eval(), size=(SIZE, SIZE))
    return path


# --------------------------------------------------------------------------- measuring
# Written here on purpose, apart from onnxkd.validate.detections: the figures in the table are the benchmark's own
# measurement of the students, not onnxkd's (it also keeps every class above the threshold per anchor, where
# onnxkd keeps the best one, as ultralytics' predictors do).


def detections(output: np.ndarray, conf: float, iou: float = 0.6, top: int = 100) -> list[np.ndarray]:
    """Per image [K, 6] rows of (x1, y1, x2, y2, score, class) from a [N, 4 + C, A] output, class-aware NMS."""
    found = []
    for y in output:
        boxes = np.concatenate([y[:2] - y[2:4] / 2, y[:2] + y[2:4] / 2]).T
        scores = y[4:].T
        rows = []
        for c in range(scores.shape[1]):
            keep = np.flatnonzero(scores[:, c] > conf)
            order = keep[np.argsort(-scores[keep, c])][:300]
            while len(order):
                best, order = order[0], order[1:]
                rows.append((*boxes[best], scores[best, c], c))
                if len(order):
                    order = order[box_iou(boxes[best][None], boxes[order])[0] < iou]
        rows = np.array(rows, np.float32).reshape(-1, 6)
        found.append(rows[np.argsort(-rows[:, 4])][:top])
    return found


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), 2)
    area = lambda x: np.prod(x[:, 2:4] - x[:, :2], 1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def mean_ap(found: list[np.ndarray], truth: list[np.ndarray], threshold: float = 0.5) -> float:
    """VOC all-point AP at IoU ``threshold``, averaged over the classes present in ``truth`` ([K, 5] rows)."""
    aps = []
    for c in range(CLASSES):
        total = sum(int((t[:, 4] == c).sum()) for t in truth)
        if total == 0:
            continue
        scored = []
        for i, (d, t) in enumerate(zip(found, truth)):
            mine, theirs = d[d[:, 5] == c], t[t[:, 4] == c]
            used = np.zeros(len(theirs), bool)
            for row in mine:
                hit = False
                if len(theirs):
                    overlaps = box_iou(row[None, :4], theirs[:, :4])[0]
                    j = int(np.argmax(np.where(used, -1, overlaps)))
                    if overlaps[j] >= threshold and not used[j]:
                        used[j] = hit = True
                scored.append((row[4], hit))
        if not scored:
            aps.append(0.0)
            continue
        scored.sort(key=lambda s: -s[0])
        hits = np.array([h for _, h in scored], np.float64)
        recall = np.cumsum(hits) / total
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        aps.append(float(np.sum(np.diff(np.concatenate([[0], recall])) * precision)))
    return float(np.mean(aps))


def run(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": x[i:i + 50]})[0] for i in range(0, len(x), 50)])


def figures(path: Path, x: np.ndarray, truth: list[np.ndarray], teacher_boxes: list[np.ndarray]) -> dict:
    out = run(path, x)
    return {"map50": mean_ap(detections(out, 0.001), truth), "agreement": mean_ap(detections(out, 0.001), teacher_boxes)}


# --------------------------------------------------------------------------- the run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30, help="distillation epochs")
    parser.add_argument("--teacher-epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1", help="distillation seeds, comma-separated")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "onnxkd-detector-cache")
    parser.add_argument("--augment", default="none", help="also distill the default way with this --augment")
    parser.add_argument("--unlabeled", type=int, default=0,
                        help="also distill the default way on the training images plus this many new, unlabeled ones")
    args = parser.parse_args(argv)
    import onnxkd

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    teacher = train_teacher(args.cache, args.teacher_epochs)
    x_train, _ = scenes(TRAIN, seed=100)
    x_test, truth = scenes(TEST, seed=7)
    teacher_out = run(teacher, x_test)
    teacher_boxes = [d[d[:, 4] > 0.25][:, [0, 1, 2, 3, 5]] for d in detections(teacher_out, 0.25)]
    rows = [("teacher", None, figures(teacher, x_test, truth, teacher_boxes))]
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        pruned = onnxkd.save(onnxkd.prune(teacher, args.ratio).model, folder / "pruned.onnx")
        rows.append((f"pruned at {args.ratio}, not distilled", None, figures(pruned, x_test, truth, teacher_boxes)))
        data = {"images": x_train}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for mode, options in (("output", {"loss": {"output0": "mse"}}), ("default", {})):
                out = folder / f"student-{mode}-{seed}.onnx"
                onnxkd.distill(teacher, pruned, data, out, epochs=args.epochs, seed=seed, progress=None, **options)
                rows.append((mode, seed, figures(out, x_test, truth, teacher_boxes)))
            if args.augment != "none":  # the teacher sees each augmented batch too (consistent teaching)
                out = folder / f"student-augment-{seed}.onnx"
                onnxkd.distill(teacher, pruned, data, out, epochs=args.epochs, seed=seed, progress=None,
                               augment=args.augment)
                rows.append((f"default, --augment {args.augment}", seed, figures(out, x_test, truth, teacher_boxes)))
            if args.unlabeled:  # distillation needs no labels: more images than the teacher was trained on
                more = {"images": np.concatenate([x_train, scenes(args.unlabeled, seed=200)[0]])}
                out = folder / f"student-unlabeled-{seed}.onnx"
                onnxkd.distill(teacher, pruned, more, out, epochs=args.epochs, seed=seed, progress=None)
                rows.append((f"default, + {args.unlabeled:,} unlabeled images", seed,
                             figures(out, x_test, truth, teacher_boxes)))
    print(f"\n`python benchmarks/detector_kd.py --ratio {args.ratio} --epochs {args.epochs} --teacher-epochs "
          f"{args.teacher_epochs} --seeds {args.seeds} --augment {args.augment} --unlabeled {args.unlabeled}` "
          f"({time.perf_counter() - started:.0f} s; teacher trained on "
          f"{TRAIN} images)\n")
    print("| model | seed | mAP@0.5 (ground truth) | mAP@0.5 against the teacher's detections |")
    print("|---|---:|---:|---:|")
    for name, seed, f in rows:
        print(f"| {name} | {'' if seed is None else seed} | {f['map50']:.3f} | {f['agreement']:.3f} |")


if __name__ == "__main__":
    main()
