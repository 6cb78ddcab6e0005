"""Quality metrics and the latency protocol against independent computations."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from onnxkd.validate import latency, quality


def _log_softmax(x):
    x = x.astype(np.float64)
    return x - np.log(np.sum(np.exp(x - x.max(1, keepdims=True)), 1, keepdims=True)) - x.max(1, keepdims=True)


def test_output_metrics_match_independent_formulas():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((50, 6)).astype(np.float32)
    s = t + 0.3 * rng.standard_normal((50, 6)).astype(np.float32)
    m = quality.output_metrics("logits", t, s)
    assert m["max_abs_error"] == pytest.approx(float(np.max(np.abs(t - s))), rel=1e-6)
    assert m["mean_abs_error"] == pytest.approx(float(np.mean(np.abs(t - s))), rel=1e-6)
    cos = np.sum(t * s) / np.sqrt(np.sum(t * t) * np.sum(s * s))
    assert m["cosine"] == pytest.approx(float(cos), rel=1e-6)
    lp, lq = _log_softmax(t), _log_softmax(s)
    assert m["kl"] == pytest.approx(float(np.mean(np.sum(np.exp(lp) * (lp - lq), 1))), rel=1e-6)
    assert m["top1_agreement"] == pytest.approx(accuracy_score(t.argmax(1), s.argmax(1)))
    same = quality.output_metrics("logits", t, t)
    assert same["kl"] == pytest.approx(0, abs=1e-12) and same["cosine"] == pytest.approx(1) and same["max_abs_error"] == 0


def test_kl_of_probability_outputs_is_taken_on_the_probabilities_themselves():
    """A classifier ending in a Softmax outputs probabilities: a second softmax flattened them towards uniform
    and the KL came out ~95x too small. The oracle: scipy's KL of the two distributions as given."""
    from scipy.stats import entropy

    rng = np.random.default_rng(2)
    t_logits = 3 * rng.standard_normal((40, 7))
    s_logits = t_logits + rng.standard_normal((40, 7))
    t, s = np.exp(_log_softmax(t_logits)).astype(np.float32), np.exp(_log_softmax(s_logits)).astype(np.float32)
    expected = float(np.mean([entropy(t[i].astype(np.float64), s[i].astype(np.float64)) for i in range(len(t))]))
    assert quality.output_metrics("probabilities", t, s)["kl"] == pytest.approx(expected, rel=1e-4)
    # logits: the softmax of each, as before (the same distributions, so the same KL)
    assert quality.output_metrics("logits", t_logits, s_logits)["kl"] == pytest.approx(expected, rel=1e-4)


def test_scores_per_token_agree_per_token():
    """[N, T, C] scores per position: agreement and KL over every token of every sample."""
    rng = np.random.default_rng(1)
    t = rng.standard_normal((8, 5, 6)).astype(np.float32)
    s = t + 0.8 * rng.standard_normal((8, 5, 6)).astype(np.float32)
    m = quality.token_score_metrics("logits", t, s)
    assert m["per_token"] and m["top1_agreement"] == pytest.approx(accuracy_score(t.argmax(-1).ravel(), s.argmax(-1).ravel()))
    lp, lq = _log_softmax(t.reshape(40, 6)), _log_softmax(s.reshape(40, 6))
    assert m["kl"] == pytest.approx(float(np.mean(np.sum(np.exp(lp) * (lp - lq), 1))), rel=1e-6)
    assert 0 < m["top1_agreement"] < 1


def test_non_class_outputs_get_no_kl_and_nonfinite_values_are_counted():
    t = np.ones((4, 3, 2), np.float32)
    s = t.copy()
    s[0, 0, 0], s[1, 0, 0], s[2, 0, 0] = np.nan, np.inf, -np.inf
    m = quality.output_metrics("feat", t, s)
    assert m["kl"] is None and m["top1_agreement"] is None
    assert m["student_nonfinite"] == {"nan": 1, "inf": 2} and m["teacher_nonfinite"] == {"nan": 0, "inf": 0}
    # NaN/Inf where the teacher has a value: no error figure (over the finite rest they read 0, a perfect match)
    assert m["max_abs_error"] is None and m["mean_abs_error"] is None and m["cosine"] is None
    both = quality.output_metrics("feat", np.where(np.isfinite(s), t, np.inf), s)  # the teacher's Inf where the
    assert both["max_abs_error"] == 0                                              # student's are: the rest counts


def test_accuracy_drop_and_its_bootstrap_interval():
    labels = np.arange(100) % 5
    t = np.eye(5)[labels]  # teacher always right
    s = t.copy()
    s[:20] = np.eye(5)[(labels[:20] + 1) % 5]  # student wrong on 20
    t, s = quality.predicted_classes(t), quality.predicted_classes(s)
    acc = quality.accuracy_comparison(t, s, labels)
    assert (acc["teacher"], acc["student"], acc["drop"]) == (1.0, pytest.approx(0.8), pytest.approx(0.2))
    lo, hi = acc["drop_ci95"]
    assert lo < 0.2 < hi and 0.1 < lo and hi < 0.3  # binomial sd of 0.2 at n=100 is 0.04
    ag = quality.agreement(t, s)
    assert ag["top1"] == pytest.approx(0.8) and ag["n"] == 100


def test_summary_statistics_match_numpy():
    samples = [3.0, 1.0, 2.0, 10.0, 4.0, 5.0]
    stats = latency.summarize(samples, batch_size=4)
    assert stats["p50"] == np.median(samples) and stats["n"] == 6
    assert stats["p99"] == pytest.approx(np.percentile(samples, 99))
    assert stats["std"] == pytest.approx(np.std(samples, ddof=1))
    assert stats["cv"] == pytest.approx(np.std(samples, ddof=1) / np.mean(samples))
    assert stats["throughput_per_s"] == pytest.approx(4 * 1000 / np.mean(samples))
    assert stats["samples"] == samples


def test_speedup_of_an_exact_ratio_has_a_tight_interval():
    teacher = list(np.linspace(2.0, 4.0, 40))
    student = [t / 2 for t in teacher]
    sp = latency.speedup(teacher, student)
    assert sp["p50"] == pytest.approx(2.0) and sp["ci95"] == pytest.approx([2.0, 2.0])


def test_runs_are_interleaved_abba_after_an_untimed_warmup():
    calls = []
    protocol = latency.LatencyProtocol(warmup=2, runs=4, budget_s=100)
    t, s = latency.time_interleaved(lambda: calls.append("t"), lambda: calls.append("s"), protocol)
    # warm-up, one run each to size the turns, then turns of one run (4 runs allow no longer ones)
    assert "".join(calls) == "tsts" + "ts" + "ts" + "st" + "ts" + "st"
    assert len(t) == len(s) == 4


def test_fast_models_run_in_turns_of_about_turn_ms_with_a_first_untimed_run():
    calls = []
    clock = {"ms": 0.0}
    cost = {"t": 2.0, "s": 1.0}  # the student is faster: it sets the turn (10 ms / 1 ms = 10 runs)

    def run(name):
        return lambda: (calls.append(name), clock.__setitem__("ms", clock["ms"] + cost[name]))

    protocol = latency.LatencyProtocol(warmup=0, runs=40, budget_s=100, turn_ms=10)
    with mock.patch.object(latency.time, "perf_counter_ns", lambda: int(clock["ms"] * 1e6)):
        t, s = latency.time_interleaved(run("t"), run("s"), protocol)
    turn = lambda name: name * 11  # noqa: E731 - one untimed run, then 10 timed
    assert "".join(calls) == "ts" + turn("t") + turn("s") + turn("s") + turn("t") + turn("t") + turn("s") \
        + turn("s") + turn("t")
    assert t == [2.0] * 40 and s == [1.0] * 40
    # a turn never holds more than a quarter of the runs, nor of the time budget
    assert protocol.runs_per_turn(0.01) == 10
    assert latency.LatencyProtocol(budget_s=0.02, turn_ms=250).runs_per_turn(1.0) == 5


def test_time_budget_stops_after_min_runs():
    protocol = latency.LatencyProtocol(warmup=0, runs=1000, budget_s=1e-9, min_runs=3)
    t, s = latency.time_interleaved(lambda: None, lambda: None, protocol)
    assert len(t) == len(s) == 3


def test_bootstrap_intervals_agree_with_the_normal_approximation_and_scale():
    from onnxkd.validate.bootstrap import mean_ci

    rng = np.random.default_rng(0)
    binary = (rng.random(50_000) < 0.9).astype(float)  # a 50k validation set: the exact multinomial path
    lo, hi = mean_ci(binary)
    half = 1.96 * np.sqrt(0.9 * 0.1 / 50_000)
    assert lo == pytest.approx(binary.mean() - half, abs=0.0015) and hi == pytest.approx(binary.mean() + half, abs=0.0015)
    continuous = rng.standard_normal(400)  # many distinct values: the resampling path
    lo, hi = mean_ci(continuous)
    half = 1.96 * continuous.std() / np.sqrt(400)
    assert lo == pytest.approx(continuous.mean() - half, abs=0.03) and hi == pytest.approx(continuous.mean() + half, abs=0.03)


def test_runs_and_the_time_budget_as_the_readme_says():
    """`--runs` is the most per model; the time budget stops earlier but never below 5 runs."""
    from onnxkd.validate.latency import LatencyProtocol, time_interleaved

    def slow():
        __import__("time").sleep(0.002)

    teacher, _ = time_interleaved(slow, slow, LatencyProtocol(warmup=0, runs=3, budget_s=10.0))
    assert len(teacher) == 3
    teacher, _ = time_interleaved(slow, slow, LatencyProtocol(warmup=0, runs=50, budget_s=1e-6))
    assert len(teacher) == 5
