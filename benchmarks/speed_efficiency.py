"""Speed efficiency: are pruned students as fast as their MACs say?

For every test architecture (the zoo, both exporters, and the ONNX-zoo light models) the teacher is
pruned at ``--ratio`` and four models are timed with onnxruntime on the CPU, interleaved in a rotating
order (warm-up excluded, medians over rounds): T = the teacher as given, T* = the teacher optimized
(``graph_passes.optimize``), S = the pruned student, S* = the pruned student optimized. Speed-ups are
ratios of medians against T (or T*), and an efficiency is a speed-up divided by the MACs reduction:
1.0 means the student is exactly as fast as its MACs say. The pruning-only efficiency
((T*/S*) / MACs reduction) keeps fusion gains from passing for pruning gains.

Section 2 ("round-to") prunes the zoo CNNs and a few light models at ``round_to`` 1, 8 and 16 to choose
the default of ``--round-to``: onnxruntime's NCHWc convolutions work on blocks of 16 channels with
AVX-512 (8 with AVX2), so channel counts off the block may cost more than their MACs. Section 3
(``--target-speedup``) runs ``onnxkd.validate.speed_search.search_ratio`` on three zoo models three ways
(one ratio; also round-to 8 and 16; also per-group) and re-measures each chosen student independently.

Goal: efficiency with optimize close to 1 (median) on CNNs and transformers; every model prunes and
optimizes. Figures are ratios within one run (DESIGN.md, "Performance method"), never absolute times.

    python benchmarks/speed_efficiency.py [--ratio 0.5] [--batches 1,8] [--threads 2] [--rounds 1000]
        [--budget 3] [--round-to 1] [--only REGEX] [--target-speedup 1.5,2.0] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from onnxkd.graph_passes.api import prune  # noqa: E402
from onnxkd.graph_passes.optimize import optimize  # noqa: E402
from onnxkd.model import to_proto  # noqa: E402
from onnxkd.validate.sessions import SessionConfig, session_options  # noqa: E402

LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512"]
ROUND_TO = (1, 8, 16)
ROUND_TO_LIGHT = ["resnet50", "squeezenet", "inception_v1", "densenet121"]  # channel counts off and on 16
SEARCH_MODELS = ["resnet-legacy", "mobilenetv2-legacy", "mobilenetv3w-legacy"]
VARIANTS = ("T", "T*", "S", "S*")


# --------------------------------------------------------------------------- models and inputs


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # "cnn" or "transformer" (the test zoo), "light" (the ONNX-zoo light models, real sizes)
    path: Path


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: tuple[int | None, ...]  # None: dynamic
    integer: bool


def cases(folder: Path, exporters: tuple[str, ...], light: list[str], image_size: int | None) -> list[Case]:
    import torch

    torch.set_num_threads(1)  # exports only; keep torch's thread pool from competing with onnxruntime
    logging.getLogger("onnxscript").setLevel(logging.ERROR)  # the dynamo exporter's notes on Splits it keeps
    import models as zoo
    from light_models import light_model_path

    rows = [Case(f"{name}-{exporter}", arch.family, zoo.export(name, folder, exporter, image_size=image_size))
            for name, arch in zoo.ZOO.items() for exporter in exporters]
    return rows + [Case(f"light_{n}", "light", light_model_path(n)) for n in light]


def input_specs(path: Path) -> list[InputSpec]:
    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    return [InputSpec(v.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                    for d in v.type.tensor_type.shape.dim),
                      v.type.tensor_type.elem_type == onnx.TensorProto.INT64)
            for v in proto.graph.input if v.name not in inits]


def possible_batches(specs: list[InputSpec], wanted: list[int]) -> list[int]:
    """A batch dim written as a number (the light models fix it at 1) allows only that batch size."""
    fixed = {s.dims[0] for s in specs if s.dims and s.dims[0] is not None}
    return [b for b in wanted if not fixed or fixed == {b}]


def shapes_at(specs: list[InputSpec], batch: int) -> dict[str, list[int]]:
    # other dynamic dims (none in the zoo: sequence and image sizes are fixed at export) count as 1
    return {s.name: [batch if i == 0 and d is None else (d or 1) for i, d in enumerate(s.dims)] for s in specs}


def feeds(specs: list[InputSpec], batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = shapes_at(specs, batch)
    return {s.name: rng.integers(0, 10, shapes[s.name]).astype(np.int64) if s.integer
            else rng.standard_normal(shapes[s.name]).astype(np.float32) for s in specs}


# --------------------------------------------------------------------------- the four models


@dataclass
class Variants:
    sources: dict[str, str | bytes] = field(default_factory=dict)  # label -> path (T) or serialized model
    macs_reduction: float | None = None
    errors: list[str] = field(default_factory=list)


def serialize(model) -> bytes:
    return to_proto(model).SerializeToString()


def build_variants(case: Case, ratio: float, round_to: int, shapes: dict[str, list[int]]) -> Variants:
    """T, T*, S and S* as onnxruntime sources; a stage that fails drops its models and says why."""
    out = Variants(sources={"T": str(case.path)})
    try:
        out.sources["T*"] = serialize(optimize(case.path).model)
    except Exception as exc:  # noqa: BLE001  (a benchmark reports failures, it does not stop on them)
        out.errors.append(f"{case.name}: optimize(teacher) failed: {_first_line(exc)}")
    try:
        result = prune(case.path, ratio, round_to=round_to, input_shapes=shapes)
    except Exception as exc:  # noqa: BLE001
        out.errors.append(f"{case.name}: prune failed: {_first_line(exc)}")
        return out
    before, after = result.summary.get("macs_before"), result.summary.get("macs_after")
    out.macs_reduction = before / after if before and after else None
    out.sources["S"] = serialize(result.model)
    try:
        out.sources["S*"] = serialize(optimize(result.model).model)
    except Exception as exc:  # noqa: BLE001
        out.errors.append(f"{case.name}: optimize(student) failed: {_first_line(exc)}")
    return out


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Protocol:
    warmup: int = 3  # untimed rounds (every model once per round), after session creation
    rounds: int = 1000  # timed rounds, at most (the zoo models run in well under a millisecond)
    budget_s: float = 3.0  # ... or this much timed wall time for all models of one case together
    min_rounds: int = 5  # a slow model still gets this many rounds, so a median means something


def use_global_thread_pool(threads: int) -> None:
    """All sessions of this process share one intra-op pool of ``threads`` threads (before any session exists).

    With a pool per session, the workers of the model that just ran keep spinning while the next model in
    the rotation runs, and take one of the two cores from it (measured: 4 identical sessions rotated ran
    7-10x slower than one alone). Turning spinning off instead slows every model (2x at batch 8, zoo
    resnet). One shared pool spins only for the model that runs: rotated sessions run as fast as one alone.
    """
    from onnxruntime.capi import _pybind_state  # the pool setter is only exposed there

    _pybind_state.set_global_thread_pool_sizes(threads, 1)


def make_session(source: str | bytes) -> ort.InferenceSession:
    options = session_options(SessionConfig(provider="cpu", threads=0, graph_opt="all"))
    options.use_per_session_threads = False
    options.inter_op_num_threads = 0  # pool sizes other than 0 are ignored with the global pool, with a warning
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def time_rotated(runs: dict[str, Callable[[], object]], protocol: Protocol) -> dict[str, float]:
    """Median ms per model; each round runs every model once, starting one model later than the round before,
    so slow drifts of the machine and cache effects of the previous model hit all models alike."""
    labels = list(runs)
    for _ in range(protocol.warmup):
        for label in labels:
            runs[label]()
    samples: dict[str, list[float]] = {label: [] for label in labels}
    spent_ns = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one model's run would be charged to that model alone
    try:
        for i in range(protocol.rounds):
            if i >= protocol.min_rounds and spent_ns >= protocol.budget_s * 1e9:
                break
            shift = i % len(labels)
            for label in labels[shift:] + labels[:shift]:
                start = time.perf_counter_ns()
                runs[label]()
                elapsed = time.perf_counter_ns() - start
                samples[label].append(elapsed / 1e6)
                spent_ns += elapsed
    finally:
        if gc_was_enabled:
            gc.enable()
    return {label: statistics.median(values) for label, values in samples.items()}


def measure(sources: dict[str, str | bytes], inputs: dict[str, np.ndarray], protocol: Protocol, errors: list[str],
            name: str) -> dict[str, float]:
    """Median ms per model that loads and runs in onnxruntime; the others are left out with an error line."""
    runs = {}
    for label, source in sources.items():
        try:
            session = make_session(source)
            session.run(None, inputs)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{name}: {label} does not run in onnxruntime: {_first_line(exc)}")
            continue
        runs[label] = (lambda s=session: s.run(None, inputs))
    return time_rotated(runs, protocol) if runs else {}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


# --------------------------------------------------------------------------- section 1: efficiency

EFFICIENCY_COLUMNS = [("macs_reduction", "MACs red."), ("speedup_s", "T/S"), ("speedup_s_opt", "T/S*"),
                      ("fusion", "T/T*"), ("eff_s", "eff S"), ("eff_s_opt", "eff S*"), ("eff_prune", "eff prune")]


def efficiency_row(case: Case, batch: int, macs_reduction: float | None, ms: dict[str, float]) -> dict:
    t, t_opt, s, s_opt = (ms.get(v) for v in VARIANTS)
    speedup_s, speedup_s_opt = ratio(t, s), ratio(t, s_opt)
    return {"model": case.name, "family": case.family, "batch": batch, "macs_reduction": macs_reduction,
            "speedup_s": speedup_s, "speedup_s_opt": speedup_s_opt, "fusion": ratio(t, t_opt),
            "eff_s": efficiency(speedup_s, macs_reduction), "eff_s_opt": efficiency(speedup_s_opt, macs_reduction),
            "eff_prune": efficiency(ratio(t_opt, s_opt), macs_reduction), "ms": ms}


def efficiency(speedup: float | None, macs_reduction: float | None) -> float | None:
    """Speed-up per MACs reduction; none where pruning cut (almost) nothing (light_shufflenet: its shuffled
    channels straddle the next conv's groups), so an unpruned model does not count as perfectly efficient."""
    return ratio(speedup, macs_reduction) if macs_reduction and macs_reduction >= 1.05 else None


def efficiency_section(models: list[Case], args, protocol: Protocol, errors: list[str]) -> list[dict]:
    rows = []
    for case in models:
        specs = input_specs(case.path)
        variants = build_variants(case, args.ratio, args.round_to, shapes_at(specs, 1))
        errors += variants.errors
        batches = possible_batches(specs, args.batches)
        for batch in args.batches:
            if batch not in batches:
                rows.append({"model": case.name, "family": case.family, "batch": batch, "skipped": "fixed batch dim"})
                continue
            ms = measure(variants.sources, feeds(specs, batch), protocol, errors, case.name)
            rows.append(efficiency_row(case, batch, variants.macs_reduction, ms))
        _progress(case.name)
    return rows


def median_rows(rows: list[dict], columns: list[str], batches: list[int]) -> list[dict]:
    """Per batch size, the median of every column over the zoo's cnn and transformer rows, the light models
    and all rows."""
    out = []
    for batch in batches:
        for family in ("cnn", "transformer", "light", None):
            chosen = [r for r in rows if r["batch"] == batch and "skipped" not in r and family in (None, r["family"])]
            if not chosen:
                continue
            row = {"model": f"median ({len(chosen)})", "family": family or "all", "batch": batch}
            for column in columns:
                values = [r[column] for r in chosen if r.get(column) is not None]
                row[column] = statistics.median(values) if values else None
            out.append(row)
    return out


# --------------------------------------------------------------------------- section 2: round-to

ROUND_TO_COLUMNS = [(f"{kind}_{r}", f"{label} r{r}") for r in ROUND_TO
                    for kind, label in (("macs_reduction", "MACs red."), ("speedup", "T/S*"))]


def round_to_section(models: list[Case], args, protocol: Protocol, errors: list[str]) -> list[dict]:
    """T against the optimized student at each round-to, the four models interleaved like section 1."""
    rows = []
    for case in models:
        specs = input_specs(case.path)
        sources: dict[str, str | bytes] = {"T": str(case.path)}
        reductions = {}
        for round_to in ROUND_TO:
            try:
                result = prune(case.path, args.ratio, round_to=round_to, input_shapes=shapes_at(specs, 1))
                sources[f"S*{round_to}"] = serialize(optimize(result.model).model)
                before, after = result.summary.get("macs_before"), result.summary.get("macs_after")
                reductions[round_to] = ratio(before, after)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{case.name}: round-to {round_to}: {_first_line(exc)}")
        for batch in possible_batches(specs, args.batches):
            ms = measure(sources, feeds(specs, batch), protocol, errors, case.name)
            row = {"model": case.name, "family": case.family, "batch": batch, "ms": ms}
            for round_to in ROUND_TO:
                row[f"macs_reduction_{round_to}"] = reductions.get(round_to)
                row[f"speedup_{round_to}"] = ratio(ms.get("T"), ms.get(f"S*{round_to}"))
            rows.append(row)
        _progress(case.name)
    return rows


# --------------------------------------------------------------------------- section 3: target speed-up


# the searches section 3 compares: (label, round-to values tried, per-group search)
SEARCHES = [("uniform", None, False), ("round-to search", (1, 8, 16), False), ("+ per-group", (1, 8, 16), True)]
TARGET_COLUMNS = [("target", "target T/S*"), ("search", "search"), ("ratio", "ratio"), ("round_to", "round-to"),
                  ("whole", "groups whole"), ("candidates", "timed"), ("macs_reduction", "MACs red."),
                  ("speedup", "T/S* re-measured"), ("efficiency", "eff")]


def target_section(models: list[Case], args, protocol: Protocol, errors: list[str]) -> list[dict] | str:
    """search_ratio picks the candidate for each target, three ways (SEARCHES: one ratio at --round-to; also
    round-to 8 and 16; also per-group); the chosen student is then timed again against T in fresh sessions,
    so the figure does not depend on the measurements the search happened to see.

    Candidates are timed with this benchmark's protocol, not ``onnxruntime_speedup``: its sessions have
    their own thread pools, which onnxruntime refuses once the process uses the global pool.
    """
    try:
        from onnxkd.graph_passes.api import groups_by_weight
        from onnxkd.validate.speed_search import search_ratio
    except ImportError as exc:
        return f"skipped: onnxkd.validate.speed_search is not available ({_first_line(exc)})"
    batch = args.batches[0]
    # a search times up to steps + 2 candidates per round-to value: each gets half a case's budget
    search_protocol = Protocol(protocol.warmup, protocol.rounds, protocol.budget_s / 2, protocol.min_rounds)
    rows = []
    for case in models:
        specs = input_specs(case.path)
        inputs = feeds(specs, batch)
        shapes = shapes_at(specs, 1)
        teacher = make_session(str(case.path))
        base_macs = prune(case.path, 0.0, input_shapes=shapes).summary["macs_after"]

        def prune_at(value: float, round_to: int | None = args.round_to, group_ratios: dict | None = None,
                     path: Path = case.path, shapes: dict = shapes):
            recipe = {"group_ratios": group_ratios} if group_ratios else None
            return prune(path, value, round_to=round_to, recipe=recipe, input_shapes=shapes).model

        def speedup_of(candidate, teacher=teacher, inputs=inputs) -> float:
            session = make_session(serialize(candidate))
            ms = time_rotated({"T": lambda: teacher.run(None, inputs), "S*": lambda: session.run(None, inputs)},
                              search_protocol)
            return ms["T"] / ms["S*"]

        for target in args.target_speedup:
            for label, families, per_group in SEARCHES:
                try:
                    found = search_ratio(prune_at, speedup_of, target, max_ratio=0.9, steps=3 if args.quick else 6,
                                         prepare=lambda m: optimize(m).model, round_to=families or (args.round_to or 1,),
                                         per_group=groups_by_weight(case.path) if per_group else ())
                    pruned = prune(case.path, found.ratio, round_to=found.round_to, input_shapes=shapes,
                                   recipe={"group_ratios": found.group_ratios})
                    student = optimize(pruned.model).model
                    ms = measure({"T": str(case.path), "S*": serialize(student)}, inputs, protocol, errors, case.name)
                    speedup, reduction = ratio(ms.get("T"), ms.get("S*")), ratio(base_macs, pruned.summary["macs_after"])
                    rows.append({"model": case.name, "batch": batch, "target": target, "search": label,
                                 "ratio": found.ratio, "round_to": found.round_to, "whole": len(found.group_ratios),
                                 "candidates": len(found.candidates), "macs_reduction": reduction,
                                 "speedup": speedup, "efficiency": efficiency(speedup, reduction)})
                except Exception as exc:  # noqa: BLE001  (OnnxkdError when even max_ratio misses the target)
                    errors.append(f"{case.name}: target {target} ({label}): {_first_line(exc)}")
        _progress(case.name)
    return rows


# --------------------------------------------------------------------------- output


def _progress(name: str) -> None:
    print(f"  done {name}", file=sys.stderr, flush=True)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], columns: list[tuple[str, str]], head: tuple[str, ...] = ("model", "family", "batch")
             ) -> str:
    lines = ["| " + " | ".join(list(head) + [label for _, label in columns]) + " |",
             "|" + "---|" * len(head) + "---:|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(key)) for key in head]
        cells += ["-"] * len(columns) if "skipped" in row else [_cell(row.get(key)) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nchwc_block() -> str:
    """onnxruntime's NCHWc block size on this CPU: 16 floats with AVX-512, 8 with AVX2."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if re.search(r"\bavx512f\b", flags):
        return "16 (AVX-512 detected)"
    if re.search(r"\bavx2\b", flags):
        return "8 (AVX2 detected)"
    return "unknown (neither AVX-512 nor AVX2 detected)"


def report(results: dict, args, protocol: Protocol) -> None:
    others = "?" if results["others_cpu"] is None else f"{results['others_cpu']:.0%}"
    setup = (f"ratio {args.ratio}, round-to {args.round_to or 'default (16)'}, onnxruntime {ort.__version__} CPU, ORT_ENABLE_ALL, "
             f"{args.threads} intra-op threads in one pool for all sessions, 1 inter-op; warm-up {protocol.warmup} "
             f"rounds, then up to {protocol.rounds} rounds or {protocol.budget_s:g} s per model and batch "
             f"(min {protocol.min_rounds}); medians; -: not measured (fixed batch dim, or a failed stage); "
             f"other processes used {others} of the CPUs meanwhile (trust the figures near 0%)")
    print(f"## Speed efficiency\n\n{setup}. T teacher, T* teacher optimized, S student, S* student optimized; "
          "eff = speed-up / MACs reduction, eff prune = (T*/S*) / MACs reduction.\n")
    efficiency = results["efficiency"]
    columns = [key for key, _ in EFFICIENCY_COLUMNS]
    print(markdown(efficiency + median_rows(efficiency, columns, args.batches), EFFICIENCY_COLUMNS))
    if "round_to" in results:
        print(f"\n## Round-to\n\nT/S* at round-to {', '.join(map(str, ROUND_TO))} (S* = student optimized), same "
              f"protocol; NCHWc block size assumed {nchwc_block()}.\n")
        rows = results["round_to"]
        print(markdown(rows + median_rows(rows, [key for key, _ in ROUND_TO_COLUMNS], args.batches),
                       ROUND_TO_COLUMNS))
    if "target" in results:
        print(f"\n## Target speed-up\n\nsearch_ratio (max ratio 0.9) at batch {args.batches[0]}, each candidate "
              "optimized and timed against T at half the budget; the chosen student re-measured against T in "
              "fresh sessions. Searches: uniform = one ratio at --round-to; round-to search = also round-to 8 "
              "and 16, the candidate keeping the most MACs; + per-group = then groups whose cut does not pay "
              "left whole. eff = re-measured speed-up / MACs reduction.\n")
        if isinstance(results["target"], str):
            print(results["target"])
        else:
            print(markdown(results["target"], TARGET_COLUMNS, head=("model", "batch")))
    if results["errors"]:
        print("\nproblems:")
        for line in results["errors"]:
            print(f"- {line}")
    print(f"\ncommand: python benchmarks/speed_efficiency.py {shlex.join(sys.argv[1:])}".rstrip())


# --------------------------------------------------------------------------- main


class OtherProcesses:
    """The share of the machine's CPU time that other processes used since creation (None off Linux).

    Another process on one of the two cores makes every op split across both threads wait for the busy
    one: a model then slows down by how parallel its ops are, not by its MACs, and the ratios shift.
    """

    def __init__(self):
        self.start = (time.perf_counter(), _all_cpu_s(), _own_cpu_s())

    def share(self) -> float | None:
        wall, total, own = time.perf_counter(), _all_cpu_s(), _own_cpu_s()
        if total is None or self.start[1] is None:
            return None
        others = (total - self.start[1]) - (own - self.start[2])
        return max(0.0, others / ((wall - self.start[0]) * (os.cpu_count() or 1)))


def _all_cpu_s() -> float | None:
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # user nice system idle iowait irq softirq steal: all but idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--rounds", type=int, help="timed rounds per model and batch, at most (default 1000)")
    parser.add_argument("--budget", type=float, help="timed seconds per model and batch, all variants (default 3)")
    parser.add_argument("--only", help="regular expression on the model names (e.g. 'mobilenetv3w|light_resnet')")
    parser.add_argument("--image-size", type=int, default=None,
                        help="export the zoo CNNs at this input size (e.g. 224; default: their test size, 32)")
    parser.add_argument("--round-to", type=int, default=None,
                        help="passed to prune in sections 1 and 3 (default: prune's, 16; 'uniform' in 3 uses 1)")
    parser.add_argument("--skip-round-to", action="store_true", help="leave out section 2")
    parser.add_argument("--target-speedup", type=_floats, default=[], help="e.g. 1.5,2.0: run section 3")
    parser.add_argument("--quick", action="store_true",
                        help="legacy exports and light_squeezenet only, few rounds: for development, not figures")
    parser.add_argument("--json", type=Path, help="also write every figure (and the medians in ms) here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    use_global_thread_pool(args.threads)
    others = OtherProcesses()
    protocol = Protocol(warmup=1, rounds=20, budget_s=0.5) if args.quick else Protocol()
    protocol = Protocol(protocol.warmup, args.rounds or protocol.rounds, args.budget or protocol.budget_s,
                        protocol.min_rounds)
    exporters = ("legacy",) if args.quick else ("legacy", "dynamo")
    light = ["squeezenet"] if args.quick else LIGHT
    wanted = re.compile(args.only) if args.only else None
    with tempfile.TemporaryDirectory(prefix="speed_efficiency_") as work:
        models = [c for c in cases(Path(work) / "zoo", exporters, light, args.image_size) if not wanted or wanted.search(c.name)]
        errors: list[str] = []
        results: dict = {"efficiency": efficiency_section(models, args, protocol, errors)}
        if not args.skip_round_to:
            chosen = [c for c in models if c.name.endswith("-legacy") and c.family == "cnn"
                      or c.name.removeprefix("light_") in ROUND_TO_LIGHT]
            results["round_to"] = round_to_section(chosen, args, protocol, errors)
        if args.target_speedup:
            chosen = [c for c in models if c.name in SEARCH_MODELS]
            results["target"] = target_section(chosen, args, protocol, errors)
        results["errors"] = errors
    results["others_cpu"] = others.share()
    report(results, args, protocol)
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "protocol": protocol.__dict__, **results}, indent=1))


if __name__ == "__main__":
    main()
