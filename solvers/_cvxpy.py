"""Shared code of the backends reached through CVXPY (``ecos_``, ``osqp_``, ``clarabel_``, ``scs_``)."""

from __future__ import annotations

import time
import warnings

import cvxpy as cp
import numpy as np

from formulation._checks import check_memory
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


# ---------------------------------------------------------------------------------------------- memory
#: Atoms that CVXPY rewrites with exponential cones.
_EXP_ATOMS = tuple(getattr(cp, name) for name in ("log_sum_exp", "exp", "log", "entr", "kl_div", "rel_entr",
                                                  "logistic", "log1p") if isinstance(getattr(cp, name, None), type))
#: Margin on the measured fits below.
MEMORY_MARGIN = 1.15
#: Bytes per unknown and per parameter entry on a path without cone restructuring (measured: 0.8-1.9 KB on the
#: blocks at 400 x 16 for OSQP, CLARABEL and SCS).
BYTES_PER_ENTRY = 2048


def estimated_memory(problem: cp.Problem, *, quadratic_objective: bool = True) -> float:
    r"""Peak bytes of CVXPY's canonicalisation (first solve) of ``problem``, from a fit to measured peak RSS.

    Two terms grow faster than the model (CVXPY 1.9.3, SciPy 1.17, measured on every block at 100 x 4 to
    400 x 16):

    * **cone restructuring.** A solver without a quadratic objective (ECOS: ``quadratic_objective=False``)
      gets each ``sum_squares`` as one second-order cone, and every backend gets an exponential cone for
      ``log_sum_exp``. CVXPY then reshapes the parameter tensor of the constraints to ``(x+1)(p+1)``
      columns (``x`` unknowns after canonicalisation, ``p`` parameter entries) and holds about one index
      array of that length per cone plus one: ``8 (x+1)(p+1)(k+1)`` bytes for ``k`` cones (measured
      ratios 3.1-5.1), plus ``8 (y+1)(p+1)(k+1)`` for the ``y`` entries of a variable that a parameter
      multiplies inside a cone (pre- and post-activation blocks). ECOS on the activation block with
      slacks at 400 x 16 (``x`` = 19,203, ``p`` = 38,401, 3 cones): 25 GiB, where one worker of
      ``bench subproblems --quick`` reached at least 19.9 GiB and the ``25 s²`` fit it replaces said 8.6 GiB.
    * **a parameter times a variable entry by entry** (``multiply(D, Z)``): ``8 e²`` bytes for ``e``
      entries, on every backend (measured 333 MB at ``e`` = 6,400 with OSQP, CLARABEL and SCS; a 30 GiB
      array asked for at 64,000).

    Everything else grows with the model: ``BYTES_PER_ENTRY`` per unknown and parameter entry. With the
    ``MEMORY_MARGIN`` the estimate was 1.15-1.6 times the measured peak wherever that exceeded 20 MiB.
    """
    unknowns = sum(int(variable.size) for variable in problem.variables())
    entries = sum(int(parameter.size) for parameter in problem.parameters())
    state = {"extra": 0, "cones": 0, "products": 0.0, "multiplied": 0}
    seen: set[int] = set()
    counted_products: set[int] = set()

    def multiplied(expression) -> int:
        """Entries of the variable side of a parameter-times-variable product (0 when it is not one)."""
        if not isinstance(expression, (cp.multiply, cp.atoms.affine.binary_operators.MulExpression)):
            return 0
        left, right = expression.args
        for a, b in ((left, right), (right, left)):
            if a.parameters() and a.size > 1 and b.variables():
                return int(b.size)
        return 0

    def walk(expression, in_cone: bool) -> None:
        if id(expression) in seen and not in_cone:
            return
        seen.add(id(expression))
        cone = False
        if isinstance(expression, cp.quad_over_lin):
            if quadratic_objective:
                state["extra"] += int(expression.args[0].size)
            else:
                state["extra"] += 1
                state["cones"] += 1
                cone = True
        elif _EXP_ATOMS and isinstance(expression, _EXP_ATOMS):
            state["extra"] += int(expression.args[0].size) + int(expression.size)
            state["cones"] += 1
            cone = True
        entries_multiplied = multiplied(expression)
        if entries_multiplied and id(expression) not in counted_products:
            counted_products.add(id(expression))
            if isinstance(expression, cp.multiply):
                state["products"] += 8.0 * float(expression.size) ** 2
            if in_cone:
                state["multiplied"] += entries_multiplied + 1
        for argument in getattr(expression, "args", ()):
            walk(argument, in_cone or cone)

    walk(problem.objective.expr, False)
    for constraint in problem.constraints:
        for argument in constraint.args:
            walk(argument, False)
    x = unknowns + state["extra"]
    total = BYTES_PER_ENTRY * (x + entries) + MEMORY_MARGIN * state["products"]
    if state["cones"]:
        total += MEMORY_MARGIN * 8.0 * (x + 1.0 + state["multiplied"]) * (entries + 1.0) * (state["cones"] + 1.0)
    return total


class CvxpyBackend(Backend):
    """A conic or QP solver called through the subproblem's prebuilt DPP model."""

    #: Solver options used unless the caller overrides them (tight, so that backends can be
    #: compared with the closed forms).
    defaults: dict = {}
    #: Whether the solver takes a quadratic objective; without one (ECOS) CVXPY makes every ``sum_squares`` a
    #: second-order cone, whose canonicalisation needs far more memory (:func:`estimated_memory`).
    quadratic_objective: bool = True

    def estimated_memory(self, subproblem: Subproblem) -> float:
        """Peak bytes of the first solve of ``subproblem`` with this backend (0 without a CVXPY model)."""
        if subproblem.model is None:
            return 0.0
        return estimated_memory(subproblem.model, quadratic_objective=self.quadratic_objective)

    def solve(self, subproblem: Subproblem, *, memory_limit: float | None = None, **options) -> Solution:
        """Solve through CVXPY; refused with ``MemoryLimitError`` before CVXPY builds anything when the estimate
        of :meth:`estimated_memory` exceeds the available memory (or ``memory_limit`` bytes)."""
        if subproblem.model is not None and subproblem.model.status is None:  # not canonicalised yet
            needed = self.estimated_memory(subproblem)
            others = [name for name in ("OSQP", "CLARABEL", "closed_form") if name != self.name]
            check_memory(needed, f"{self.name} through CVXPY on {type(subproblem).__name__} with "
                                 f"{subproblem.size()} unknowns",
                         f"use a smaller instance (the estimate grows with the square of the size) or another "
                         f"backend ({', '.join(others)}).", limit=memory_limit)
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
