"""Shared code of the backends reached through CVXPY (``ecos_``, ``osqp_``, ``clarabel_``, ``scs_``)."""

from __future__ import annotations

import time
import warnings

import cvxpy as cp
import numpy as np

from formulation.results import (
    InaccurateSolutionWarning,
    ProblemError,
    Solution,
    SolutionStatus,
    SolverError,
    TerminationCondition,
)
from formulation.subproblems import Subproblem
from solvers._base import Backend

# CVXPY status string -> (why it stopped, what the point is). Anything else is an error.
STATUS_MAP: dict[str, tuple[TerminationCondition, SolutionStatus]] = {
    cp.OPTIMAL: (TerminationCondition.OPTIMAL, SolutionStatus.OPTIMAL),
    # the solver stopped at reduced accuracy: keep the point, warn, never call it optimal
    cp.OPTIMAL_INACCURATE: (TerminationCondition.INACCURATE, SolutionStatus.FEASIBLE),
    cp.INFEASIBLE: (TerminationCondition.INFEASIBLE, SolutionStatus.NO_SOLUTION),
    cp.INFEASIBLE_INACCURATE: (TerminationCondition.INFEASIBLE, SolutionStatus.NO_SOLUTION),
    cp.UNBOUNDED: (TerminationCondition.UNBOUNDED, SolutionStatus.NO_SOLUTION),
    cp.UNBOUNDED_INACCURATE: (TerminationCondition.UNBOUNDED, SolutionStatus.NO_SOLUTION),
    cp.settings.INFEASIBLE_OR_UNBOUNDED: (TerminationCondition.INFEASIBLE_OR_UNBOUNDED, SolutionStatus.NO_SOLUTION),
    # iteration or time limit (CVXPY does not say which); a point may exist
    cp.USER_LIMIT: (TerminationCondition.ITERATION_LIMIT, SolutionStatus.FEASIBLE),
}


class CvxpyBackend(Backend):
    """A conic or QP solver called through the subproblem's prebuilt DPP model."""

    #: Solver options used unless the caller overrides them (tight, so that backends can be
    #: compared with the closed forms).
    defaults: dict = {}

    def solve(self, subproblem: Subproblem, **options) -> Solution:
        return solve_model(self.name, subproblem, {**self.defaults, **options})


def solve_model(name: str, subproblem, settings: dict) -> Solution:
    """Solve the prebuilt DPP model of ``subproblem`` with CVXPY solver ``name`` and map the result.

    Shared by the continuous backends and by HiGHS on the bound LPs (``requires == "LP"``).
    """
    if subproblem.model is None:
        raise ProblemError(
            f"{type(subproblem).__name__} was created with build_model=False; "
            "create it with build_model=True to use a CVXPY backend."
        )
    if not subproblem.ready:
        raise ProblemError(f"{type(subproblem).__name__}: set every parameter before solving.")
    problem = subproblem.model
    start = time.perf_counter()
    try:
        problem.solve(solver=name, enforce_dpp=True, warm_start=True, **settings)
    except cp.error.SolverError as exc:
        raise SolverError(f"{name} failed on {type(subproblem).__name__}: {exc}") from exc
    except MemoryError as exc:
        raise SolverError(
            f"{name}: CVXPY ran out of memory building {type(subproblem).__name__} with "
            f"{subproblem.size()} unknowns ({exc}); use a smaller instance or the closed_form, OSQP or "
            "CLARABEL backend."
        ) from exc
    except (TypeError, ValueError) as exc:  # an option the solver does not know, or a bad option value
        raise ProblemError(f"{name} rejected the call on {type(subproblem).__name__} (check the options "
                           f"{sorted(settings)}): {exc}") from exc
    elapsed = time.perf_counter() - start
    stats = problem.solver_stats
    # canonicalisation on the first solve with this solver, parameter substitution after it
    compile_time = float(problem.compilation_time or 0.0)
    mapped = STATUS_MAP.get(problem.status)
    if mapped is None:
        termination, status = TerminationCondition.ERROR, SolutionStatus.NO_SOLUTION
    else:
        termination, status = mapped
    values = subproblem.variable_values() if status is not SolutionStatus.NO_SOLUTION else {}
    if values and any(v is None or not np.all(np.isfinite(v)) for v in values.values()):
        termination, status, values = TerminationCondition.ERROR, SolutionStatus.NO_SOLUTION, {}
    if termination is TerminationCondition.INACCURATE:
        warnings.warn(
            f"{name} returned an inaccurate solution for {type(subproblem).__name__}; "
            "tighten its tolerances or use another backend.",
            InaccurateSolutionWarning,
            stacklevel=4,  # the caller of solvers.solve
        )
    return Solution(
        backend=name,
        termination=termination,
        status=status,
        values=values,
        objective=subproblem.objective(values) if values else float("nan"),
        build_time=compile_time,
        solve_time=elapsed - compile_time,
        iterations=getattr(stats, "num_iters", None),
        extras={"status": problem.status, "claimed_objective": problem.value, "settings": settings},
    )
