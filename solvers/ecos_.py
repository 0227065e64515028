"""The ``ECOS`` backend through CVXPY. Interior-point SOCP solver; takes the exponential cone."""

from __future__ import annotations

import cvxpy as cp

from solvers._base import EXP, LP, QP, Accuracy
from solvers._cvxpy import CvxpyBackend

INSTALL = "pip install ecos"

if "ECOS" not in cp.installed_solvers():
    raise ImportError(f"CVXPY cannot find ECOS; install it with `{INSTALL}`.")


class BackendECOS(CvxpyBackend):
    name = "ECOS"
    capabilities = frozenset({LP, QP, EXP})
    install = INSTALL
    # ECOS sees ||r||² as a second-order cone: an objective accurate to its 1e-8 tolerances
    # leaves the primal accurate only to about sqrt(1e-8) = 1e-4 (measured: up to 1.7e-4)
    accuracy = Accuracy(5e-4, 1e-7)
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"abstol": 1e-8, "reltol": 1e-8, "feastol": 1e-8, "max_iters": 500}
    # no quadratic objective: every sum_squares becomes a second-order cone, and CVXPY's restructuring of
    # those cones sets the memory of the first solve (solvers._cvxpy.estimated_memory)
    quadratic_objective = False


backend = BackendECOS()
