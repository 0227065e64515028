"""The ``HIGHS`` backend: MILP through CVXPY (HiGHS takes no MIQP; CVXPY refuses one for it)."""

from __future__ import annotations

import cvxpy as cp

from formulation.results import TerminationCondition
from solvers._base import MILP
from solvers._mip import MipBackend

try:
    import highspy  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the missing-backend test
    raise ImportError("highspy is not installed; install it with `pip install highspy`.") from exc
if "HIGHS" not in cp.installed_solvers():  # pragma: no cover
    raise ImportError("CVXPY cannot find HiGHS; install it with `pip install highspy`.")


class BackendHIGHS(MipBackend):
    name = "HIGHS"
    capabilities = frozenset({MILP})
    install = "pip install highspy"

    # HiGHS model status -> why it stopped. Its MIP "optimal" means within mip_rel_gap.
    RAW_STATUS = {
        "kOptimal": TerminationCondition.OPTIMAL,
        "kTimeLimit": TerminationCondition.TIME_LIMIT,
        "kIterationLimit": TerminationCondition.ITERATION_LIMIT,
        "kSolutionLimit": TerminationCondition.ITERATION_LIMIT,
        "kInfeasible": TerminationCondition.INFEASIBLE,
        "kUnbounded": TerminationCondition.UNBOUNDED,
        "kUnboundedOrInfeasible": TerminationCondition.INFEASIBLE,
    }

    def _settings(self, time_limit, gap, options):
        settings = {"mip_rel_gap": 1e-9 if gap is None else gap, "mip_abs_gap": 1e-10, "output_flag": False}
        if time_limit is not None:
            settings["time_limit"] = float(time_limit)
        settings.update(options)
        return settings

    def _raw(self, problem):
        cached = problem._solver_cache.get("HIGHS")  # (highspy.Highs, data, results) kept by CVXPY
        info = problem.solver_stats.extra_stats
        raw = cached[2]["model_status"] if cached else "unknown"
        primal = getattr(info, "objective_function_value", None)
        dual = getattr(info, "mip_dual_bound", None)
        incumbent = getattr(info, "primal_solution_status", 0) == 2  # kSolutionStatusFeasible
        return raw, primal, dual, incumbent


backend = BackendHIGHS()
