"""The decisions of one ``quantize`` run, in order, over candidates quantized and measured on onnxruntime:

1. speed: the whole model int8, then the nodes slower in int8 back to float, else the float model (speed.py);
   first with every op quantized, then, where that does not pay or loses more than the budget, with only the
   weighted ops (ptq.SCOPES); the scope that pays and loses least goes on;
2. quantization-aware distillation, when the caller gave a refiner and PTQ loses more than the budget;
3. accuracy: the most sensitive nodes back to float until the drop is within budget (accuracy.py);
4. a last timing when nodes went back to float for accuracy: the never-slower rule holds for what is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxkd.data import Dataset
from onnxkd.quantize import accuracy, speed
from onnxkd.quantize.ptq import SCOPES
from onnxkd.quantize.result import SCOPE_TEXT
from onnxkd.validate.gates import within

Refine = Callable[[ir.Model, Dataset], ir.Model]
# why a candidate is not kept, in the notes (speed.pays is the rule)
TOO_SLOW = f"slower than float, or under {speed.MIN_GAIN:.2f}x its speed"


@dataclass
class Outcome:
    path: Path | None  # the int8 model to write; None: the float model
    speedups: dict[int, float]
    quality: dict | None = None
    float_nodes: dict[str, str] = field(default_factory=dict)  # node -> "speed: ..." / "accuracy: ..."
    trials: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    qat: dict | None = None
    scope: str = SCOPES[0]  # what the written model quantizes (ptq.SCOPES)


@dataclass
class Search:
    quantize: Callable[[set[str]], Path]  # nodes left float -> a QDQ model in the work folder
    timer: speed.SpeedupsOf
    profiler: speed.TimesOf
    evaluate: Callable[[], accuracy.Evaluate]  # made on first use: the float model's outputs cost a pass
    ranking: Callable[[Path], dict[str, float]]
    float_path: Path
    nodes: set[str]  # every node of the float model (what may go back to float)
    computes: set[str]  # its Conv/Gemm/MatMul nodes
    partners: Callable[[], dict[str, list[str]]]
    max_drop: float
    load: Callable[[Path], ir.Model]
    save: Callable[[ir.Model], Path]
    padding: speed.Padding | None = None  # narrow convolution inputs padded where measured faster
    use_scope: Callable[[str], None] = lambda scope: None  # what the models quantized from now on quantize
    scopes: tuple[str, ...] = SCOPES[:1]

    def run(self, refine: Refine | None, training: Dataset) -> Outcome:
        outcome = Outcome(None, {}, trials={"speed": []})
        evaluate: accuracy.Evaluate | None = None
        best: tuple[str, speed.SpeedDecision, accuracy.Quality] | None = None  # the scope that pays, losing least
        tried: dict[str, str] = {}  # scope -> why it was not taken as it is
        too_slow: dict[str, str] = {}  # scope -> its speed-ups, where int8 did not pay
        profiler = speed.memoized(self.profiler)  # the float model is profiled once, whatever the scopes
        for scope in self.scopes:
            self.use_scope(scope)
            fast = speed.keep_what_pays(self.quantize, self.timer, profiler, self.float_path, self.nodes,
                                        trimmable=self.computes, padding=self.padding)
            outcome.trials["speed"] += [dict(trial, scope=scope) for trial in fast.trials]
            if fast.pays or not outcome.speedups or speed.mean(fast.speedups) > speed.mean(outcome.speedups):
                outcome.speedups = fast.speedups  # where nothing pays: the fastest int8 of every scope
            if not fast.pays:
                too_slow[scope] = f"{SCOPE_TEXT[scope]}: {describe(fast.speedups)}"
                tried[scope] = f"{too_slow[scope]}, {TOO_SLOW}"
                continue
            evaluate = evaluate or self.evaluate()
            ptq = evaluate(fast.path)
            if best is None or ptq.drop < best[2].drop:
                best = (scope, fast, ptq)
            if within(ptq.drop, self.max_drop):
                break
            tried[scope] = (f"{SCOPE_TEXT[scope]}: int8 loses {ptq.drop:.2%} ({ptq.describe()}), over the "
                            f"{self.max_drop:.2%} budget")
        if best is None:  # every scope was too slow: say it once, with each scope's speed-ups
            outcome.notes.append(f"int8 does not pay on this machine, even with the slow nodes left in float: it is "
                                 f"{TOO_SLOW} ({'; '.join(too_slow.values())}): wrote the float model")
            return outcome
        scope, fast, ptq = best
        self.use_scope(scope)  # QAD and the accuracy control go on from this scope's model
        outcome.scope, outcome.speedups = scope, fast.speedups
        if scope != self.scopes[0]:
            outcome.notes.append(f"{tried[self.scopes[0]]}; {SCOPE_TEXT[scope]} instead")
        outcome.float_nodes = {name: f"speed: {why}" for name, why in fast.float_nodes.items()}
        over_budget = not within(ptq.drop, self.max_drop)
        if refine is not None and over_budget and self._distilled(fast, ptq, refine, training, evaluate, outcome):
            return outcome
        return self._within_budget(fast, ptq, evaluate, outcome)

    def _distilled(self, fast: speed.SpeedDecision, ptq: accuracy.Quality, refine: Refine, training: Dataset,
                   evaluate: accuracy.Evaluate, outcome: Outcome) -> bool:
        """QAD from the PTQ model; True when its result is kept (within budget and not slower)."""
        refined = self.save(refine(self.load(fast.path), training))
        quality = evaluate(refined)
        outcome.qat = {"ptq": ptq.to_dict(), "qat": quality.to_dict(), "kept": within(quality.drop, self.max_drop)}
        if not outcome.qat["kept"]:
            outcome.notes.append(f"quantization-aware distillation lost {quality.drop:.2%}, over the budget: the "
                                 "accuracy control ran on the PTQ model")
            return False
        outcome.speedups, outcome.quality = self.timer(refined), quality.to_dict()
        outcome.path = refined if speed.pays(outcome.speedups) else None
        if outcome.path is None:
            outcome.notes.append(f"the distilled int8 model is {TOO_SLOW}: wrote the float model")
        return True

    def _within_budget(self, fast: speed.SpeedDecision, ptq: accuracy.Quality, evaluate: accuracy.Evaluate,
                       outcome: Outcome) -> Outcome:
        kept = accuracy.within_budget(self.quantize, evaluate, fast.path, set(fast.float_nodes), self.ranking,
                                      self.max_drop, total=len(self.computes), partners=self.partners(), measured=ptq)
        outcome.trials["accuracy"] = kept.trials
        outcome.quality = kept.quality.to_dict()
        if kept.path is None:
            total = len(self.computes)
            tried = (f"even with {kept.trials[-1]['float_nodes']} of the {total} compute nodes in float"
                     if len(kept.trials) > 1 else f"and its most sensitive node back in float (with the nodes feeding "
                     f"it) would leave more than half of the {total} compute nodes in float")
            remedy = "" if outcome.qat else " (quantization-aware distillation, --qat, is the remedy)"
            outcome.notes.append(f"int8 loses {kept.quality.drop:.2%} ({kept.quality.describe()}), over the "
                                 f"{self.max_drop:.2%} budget, {tried}: wrote the float model{remedy}")
            return outcome
        outcome.float_nodes.update({name: f"accuracy: {why}" for name, why in kept.float_nodes.items()})
        outcome.path = kept.path
        if kept.float_nodes:  # nodes went back to float: the speed verdict must be measured again
            outcome.speedups = self.timer(kept.path)
            outcome.trials["speed"].append({"float_nodes": len(outcome.float_nodes),
                                            "speedups": {str(b): s for b, s in outcome.speedups.items()}})
            if not speed.pays(outcome.speedups):
                outcome.notes.append(f"with the nodes accuracy needs in float, int8 is {TOO_SLOW}: wrote the float "
                                     "model")
                outcome.path = None
        return outcome


def describe(speedups: dict) -> str:
    """``{batch: speed-up}`` as "1.31x at batch 1, 1.82x at batch 8"."""
    return ", ".join(f"{s:.2f}x at batch {b}" for b, s in speedups.items())
