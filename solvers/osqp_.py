"""The ``OSQP`` backend through CVXPY. ADMM QP solver; no exponential cone, so it refuses the softmax block."""

from __future__ import annotations

import cvxpy as cp

from solvers._base import LP, QP, Accuracy
from solvers._cvxpy import CvxpyBackend

INSTALL = "pip install osqp"

if "OSQP" not in cp.installed_solvers():
    raise ImportError(f"CVXPY cannot find OSQP; install it with `{INSTALL}`.")


class BackendOSQP(CvxpyBackend):
    name = "OSQP"
    capabilities = frozenset({LP, QP})
    install = INSTALL
    # OSQP with eps 1e-9 and solution polishing recovers the active set exactly
    accuracy = Accuracy(1e-8, 1e-10)
    # tight tolerances, so that the contract test can compare with the closed forms
    defaults = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200000, "polishing": True}


backend = BackendOSQP()
