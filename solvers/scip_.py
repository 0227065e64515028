r"""The ``SCIP`` backend: MILP and MIQP through CVXPY, and the bilinear relaxed model through PySCIPOpt.

Version (ii) of DESIGN §5 (``RelaxedForm``) is built here directly in PySCIPOpt, because CVXPY raises
``DCPError`` on ``x == multiply(d, z)``. For every unstable unit

.. math::

    x = d z,\qquad d z \ge 0,\qquad (1 - d) z \le 0,\qquad 0 \le d \le 1,\qquad l \le z \le u,

(the sign constraints are what make the relaxation exact; without them the model is loose), plus the
model's linear rows and bounds. SCIP's spatial branch and bound solves it to global optimality.
A quadratic objective ``||F v − g||²`` becomes ``min c^T v + q`` with ``q ≥ ||F v − g||²``.

**ReLU splits** (``relu_split=True``, the output-bound model of a network only). SCIP's own choice of where to
branch on ``x = d z`` is replaced by a ReLU split: of the units whose local bounds still hold ``l < 0 < u``,
the one with the largest intercept score is split at ``z = 0`` (SCIP's ``branchVarVal``). In the child
``z ≤ 0`` the sign constraint ``(1 − d) z ≤ 0`` and ``x = d z ≥ 0`` leave ``x = 0``; in ``z ≥ 0`` they leave
``x = z``, and SCIP's McCormick cuts over the child's box are exact (branching on ``d`` at any interior point
``t`` is the same split: ``d ≥ t > 0`` with ``d z ≥ 0`` gives ``z ≥ 0``, ``d ≤ t < 1`` with ``(1 − d) z ≤ 0``
gives ``z ≤ 0``). The score of a unit is what the intercept ``−u l/(u − l)`` of its triangle adds to the
linear upper bound of the objective obtained by a backward pass through the node's local bounds (each
``x`` replaced by the triangle's upper line where its coefficient is positive, by ``x ≥ z`` or ``x ≥ 0``
otherwise), so it estimates what the split gains (BaBSR's intercept score). With every score 0, the largest
triangle ``u(−l)/(u − l)`` of the earliest layer. A primal heuristic offers SCIP, after every node LP, the
forward pass of the LP's input (every ``z``, ``x`` and ``d = 1[z > 0]``), which SCIP checks like any
solution. Everything that bounds the optimum stays SCIP's: its LP relaxation with its McCormick cuts, its
propagation and its tree; the rule only picks the variable and the point of each spatial branch.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from formulation.mixed_integer import relax_relu_coefficients
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


def _layered(mi):
    """The network of an output-bound model for ``relu_split``: its :class:`NetworkLayers` and the objective's
    weights on the last hidden layer; ProblemError when the model is not one (the rule needs a forward pass
    that gives every variable, and an objective linear in the last hidden layer)."""
    layers = mi.layers
    covered = None if layers is None else np.concatenate([layers.inputs, *layers.z, *layers.x])
    if layers is None or mi.F is not None or covered.size != mi.n or not np.array_equal(np.sort(covered),
                                                                                        np.arange(mi.n)):
        raise ProblemError(f"relu_split takes the output-bound model of a ReLU network (OutputBound, `verify "
                           f"--problem bound`): a model of the input and the network's layers only, with a linear "
                           f"objective; {mi.name!r} is not one. Solve it without relu_split.")
    weights = np.zeros(mi.n)
    weights[layers.x[-1]] = mi.c[layers.x[-1]]
    if not np.array_equal(weights, mi.c):
        raise ProblemError(f"relu_split needs an objective of the last hidden layer's outputs only (an output "
                           f"bound); the objective of {mi.name!r} has other terms. Solve it without relu_split.")
    return layers, mi.c[layers.x[-1]]


def intercept_scores(layers, objective_weights: np.ndarray, lower: list, upper: list) -> list[np.ndarray]:
    r"""Per hidden layer, the intercept score of every unit (0 for units with ``l ≥ 0`` or ``u ≤ 0``).

    Backward pass of the upper bound of ``wᵀ X_{L−1}`` (``w`` = ``objective_weights``) under the pre-activation
    bounds ``lower``, ``upper`` (lists per layer): each layer's ``x`` is replaced by its linear ReLU bounds
    (:func:`formulation.mixed_integer.relax_relu_coefficients`), then ``z_m = W_m x_{m−1} + b_m`` gives the
    coefficients of layer ``m − 1``. The score of a unit is its intercept ``κ s_j (−l_j)`` (``κ > 0``, ``s_j =
    u_j/(u_j − l_j)``; 0 otherwise), its share of the bound, which both children of a split at 0 remove.
    """
    coefficient = np.asarray(objective_weights, float)
    scores = [None] * len(lower)
    for m in range(len(lower) - 1, -1, -1):
        relaxed, scores[m] = relax_relu_coefficients(coefficient, lower[m], upper[m])
        coefficient = relaxed @ layers.weights[m]
    return scores


class _ReluSplit(pyscipopt.Branchrule):
    """The ReLU-split branching rule of ``relu_split`` (module docstring): ``z`` of the best-scored unit at 0."""

    def __init__(self, layers, objective_weights, z_variables):
        self.layers, self.objective_weights, self.z_variables = layers, objective_weights, z_variables
        self.transformed = self.active = None
        self.branched = 0

    def branchexeclp(self, allowaddcons):
        return self._branch()

    def branchexecext(self, allowaddcons):  # the nonlinear handler's candidates (branching/external)
        return self._branch()

    def _branch(self):
        model = self.model
        if self.transformed is None:
            self.transformed = [[model.getTransformedVar(var) for var in layer] for layer in self.z_variables]
            # a z that presolve fixed or aggregated cannot be branched on; SCIP's own branching covers it
            self.active = [np.array([var.isActive() for var in layer]) for layer in self.transformed]
        lower = [np.array([var.getLbLocal() for var in layer]) for layer in self.transformed]
        upper = [np.array([var.getUbLocal() for var in layer]) for layer in self.transformed]
        epsilon = model.epsilon()
        open_units = [(lo < -epsilon) & (up > epsilon) & active for lo, up, active in zip(lower, upper, self.active)]
        if not any(mask.any() for mask in open_units):
            return {"result": pyscipopt.SCIP_RESULT.DIDNOTRUN}  # SCIP's own branching takes over
        scores = intercept_scores(self.layers, self.objective_weights, lower, upper)
        flat = np.concatenate([np.where(mask, score, -1.0) for mask, score in zip(open_units, scores)])
        index = int(np.argmax(flat))
        if flat[index] <= 0:  # no score: the largest triangle of the earliest layer with an open unit
            layer = next(m for m, mask in enumerate(open_units) if mask.any())
            lo, up = lower[layer], upper[layer]
            height = np.where(open_units[layer], up * (-lo) / np.where(open_units[layer], up - lo, 1.0), -1.0)
            index = sum(mask.size for mask in open_units[:layer]) + int(np.argmax(height))
        variable = [var for layer in self.transformed for var in layer][index]
        model.branchVarVal(variable, 0.0)
        self.branched += 1
        return {"result": pyscipopt.SCIP_RESULT.BRANCHED}


class _ForwardPass(pyscipopt.Heur):
    """The primal heuristic of ``relu_split``: the forward pass of the node LP's input, offered to SCIP."""

    def __init__(self, mi, layers, variables, d_variables, maximise: bool):
        self.mi, self.layers, self.variables, self.d_variables = mi, layers, variables, d_variables
        self.sign = 1.0 if maximise else -1.0
        self.best = -np.inf
        self.inputs = None
        self.found = 0

    def heurexec(self, heurtiming, nodeinfeasible):
        model, mi, layers = self.model, self.mi, self.layers
        if self.inputs is None:
            self.inputs = [model.getTransformedVar(self.variables[i]) for i in layers.inputs]
        point = np.zeros(mi.n)
        x = np.clip([model.getSolVal(None, var) for var in self.inputs], mi.lb[layers.inputs], mi.ub[layers.inputs])
        point[layers.inputs] = x
        for W, b, z_index, x_index in zip(layers.weights, layers.biases, layers.z, layers.x):
            # the bounds hold for every input of the box, so clipping only removes rounding noise
            z = np.clip(W @ x + b, mi.lb[z_index], mi.ub[z_index])
            x = np.maximum(z, 0.0)
            point[z_index], point[x_index] = z, x
        value = self.sign * mi.objective(point)
        if not value > self.best:
            return {"result": pyscipopt.SCIP_RESULT.DIDNOTFIND}
        self.best = value
        solution = model.createSol(self)
        for var, entry in zip([*self.variables, *self.d_variables],
                              np.concatenate([point, (point[mi.unit_z] > 0).astype(float)])):
            model.setSolVal(solution, var, float(entry))
        accepted = model.trySol(solution, printreason=False, free=True)  # SCIP checks it like any solution
        self.found += bool(accepted)
        return {"result": pyscipopt.SCIP_RESULT.FOUNDSOL if accepted else pyscipopt.SCIP_RESULT.DIDNOTFIND}


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
        start is handed to SCIP (``createSol``/``addSol``) before the solve; the relaxed model takes it too.
        ``relu_split=True`` (relaxed output-bound model only) adds the ReLU-split branching rule and the
        forward-pass heuristic of the module docstring."""
        if form.requires == BILINEAR or start is not None or options.get("relu_split", False) is not False:
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
                       relu_split: bool = False, **options) -> Solution:
        mi = form.mi
        if not isinstance(relu_split, (bool, np.bool_)):
            raise ProblemError(f"relu_split must be True or False, got {relu_split!r}.")
        if relu_split and binary:
            raise ProblemError("relu_split is an option of the relaxed model (ii) (RelaxedForm); the binary model (i) "
                               "has its own branching on d. Solve (i) without it.")
        clock = time.perf_counter()
        model, v, d = self.build_relaxed(mi, cuts=cuts, binary=binary)
        rule = heuristic = None
        if relu_split:
            layers, objective_weights = _layered(mi)
            sign = 1.0 if mi.sense == "max" else -1.0  # the scores are of the bound SCIP must close: max σ cᵀv
            rule = _ReluSplit(layers, sign * objective_weights, [[v[i] for i in z] for z in layers.z])
            heuristic = _ForwardPass(mi, layers, v, d, maximise=mi.sense == "max")
            # the nonlinear handler hands its branching candidates to the branching rules instead of branching
            model.setParam("constraints/nonlinear/branching/external", True)
            model.setParam("presolving/donotmultaggr", True)  # keep every z a variable SCIP can branch on
            model.includeBranchrule(rule, "relusplit", "ReLU split of z at 0 by intercept score", priority=1000000,
                                    maxdepth=-1, maxbounddist=1.0)
            model.includeHeur(heuristic, "reluforward", "forward pass of the node LP's input", "F", priority=1000000,
                              freq=1, timingmask=pyscipopt.SCIP_HEURTIMING.AFTERLPNODE)
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
                    "start_accepted": accepted, "relu_split": bool(relu_split),
                    "relu_splits": None if rule is None else rule.branched,
                    "forward_solutions": None if heuristic is None else heuristic.found},
        )


backend = BackendSCIP()
