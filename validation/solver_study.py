"""One case of the solver studies: ``unrelu bench subproblems`` and ``unrelu compare-solvers`` are two reports
over the rows of :func:`solve_case`.

A case is one backend on one AL block of one size with one seed. It builds the subproblem, solves a
warm-up instance (the build cost, CVXPY's canonicalisation included), then re-solves ``repeats``
evaluated instances (setting ``repeats``, default 1), timing each, and checks every one against the
reference by OUR residual checks, not by the status the backend claims:

* the canonical primal solution against the closed form (for ``output_softmax``, which has none,
  against a damped-Newton reference converged to a gradient below 1e-11): ``max_abs_err`` absolute,
  ``primal_error`` relative to ``max(1, max |x_ref|)``;
* the objective, computed by us from the returned point, against the reference objective, relative
  to ``max(1, |f_ref|)``;
* ``sub.infeasibility`` (violation of the block's bounds) at most 1e-9.

The tolerances are those of the contract test: each backend states its own ``accuracy``
(``solvers.Accuracy``). A case succeeds when all three checks pass on every evaluated instance. A
backend that cannot take the block, or a CVXPY case that the memory guard refuses before building
(above the case's ``memory_budget`` or the available memory), is skipped, with the reason in
``skipped``: neither a success nor a failure. The mixed-integer references (``MI_KINDS``) go to
:func:`compare_mi_case`.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import scipy.special

import solvers
from formulation.instances import make_subproblem, random_parameters
from formulation.results import ConvergenceWarning, InaccurateSolutionWarning, MemoryLimitError, ProblemError
from validation.runner import Case, check_memory_budget, memory_guard_note, recorded_warnings

#: The engine of both studies, as ``validation.runner.Study.run``.
RUN = "validation.solver_study:solve_case"

#: Largest violation of the block's bounds that still counts as feasible.
INFEASIBILITY_TOL = 1e-9

FIGURES = {
    "unknowns": "INTEGER",
    "success": "INTEGER",
    # the termination the backend claimed, "/"-joined over the evaluated instances when they differ
    "claimed": "TEXT",
    "inaccurate_warning": "INTEGER",
    "primal_error": "REAL",
    "max_abs_err": "REAL",
    "objective_error": "REAL",
    "infeasibility": "REAL",
    "objective": "REAL",
    "reference_objective": "REAL",
    "build_s": "REAL",
    # medians over the evaluated instances
    "solve_s": "REAL",
    "reference_s": "REAL",
    # why a case was not run (the memory guard and its estimate: ``runner.memory_guard_note``); NULL when it ran
    "skipped": "TEXT",
    # the warnings of the solves (inaccurate points, solver notes), "; "-joined
    "note": "TEXT",
}
TIMING = ("build_s", "solve_s", "reference_s")


#: Memory budget of one case with ``--quick`` (GiB), in both commands: above it a case is refused before CVXPY
#: builds anything, by ``solvers._cvxpy.estimated_memory`` (ECOS at 400 x 16 on every block but the weights: 4.3
#: to 36 GiB, one such case reached at least 19.9 GiB; ECOS at 800 x 16 on the separable blocks: 17 to 100 GiB;
#: on the joint blocks at 120 x 10 and 200 x 8: 1.3 and 1.6 GiB). Measured with it, the resident memory summed
#: over each command's processes (sampled every 0.1 s): ``bench subproblems --quick`` 1.14 GiB and
#: ``compare-solvers --quick`` 1.14 GiB (earlier, before the two shared this engine: 0.75 and 0.88 GiB; 1.79 GiB
#: for compare-solvers with a budget of 2 GiB).
QUICK_MEMORY_BUDGET_GIB = 1.0


def memory_budget_bytes(args) -> float | None:
    """``--memory-budget`` in bytes (:data:`QUICK_MEMORY_BUDGET_GIB` with ``--quick`` when not given; else None:
    only what exceeds the available memory is refused)."""
    gib = args.memory_budget if args.memory_budget is not None else (QUICK_MEMORY_BUDGET_GIB if args.quick else None)
    return None if gib is None else float(gib) * 2**30


def add_study_arguments(parser, *, store_help: str, workers_help: str, case_timeout: float | None) -> None:
    """The options of a study of backends (``bench subproblems``, ``compare-solvers``): where the rows go, how the
    cases run (local processes or Dask), the time-out of a case and the memory budget of a CVXPY build."""
    from validation import options

    parser.add_argument("--store", metavar="PATH", default="", help=store_help)
    parser.add_argument("--workers", type=options.positive_int, default=1, help=workers_help)
    parser.add_argument("--scheduler", type=options.scheduler_url, metavar="tcp://HOST:PORT", default=None,
                        help="run the cases on this Dask scheduler instead of locally")
    parser.add_argument("--case-timeout", type=options.positive_float, default=case_timeout, metavar="SECONDS",
                        help="a case running longer is stopped and recorded as timeout"
                             + (f" (default {case_timeout:g})" if case_timeout else ""))
    parser.add_argument("--memory-budget", type=options.positive_float, default=None, metavar="GIB",
                        help="skip a CVXPY case whose estimated build memory exceeds this many GiB (default "
                             f"{QUICK_MEMORY_BUDGET_GIB:g} with --quick; otherwise only what exceeds the available "
                             "memory is skipped); a skipped case is not a failure")


# --------------------------------------------------------------------------- reference
def softmax_reference(sub, *, tol: float = 1e-11, max_iter: int = 200) -> dict:
    """Minimiser of the softmax cross-entropy prox by damped Newton, all columns at once.

    The objective is separable over columns and strongly convex (modulus 2); the Hessian of
    column ``j`` is ``2w (diag(p) − p pᵀ) + 2 I`` with ``p = softmax(z_j)``.

    Raises
    ------
    ProblemError
        If the gradient does not drop below ``tol`` (it always does on valid parameters).
    """
    w = sub.parameters["w"]
    Z = np.array(sub.parameters["Q"], dtype=float)
    n = Z.shape[0]
    for _ in range(max_iter):
        gradient = sub.gradient(Z)
        if np.max(np.abs(gradient)) < tol:
            return {"Z": Z}
        P = scipy.special.softmax(Z, axis=0).T  # (N, n)
        hessian = 2 * w * (P[:, :, None] * np.eye(n) - P[:, :, None] * P[:, None, :]) + 2 * np.eye(n)
        step = np.linalg.solve(hessian, gradient.T[:, :, None])[:, :, 0].T
        # near the minimiser the objective no longer resolves a decrease in floating point; there
        # a full step that shrinks the gradient is taken, elsewhere the objective is backtracked on
        if np.max(np.abs(sub.gradient(Z - step))) < np.max(np.abs(gradient)):
            Z = Z - step
            continue
        t, f0 = 1.0, sub.objective({"Z": Z})
        while sub.objective({"Z": Z - t * step}) > f0 and t > 1e-10:
            t /= 2
        Z = Z - t * step
    if np.max(np.abs(sub.gradient(Z))) < tol:
        return {"Z": Z}
    raise ProblemError(f"softmax reference did not converge in {max_iter} Newton steps "
                       f"(gradient {np.max(np.abs(sub.gradient(Z))):.1e}); check the parameters for inf.")


def reference(sub) -> dict:
    """The closed form where there is one, else the Newton reference (the softmax block)."""
    return sub.closed_form() if sub.has_closed_form else softmax_reference(sub)


# --------------------------------------------------------------------------- one case
def solve_case(case: Case) -> dict:
    """Run ``case.backend`` on ``case.problem`` and check it against the reference; every figure of both reports.

    The rng of ``case.seed`` draws a warm-up instance (solved first: ``build_s``) and then the
    ``repeats`` evaluated instances, so every backend sees the same instances for a given seed.
    ``case.settings`` holds ``repeats`` and ``memory_budget`` (bytes); the rest are solver options.
    """
    if case.problem["kind"] in MI_KINDS:
        return compare_mi_case(case)
    kind, N, n = case.problem["kind"], int(case.problem["N"]), int(case.problem["n"])
    backend = solvers.get_backend(case.backend)
    settings = dict(case.settings)
    budget = settings.pop("memory_budget", None)
    repeats = int(settings.pop("repeats", 1))
    probe = make_subproblem(kind, 1, 1, build_model=False)
    if not backend.accepts(probe):
        return {**dict.fromkeys(FIGURES), "skipped": f"{case.backend} cannot take {probe.requires}"}
    rng = np.random.default_rng(case.seed)
    start = time.perf_counter()
    sub = make_subproblem(kind, N, n, n_other=case.problem.get("n_other"), build_model=case.backend != "closed_form")
    try:
        check_memory_budget(backend, budget, lambda: sub)  # the expression tree only: before CVXPY canonicalises
        with recorded_warnings() as caught:  # inaccurate solves and solver notes go to the row
            sub.set_parameters(**random_parameters(sub, rng))
            solvers.solve(sub, case.backend, **settings)  # the first solve: the guard of the available memory
            build_s = time.perf_counter() - start
            times, reference_times, checks, claimed = [], [], [], set()
            for _ in range(repeats):
                sub.set_parameters(**random_parameters(sub, rng))
                start = time.perf_counter()
                solution = solvers.solve(sub, case.backend, **settings)
                times.append(time.perf_counter() - start)
                claimed.add(solution.termination.value)
                start = time.perf_counter()
                expected = reference(sub)
                reference_times.append(time.perf_counter() - start)
                checks.append(_check(sub, solution, expected, backend.accuracy))
    except MemoryLimitError as exc:  # refused before anything was built: skipped, not failed
        return {**dict.fromkeys(FIGURES), "unknowns": sub.size(), "skipped": memory_guard_note(exc)}
    found = [c for c in checks if c["primal_error"] is not None]
    worst = max(found, key=lambda c: abs(c["objective_error"])) if found else checks[0]
    return {
        "unknowns": sub.size(), "success": int(all(c["success"] for c in checks)), "claimed": "/".join(sorted(claimed)),
        "inaccurate_warning": _warned_inaccurate(caught),
        "primal_error": max(c["primal_error"] for c in found) if found else None,
        "max_abs_err": max(c["max_abs_err"] for c in found) if found else None,
        "objective_error": worst["objective_error"], "objective": worst["objective"],
        "reference_objective": worst["reference_objective"],
        "infeasibility": max(c["infeasibility"] for c in found) if found else None,
        "build_s": build_s, "solve_s": statistics.median(times), "reference_s": statistics.median(reference_times),
        "skipped": None, "note": "; ".join(f"{category.__name__}: {message}" for category, message in caught),
    }


def _check(sub, solution, expected: dict, accuracy) -> dict:
    """Our checks of one solve against the reference ``expected`` (errors None when no point was found)."""
    f_ref = sub.objective(expected)
    row = {"success": False, "primal_error": None, "max_abs_err": None, "objective_error": None,
           "infeasibility": None, "objective": None, "reference_objective": f_ref}
    if not solution.found:
        return row
    ours, theirs = sub.canonical(solution.values), sub.canonical(expected)
    scale = max(1.0, max(float(np.max(np.abs(v))) for v in theirs.values()))
    absolute = max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in theirs)
    objective = float(solution.objective)
    objective_error = (objective - f_ref) / max(1.0, abs(f_ref))
    infeasibility = float(sub.infeasibility(solution.values))
    primal_tol, objective_tol = accuracy
    primal = absolute / scale
    success = (math.isfinite(primal) and primal <= primal_tol and abs(objective_error) <= objective_tol
               and infeasibility <= INFEASIBILITY_TOL)
    row.update(success=success, primal_error=primal, max_abs_err=absolute, objective_error=objective_error,
               infeasibility=infeasibility, objective=objective)
    return row


def _warned_inaccurate(caught) -> int:
    """1 when a solve warned that its point is inaccurate or that a method stopped before its tolerances
    (the ``inaccurate_warning`` figure); any other warning is also passed on to the user."""
    flagged = 0
    for category, message in caught:
        if issubclass(category, (InaccurateSolutionWarning, ConvergenceWarning)):
            flagged = 1
        else:
            warnings.warn(message, category, stacklevel=2)
    return flagged


# --------------------------------------------------------------------------- mixed-integer references
#: The fixed-weight reference problems of DESIGN §5, compared on their binary version (i).
MI_KINDS = ("mi_recovery", "mi_bound", "mi_training")


def compare_mi_case(case: Case) -> dict:
    """Solve version (i) of one §5 instance with ``case.backend`` and check it ourselves.

    The reference is the relaxed bilinear model solved to global optimality by SCIP. Success
    needs (a) the objective to match it, ``|f − f*| ≤ 1e-6 max(|f|, |f*|) + 1e-8`` (the agreement
    rule of ``unrelu verify``), and (b) the returned point, pushed through a float64 forward
    pass, to give the objective the backend reported (to 1e-6 relative); the solver's own
    status does not count. ``unknowns`` is the number of binaries.
    """
    from validation import verify

    spec = case.problem["spec"]
    time_limit = float(case.settings.get("time_limit", 30.0))
    with verify.single_threaded(), recorded_warnings() as caught:
        problem = verify.build_instance(spec, loss="l1", tighten=False)
        start = time.perf_counter()
        result = verify.solve_version(problem, case.backend, relaxed=False, time_limit=time_limit)
        solve_s = time.perf_counter() - start
        start = time.perf_counter()
        expected = verify.solve_version(problem, "SCIP", relaxed=True, time_limit=time_limit)
        reference_s = time.perf_counter() - start
    binaries = sum(model.n_binary for _, model in verify.forms(problem))
    f, f_ref = result["objective"], expected["objective"]
    row = {**dict.fromkeys(FIGURES), "unknowns": binaries, "claimed": result["termination"],
           "inaccurate_warning": _warned_inaccurate(caught), "reference_objective": f_ref, "solve_s": solve_s,
           "reference_s": reference_s, "success": 0, "objective": f,
           "note": "; ".join(f"{category.__name__}: {message}" for category, message in caught)}
    if not (math.isfinite(f) and expected["optimal"] and math.isfinite(f_ref)):
        return row
    agree = abs(f - f_ref) <= verify.REL_TOL * max(abs(f), abs(f_ref)) + verify.ABS_TOL
    mismatch = max((abs(part["forward_objective"] - part["objective"]) / max(1.0, abs(part["objective"]))
                    for part in result["parts"] if "forward_objective" in part), default=math.inf)
    row.update(success=int(agree and mismatch <= 1e-6), objective_error=(f - f_ref) / max(1.0, abs(f_ref)),
               infeasibility=mismatch)
    return row
