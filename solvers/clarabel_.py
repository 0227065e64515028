"""The ``CLARABEL`` backend through CVXPY.

Interior-point conic solver with quadratic objectives; takes the exponential cone.
"""

from __future__ import annotations

import cvxpy as cp

from solvers._base import EXP, LP, QP
from solvers._cvxpy import CvxpyBackend

if "CLARABEL" not in cp.installed_solvers():
    raise ImportError("CVXPY cannot find CLARABEL; install it with `pip install clarabel`.")


class BackendCLARABEL(CvxpyBackend):
    name = "CLARABEL"
    capabilities = frozenset({LP, QP, EXP})
    install = "pip install clarabel"
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


backend = BackendCLARABEL()
