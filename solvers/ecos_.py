"""The ``ECOS`` backend through CVXPY. Interior-point SOCP solver; takes the exponential cone."""

from __future__ import annotations

import os

import cvxpy as cp

from formulation.results import SolverError
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


    def solve(self, subproblem, **options):
        needed = estimated_memory(subproblem.model) if subproblem.model is not None else 0
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > available / 2:
            raise SolverError(
                f"ECOS through CVXPY would need about {needed / 2**30:.0f} GiB to build "
                f"{type(subproblem).__name__} with {subproblem.size()} unknowns (this machine has "
                f"{available / 2**30:.0f} GiB); use CLARABEL, OSQP or SCS, or a smaller instance."
            )
        return super().solve(subproblem, **options)


def _squared_entries(expression) -> int:
    """Total size of the arguments of the ``quad_over_lin`` atoms (``sum_squares``) in ``expression``."""
    if isinstance(expression, cp.quad_over_lin):
        return int(expression.args[0].size)
    return sum(_squared_entries(arg) for arg in getattr(expression, "args", ()))


def estimated_memory(problem: cp.Problem) -> float:
    """Bytes CVXPY's ECOS path needs, from a measured fit.

    ECOS has no quadratic objective, so CVXPY rewrites each ``sum_squares`` as a second-order
    cone, and its parameter tensor for that path grows with the square of the number of
    squared entries ``s``: measured peaks were 0.49, 1.6 and 6.0 GB at s = 4,000, 8,000 and
    16,000 (slack block), about ``25 s²`` bytes; at s = 128,000 (a 2,000-sample weight block)
    the process was killed by the kernel.
    """
    return 25.0 * float(_squared_entries(problem.objective.expr)) ** 2


backend = BackendECOS()
