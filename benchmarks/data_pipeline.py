"""The data pipeline of `onnxkd distill`: memory and speed of reading an image folder lazily, and what
`--augment` buys on a small-data task.

Table 1, image folder against arrays. A synthetic 10-class task (stripes at one of five orientations in a warm
or a cool tint, random frequency and phase, pixel noise) is written as --images 64x64 JPEGs (quality 90) in
class folders, and the same samples, decoded as onnxkd decodes them (PIL, RGB, float32 NCHW, pixels/255 then
(x - mean)/std), as a folder of .npy arrays (`image.npy` + `labels.npy`: a valid --data, read row by row from
disk). A small residual CNN teacher (about 8 MMACs) is trained on a subset and exported; the student is
`onnxkd prune --ratio 0.5`. Every run is `onnxkd distill teacher student --data X --val-data V --steps S
--batch-size 64 --json` as a subprocess (validation: 500 other images, or their arrays), from

- the image folder with --workers 2 and --workers 0, and a quarter-size folder (hard links) with --workers 2,
  to see whether memory grows with the folder; and with --workers 2 under OMP_NUM_THREADS=1 (one torch
  thread, so that training and the two decoding workers do not fight over the cores);
- the .npy arrays with --workers 0: the array baseline every ratio is taken against;
- the arrays loaded whole into RAM first and given to `onnxkd.distill` as a dict (the in-memory API).

Peak memory is polled every 0.05 s over the process and all its descendants (loader workers): the largest
sum of RSS (forked workers share the parent's pages, so this overcounts) and the largest sum of PSS (shared
pages divided among the processes that map them, read every 0.25 s). samples/s and the share of time spent
waiting for data come from the run's JSON history (training steps only: the teacher-output cache pass, BN
recalibration and validation are excluded; wall time includes them). Configurations run round-robin
--repeats times; every figure is the median. The machine may be shared: each run starts once other processes
use under 15% of the CPUs (waiting at most 60 s), and the share they took during the run is reported (others'
CPU), as torch's threads slow down far more than that share when they lose a core.

Table 2, augmentation on small data. The digits example's teacher pruned at 0.7 (l1), distilled on the first
300 training samples for --aug-steps steps with --augment none, crop, light and strong, seeds 0-2. The best
epoch is picked on 300 other training samples (--val-data), and the written student is then measured by
onnxruntime on the 360 held-out digits (val.npz), which no run saw: accuracy and top-1 agreement with the
teacher, mean ± std over seeds. A horizontal flip (light, strong) turns some digits into other shapes.

    python benchmarks/data_pipeline.py [--images 20000] [--steps 300] [--repeats 2] [--aug-steps 600]

Prints two markdown tables and the command that made them (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ONNXKD = Path(sys.executable).with_name("onnxkd")
DIGITS = ROOT / "examples" / "digits"

SIZE, CLASSES, BATCH = 64, 10, 64
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IMAGE_FLAGS = ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
VAL_IMAGES = 500
POLL_S, PSS_EVERY = 0.05, 5  # RSS every 0.05 s, PSS (smaps_rollup walks the page tables) every 5th poll
GB = 1e9


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the synthetic image task


def draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, 64, 64, 3]: stripes at orientation (label % 5) x 36 degrees, tinted warm (label < 5) or cool."""
    n = len(labels)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    theta = (labels % 5) * (np.pi / 5) + rng.uniform(-0.25, 0.25, n)
    freq = rng.uniform(0.05, 0.14, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    along = xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None]
    stripes = np.sin(2 * np.pi * freq[:, None, None] * along + phase[:, None, None]).astype(np.float32)
    warm, cool = np.array([1.0, 0.6, 0.3], np.float32), np.array([0.3, 0.6, 1.0], np.float32)
    tint = np.where((labels < 5)[:, None], warm, cool) + rng.uniform(-0.2, 0.2, (n, 3)).astype(np.float32)
    amplitude = rng.uniform(0.08, 0.3, (n, 1, 1, 1)).astype(np.float32)
    pixels = 0.5 + amplitude * stripes[..., None] * tint[:, None, None, :]
    pixels += rng.normal(0, 0.22, pixels.shape).astype(np.float32)
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def decode(path: Path) -> np.ndarray:
    """float32 [3, 64, 64] as onnxkd's image reader decodes a file: RGB, resized, (pixels/255 - mean)/std."""
    with Image.open(path) as image:
        image.draft("RGB", (SIZE, SIZE))
        pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
    normalised = (pixels / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return normalised.transpose(2, 0, 1)


def write_task(images: Path, arrays: Path, n: int, seed: int) -> None:
    """``n`` JPEGs in ``images/classNN/`` and the same samples, decoded, in ``arrays/{image,labels}.npy``, in the
    order onnxkd lists the folder (sorted class folders, sorted names). Memory: one chunk at a time."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) * CLASSES // n).astype(np.int64)  # class-sorted, so the arrays follow the folder order
    for label in range(CLASSES):
        (images / f"class{label:02d}").mkdir(parents=True)
    arrays.mkdir(parents=True)
    out = np.lib.format.open_memmap(arrays / "image.npy", mode="w+", dtype=np.float32, shape=(n, 3, SIZE, SIZE))
    for start in range(0, n, 1000):
        chunk = labels[start:start + 1000]
        for offset, (label, pixels) in enumerate(zip(chunk, draw(chunk, rng))):
            path = images / f"class{label:02d}" / f"{start + offset:06d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            out[start + offset] = decode(path)
        out.flush()
    del out
    np.save(arrays / "labels.npy", labels)


def quarter_folder(images: Path, target: Path) -> int:
    """Every 4th image of each class folder, hard-linked (symbolic links where hard links fail)."""
    count = 0
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True)
        for file in sorted(folder.iterdir())[::4]:
            try:
                os.link(file, target / folder.name / file.name)
            except OSError:
                os.symlink(file, target / folder.name / file.name)
            count += 1
    return count


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


# --------------------------------------------------------------------------- the teacher


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class StripesNet(nn.Module):
    """3x64x64 -> 10: a stride-2 stem and two residual stages at stride 2 (16 -> 32 -> 64 channels)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(Block(16, 32, 2), Block(32, 64, 2))
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def macs(net: nn.Module) -> int:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * int(np.prod(module.kernel_size))
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, SIZE, SIZE))
    for handle in handles:
        handle.remove()
    return total


def train_teacher(arrays: Path, steps: int, path: Path) -> int:
    """Train on up to 5,000 random samples of the arrays, export with a dynamic batch; returns its MACs."""
    torch.manual_seed(0)
    images = np.load(arrays / "image.npy", mmap_mode="r")
    labels = np.load(arrays / "labels.npy")
    pick = np.sort(np.random.default_rng(1).permutation(len(labels))[:5000])
    x, y = torch.from_numpy(np.ascontiguousarray(images[pick])), torch.from_numpy(labels[pick])
    del images
    net = StripesNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        batch = torch.randint(0, len(y), (BATCH,))
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x[:2],), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return macs(net)


def ort_logits(model: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 256]})[0] for i in range(0, len(images), 256)])


def cli(*args: str) -> str:
    done = subprocess.run([str(ONNXKD), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"onnxkd {' '.join(map(str, args))}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done.stdout


# --------------------------------------------------------------------------- measuring a process tree


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from each process's parent in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def kb_field(path: str, field: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(limit_s: float = 60.0, idle: float = 0.15) -> float:
    """Wait (at most ``limit_s``) until other processes use less than ``idle`` of the CPUs over one second: the
    machine may be shared, and a run that competes for the cores measures the competition. Returns the wait."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        busy, clock = busy_cpu_seconds(), time.perf_counter()
        time.sleep(1.0)
        if (busy_cpu_seconds() - busy) / ((time.perf_counter() - clock) * (os.cpu_count() or 1)) < idle:
            break
    return time.perf_counter() - started


def measured_run(command: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run ``command`` (prints the result JSON on stdout), polling the memory of its process tree. ``others``:
    the share of the machine's CPUs that processes outside this benchmark kept busy meanwhile (the machine may
    be shared: such load slows every figure, and torch's threads most of all)."""
    before = (busy_cpu_seconds(), cpu_seconds(resource.RUSAGE_CHILDREN), cpu_seconds(resource.RUSAGE_SELF))
    started = time.perf_counter()
    with open(log_path, "w") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                   env=None if env is None else {**os.environ, **env})
        out_chunks: list[str] = []
        reader = threading.Thread(target=lambda: out_chunks.append(process.stdout.read()), daemon=True)
        reader.start()
        peak_rss = peak_pss = processes = polls = 0
        while process.poll() is None:
            pids = descendants(process.pid)
            processes = max(processes, len(pids))
            peak_rss = max(peak_rss, sum(kb_field(f"/proc/{p}/status", "VmRSS:") for p in pids))
            if polls % PSS_EVERY == 0:
                peak_pss = max(peak_pss, sum(kb_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
            polls += 1
            time.sleep(POLL_S)
        reader.join()
    wall = time.perf_counter() - started
    tree = cpu_seconds(resource.RUSAGE_CHILDREN) - before[1]  # the run and its reaped workers
    monitor = cpu_seconds(resource.RUSAGE_SELF) - before[2]
    others = (busy_cpu_seconds() - before[0] - tree - monitor) / (wall * (os.cpu_count() or 1))
    if process.returncode != 0:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(command)}: exit {process.returncode}\n{tail}")
    result = json.loads("".join(out_chunks))
    history = result["history"]
    seconds = sum(r["seconds"] for r in history)
    return {"rss": peak_rss, "pss": peak_pss, "processes": processes, "wall": wall, "others": max(0.0, others),
            "cpu": tree, "monitor": monitor, "train_n": result["data"]["train"]["n"],
            "cache_s": (result.get("teacher_cache") or {}).get("seconds"),
            "samples_per_s": sum(r["samples_per_s"] * r["seconds"] for r in history) / max(seconds, 1e-9),
            "data_wait": sum(r["data_wait"] * r["seconds"] for r in history) / max(seconds, 1e-9),
            "steps": result["steps"], "accuracy": (result.get("best") or {}).get("accuracy")}


IN_MEMORY = """
import json, sys
import numpy as np
import onnxkd
teacher, student, arrays, val, out, steps, batch = sys.argv[1:]
x = np.load(arrays + "/image.npy")  # the whole array, read into RAM
labels = np.load(arrays + "/labels.npy")
result = onnxkd.distill(teacher, student, {"image": x, "labels": labels}, out, val_data=val, steps=int(steps),
                        batch_size=int(batch))
print(json.dumps(result.to_dict(), default=str))
"""


# --------------------------------------------------------------------------- table 1


def table1(args, work: Path) -> list[str]:
    images, arrays = work / "images", work / "arrays"
    val_images, val_arrays = work / "val", work / "val_arrays"
    log(f"writing {args.images:,} JPEGs and their arrays ...")
    clock = time.perf_counter()
    write_task(images, arrays, args.images, seed=1)
    write_task(val_images, val_arrays, VAL_IMAGES, seed=2)
    quarter = quarter_folder(images, work / "images_quarter")
    log(f"  {time.perf_counter() - clock:.0f} s; training the teacher ...")
    teacher, student = work / "teacher.onnx", work / "student.onnx"
    teacher_macs = train_teacher(arrays, args.teacher_steps, teacher)
    cli("prune", teacher, "--ratio", "0.5", "-o", student)
    val_x, val_y = np.load(val_arrays / "image.npy"), np.load(val_arrays / "labels.npy")
    teacher_accuracy = float((ort_logits(teacher, val_x).argmax(1) == val_y).mean())
    student_accuracy = float((ort_logits(student, val_x).argmax(1) == val_y).mean())
    log(f"  teacher {teacher_macs / 1e6:.1f} MMACs, {teacher_accuracy:.1%} on the {VAL_IMAGES} validation images; "
        f"pruned student {student_accuracy:.1%}")

    out = work / "out.onnx"
    common = ["--steps", str(args.steps), "--batch-size", str(BATCH), "--json", "-o", str(out)]

    def distill(data: Path, val: Path, workers: int, image_flags: bool) -> list[str]:
        return [str(ONNXKD), "distill", str(teacher), str(student), "--data", str(data), "--val-data", str(val),
                "--workers", str(workers), *(IMAGE_FLAGS if image_flags else []), *common]

    one_thread = {"OMP_NUM_THREADS": "1"}
    configs = {  # name -> (source, images, workers, command, extra environment)
        "folder-2": ("image folder", args.images, 2, distill(images, val_images, 2, True), None),
        "folder-0": ("image folder", args.images, 0, distill(images, val_images, 0, True), None),
        "quarter-2": ("image folder, a quarter of it (hard links)", quarter, 2,
                      distill(work / "images_quarter", val_images, 2, True), None),
        "folder-2-1t": ("image folder, OMP_NUM_THREADS=1", args.images, 2, distill(images, val_images, 2, True),
                        one_thread),
        "arrays": (".npy arrays read from disk (baseline)", args.images, 0, distill(arrays, val_arrays, 0, False),
                   None),
        "memory": ("arrays in RAM (Python API, dict)", args.images, 0,
                   [sys.executable, "-c", IN_MEMORY, str(teacher), str(student), str(arrays), str(val_arrays),
                    str(out), str(args.steps), str(BATCH)], None),
    }
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    order = list(configs)
    for index in range(args.repeats):
        for name in order[index % len(order):] + order[:index % len(order)]:
            source, count, workers, command, env = configs[name]
            log(f"  round {index + 1}/{args.repeats}: {name} ...")
            shutil.rmtree(work / "out.onnx.work", ignore_errors=True)
            waited = wait_quiet()
            result = measured_run(command, work / f"{name}-{index}.log", env)
            if result["train_n"] != count:
                raise RuntimeError(f"{name}: onnxkd read {result['train_n']:,} training samples, the folder has "
                                   f"{count:,}")
            log(f"    {result['samples_per_s']:,.0f} samples/s, {result['data_wait']:.0%} waiting, peak RSS "
                f"{result['rss'] / 1e6:,.0f} MB, PSS {result['pss'] / 1e6:,.0f} MB, {result['processes']} "
                f"processes, {result['wall']:.0f} s (teacher cache {result['cache_s'] or 0:.0f} s), CPU "
                f"{result['cpu']:.0f} s, monitor {result['monitor']:.1f} s, others {result['others']:.0%} (waited "
                f"{waited:.0f} s for a quiet machine)")
            runs[name].append(result)
    keys = ("rss", "pss", "samples_per_s", "data_wait", "wall", "others")
    median = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    base = median["arrays"]["samples_per_s"]

    lines = [f"{args.images:,} JPEGs of 64x64 ({folder_mb(images):,.0f} MB on disk; as float32 arrays "
             f"{(arrays / 'image.npy').stat().st_size / 1e6:,.0f} MB), teacher {teacher_macs / 1e6:.1f} MMACs "
             f"({teacher_accuracy:.1%} on {VAL_IMAGES} validation images), student pruned at 0.5 "
             f"({student_accuracy:.1%} before distillation); {args.steps} steps of {BATCH}, CPU ({os.cpu_count()} "
             f"cores, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')} unless noted), median of "
             f"{args.repeats} interleaved run(s), each started once the machine was quiet (up to 60 s of waiting). "
             f"Peak RSS/PSS "
             f"over the process and its loader workers; others' CPU: the share of the machine other processes kept "
             f"busy during the run.", "",
             "| source | images | workers | peak RSS (tree sum) | peak PSS | samples/s | x of array baseline | "
             "waiting for data | wall | others' CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (source, count, workers, _, _) in configs.items():
        m = median[name]
        lines.append(f"| {source} | {count:,} | {workers} | {m['rss'] / 1e6:,.0f} MB | {m['pss'] / 1e6:,.0f} MB | "
                     f"{m['samples_per_s']:,.0f} | {m['samples_per_s'] / base:.2f}x | {m['data_wait']:.0%} | "
                     f"{m['wall']:.0f} s | {m['others']:.0%} |")
    folder = ("folder-2", "folder-0", "quarter-2", "folder-2-1t")
    worst = max(max(r["rss"] for r in runs[k]) for k in folder)
    full, part = median["folder-2"], median["quarter-2"]
    ratio = full["samples_per_s"] / base
    lines += ["",
              f"- RSS ≤ 2 GB: {'pass' if worst <= 2 * GB else 'FAIL'} (largest tree-sum RSS of any image-folder run "
              f"{worst / 1e6:,.0f} MB; {args.images:,} against {quarter:,} images with 2 workers: "
              f"{(full['rss'] - part['rss']) / 1e6:+,.0f} MB RSS, {(full['pss'] - part['pss']) / 1e6:+,.0f} MB PSS)",
              f"- throughput ≥ 0.8x: {'pass' if ratio >= 0.8 else 'FAIL'} (image folder, 2 workers: {ratio:.2f}x of "
              f"the .npy baseline, {full['samples_per_s'] / median['memory']['samples_per_s']:.2f}x of arrays in "
              f"RAM; with OMP_NUM_THREADS=1 {median['folder-2-1t']['samples_per_s'] / base:.2f}x)"]
    return lines


# --------------------------------------------------------------------------- table 2


def table2(args, work: Path) -> list[str]:
    work.mkdir()
    teacher = DIGITS / "teacher.onnx"
    train, val = np.load(DIGITS / "train.npz"), np.load(DIGITS / "val.npz")
    small, select = work / "train300.npz", work / "select300.npz"
    np.savez(small, image=train["image"][:300], labels=train["labels"][:300])
    np.savez(select, image=train["image"][300:600], labels=train["labels"][300:600])
    student = work / "student.onnx"
    cli("prune", teacher, "--ratio", "0.7", "-o", student)
    x, y = val["image"], val["labels"]
    teacher_pred = ort_logits(teacher, x).argmax(1)
    teacher_accuracy = float((teacher_pred == y).mean())
    pruned_accuracy = float((ort_logits(student, x).argmax(1) == y).mean())
    augments, seeds = ("none", "crop", "light", "strong"), range(args.seeds)
    scores: dict[str, list[tuple[float, float, float]]] = {a: [] for a in augments}
    gaps = []  # onnxkd's own accuracy of the best epoch on the selection set - onnxruntime's on the written student
    select_x, select_y = train["image"][300:600], train["labels"][300:600]
    for seed in seeds:
        for augment in augments:
            out = work / f"{augment}-{seed}.onnx"
            clock = time.perf_counter()
            result = json.loads(cli("distill", teacher, student, "--data", small, "--val-data", select,
                                    "--steps", args.aug_steps, "--seed", seed, "--augment", augment, "--json",
                                    "-o", out))
            wall = time.perf_counter() - clock
            pred = ort_logits(out, x).argmax(1)
            accuracy, agreement = float((pred == y).mean()), float((pred == teacher_pred).mean())
            scores[augment].append((accuracy, agreement, wall))
            own = (result.get("best") or {}).get("accuracy")
            selected = float((ort_logits(out, select_x).argmax(1) == select_y).mean())
            gaps.append(abs(own - selected) if own is not None else float("nan"))
            log(f"  {augment} seed {seed}: {accuracy:.1%} (agreement {agreement:.1%}; selection set: onnxkd says "
                f"{own if own is None else f'{own:.1%}'}, onnxruntime {selected:.1%}), {wall:.0f} s")

    lines = [f"Digits teacher {teacher_accuracy:.1%}, pruned at 0.7 (l1) before distillation {pruned_accuracy:.1%} "
             f"(onnxruntime, 360 held-out digits); distilled on 300 samples for {args.aug_steps} steps of 64, best "
             f"epoch picked on 300 other training samples; mean ± std over {args.seeds} seeds.", "",
             "| augment | accuracy | agreement with teacher | per-seed accuracy | wall per run |",
             "|---|---:|---:|---|---:|"]
    for augment, rows in scores.items():
        acc, agree, wall = (np.array([r[i] for r in rows]) for i in range(3))
        lines.append(f"| {augment} | {acc.mean():.1%} ± {acc.std():.1%} | {agree.mean():.1%} ± {agree.std():.1%} | "
                     f"{', '.join(f'{a:.1%}' for a in acc)} | {wall.mean():.0f} s |")
    lines += ["", f"- onnxkd's own accuracy of the chosen epoch on the selection set against onnxruntime's on the "
                  f"written student: largest gap {max(gaps):.2%} over {len(gaps)} runs"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="JPEGs in the image folder (table 1)")
    parser.add_argument("--steps", type=int, default=300, help="distillation steps per table-1 run (300 x 64: about "
                        "one pass over 20,000 images)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of table 1's configurations")
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--aug-steps", type=int, default=600, help="distillation steps per table-2 run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-table1", action="store_true")
    parser.add_argument("--skip-table2", action="store_true")
    args = parser.parse_args()
    if args.images < 40:
        parser.error("--images: at least 40 (4 per class for the quarter folder)")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="onnxkd-data-pipeline-"))
    tables = []
    try:
        if not args.skip_table1:
            tables.append(table1(args, work / "table1"))
        if not args.skip_table2:
            log("table 2: digits, augment none/crop/light/strong ...")
            tables.append(table2(args, work / "table2"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for lines in tables:
        print("\n".join(lines) + "\n")
    command = " ".join(["python", "benchmarks/data_pipeline.py", *sys.argv[1:]])
    print(f"`{command}` ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
