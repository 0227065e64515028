"""The ``ECOS_BB`` backend: ECOS's small branch and bound through CVXPY, MILP only.

It is not registered for MIQP: it gave a wrong MIQP optimum on a tiny instance (DESIGN §5). It has no
time limit of its own: with ``time_limit`` it runs in a forked child process that is killed at the limit
(``solvers._mip.solve_with_deadline``; the result is then a time limit without a point, since its incumbent
dies with the process). It reports no dual bound, so a stop before optimality is an iteration limit.
"""

from __future__ import annotations

import cvxpy as cp

from formulation.results import TerminationCondition
from solvers._base import MILP
from solvers._mip import MipBackend

INSTALL = "pip install ecos"

if "ECOS_BB" not in cp.installed_solvers():  # pragma: no cover
    raise ImportError(f"CVXPY cannot find ECOS_BB; install it with `{INSTALL}`.")


class BackendECOSBB(MipBackend):
    name = "ECOS_BB"
    capabilities = frozenset({MILP})
    install = INSTALL
    native_time_limit = False  # it has no time-limit setting (a 784-200-10 recovery ran for minutes unchecked)

    RAW_STATUS = {
        cp.OPTIMAL: TerminationCondition.OPTIMAL,
        cp.OPTIMAL_INACCURATE: TerminationCondition.INACCURATE,
        cp.USER_LIMIT: TerminationCondition.ITERATION_LIMIT,
        cp.INFEASIBLE: TerminationCondition.INFEASIBLE,
        cp.UNBOUNDED: TerminationCondition.UNBOUNDED,
        cp.settings.INFEASIBLE_OR_UNBOUNDED: TerminationCondition.INFEASIBLE_OR_UNBOUNDED,
    }

    def _settings(self, time_limit, gap, options):
        # mi_int_tol: ECOS_BB's default 1e-4 accepted d = 9.4e-5 on a big-M model and reported "optimal"
        # 0.36709 below the true 0.36792 (HiGHS, SCIP, relaxed SCIP); 1e-6 gives the true optimum
        settings = {"mi_max_iters": 10000, "mi_int_tol": 1e-6, "mi_rel_eps": 1e-9 if gap is None else gap,
                    "mi_abs_eps": 1e-9, "abstol": 1e-9, "reltol": 1e-9, "feastol": 1e-9}
        settings.update(options)
        return settings

    def feasibility_tolerance(self, settings):
        return float(settings["feastol"])

    def integrality_tolerance(self, settings):
        return float(settings["mi_int_tol"])

    def _raw(self, problem, settings):
        return problem.status, None, None, problem.status in cp.settings.SOLUTION_PRESENT


backend = BackendECOSBB()
