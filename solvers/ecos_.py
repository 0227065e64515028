"""The ``ECOS`` backend through CVXPY. Interior-point SOCP solver; takes the exponential cone."""

from __future__ import annotations

import cvxpy as cp

from solvers._base import EXP, QP
from solvers._cvxpy import CvxpyBackend

if "ECOS" not in cp.installed_solvers():
    raise ImportError("CVXPY cannot find ECOS; install it with `pip install ecos`.")


class BackendECOS(CvxpyBackend):
    name = "ECOS"
    capabilities = frozenset({QP, EXP})
    install = "pip install ecos"
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"abstol": 1e-8, "reltol": 1e-8, "feastol": 1e-8, "max_iters": 500}


backend = BackendECOS()
