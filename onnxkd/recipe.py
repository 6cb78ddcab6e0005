"""The recipe: the full configuration of a compress run, saved as JSON next to the student and replayable.

One format for every command. A compress recipe has three sections and a seed::

    {
      "onnxkd_version": "0.1.0",              # written, informative
      "teacher_sha256": "…",                  # written; a replay on another teacher warns
      "seed": 0,
      "optimize": true,                       # fuse the final student's written-out activations
      "prune":    {"ratio": 0.5, "criterion": "kd", "steps": 1, "global": false, "round_to": 16,
                   "ignore": null, "overrides": {"REGEX": RATIO}, "group_ratios": {"ID": RATIO},
                   "prune_normalized": false},
      "distill":  {"epochs": null, "lr": null, "batch_size": 64, "temperature": 4.0, "alpha": 0.5, ...},
      "validate": {"batch_size": 32, "provider": "auto", "threads": 0, "max_accuracy_drop": null, ...},
      "quantize": {"enabled": false, "calibration": "percentile", "max_accuracy_drop": 0.01, "qat": true, ...}
    }

A prune recipe is a compress recipe with only the prune section (``onnxkd prune --recipe`` reads that
section; a file without sections is taken as the prune section itself, the older format). Missing keys
take their defaults; unknown keys are an error, so a typo does not silently do nothing. Command-line
flags override the recipe.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from onnxkd import __version__
from onnxkd.distill.config import DistillConfig
from onnxkd.errors import OnnxkdError
from onnxkd.json_file import write_json
from onnxkd.qat import QAT_LR

CRITERIA = ("l1", "l2", "bn", "random", "taylor", "kd")


# the keyword options of ``onnxkd.compress`` -> (recipe section, field), named as ``onnxkd.distill`` and
# ``onnxkd.validate`` name them; ``onnxkd compress``'s flags are these (commands.compress.recipe_flags)
FLAT_OPTIONS = {
    "ratio": ("prune", "ratio"), "criterion": ("prune", "criterion"), "steps": ("prune", "steps"),
    "global_rank": ("prune", "global_rank"), "max_group_ratio": ("prune", "max_group_ratio"),
    "round_to": ("prune", "round_to"), "ignore": ("prune", "ignore"),
    "prune_normalized": ("prune", "prune_normalized"), "target_speedup": ("prune", "target_speedup"),
    "max_ratio": ("prune", "max_ratio"), "latency_batch": ("prune", "latency_batch"),
    "per_group": ("prune", "per_group"), "group_trials": ("prune", "group_trials"),
    "epochs": ("distill", "epochs"), "lr": ("distill", "lr"), "batch_size": ("distill", "batch_size"),
    "optimizer": ("distill", "optimizer"), "weight_decay": ("distill", "weight_decay"),
    "temperature": ("distill", "temperature"), "alpha": ("distill", "alpha"), "loss": ("distill", "loss"),
    "output_weights": ("distill", "output_weights"), "hints": ("distill", "hints"),
    "hint_weight": ("distill", "hint_weight"), "device": ("distill", "device"), "bf16": ("distill", "bf16"),
    "compile": ("distill", "compile"), "recalibrate_bn": ("distill", "recalibrate_bn"),
    "cache_mb": ("distill", "cache_mb"), "augment": ("distill", "augment"), "workers": ("distill", "workers"),
    "max_accuracy_drop": ("validate", "max_accuracy_drop"), "min_agreement": ("validate", "min_agreement"),
    "min_speedup": ("validate", "min_speedup"), "provider": ("validate", "provider"),
    "threads": ("validate", "threads"), "validate_batch_size": ("validate", "batch_size"),
    "int8": ("quantize", "enabled"), "qat": ("quantize", "qat"),
}


@dataclass
class PruneOptions:
    ratio: float = 0.5
    criterion: str | None = None  # None: kd when there is data, l1 without
    steps: int = 1  # prune in K steps, distilling between them
    global_rank: bool = False  # "global" in JSON
    max_group_ratio: float = 0.9  # with global_rank: the most any one group may lose
    # None: 16 (graph_passes.prune.plan.DEFAULT_ROUND_TO) for a ratio; --target-speedup tries 1, 8 and 16 (16 with
    # --int8: validate.speed_search.INT8_ROUND_TO)
    round_to: int | None = None
    ignore: str | None = None
    overrides: dict[str, float] = field(default_factory=dict)
    # group id (of this teacher's analysis) -> ratio, over everything else: what --target-speedup's
    # per-group search chose, so a replay gives the same plan without timing
    group_ratios: dict[str, float] = field(default_factory=dict)
    prune_normalized: bool = False
    # Instead of ratio: of the candidates whose measured onnxruntime speed-up (batch latency_batch) is at
    # least this, the one keeping the most MACs (over round-to 1, 8 and 16 unless round_to is given). The
    # saved recipe holds its ratio, round-to and group ratios, so a replay gives the same plan without timing.
    target_speedup: float | None = None
    max_ratio: float = 0.9  # the largest ratio the search tries
    latency_batch: int = 1
    per_group: bool = False  # after the ratio search, time groups whole and leave those whose cut does not pay
    group_trials: int = 24  # ... at most this many groups, most parameters first

    def check(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise OnnxkdError(f"--ratio {self.ratio!r}: expected a number, got {type(self.ratio).__name__}")
        if not 0 <= self.ratio < 1:
            raise OnnxkdError(f"--ratio {self.ratio}: must be in [0, 1)")
        if self.criterion is not None and self.criterion not in CRITERIA:
            raise OnnxkdError(f"--criterion {self.criterion!r}: choose from {', '.join(CRITERIA)}")
        if self.steps < 1:
            raise OnnxkdError(f"--steps {self.steps}: must be >= 1")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise OnnxkdError(f"--round-to {self.round_to!r}: must be an integer >= 1")
        if self.target_speedup is not None and not self.target_speedup > 0:
            raise OnnxkdError(f"--target-speedup {self.target_speedup}: must be > 0")
        if not 0 <= self.max_ratio < 1:
            raise OnnxkdError(f"--max-ratio {self.max_ratio}: must be in [0, 1)")
        if self.latency_batch < 1:
            raise OnnxkdError(f"--latency-batch {self.latency_batch}: must be >= 1")
        if self.group_trials < 1:
            raise OnnxkdError(f"--group-trials {self.group_trials}: must be >= 1")
        from onnxkd.graph_passes.prune.plan import group_overrides

        group_overrides({"group_ratios": self.group_ratios})  # bad ids or ratios fail here, before any work

    def criterion_for(self, has_data: bool) -> str:
        chosen = self.criterion or ("kd" if has_data else "l1")
        if chosen in ("taylor", "kd") and not has_data:
            raise OnnxkdError(f"--criterion {chosen} needs --data to measure importance on")
        return chosen

    def plan_recipe(self) -> dict:
        """What ``graph_passes.prune`` takes as its ``recipe`` argument."""
        return {"overrides": dict(self.overrides), "group_ratios": dict(self.group_ratios),
                "prune_normalized": self.prune_normalized}


@dataclass
class ValidateOptions:
    batch_size: int = 32
    provider: str = "auto"
    threads: int = 0
    graph_opt: str = "all"
    runs: int = 50
    warmup: int = 5
    time_budget: float = 2.0
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    min_speedup: float | None = None


@dataclass
class QuantizeOptions:
    """``compress --int8``: quantize the distilled student (``onnxkd quantize``; PTQ, then QAD when PTQ loses
    more than ``max_accuracy_drop``)."""

    enabled: bool = False
    activation_type: str = "auto"
    calibration: str = "percentile"
    calibration_samples: int = 128
    eval_samples: int = 500
    max_accuracy_drop: float = 0.01  # against the float student, on samples calibration and QAD did not see
    qat: bool = True
    qat_epochs: int | None = None
    qat_lr: float = QAT_LR
    learn_scales: bool = True
    scope: str = "auto"  # what is quantized: auto (every op, else only the weighted ones), all, weighted


@dataclass
class Recipe:
    prune: PruneOptions = field(default_factory=PruneOptions)
    distill: DistillConfig = field(default_factory=DistillConfig)
    validate: ValidateOptions = field(default_factory=ValidateOptions)
    seed: int = 0
    optimize: bool = True  # fuse the final student's written-out activations (onnxkd optimize)
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)

    def to_dict(self, teacher_sha256: str | None = None) -> dict:
        prune = asdict(self.prune)
        prune["global"] = prune.pop("global_rank")
        distill = self.distill.to_dict()
        distill.pop("seed")  # the recipe's one seed
        return {"onnxkd_version": __version__, "teacher_sha256": teacher_sha256, "seed": self.seed,
                "optimize": self.optimize, "prune": prune, "distill": distill, "validate": asdict(self.validate),
                "quantize": asdict(self.quantize)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "recipe") -> "Recipe":
        if not isinstance(data, dict):
            raise OnnxkdError(f"{where}: expected a JSON object")
        known = {"onnxkd_version", "teacher_sha256", "seed", "optimize", "prune", "distill", "validate", "quantize"}
        if not known & set(data):  # the older prune-only format: the prune section alone
            data = {"prune": data}
        _no_unknown(data, known, where)
        for name in ("prune", "distill", "validate", "quantize"):
            if not isinstance(data.get(name) or {}, dict):
                raise OnnxkdError(f"{where}: {name}: expected a JSON object of settings, got {json.dumps(data[name])}")
        _check_type(data.get("seed", 0), "int", f"{where}: seed")
        _check_type(data.get("optimize", True), "bool", f"{where}: optimize")
        seed = int(data.get("seed", 0))
        prune = dict(data.get("prune") or {})
        if "global" in prune:
            prune["global_rank"] = prune.pop("global")
        recipe = cls(prune=_section(PruneOptions, prune, f"{where}: prune"),
                     distill=_section(DistillConfig, dict(data.get("distill") or {}, seed=seed), f"{where}: distill"),
                     validate=_section(ValidateOptions, data.get("validate") or {}, f"{where}: validate"), seed=seed,
                     optimize=bool(data.get("optimize", True)),
                     quantize=_section(QuantizeOptions, data.get("quantize") or {}, f"{where}: quantize"))
        recipe.prune.check()
        return recipe


def load_recipe(path: str | os.PathLike) -> tuple[Recipe, dict]:
    """The recipe in a JSON file, and the raw JSON (for its teacher_sha256)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise OnnxkdError(f"--recipe {path}: cannot read JSON ({exc})") from None
    return Recipe.from_dict(data, f"--recipe {path}"), data


def save_recipe(recipe: Recipe, path: str | os.PathLike, teacher_sha256: str | None = None) -> Path:
    """Write the recipe atomically (temp file, then rename)."""
    return write_json(path, recipe.to_dict(teacher_sha256), indent=2)


def _section(kind: type, values: dict[str, Any], where: str):
    _no_unknown(values, {f.name for f in fields(kind)}, where)
    for item in fields(kind):
        if item.name in values:
            _check_type(values[item.name], str(item.type), f"{where}: {item.name}")
    try:
        return kind(**values)
    except TypeError as exc:
        raise OnnxkdError(f"{where}: {exc}") from None


# JSON's types for the annotations the recipe's settings use ("float | None", "dict[str, float]", ...)
_JSON_TYPES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,), "None": (type(None),),
               "dict": (dict,), "list": (list,), "tuple": (list, tuple)}


def _check_type(value: Any, annotation: str, where: str) -> None:
    """Refuse, before any stage, a setting of the wrong JSON type ("0.5" for a ratio): it failed deep inside a
    stage as an internal error, or only after the stages before it had run. Annotations it does not know pass."""
    names = [part.strip().split("[", 1)[0] for part in annotation.split("|")]
    if not all(name in _JSON_TYPES for name in names):
        return
    wanted = tuple(t for name in names for t in _JSON_TYPES[name])
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        shown = " or ".join("null" if name == "None" else "a number" if name == "float" else
                            f"an {name}" if name == "int" else f"a {name}" for name in names)
        raise OnnxkdError(f"{where} {json.dumps(value)}: expected {shown}")


def _no_unknown(values: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        shown = sorted("global" if name == "global_rank" else name for name in known)  # as recipes write it
        raise OnnxkdError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(shown)}")
