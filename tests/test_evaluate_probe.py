"""The one linear probe (vitviz_core.evaluate.probe): one fit, one ProbeResult, used by the
level-0 probes of vitviz_core.neurons.level0 too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitviz_core.evaluate import probe as pr
from vitviz_core.evaluate.stats import accuracy_with_ci, topk_correct
from vitviz_core.neurons import level0


def _sklearn_reference(train_x, train_y, test_x, test_y, C=1.0, max_iter=300, seed=0):
    """What level0.linear_probe computed before it used the shared probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(
        scaler.transform(train_x), train_y
    )
    proba = clf.predict_proba(scaler.transform(test_x))
    k = min(5, proba.shape[1])
    top = clf.classes_[np.argsort(-proba, axis=1)[:, :k]]
    return top[:, 0] == test_y, (top == test_y[:, None]).any(1)


def test_one_result_type():
    assert level0.ProbeResult is pr.ProbeResult


@pytest.mark.parametrize("n_classes,unseen", [(12, False), (12, True), (3, False), (2, False)])
def test_level0_probe_equals_the_scikit_learn_computation(n_classes, unseen):
    rng = np.random.default_rng(n_classes)
    centers = rng.normal(size=(n_classes, 6)) * 1.5
    ytr = np.repeat(np.arange(n_classes), 8)
    yte = rng.integers(0, n_classes, 40)
    if unseen:
        ytr = ytr[ytr != 4]  # class 4 is never trained on
    xtr = (centers[ytr] + rng.normal(size=(len(ytr), 6))).astype(np.float32)
    xte = (centers[yte] + rng.normal(size=(len(yte), 6))).astype(np.float32)
    c1, c5 = _sklearn_reference(xtr, ytr, xte, yte, C=0.5)
    res = level0.linear_probe(xtr, ytr, xte, yte, feature="f", C=0.5, n_boot=100)
    np.testing.assert_array_equal(res.correct1, c1)
    np.testing.assert_array_equal(res.correct5, c5)
    assert res.top1 == accuracy_with_ci(c1, n_boot=100) and res.top5 == accuracy_with_ci(c5, n_boot=100)
    assert res.n_train == len(xtr) and res.n_test == len(xte) and res.feature == "f"
    assert res.n_train_classes == len(set(ytr.tolist()))
    if unseen:
        assert not res.correct5[yte == 4].any() and 4 not in res.predicted


def test_adam_probe_is_scored_like_a_plain_top_k():
    torch.manual_seed(0)
    feats, labels = torch.randn(30, 8), torch.randint(0, 6, (30,))
    probe = pr.fit_linear_probe(feats, labels, num_classes=6, epochs=20, lr=0.1)
    test, ytest = torch.randn(20, 8), torch.randint(0, 6, (20,))
    res = pr.probe_accuracy(probe, test, ytest, n_boot=100)
    hits = topk_correct(probe(test), ytest, (1, 5))
    np.testing.assert_array_equal(res.correct1, hits[1].numpy())
    np.testing.assert_array_equal(res.correct5, hits[5].numpy())
    assert res.top5 == accuracy_with_ci(hits[5].numpy(), n_boot=100)
    np.testing.assert_array_equal(res.predicted, probe(test).argmax(-1).numpy())


def test_logistic_probe_is_a_linear_probe_module():
    rng = np.random.default_rng(0)
    x, y = torch.from_numpy(rng.normal(size=(40, 5))), torch.arange(40) % 4
    probe = pr.fit_linear_probe(x, y, num_classes=7, method="logistic")
    assert isinstance(probe, pr.LinearProbe) and probe.mu.dtype == torch.float64
    logits = probe(x.float())  # (40, 7)
    assert torch.isinf(logits[:, 4:]).all() and torch.isfinite(logits[:, :4]).all()
    from vitviz_core import cache

    back = cache.loads(cache.dumps(probe))
    torch.testing.assert_close(back(x), probe(x))
    with pytest.raises(Exception, match="method"):
        pr.fit_linear_probe(x, y, method="svm")
