"""The ``closed_form`` backend: each subproblem's own NumPy minimiser (DESIGN §3 table)."""

from __future__ import annotations

import time

import numpy as np

from formulation.results import ProblemError, Solution, SolutionStatus, SolverError, TerminationCondition
from formulation.subproblems import Subproblem
from solvers._base import QP, Accuracy, Backend


class ClosedFormBackend(Backend):
    """Closed forms in NumPy/SciPy: Cholesky with an ``lstsq`` fall-back, clipping, quotients.

    Its one option, ``compute_objective`` (default ``True``), can turn off the evaluation of
    ``Solution.objective`` (left NaN): for the weight and post-activation blocks that evaluation
    is one more product as large as the solve itself, and the AL trainer never reads it.
    """

    name = "closed_form"
    capabilities = frozenset({QP})
    install = "(built in)"
    # the same arithmetic as the reference; only rounding differs
    accuracy = Accuracy(1e-12, 1e-12)

    def accepts(self, subproblem: Subproblem) -> bool:
        return subproblem.has_closed_form

    def solve(self, subproblem: Subproblem, compute_objective: bool = True, **options) -> Solution:
        if options:
            raise ProblemError(f"closed_form takes only the option `compute_objective`, got {sorted(options)}.")
        if not subproblem.ready:
            raise ProblemError(f"{type(subproblem).__name__}: set every parameter before solving.")
        start = time.perf_counter()
        try:
            values = subproblem.closed_form()
        except (np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
            raise SolverError(f"closed form of {type(subproblem).__name__} failed: {exc}") from exc
        elapsed = time.perf_counter() - start
        return Solution(
            backend=self.name,
            termination=TerminationCondition.OPTIMAL,
            status=SolutionStatus.OPTIMAL,
            values=values,
            objective=subproblem.objective(values) if compute_objective else float("nan"),
            solve_time=elapsed,
            iterations=0,
        )


backend = ClosedFormBackend()
