"""Linear and sparse recovery baselines: ridge regression (scikit-learn) and LASSO / basis pursuit (CVXPY).

One ridge for every comparison: :func:`ridge` (fixed penalty relative to the data's scale; ``bench
train``) and :func:`fit_ridge` (the penalty chosen on a validation pair; ``cs``). Rows are samples
here (scikit-learn's layout).
"""

from __future__ import annotations

import numpy as np

from formulation.results import ProblemError, SolverNotFound

__all__ = ["ridge", "fit_ridge", "lasso_csgm", "SparseRecovery"]


def ridge(inputs: np.ndarray, targets: np.ndarray, relative_alpha: float):
    """``sklearn.linear_model.Ridge`` fitted with ``alpha = relative_alpha · tr(X_cᵀX_c) / n`` (``X_c`` the
    centred inputs, ``n`` their number of features, so the penalty scales with the data); ``(model, alpha)``."""
    from sklearn.linear_model import Ridge

    centred = inputs - inputs.mean(axis=0)
    alpha = float(relative_alpha) * float(np.sum(centred * centred)) / inputs.shape[1]
    return Ridge(alpha=alpha).fit(inputs, targets), alpha


def fit_ridge(Y: np.ndarray, S: np.ndarray, Y_val: np.ndarray, S_val: np.ndarray, grid: int = 9):
    """Linear recovery ``ŝ = W y + b`` by :func:`ridge` on ``(Y, S)``, the penalty chosen on ``(Y_val, S_val)``.

    The relative penalties are ``logspace(-6, 2, grid)``; the error is the MSE of predictions
    clipped to ``[0, 1]`` (signals are images). The model is the one fitted on the training pair (not
    refitted with the validation pair), so the AL method's ``init="pairs"`` start with the same relative
    penalty is this very decoder.

    Returns
    -------
    model : sklearn.linear_model.Ridge
    alpha : float
    relative : float
        ``alpha`` relative to the data (:func:`ridge`'s ``relative_alpha``).
    """
    best = None
    for relative in np.logspace(-6, 2, grid):
        model, alpha = ridge(Y, S, relative)
        # scikit-learn predicts shape (N,) for targets of shape (N, 1): keep the targets' shape, never broadcast
        error = float(np.mean((np.clip(model.predict(Y_val), 0, 1).reshape(np.shape(S_val)) - S_val) ** 2))
        if best is None or error < best[0]:
            best = (error, model, alpha, float(relative))
    return best[1], float(best[2]), best[3]


def lasso_csgm(A: np.ndarray, Y: np.ndarray, alpha: float = 0.1, basis: np.ndarray | None = None) -> np.ndarray:
    r"""The LASSO of CSGM's scripts (Bora et al., ICML 2017): ``sklearn.linear_model.Lasso(alpha)`` with its
    defaults, fitted per measurement vector to ``(A Ψ, y)``,

    .. math::  \min_{c, b}\ \tfrac{1}{2m}\|A\Psi c + b - y\|_2^2 + \alpha\|c\|_1,\qquad \hat s = \Psi c,

    ``Ψ`` the identity (pixel basis) or ``basis`` (e.g. the 2-D DCT); recoveries clipped to ``[0, 1]``.
    ``Y`` holds one measurement vector per row; returns one recovery per row.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    M = A if basis is None else A @ basis
    out = np.empty((Y.shape[0], A.shape[1]))
    for row, y in enumerate(Y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            c = Lasso(alpha=alpha).fit(M, y).coef_
        out[row] = c if basis is None else basis @ c
    return np.clip(out, 0.0, 1.0)


class SparseRecovery:
    r"""Sparse recovery in a basis ``Ψ``, one CVXPY model built once (DPP) and re-solved per item.

    ``mode="lasso"``:

    .. math::  \min_c\ \tfrac12\|M c - y\|_2^2 + \lambda\|c\|_1,\qquad M = A\Psi

    ``mode="bp"`` (basis pursuit): ``min ||c||₁ s.t. M c = y``.
    ``y`` and ``λ`` are ``cp.Parameter``s; the recovered signal is ``Ψ c``.

    Parameters
    ----------
    A : ndarray (m, n)
    basis : ndarray (n, n) or None
        ``Ψ``; ``None`` for the pixel basis (identity).
    mode : {"lasso", "bp"}
    solver : str
        A CVXPY solver name. ``SCS`` by default: on a 109 × 1089 DCT LASSO it took about 0.1-0.3 s
        against 1-1.5 s for CLARABEL, OSQP and ECOS (all to a relative agreement of 1e-4 in ``Ψ c``).
    """

    def __init__(self, A: np.ndarray, basis: np.ndarray | None = None, mode: str = "lasso",
                 solver: str = "SCS"):
        import cvxpy as cp

        if mode not in ("lasso", "bp"):
            raise ProblemError(f"Unknown sparse-recovery mode {mode!r}; choose 'lasso' or 'bp'.")
        if solver not in cp.installed_solvers():
            raise SolverNotFound(f"CVXPY solver {solver!r} is not installed; installed: {cp.installed_solvers()}.")
        self.A = np.asarray(A, dtype=np.float64)
        self.basis = basis
        self.M = self.A if basis is None else self.A @ basis
        m, n = self.M.shape
        self.solver, self.mode = solver, mode
        self.c = cp.Variable(n)
        self.y = cp.Parameter(m)
        self.lam = cp.Parameter(nonneg=True)
        if mode == "lasso":
            objective = 0.5 * cp.sum_squares(self.M @ self.c - self.y) + self.lam * cp.norm1(self.c)
            problem = cp.Problem(cp.Minimize(objective))
        else:
            problem = cp.Problem(cp.Minimize(cp.norm1(self.c)), [self.M @ self.c == self.y])
        assert problem.is_dpp()
        self.problem = problem

    def lambda_max(self, y: np.ndarray) -> float:
        """``||Mᵀy||_∞``: the smallest ``λ`` with ``c = 0`` optimal."""
        return float(np.max(np.abs(self.M.T @ y)))

    def recover(self, y: np.ndarray, kappa: float = 0.01) -> np.ndarray:
        """Recovered signal ``Ψ c`` for measurements ``y`` with ``λ = κ λ_max(y)`` (ignored for BP)."""
        from formulation.results import SolverError

        self.y.value = np.asarray(y, dtype=np.float64)
        if self.mode == "lasso":
            self.lam.value = kappa * self.lambda_max(y)
        try:
            self.problem.solve(solver=self.solver, warm_start=True, enforce_dpp=True)
        except Exception as exc:  # cvxpy.error.SolverError and backend failures
            raise SolverError(f"Sparse recovery with {self.solver} failed ({exc}).") from exc
        if self.c.value is None:
            raise SolverError(f"Sparse recovery with {self.solver} returned no point (status {self.problem.status}).")
        c = np.asarray(self.c.value)
        return c if self.basis is None else self.basis @ c
