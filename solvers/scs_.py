"""The ``SCS`` backend through CVXPY. ADMM conic solver; takes the exponential cone; moderate accuracy by nature."""

from __future__ import annotations

import cvxpy as cp

from solvers._base import EXP, LP, QP
from solvers._cvxpy import CvxpyBackend

if "SCS" not in cp.installed_solvers():
    raise ImportError("CVXPY cannot find SCS; install it with `pip install scs`.")


class BackendSCS(CvxpyBackend):
    name = "SCS"
    capabilities = frozenset({LP, QP, EXP})
    install = "pip install scs"
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200000}


backend = BackendSCS()
