"""The ``HIGHS`` backend: MILP through CVXPY (HiGHS takes no MIQP; CVXPY refuses one for it), and the bound
LPs of ``formulation.mixed_integer.BoundLP`` (solved as any continuous model, see ``solvers._cvxpy``)."""

from __future__ import annotations

import os
import sys
import time

import cvxpy as cp
import numpy as np
import scipy.sparse as sps

from formulation.results import ProblemError, Solution, SolverNotFound, TerminationCondition
from solvers._base import LP, MILP
from solvers._cvxpy import solve_model
from solvers._mip import MipBackend, judge_point, progress_lines

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
    takes_start = True
    #: ``solve(BinaryForm, relax=True)`` solves the LP relaxation (``d ∈ [0, 1]``) directly (used for LP bounds)
    takes_relax = True

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

    def solve(self, form, *, start=None, direct: bool = False, relax: bool = False, **options):
        """Solve ``form``; with a starting point ``start`` (``{"v": ..., "d": ...}``, a point of version (i)) or
        ``direct=True`` the MILP is passed to highspy directly (:func:`highs_model`, no CVXPY compilation) and
        the start is given to HiGHS by ``setSolution`` before the solve."""
        if form.requires == LP:  # HiGHS's defaults (feasibility 1e-7): bound LPs add their own margin
            return solve_model(self.name, form, options)
        if start is not None or direct or relax:
            return self._solve_direct(form, start=start, relax=relax, **options)
        return super().solve(form, **options)

    # HiGHS's own model status (highspy) -> why it stopped, for the direct path.
    DIRECT_STATUS = {
        "kOptimal": TerminationCondition.OPTIMAL,
        "kTimeLimit": TerminationCondition.TIME_LIMIT,
        "kIterationLimit": TerminationCondition.ITERATION_LIMIT,
        "kSolutionLimit": TerminationCondition.ITERATION_LIMIT,  # also mip_max_nodes / mip_max_leaves
        "kObjectiveBound": TerminationCondition.ITERATION_LIMIT,
        "kObjectiveTarget": TerminationCondition.ITERATION_LIMIT,
        "kInterrupt": TerminationCondition.ITERATION_LIMIT,
        "kInfeasible": TerminationCondition.INFEASIBLE,
        "kUnbounded": TerminationCondition.UNBOUNDED,
        "kUnboundedOrInfeasible": TerminationCondition.INFEASIBLE_OR_UNBOUNDED,
    }

    def _solve_direct(self, form, *, start=None, time_limit: float | None = None, gap: float | None = None,
                      cuts: int = 0, relax: bool = False, **options) -> Solution:
        if not self.accepts(form):
            raise SolverNotFound(f"Backend {self.name!r} cannot take a {form.requires} problem.")
        mi = form.mi
        start_clock = time.perf_counter()
        highs = highs_model(mi)
        if relax and mi.n_binary:  # the LP relaxation: d in [0, 1] (for a single unit, the triangle of (z, x))
            binaries = np.arange(mi.n, mi.n + mi.n_binary, dtype=np.int32)
            highs.changeColsIntegrality(mi.n_binary, binaries,
                                        np.array([highspy.HighsVarType.kContinuous] * mi.n_binary))
        build = time.perf_counter() - start_clock
        settings = self._settings(None if time_limit is None else max(time_limit - build, 1e-3), gap, options)
        settings["mip_improving_solution_save"] = True  # to tell whether the start became the first incumbent
        for key, value in settings.items():
            if highs.setOptionValue(key, value) == highspy.HighsStatus.kError:
                raise ProblemError(f"HiGHS does not take the option {key}={value!r}.")
        added = 0
        if cuts:
            clock = time.perf_counter()
            added = add_ideal_cuts(highs, mi, int(cuts))
            build += time.perf_counter() - clock
            if time_limit is not None:
                highs.setOptionValue("time_limit", max(time_limit - build, 1e-3))
        start_objective = None
        if start is not None:
            point = start_vector(mi, start)
            solution = highspy.HighsSolution()
            solution.col_value = point.tolist()
            solution.value_valid = True
            highs.setSolution(solution)
            start_objective = mi.objective(point[:mi.n])
        clock = time.perf_counter()
        with progress_lines(self.name, mi.name, time_limit):
            highs.run()
        elapsed = time.perf_counter() - clock
        raw = highs.getModelStatus().name
        termination = self.DIRECT_STATUS.get(raw, TerminationCondition.ERROR)
        info = highs.getInfo()
        values = {}
        if info.primal_solution_status == 2:  # kSolutionStatusFeasible: an incumbent
            column = np.asarray(highs.getSolution().col_value, dtype=float)
            if column.size == mi.n + mi.n_binary and np.all(np.isfinite(column)):
                values = {"v": column[:mi.n], "d": column[mi.n:]}
        termination, status, integrality = judge_point(mi, values, termination, binary=not relax)
        # HiGHS's dual bound is in the model's own sense and includes the objective offset c0
        dual = float(info.mip_dual_bound)
        bound = dual if np.isfinite(dual) and abs(dual) < highspy.kHighsInf and not relax else None
        if termination is TerminationCondition.OPTIMAL and bound is None and values:
            bound = form.objective(values)
        accepted = None
        if start is not None:
            saved = highs.getSavedMipSolutions()
            first = saved[0].objective if saved else None
            accepted = first is not None and abs(first - start_objective) <= 1e-6 * (1.0 + abs(start_objective))
        return Solution(
            backend=self.name, termination=termination, status=status, values=values,
            objective=form.objective(values) if values else float("nan"), build_time=build, solve_time=elapsed,
            iterations=int(info.mip_node_count), bound=bound,
            extras={"status": raw, "raw_status": raw, "integrality_violation": integrality,
                    "claimed_objective": float(info.objective_function_value) if values else None,
                    "feasibility_tolerance": self.feasibility_tolerance(settings),
                    "integrality_tolerance": self.integrality_tolerance(settings), "enforced_time_limit": False,
                    "direct": True, "start_objective": start_objective, "start_accepted": accepted,
                    "ideal_cuts": added, "relaxed_lp": relax,
                    "settings": {k: v for k, v in settings.items() if k != "output_flag"}},
        )

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


def start_vector(mi, start: dict) -> np.ndarray:
    """``[v, d]`` of a start ``{"v": ..., "d": ...}`` for ``mi``; ``d`` defaults to ``1[z > 0]``."""
    v = np.asarray(start["v"], dtype=float).ravel()
    if v.shape != (mi.n,) or not np.all(np.isfinite(v)):
        raise ProblemError(f"A starting point of {mi.name} needs {mi.n} finite values of v, got shape {v.shape}.")
    d = start.get("d")
    d = (v[mi.unit_z] > 0).astype(float) if d is None else np.asarray(d, dtype=float).ravel()
    if d.shape != (mi.n_binary,):
        raise ProblemError(f"A starting point of {mi.name} needs {mi.n_binary} values of d, got shape {d.shape}.")
    return np.concatenate([v, d])


def add_ideal_cuts(highs: highspy.Highs, mi, rounds: int, per_round: int | None = None) -> int:
    """Strengthen the model with rows of the ideal formulation of single ReLUs (``mi.ideal_cuts``): ``rounds``
    times, solve the LP relaxation and add the most violated row of every unit it violates. Returns the number
    of rows added (each valid for version (i), so the MILP's optimum is unchanged)."""
    n, nb = mi.n, mi.n_binary
    if not nb:
        return 0
    binaries = np.arange(n, n + nb, dtype=np.int32)
    highs.changeColsIntegrality(nb, binaries, np.array([highspy.HighsVarType.kContinuous] * nb))
    added = 0
    try:
        for _ in range(rounds):
            highs.run()
            if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                break
            column = np.asarray(highs.getSolution().col_value, dtype=float)
            rows = mi.ideal_cuts(column[:n], column[n:])
            if per_round is not None:
                rows = rows[:per_round]
            if not rows:
                break
            starts = np.cumsum([0] + [len(row[0]) for row in rows[:-1]]).astype(np.int32)
            index = np.concatenate([row[0] for row in rows]).astype(np.int32)
            value = np.concatenate([row[1] for row in rows]).astype(float)
            upper = np.array([row[2] for row in rows], dtype=float)
            highs.addRows(len(rows), np.full(len(rows), -highspy.kHighsInf), upper, index.size, starts, index, value)
            added += len(rows)
    finally:
        highs.changeColsIntegrality(nb, binaries, np.array([highspy.HighsVarType.kInteger] * nb))
    return added


def highs_model(mi) -> highspy.Highs:
    r"""A highspy model of version (i) of ``mi`` (a MILP ``MixedIntegerModel``): columns ``[v, d]`` and rows

    .. math::

        A_{eq} v = b_{eq},\quad A_{ub} v \le b_{ub},\quad x - z \ge 0,\quad x - z - l d \le -l,\quad x - u d \le 0

    for every unstable unit (``x ≥ 0`` is a column bound), objective ``c^T v + c_0`` in ``mi.sense``.
    """
    if mi.F is not None:
        raise ProblemError(f"{mi.name} has a quadratic objective; HiGHS takes MILPs only (use SCIP).")
    n, nb = mi.n, mi.n_binary
    A_eq, b_eq = mi.equalities
    A_ub, b_ub = mi.inequalities
    k = np.arange(nb)
    zi, xi, lo, up = mi.unit_z, mi.unit_x, mi.unit_lower, mi.unit_upper
    one = np.ones(nb)
    units = sps.coo_matrix((np.concatenate([one, -one, one, -one, -lo, one, -up]),
                            (np.concatenate([k, k, nb + k, nb + k, nb + k, 2 * nb + k, 2 * nb + k]),
                             np.concatenate([xi, zi, xi, zi, n + k, xi, n + k]))), shape=(3 * nb, n + nb))
    A = sps.vstack([sps.hstack([A_eq, sps.csr_matrix((A_eq.shape[0], nb))]) if nb else A_eq,
                    sps.hstack([A_ub, sps.csr_matrix((A_ub.shape[0], nb))]) if nb else A_ub,
                    units if nb else sps.csr_matrix((0, n))]).tocsc()
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n + nb, A.shape[0]
    lp.col_cost_ = np.concatenate([mi.c, np.zeros(nb)])
    lp.col_lower_ = np.concatenate([np.where(np.isfinite(mi.lb), mi.lb, -inf), np.zeros(nb)])
    lp.col_upper_ = np.concatenate([np.where(np.isfinite(mi.ub), mi.ub, inf), np.ones(nb)])
    lp.row_lower_ = np.concatenate([b_eq, np.full(b_ub.size, -inf), np.zeros(nb), np.full(2 * nb, -inf)])
    lp.row_upper_ = np.concatenate([b_eq, b_ub, np.full(nb, inf), -lo, np.zeros(nb)])
    lp.offset_ = float(mi.c0)
    lp.sense_ = highspy.ObjSense.kMaximize if mi.sense == "max" else highspy.ObjSense.kMinimize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n + nb, A.shape[0]
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(float)
    lp.integrality_ = [highspy.HighsVarType.kContinuous] * n + [highspy.HighsVarType.kInteger] * nb
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    if highs.passModel(lp) == highspy.HighsStatus.kError:
        raise ProblemError(f"HiGHS refused the model {mi.name}.")
    return highs


backend = BackendHIGHS()
