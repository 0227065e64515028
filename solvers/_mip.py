"""Shared code of the mixed-integer backends reached through CVXPY (``highs_``, ``scip_``, ``ecos_bb_``).

CVXPY's status string is not trusted for a MIP that stopped early (DESIGN §5): a SCIP time-out with an
incumbent comes back as ``optimal_inaccurate``, a HiGHS time-out as ``user_limit``. Each backend reads
the solver's own status and dual bound through :meth:`MipBackend._raw`.
"""

from __future__ import annotations

import time

import cvxpy as cp
import numpy as np

from formulation.results import Solution, SolutionStatus, SolverError, SolverNotFound, TerminationCondition
from solvers._base import Backend

#: Largest distance of a returned ``d`` from {0, 1} accepted for an optimal point.
INTEGRALITY_TOL = 1e-6


class MipBackend(Backend):
    """A mixed-integer solver called through the CVXPY model of a ``BinaryForm``."""

    def _settings(self, time_limit: float | None, gap: float | None, options: dict) -> dict:
        """Solver keyword arguments for ``cp.Problem.solve``."""
        raise NotImplementedError

    def _raw(self, problem: cp.Problem, settings: dict) -> tuple[str, float | None, float | None, bool]:
        """(solver status name, solver primal objective, solver dual bound, whether the solver holds an
        incumbent), objective and bound in the solver's minimise sense without CVXPY's constant offset
        (``settings`` as returned by :meth:`_settings`)."""
        raise NotImplementedError

    #: solver status name -> (why it stopped, whether a point is proven optimal). Unknown -> ERROR.
    RAW_STATUS: dict[str, TerminationCondition] = {}

    def feasibility_tolerance(self, settings: dict) -> float:
        """The largest slack the solver allows a point per row or bound, relative to ``1 + |magnitude|`` of
        the row (``settings`` as returned by :meth:`_settings`). Recorded in
        ``Solution.extras["feasibility_tolerance"]`` so that callers can scale their checks."""
        raise NotImplementedError

    def integrality_tolerance(self, settings: dict) -> float:
        """The largest distance of a binary from {0, 1} the solver accepts (``extras["integrality_tolerance"]``).

        On a big-M row ``x ≤ u d`` an integrality slack ``δ`` lets ``x`` move by ``δ |u|``; the distance of the
        returned point is measured too (``extras["integrality_violation"]``).
        """
        return self.feasibility_tolerance(settings)

    def solve(self, form, *, time_limit: float | None = None, gap: float | None = None, **options) -> Solution:
        if not self.accepts(form):
            raise SolverNotFound(f"Backend {self.name!r} cannot take a {form.requires} problem.")
        problem = form.model
        settings = self._settings(time_limit, gap, options)
        start = time.perf_counter()
        failure = None
        try:
            problem.solve(solver=self.name, **settings)
        except cp.error.SolverError as exc:
            failure = exc
        elapsed = time.perf_counter() - start
        if failure is not None:
            timed_out = time_limit is not None and elapsed >= 0.9 * time_limit
            if not timed_out:
                raise SolverError(f"{self.name} failed on {form.mi.name}: {failure}") from failure
            # SCIP through CVXPY raises when the time limit hits before any incumbent
            return Solution(self.name, TerminationCondition.TIME_LIMIT, SolutionStatus.NO_SOLUTION,
                            build_time=form.build_time, solve_time=elapsed,
                            extras={"status": "error", "error": str(failure)})
        raw_status, primal, dual, incumbent = self._raw(problem, settings)
        termination = self.RAW_STATUS.get(raw_status, TerminationCondition.ERROR)
        # CVXPY hands back a point after a HiGHS time-out even when HiGHS has no incumbent (it is the
        # last LP iterate, infeasible: measured 0.18 violation of an equality row); keep only incumbents
        has_point = incumbent and problem.status in cp.settings.SOLUTION_PRESENT and form.v.value is not None
        values = form.variable_values() if has_point else {}
        if values and not all(np.all(np.isfinite(x)) for x in values.values()):
            values = {}
        integrality = None
        if values and form.mi.n_binary:
            # our own check of the returned point: a solver's integrality tolerance on a big-M model can
            # buy a lower "optimum" with a fractional d; such a point is never reported optimal
            integrality = form.mi.violation(values["v"], values["d"])["binary"]
            if integrality > INTEGRALITY_TOL and termination is TerminationCondition.OPTIMAL:
                termination = TerminationCondition.INACCURATE
        if termination is TerminationCondition.OPTIMAL and values:
            status = SolutionStatus.OPTIMAL
        elif values:
            status = SolutionStatus.FEASIBLE
        else:
            status = SolutionStatus.NO_SOLUTION
        # the solver's numbers omit CVXPY's constant offset and are in minimise sense
        sign = 1.0 if form.mi.sense == "min" else -1.0
        bound = None
        if dual is not None and np.isfinite(dual):
            if primal is not None and np.isfinite(primal) and values:
                offset = sign * float(problem.value) - primal
                bound = sign * (dual + offset)
            elif form.requires == "MILP":
                # no incumbent: the only constant of a linear objective c^T v + c0 is c0
                bound = sign * (dual + sign * form.mi.c0)
        if termination is TerminationCondition.OPTIMAL and bound is None and values:
            bound = form.objective(values)
        return Solution(
            backend=self.name,
            termination=termination,
            status=status,
            values=values,
            objective=form.objective(values) if values else float("nan"),
            build_time=form.build_time,
            solve_time=elapsed,
            iterations=getattr(problem.solver_stats, "num_iters", None),
            bound=bound,
            extras={"status": problem.status, "raw_status": raw_status, "integrality_violation": integrality,
                    "claimed_objective": problem.value, "feasibility_tolerance": self.feasibility_tolerance(settings),
                    "integrality_tolerance": self.integrality_tolerance(settings),
                    "settings": {k: v for k, v in settings.items() if k != "verbose"}},
        )
