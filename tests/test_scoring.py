"""Anomaly scorers against direct numpy computations, and the scorer registry's contract."""

import numpy as np
import pytest
import torch

from segcheck import SegcheckError
from segcheck.scoring import (
    BUILTIN_SCORERS,
    ClassStats,
    ScorerRegistry,
    energy,
    entropy,
    max_logit,
    msp,
    score,
    standardized_max_logit,
)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 3, size=(2, 4, 5, 6))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _run(scorer, **context):
    return scorer(torch.tensor(LOGITS, dtype=torch.float64), **context).numpy()


def test_msp_is_minus_the_largest_softmax_probability():
    np.testing.assert_allclose(_run(msp), -_softmax(LOGITS).max(1), rtol=1e-12)


def test_max_logit_is_minus_the_largest_logit():
    np.testing.assert_allclose(_run(max_logit), -LOGITS.max(1), rtol=1e-12)


@pytest.mark.parametrize("t", [1.0, 0.5, 3.0])
def test_energy_is_minus_t_log_sum_exp(t):
    expected = -t * np.log(np.exp(LOGITS / t).sum(1))
    np.testing.assert_allclose(_run(energy, temperature=t), expected, rtol=1e-10)


def test_entropy_of_the_softmax():
    p = _softmax(LOGITS)
    np.testing.assert_allclose(_run(entropy), -(p * np.log(p)).sum(1), rtol=1e-10)
    uniform = entropy(torch.zeros(1, 4, 2, 2))
    np.testing.assert_allclose(uniform.numpy(), np.log(4), rtol=1e-6)  # the most unsure prediction


def test_standardized_max_logit_uses_the_predicted_class_statistics():
    mean, std = np.array([1.0, -2.0, 0.5, 3.0]), np.array([0.5, 2.0, 1.0, 4.0])
    stats = ClassStats(torch.tensor(mean), torch.tensor(std), (10, 10, 10, 10))
    c = LOGITS.argmax(1)
    expected = -(LOGITS.max(1) - mean[c]) / std[c]
    np.testing.assert_allclose(_run(standardized_max_logit, class_stats=stats), expected, rtol=1e-12)


def test_higher_means_more_anomalous_for_every_builtin():
    confident = torch.tensor([10.0, 0, 0, 0]).view(1, 4, 1, 1)
    unsure = torch.zeros(1, 4, 1, 1)
    stats = ClassStats(torch.zeros(4), torch.ones(4), (1, 1, 1, 1))
    context = {"temperature": 1.0, "class_stats": stats}
    for name, scorer in BUILTIN_SCORERS.items():
        assert score(scorer, unsure, context, name) > score(scorer, confident, context, name), name


def test_a_scorer_may_ask_for_context_and_gets_only_what_it_asks():
    asked = {}

    def features(logits, inputs, module=None):
        asked.update(inputs=inputs, module=module)
        return logits[:, 0]

    out = score(features, torch.zeros(1, 3, 2, 2), {"inputs": "x", "module": "m", "temperature": 2.0})
    assert out.shape == (1, 2, 2) and asked == {"inputs": "x", "module": "m"}


def test_registry_rejects_a_scorer_asking_for_unknown_context():
    registry = ScorerRegistry()
    with pytest.raises(SegcheckError, match="asks for 'features', which segcheck does not provide.*inputs"):
        registry.add("mine", lambda logits, features: logits[:, 0])
    registry.add("ok", lambda logits, temperature=1.0: logits[:, 0])
    with pytest.raises(SegcheckError, match="registered twice"):
        registry.add("ok", msp)


def test_a_scorer_returning_the_wrong_shape_is_one_line():
    with pytest.raises(
        SegcheckError, match=r"scorer 'bad' returned \(1, 3, 2, 2\); expected a tensor of shape \(1, 2, 2\)"
    ):
        score(lambda logits: logits, torch.zeros(1, 3, 2, 2), {}, "bad")


def test_builtin_scorers_are_registered_through_the_hook():
    from segcheck.plugins import load

    plugins = load((), entry_points=False)
    assert plugins.scorers.names() == sorted(BUILTIN_SCORERS)
    assert [e.plugin for e in plugins.scorers] == ["segcheck.scoring"] * len(BUILTIN_SCORERS)
    gates = {g.name for g in plugins.gates.gates("anomaly")}
    assert {f"anomaly_detection[{n}]" for n in BUILTIN_SCORERS} <= gates
