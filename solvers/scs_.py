"""The ``SCS`` backend through CVXPY. ADMM conic solver; takes the exponential cone; moderate accuracy by nature."""

from __future__ import annotations

import cvxpy as cp

from solvers._base import EXP, LP, QP, Accuracy
from solvers._cvxpy import CvxpyBackend

INSTALL = "pip install scs"

if "SCS" not in cp.installed_solvers():
    raise ImportError(f"CVXPY cannot find SCS; install it with `{INSTALL}`.")


class BackendSCS(CvxpyBackend):
    name = "SCS"
    capabilities = frozenset({LP, QP, EXP})
    install = INSTALL
    # ADMM with eps 1e-9; exponential-cone blocks reach ~5e-7 in the primal
    accuracy = Accuracy(2e-6, 1e-9)
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200000}


backend = BackendSCS()
