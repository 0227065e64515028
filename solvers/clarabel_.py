"""The ``CLARABEL`` backend through CVXPY.

Interior-point conic solver with quadratic objectives; takes the exponential cone.
"""

from __future__ import annotations

import cvxpy as cp

from solvers._base import EXP, LP, QP, Accuracy
from solvers._cvxpy import CvxpyBackend

INSTALL = "pip install clarabel"

if "CLARABEL" not in cp.installed_solvers():
    raise ImportError(f"CVXPY cannot find CLARABEL; install it with `{INSTALL}`.")


class BackendCLARABEL(CvxpyBackend):
    name = "CLARABEL"
    capabilities = frozenset({LP, QP, EXP})
    install = INSTALL
    # interior point stopped at gap 1e-10; exponential-cone blocks reach ~5e-7 in the primal
    accuracy = Accuracy(2e-6, 1e-9)
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


backend = BackendCLARABEL()
