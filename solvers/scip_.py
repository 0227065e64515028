r"""The ``SCIP`` backend: MILP and MIQP through CVXPY, and the bilinear relaxed model through PySCIPOpt.

Version (ii) of DESIGN §5 (``RelaxedForm``) is built here directly in PySCIPOpt, because CVXPY raises
``DCPError`` on ``x == multiply(d, z)``. For every unstable unit

.. math::

    x = d z,\qquad d z \ge 0,\qquad (1 - d) z \le 0,\qquad 0 \le d \le 1,\qquad l \le z \le u,

(the sign constraints are what make the relaxation exact; without them the model is loose), plus the
model's linear rows and bounds. SCIP's spatial branch and bound solves it to global optimality.
A quadratic objective ``||F v − g||²`` becomes ``min c^T v + q`` with ``q ≥ ||F v − g||²``.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from formulation.results import ProblemError, Solution, SolverError, TerminationCondition
from solvers._base import BILINEAR, MILP, MIQP
from solvers._mip import MipBackend, judge_point

INSTALL = "pip install pyscipopt"

try:
    import pyscipopt
except ImportError as exc:  # pragma: no cover - exercised by the missing-backend test
    raise ImportError(f"pyscipopt is not installed; install it with `{INSTALL}`.") from exc

#: SCIP's default feasibility tolerance 1e-6 lets ``q ≥ ||F v − g||²`` be violated by 1e-6 absolute, which
#: on a squared loss of 7e-3 made the relaxed optimum 1e-4 relative off (measured); 1e-9 brings (i) and
#: (ii) to 1e-8 relative agreement and was not slower on the verification set.
FEASTOL = 1e-9
#: Through CVXPY (version (i)) the squared loss becomes a second-order cone, and 1e-9 gave "unresolved
#: numerical troubles in LP" on a 5-2-1 training MIQP; 1e-8 solved it and agreed with 1e-7 to 1e-10.
FEASTOL_CVXPY = 1e-8
#: On an LP-solver error SCIP is re-run once with its default tolerance (recorded in ``extras["retried"]``).
FEASTOL_RETRY = 1e-6

# SCIP status -> why it stopped. "gaplimit" is optimal within the requested gap.
RAW_STATUS = {
    "optimal": TerminationCondition.OPTIMAL,
    "gaplimit": TerminationCondition.OPTIMAL,
    "timelimit": TerminationCondition.TIME_LIMIT,
    "nodelimit": TerminationCondition.ITERATION_LIMIT,
    "totalnodelimit": TerminationCondition.ITERATION_LIMIT,
    "stallnodelimit": TerminationCondition.ITERATION_LIMIT,
    "sollimit": TerminationCondition.ITERATION_LIMIT,
    "bestsollimit": TerminationCondition.ITERATION_LIMIT,
    "infeasible": TerminationCondition.INFEASIBLE,
    "unbounded": TerminationCondition.UNBOUNDED,
    "inforunbd": TerminationCondition.INFEASIBLE_OR_UNBOUNDED,  # presolve: no optimum, not a proof of either
}


def _finite_bound(model) -> float | None:
    """SCIP's dual bound, or None where it is SCIP's infinity (±1e20: no bound, e.g. after "inforunbd")."""
    dual = float(model.getDualbound())
    return dual if np.isfinite(dual) and abs(dual) < model.infinity() else None


class BackendSCIP(MipBackend):
    name = "SCIP"
    capabilities = frozenset({MILP, MIQP, BILINEAR})
    install = INSTALL
    takes_start = True
    RAW_STATUS = RAW_STATUS

    # ------------------------------------------------------------------ (i) through CVXPY
    def _settings(self, time_limit, gap, options):
        params = {"limits/gap": 0.0 if gap is None else gap, "display/verblevel": 0, "numerics/feastol": FEASTOL_CVXPY}
        if time_limit is not None:
            params["limits/time"] = float(time_limit)
        params.update(options.pop("scip_params", {}))
        return {"scip_params": params, **options}

    def feasibility_tolerance(self, settings):
        # SCIP checks integrality with the same numerics/feastol as rows and bounds
        return float(settings["scip_params"]["numerics/feastol"])

    def _raw(self, problem, settings):
        model = problem.solver_stats.extra_stats["model"]
        primal = model.getPrimalbound() if model.getNSols() > 0 else None
        return model.getStatus(), primal, _finite_bound(model), model.getNSols() > 0

    def solve(self, form, *, time_limit: float | None = None, gap: float | None = None, start=None,
              **options) -> Solution:
        """Solve ``form``. With a starting point ``start`` (``{"v": ..., "d": ...}``, a point of the model) a
        binary form is built directly in PySCIPOpt (:meth:`build_binary`) instead of through CVXPY, and the
        start is handed to SCIP (``createSol``/``addSol``) before the solve; the relaxed model takes it too."""
        if form.requires == BILINEAR or start is not None:
            method = functools.partial(self._solve_relaxed, start=start, binary=form.requires != BILINEAR)
        else:
            method = super().solve
        try:
            return method(form, time_limit=time_limit, gap=gap, **options)
        except SolverError:
            if "scip_params" in options:
                raise
            solution = method(form, time_limit=time_limit, gap=gap,
                              scip_params={"numerics/feastol": FEASTOL_RETRY}, **options)
            solution.extras["retried"] = f"numerics/feastol={FEASTOL_RETRY} after an LP-solver error"
            return solution

    # ------------------------------------------------------------------ (ii) directly
    @staticmethod
    def build_binary(mi) -> tuple[pyscipopt.Model, list, list]:
        """Version (i) of a ``MixedIntegerModel`` directly in PySCIPOpt: binary ``d`` and the big-M rows
        ``x ≥ z``, ``x ≤ z − l(1 − d)``, ``x ≤ u d`` (a quadratic objective as ``q ≥ ||F v − g||²``)."""
        return BackendSCIP.build_relaxed(mi, binary=True)

    @staticmethod
    def build_relaxed(mi, *, cuts: bool = False, binary: bool = False) -> tuple[pyscipopt.Model, list, list]:
        """The PySCIPOpt model of ``x = d z`` with sign constraints for a ``MixedIntegerModel``.

        ``cuts`` adds the big-M rows with continuous ``d`` (valid for the relaxed set: ``0 < d < 1``
        forces ``z = x = 0``); off by default so that the relaxed model is exactly (U) with ``d ∈ [0,1]``.
        ``binary`` builds version (i) instead: ``d ∈ {0, 1}`` and the big-M rows only.
        """
        model = pyscipopt.Model(mi.name + ("-binary" if binary else "-relaxed"))
        model.hideOutput()
        inf = model.infinity()
        v = [model.addVar(name=f"v{i}", vtype="C",
                          lb=lo if np.isfinite(lo) else -inf, ub=up if np.isfinite(up) else None)
             for i, (lo, up) in enumerate(zip(mi.lb, mi.ub))]
        for matrix, rhs, kind in ((*mi.equalities, "eq"), (*mi.inequalities, "ub")):
            for r in range(matrix.shape[0]):
                row = matrix.getrow(r)
                expression = pyscipopt.quicksum(float(a) * v[i] for i, a in zip(row.indices, row.data))
                model.addCons(expression == rhs[r] if kind == "eq" else expression <= rhs[r])
        d = []
        for k, (zi, xi, lo, up) in enumerate(zip(mi.unit_z, mi.unit_x, mi.unit_lower, mi.unit_upper)):
            dk = model.addVar(name=f"d{k}", vtype="B" if binary else "C", lb=0.0, ub=1.0)
            z, x = v[zi], v[xi]
            if binary:
                model.addCons(x >= z)
            else:
                model.addCons(x == dk * z, name=f"x=dz_{k}")
                model.addCons(dk * z >= 0, name=f"dz>=0_{k}")
                model.addCons(z - dk * z <= 0, name=f"(1-d)z<=0_{k}")
            if cuts or binary:
                model.addCons(x <= z - lo * (1 - dk))
                model.addCons(x <= up * dk)
            d.append(dk)
        objective = pyscipopt.quicksum(float(a) * v[i] for i, a in enumerate(mi.c) if a != 0.0)
        if mi.F is not None:
            q = model.addVar(name="q", vtype="C", lb=0.0, ub=None)
            squares = []
            for r in range(mi.F.shape[0]):
                row = mi.F.getrow(r)
                residual = pyscipopt.quicksum(float(a) * v[i] for i, a in zip(row.indices, row.data)) - mi.g[r]
                squares.append(residual * residual)
            model.addCons(pyscipopt.quicksum(squares) <= q)
            objective = objective + q
        model.setObjective(objective + mi.c0, "minimize" if mi.sense == "min" else "maximize")
        return model, v, d

    def _solve_relaxed(self, form, *, time_limit=None, gap=None, cuts: bool = False, start=None, binary=False,
                       **options) -> Solution:
        mi = form.mi
        clock = time.perf_counter()
        model, v, d = self.build_relaxed(mi, cuts=cuts, binary=binary)
        build = time.perf_counter() - clock
        accepted = start_objective = None
        if start is not None:
            from solvers.highs_ import start_vector  # noqa: PLC0415 - the shared check of a start point

            point = start_vector(mi, start) if binary or start.get("d") is not None else None
            if point is None:
                values = np.asarray(start["v"], float).ravel()
                point = np.concatenate([values, (values[mi.unit_z] > 0).astype(float)])
            solution = model.createSol()
            for variable, value in zip([*v, *d], point):
                model.setSolVal(solution, variable, float(value))
            if mi.F is not None:  # q = ||F v - g||^2 at the start
                residual = mi.F @ point[:mi.n] - mi.g
                q = next(variable for variable in model.getVars() if variable.name == "q")
                model.setSolVal(solution, q, float(residual @ residual))
            start_objective = mi.objective(point[:mi.n])
            accepted = bool(model.addSol(solution, free=True))
        model.setParam("limits/gap", 0.0 if gap is None else gap)
        model.setParam("numerics/feastol", FEASTOL)
        if time_limit is not None:
            model.setParam("limits/time", float(time_limit))
        for key, value in options.pop("scip_params", {}).items():
            model.setParam(key, value)
        if options:
            raise ProblemError(f"SCIP (bilinear) got unknown options {sorted(options)}; pass scip_params={{...}}.")
        start = time.perf_counter()
        try:
            model.optimize()
        except Exception as exc:  # PySCIPOpt raises plain Exceptions
            raise SolverError(f"SCIP failed on the relaxed model {mi.name}: {exc}") from exc
        elapsed = time.perf_counter() - start
        raw = model.getStatus()
        termination = RAW_STATUS.get(raw, TerminationCondition.ERROR)
        values = {}
        if model.getNSols() > 0:
            best = model.getBestSol()
            values = {"v": np.array([model.getSolVal(best, x) for x in v]),
                      "d": np.array([model.getSolVal(best, x) for x in d])}
        termination, status, integrality = judge_point(mi, values, termination, binary=binary)
        dual = _finite_bound(model)  # in the model's own sense; the constant c0 is in the objective
        return Solution(
            backend=self.name,
            termination=termination,
            status=status,
            values=values,
            objective=form.objective(values) if values else float("nan"),
            build_time=build,
            solve_time=elapsed,
            iterations=int(model.getNNodes()),
            bound=dual,
            extras={"raw_status": raw, "claimed_objective": model.getPrimalbound() if values else None,
                    "feasibility_tolerance": float(model.getParam("numerics/feastol")),
                    "integrality_violation": integrality, "direct": True,
                    "nodes": int(model.getNNodes()), "cuts": cuts, "start_objective": start_objective,
                    "start_accepted": accepted},
        )


backend = BackendSCIP()
