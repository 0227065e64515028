"""The ``HIGHS`` backend: MILP through CVXPY (HiGHS takes no MIQP; CVXPY refuses one for it), and the bound
LPs of ``formulation.mixed_integer.BoundLP`` (solved as any continuous model, see ``solvers._cvxpy``)."""

from __future__ import annotations

import os
import sys

import cvxpy as cp

from formulation.results import TerminationCondition
from solvers._base import LP, MILP
from solvers._cvxpy import solve_model
from solvers._mip import MipBackend

INSTALL = "pip install highspy"

try:
    import highspy
except ImportError as exc:  # pragma: no cover - exercised by the missing-backend test
    raise ImportError(f"highspy is not installed; install it with `{INSTALL}`.") from exc


def _construct_quietly() -> None:
    """HiGHS prints a two-line banner to the C-level stdout on the first ``Highs()`` of a process, before
    CVXPY can set ``output_flag``; construct that first instance here with file descriptor 1 muted."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout (e.g. captured): nothing to protect
        highspy.Highs()
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_construct_quietly()
if "HIGHS" not in cp.installed_solvers():  # pragma: no cover
    raise ImportError(f"CVXPY cannot find HiGHS; install it with `{INSTALL}`.")


#: Primal feasibility and MIP feasibility (integrality) tolerance of version (i); see ``_settings``.
FEASTOL = 1e-9


class BackendHIGHS(MipBackend):
    name = "HIGHS"
    capabilities = frozenset({LP, MILP})
    install = INSTALL

    # HiGHS's model status as CVXPY reports it -> why it stopped. Its MIP "optimal" means within mip_rel_gap.
    # CVXPY folds HiGHS's time, iteration, solution and objective limits into "user_limit"; :meth:`_raw`
    # tells a time limit from the others by HiGHS's own run time.
    RAW_STATUS = {
        cp.OPTIMAL: TerminationCondition.OPTIMAL,  # kOptimal
        "time_limit": TerminationCondition.TIME_LIMIT,  # kTimeLimit
        "other_limit": TerminationCondition.ITERATION_LIMIT,  # kIterationLimit, kSolutionLimit, kObjective*
        cp.INFEASIBLE: TerminationCondition.INFEASIBLE,  # kInfeasible
        cp.UNBOUNDED: TerminationCondition.UNBOUNDED,  # kUnbounded
        cp.settings.INFEASIBLE_OR_UNBOUNDED: TerminationCondition.INFEASIBLE_OR_UNBOUNDED,  # kUnboundedOrInfeasible
    }

    def solve(self, form, **options):
        if form.requires == LP:  # HiGHS's defaults (feasibility 1e-7): bound LPs add their own margin
            return solve_model(self.name, form, options)
        return super().solve(form, **options)

    def _settings(self, time_limit, gap, options):
        # feasibility and integrality tolerances 1e-9 instead of HiGHS's 1e-7 / 1e-6: with the defaults, on a
        # 3-6-4-2 output bound over the box [-1e8, 1e8] HiGHS reported "optimal" 0.0202 for a point whose
        # forward pass gives -0.0162 (true optimum 0.00541, measured); with 1e-9 it returns the true optimum
        settings = {"mip_rel_gap": 1e-9 if gap is None else gap, "mip_abs_gap": 1e-10, "output_flag": False,
                    "primal_feasibility_tolerance": FEASTOL, "mip_feasibility_tolerance": FEASTOL}
        if time_limit is not None:
            settings["time_limit"] = float(time_limit)
        settings.update(options)
        return settings

    def _raw(self, problem, settings):
        info = problem.solver_stats.extra_stats  # highspy's HighsInfo
        raw = problem.status
        if raw == cp.USER_LIMIT:
            limit, run_time = settings.get("time_limit"), problem.solver_stats.solve_time  # HiGHS's run time
            at_limit = limit is not None and run_time is not None and run_time >= 0.99 * float(limit)
            raw = "time_limit" if at_limit else "other_limit"
        primal = getattr(info, "objective_function_value", None)
        dual = getattr(info, "mip_dual_bound", None)
        incumbent = getattr(info, "primal_solution_status", 0) == 2  # kSolutionStatusFeasible
        return raw, primal, dual, incumbent

    def feasibility_tolerance(self, settings):
        # HiGHS checks rows of a MIP solution with mip_feasibility_tolerance too
        return max(float(settings["primal_feasibility_tolerance"]), float(settings["mip_feasibility_tolerance"]))

    def integrality_tolerance(self, settings):
        return float(settings["mip_feasibility_tolerance"])


backend = BackendHIGHS()
