"""Choosing the weight decay ``μ`` by k-fold cross-validation on the training data alone.

``μ`` weighs ``(μ/2) Σ ||W_l||²`` against the loss in the AL trainer's objective (DESIGN §2), and the
right value depends on the problem: on the digits, ``μ = 1e-3`` lets both the AL method and Adam
reach zero training error and overfit. :func:`cross_validate_mu` splits the *training* samples into
``folds`` seeded folds, trains on all but one with each ``μ`` of a grid for a fixed budget, and scores
the held-out fold; the held-out (test) split of a benchmark is never seen. Used by
``unrelu bench train --select-mu``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np

from formulation.results import ConvergenceWarning, ProblemError
from solvers.methods.al_trainer import ALTrainer
from solvers.methods.scaling import forward_loss_fraction

__all__ = ["MU_GRID", "cross_validate_mu", "format_cv"]

#: The default grid: half decades from 1e-3 to 100 (rounded to 1 and 3).
MU_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _score(network, X, Y, labels):
    """Held-out score, larger is better: accuracy with ``labels``, else minus the loss as a fraction of variance
    (:func:`~solvers.methods.scaling.forward_loss_fraction`, the trainer's own measure)."""
    if labels is not None:
        return float(np.mean(np.argmax(network(X), axis=0) == labels))
    return -forward_loss_fraction(network, X, Y)


def cross_validate_mu(X, Y, hidden: Sequence[int], *, grid: Sequence[float] = MU_GRID, folds: int = 5,
                      budget: float = 5.0, labels=None, seed: int = 0, progress=None, **settings) -> dict:
    """k-fold cross-validation of the weight decay ``μ`` of :class:`~solvers.methods.al_trainer.ALTrainer`.

    Parameters
    ----------
    X, Y : arrays ``(n0, N)``, ``(nL, N)``
        Training samples as columns: only these are split (pass the training split, never the test split).
    hidden, settings
        The trainer's hidden widths and any other :class:`ALTrainer` settings (``dtype``, ``threads``, ...;
        ``max_iters`` bounds each fit by iterations instead of only by ``budget``).
    grid : values of ``μ`` (each ``>= 0``), folds : ``>= 2``, budget : seconds per fit
    labels : optional integer labels ``(N,)``
        Score by held-out accuracy (classification); without them, by minus the held-out loss as a
        fraction of variance.
    seed : seeds the fold permutation and the trainer

    Returns
    -------
    dict
        ``mu`` (the grid value with the best mean score; ties go to the larger ``μ``, the simpler
        network), ``rows`` (one per ``μ``: ``mu, mean, std, scores, seconds``) and ``score`` (what was scored).
    """
    grid = [float(mu) for mu in grid]
    if not grid or any(not np.isfinite(mu) or mu < 0 for mu in grid):
        raise ProblemError(f"The grid of mu must be non-empty finite values >= 0, got {grid}.")
    N = X.shape[1]
    if isinstance(folds, bool) or int(folds) != folds or not 2 <= folds <= N:
        raise ProblemError(f"`folds` must be an integer between 2 and the number of samples ({N}), got {folds!r}.")
    fit_settings = {"seed": seed, "max_iters": 10**6, "time_budget": budget, "tol": 0.0, "progress": False,
                    **settings}
    parts = np.array_split(np.random.default_rng(seed).permutation(N), int(folds))
    rows = []
    for mu in grid:
        scores, start = [], time.perf_counter()
        for held in parts:
            kept = np.setdiff1d(np.arange(N), held)
            trainer = ALTrainer(hidden, **{**fit_settings, "mu": mu})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                result = trainer.fit(X[:, kept], Y[:, kept])
            scores.append(_score(result.network, X[:, held], Y[:, held], None if labels is None else labels[held]))
        rows.append({"mu": mu, "mean": float(np.mean(scores)), "std": float(np.std(scores)), "scores": scores,
                     "seconds": time.perf_counter() - start})
        if progress:
            progress(rows[-1])
    best = max(rows, key=lambda row: (row["mean"], row["mu"]))
    return {"mu": best["mu"], "rows": rows, "score": "accuracy" if labels is not None else "-loss/variance"}


def format_cv(result: dict, title: str = "") -> str:
    """The cross-validation table, the chosen ``μ`` marked."""
    lines = [title] if title else []
    lines.append(f"{'mu':>8} | {'mean ' + result['score']:>22} | {'std':>8} | {'s':>6}")
    for row in result["rows"]:
        mark = "  <- chosen" if row["mu"] == result["mu"] else ""
        lines.append(f"{row['mu']:>8g} | {row['mean']:>22.4f} | {row['std']:>8.4f} | {row['seconds']:>6.1f}{mark}")
    return "\n".join(lines)
