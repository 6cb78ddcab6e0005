"""Every distillation loss against a value computed by hand (numpy, float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxkd.distill import losses
from onnxkd.distill.augment import mixed_cross_entropy

STUDENT = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
TEACHER = np.array([[1.5, 1.0, -0.5], [0.0, -1.0, 2.5]])


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _t(a):
    return torch.tensor(a, dtype=torch.float32)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_kl_is_batchmean_kl_of_softened_scores_times_t_squared(temperature):
    p_t, p_s = _softmax(TEACHER / temperature), _softmax(STUDENT / temperature)
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1).mean() * temperature**2
    assert float(losses.kd_kl(_t(STUDENT), _t(TEACHER), temperature)) == pytest.approx(expected, rel=1e-5)


def test_kd_kl_over_the_last_axis_sums_each_token_of_a_sample():
    """Scores per token [N, T, C]: KL over C at every position, summed over T, averaged over N (batchmean)."""
    rng = np.random.default_rng(0)
    student, teacher = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    p_t = _softmax(teacher.reshape(6, 4) / 2.0)
    p_s = _softmax(student.reshape(6, 4) / 2.0)
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum() / 2 * 2.0**2
    assert float(losses.kd_kl(_t(student), _t(teacher), 2.0, class_axis=-1)) == pytest.approx(expected, rel=1e-5)


def test_kd_kl_is_zero_when_the_student_equals_the_teacher():
    assert float(losses.kd_kl(_t(TEACHER), _t(TEACHER), 4.0)) == pytest.approx(0.0, abs=1e-7)


def test_cross_entropy():
    labels = np.array([0, 1])
    expected = -np.log(_softmax(STUDENT)[[0, 1], labels]).mean()
    got = mixed_cross_entropy(_t(STUDENT), torch.tensor(labels), None)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_mse_and_cosine():
    assert float(losses.mse(_t(STUDENT), _t(TEACHER))) == pytest.approx(((STUDENT - TEACHER) ** 2).mean(), rel=1e-6)
    cos = (STUDENT * TEACHER).sum(1) / np.linalg.norm(STUDENT, axis=1) / np.linalg.norm(TEACHER, axis=1)
    assert float(losses.cosine(_t(STUDENT), _t(TEACHER))) == pytest.approx((1 - cos).mean(), rel=1e-5)


def test_hint_compares_per_sample_normalised_features():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((3, 4, 2, 2)), rng.standard_normal((3, 4, 2, 2)) * 100  # scale must not matter
    s_hat = s.reshape(3, -1) / np.linalg.norm(s.reshape(3, -1), axis=1, keepdims=True)
    t_hat = t.reshape(3, -1) / np.linalg.norm(t.reshape(3, -1), axis=1, keepdims=True)
    expected = ((s_hat - t_hat) ** 2).sum(1).mean()
    assert float(losses.hint(_t(s), _t(t))) == pytest.approx(expected, rel=1e-5)
    assert float(losses.hint(_t(t), _t(t * 3))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["kl", "mse", "cosine"])
def test_losses_are_fp32_under_low_precision_inputs(name):
    s, t = _t(STUDENT).bfloat16(), _t(TEACHER).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.output_loss(name, s, t, 4.0)
    assert value.dtype == torch.float32
    reference = losses.output_loss(name, s.float(), t.float(), 4.0)
    assert float(value) == pytest.approx(float(reference), rel=1e-6)


def test_binary_kl_is_the_kl_of_independent_sigmoid_scores():
    """Hand-computed: sum over scores of p log(p/q) + (1-p) log((1-p)/(1-q)) at T, averaged over samples, x T²."""


    from onnxkd.distill.losses import binary_kl

    s, t = torch.tensor([[0.3, -2.0, 1.5], [0.0, 4.0, -1.0]]), torch.tensor([[1.0, -1.0, 0.5], [2.0, 3.0, -3.0]])
    for temperature in (1.0, 2.0):
        p = 1 / (1 + np.exp(-t.numpy() / temperature))
        q = 1 / (1 + np.exp(-s.numpy() / temperature))
        expected = (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).sum() / 2 * temperature**2
        assert float(binary_kl(s, t, temperature)) == pytest.approx(expected, rel=1e-5)
    assert float(binary_kl(t, t, 1.0)) == pytest.approx(0.0, abs=1e-6)
