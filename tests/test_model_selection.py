"""Tests of the k-fold cross-validation of the weight decay (validation/model_selection.py)."""

from __future__ import annotations

import numpy as np
import pytest

from formulation.results import ProblemError
from validation.model_selection import cross_validate_mu, format_cv
from validation.train_data import digits_classification

pytestmark = pytest.mark.filterwarnings("ignore::solvers.methods.al_trainer.ConvergenceWarning")


def test_cross_validation_scores_held_out_folds_and_picks_the_best_mu():
    data = digits_classification(seed=0)
    X, Y, labels = data["X"][:, :300], data["Y"][:, :300], data["labels"][:300]
    seen = []
    result = cross_validate_mu(X, Y, (16,), grid=(1.0, 1e5), folds=3, budget=30.0, labels=labels, max_iters=15,
                               progress=seen.append)
    rows = {row["mu"]: row for row in result["rows"]}
    assert [row["mu"] for row in seen] == [1.0, 1e5] and result["score"] == "accuracy"
    assert all(len(row["scores"]) == 3 and 0.0 <= min(row["scores"]) <= max(row["scores"]) <= 1.0
               for row in rows.values())
    # a weight decay of 1e5 flattens the network to the class frequencies: the held-out accuracy drops
    assert rows[1.0]["mean"] > rows[1e5]["mean"] + 0.3 and result["mu"] == 1.0
    assert "<- chosen" in format_cv(result).splitlines()[1]  # the row of mu = 1 (after the header)
    # without labels: minus the held-out loss as a fraction of variance (a flattened network leaves about all of it)
    regression = cross_validate_mu(X, Y, (16,), grid=(1e5,), folds=3, budget=30.0, max_iters=5)
    assert regression["score"] == "-loss/variance" and -1.1 < regression["rows"][0]["mean"] < -0.9


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(grid=()), "grid of mu"), (dict(grid=(1.0, -1.0)), "grid of mu"), (dict(grid=(np.nan,)), "grid of mu"),
    (dict(folds=1), "`folds`"), (dict(folds=2.5), "`folds`"), (dict(folds=11), "`folds`"),
    (dict(folds=True), "`folds`"),
])
def test_cross_validation_refuses_bad_settings(kwargs, fragment):
    X, Y = np.ones((2, 10)), np.ones((1, 10))
    with pytest.raises(ProblemError, match=fragment):
        cross_validate_mu(X, Y, (4,), **kwargs)
