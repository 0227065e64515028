"""Shared code of the mixed-integer backends reached through CVXPY (``highs_``, ``scip_``, ``ecos_bb_``).

CVXPY's status string is not trusted for a MIP that stopped early (DESIGN §5): a SCIP time-out with an
incumbent comes back as ``optimal_inaccurate``, a HiGHS time-out as ``user_limit``. Each backend reads
the solver's own status and dual bound through :meth:`MipBackend._raw`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import select
import signal
import threading
import time
import warnings

import cvxpy as cp
import numpy as np
from cvxpy.reductions.solution import Solution as CvxpySolution

from formulation.results import Solution, SolutionStatus, SolverError, SolverNotFound, TerminationCondition
from solvers._base import Backend

#: Largest distance of a returned ``d`` from {0, 1} accepted for an optimal point.
INTEGRALITY_TOL = 1e-6
#: Progress of long solves: the command line shows these records on stderr.
progress = logging.getLogger("unrelu.progress")
#: Seconds between progress lines while a solve with an enforced time limit runs.
PROGRESS_EVERY = 30.0


def judge_point(mi, values: dict, termination: TerminationCondition, binary: bool = True):
    """Our own check of a point a mixed-integer backend returned, as ``(termination, status, integrality)``.

    A solver's integrality tolerance on a big-M model can buy a lower "optimum" with a fractional ``d``: with
    ``binary`` the point's largest distance of ``d`` from {0, 1} is measured, and above
    :data:`INTEGRALITY_TOL` an "optimal" termination becomes ``INACCURATE``; such a point is never reported
    optimal. ``values`` is ``{}`` when the solver has no incumbent.
    """
    integrality = None
    if binary and values and mi.n_binary:
        integrality = mi.violation(values["v"], values["d"])["binary"]
        if integrality > INTEGRALITY_TOL and termination is TerminationCondition.OPTIMAL:
            termination = TerminationCondition.INACCURATE
    if termination is TerminationCondition.OPTIMAL and values:
        status = SolutionStatus.OPTIMAL
    else:
        status = SolutionStatus.FEASIBLE if values else SolutionStatus.NO_SOLUTION
    return termination, status, integrality


def _child_solve(write_fd: int, problem: cp.Problem, solver: str, settings: dict) -> None:
    """In a forked child: solve, send the status, value, iterations and variable values, exit."""
    try:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                problem.solve(solver=solver, **settings)
            meta = {"kind": "ok", "status": problem.status,
                    "value": None if problem.value is None else float(problem.value),
                    "iterations": getattr(problem.solver_stats, "num_iters", None),
                    "warnings": [str(warning.message) for warning in caught
                                 if issubclass(warning.category, UserWarning)]}
            arrays = {f"v{index}": np.asarray(variable.value, dtype=float)
                      for index, variable in enumerate(problem.variables()) if variable.value is not None}
        except cp.error.SolverError as exc:
            meta, arrays = {"kind": "solver_error", "message": str(exc)}, {}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            meta, arrays = {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}, {}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        with os.fdopen(write_fd, "wb") as stream:
            stream.write(buffer.getvalue())
    finally:
        os._exit(0)


def _die_with(parent: int) -> None:  # pragma: no cover - runs in the child
    """Have the kernel kill this (child) process when ``parent`` dies (Linux), so that a worker killed at its
    case time-out leaves no solve behind; exit at once when the parent is already gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own deadline still applies
        pass
    if os.getppid() != parent:
        os._exit(0)


@contextlib.contextmanager
def progress_lines(solver: str, label: str, time_limit: float | None):
    """Log ``still solving after ... s`` every ``PROGRESS_EVERY`` seconds from a watcher thread while the body runs.

    The lines appear while the solver releases the Python interpreter (HiGHS does; SCIP through CVXPY
    does not, so a SCIP solve prints its line only if it runs past a report time and is then done).
    """
    done = threading.Event()
    start = time.perf_counter()

    def watch():
        while not done.wait(PROGRESS_EVERY):
            limit = f" (time limit {time_limit:.0f} s)" if time_limit is not None else ""
            progress.info("%s on %s: still solving after %.0f s%s", solver, label, time.perf_counter() - start, limit)

    watcher = threading.Thread(target=watch, name=f"progress of {solver}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def solve_with_deadline(problem: cp.Problem, solver: str, settings: dict, time_limit: float, label: str):
    """Solve ``problem`` in a forked child process that is killed at ``time_limit`` seconds (for solvers with
    no time limit of their own). Returns the number of iterations, or ``None`` when the child was killed
    (``problem`` untouched). On success ``problem`` holds the status, value and variable values as after
    ``problem.solve``. A progress record is logged every ``PROGRESS_EVERY`` seconds.
    """
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with(parent)
        _child_solve(write_fd, problem, solver, settings)
    os.close(write_fd)
    deadline = time.perf_counter() + time_limit
    chunks, finished = [], False
    try:
        with progress_lines(solver, label, time_limit):  # the watcher thread starts after the fork
            while True:
                now = time.perf_counter()
                if now >= deadline:
                    break
                ready, _, _ = select.select([read_fd], [], [], deadline - now)
                if not ready:
                    continue
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, exit_status = os.waitpid(pid, 0)
    if not finished:
        progress.info("%s on %s: stopped at the time limit of %.0f s", solver, label, time_limit)
        return None
    try:
        with np.load(io.BytesIO(b"".join(chunks)), allow_pickle=False) as archive:
            meta = json.loads(bytes(archive["meta"]).decode())
            arrays = {key: archive[key] for key in archive.files if key != "meta"}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise SolverError(f"{solver} on {label}: its child process ended without a result (exit status "
                          f"{exit_status}); it may have run out of memory.") from exc
    if meta["kind"] == "solver_error":
        raise cp.error.SolverError(meta["message"])
    if meta["kind"] != "ok":
        raise SolverError(f"{solver} failed on {label} in its child process: {meta['message']}")
    for message in meta.get("warnings", []):  # the solver's notes, as a solve in this process would give them
        warnings.warn(f"{solver}: {message}", UserWarning, stacklevel=4)
    variables = problem.variables()
    if meta["status"] in cp.settings.SOLUTION_PRESENT:
        primal = {variable.id: arrays[f"v{index}"].reshape(variable.shape) if f"v{index}" in arrays else None
                  for index, variable in enumerate(variables)}
    else:
        primal = {variable.id: None for variable in variables}
    try:
        problem.unpack(CvxpySolution(meta["status"], meta["value"], primal, {}, {}))
    except ValueError as exc:  # a status CVXPY cannot unpack
        raise SolverError(f"{solver} on {label} returned status {meta['status']!r}") from exc
    return meta["iterations"]


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

    #: Whether :meth:`solve` takes a starting point ``start={"v": ..., "d": ...}`` (handed to the solver).
    takes_start: bool = False

    #: Whether the solver stops by itself at ``time_limit``. Where it does not (ECOS_BB), :meth:`solve` runs it
    #: in a forked child process that is killed at the limit (:func:`solve_with_deadline`).
    native_time_limit: bool = True

    def solve(self, form, *, time_limit: float | None = None, gap: float | None = None, **options) -> Solution:
        if not self.accepts(form):
            raise SolverNotFound(f"Backend {self.name!r} cannot take a {form.requires} problem.")
        problem = form.model
        settings = self._settings(time_limit, gap, dict(options))  # _settings may pop from its options
        start = time.perf_counter()
        failure = None
        enforced = time_limit is not None and not self.native_time_limit and hasattr(os, "fork")
        if time_limit is not None and not enforced:
            # CVXPY's compilation runs before the solver's clock starts: compile first (CVXPY caches the
            # result for the solve) and give the solver what is left, so that the limit covers both
            try:
                problem.get_problem_data(self.name)
            except cp.error.SolverError as exc:
                raise SolverError(f"{self.name} failed on {form.mi.name}: {exc}") from exc
            remaining = time_limit - (time.perf_counter() - start)
            if remaining <= 0:
                return Solution(self.name, TerminationCondition.TIME_LIMIT, SolutionStatus.NO_SOLUTION,
                                build_time=form.build_time, solve_time=time.perf_counter() - start,
                                extras={"status": "the time limit was used by CVXPY's compilation",
                                        "settings": settings})
            settings = self._settings(remaining, gap, dict(options))
        try:
            if enforced:
                iterations = solve_with_deadline(problem, self.name, settings, time_limit, form.mi.name)
                if iterations is None:
                    return Solution(self.name, TerminationCondition.TIME_LIMIT, SolutionStatus.NO_SOLUTION,
                                    build_time=form.build_time, solve_time=time.perf_counter() - start,
                                    extras={"status": "killed at the time limit", "enforced_time_limit": True,
                                            "settings": settings})
            else:
                with progress_lines(self.name, form.mi.name, time_limit):
                    problem.solve(solver=self.name, **settings)
                iterations = getattr(problem.solver_stats, "num_iters", None)
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
        termination, status, integrality = judge_point(form.mi, values, termination)
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
            iterations=iterations,
            bound=bound,
            extras={"status": problem.status, "raw_status": raw_status, "integrality_violation": integrality,
                    "claimed_objective": problem.value, "feasibility_tolerance": self.feasibility_tolerance(settings),
                    "integrality_tolerance": self.integrality_tolerance(settings), "enforced_time_limit": enforced,
                    "settings": {k: v for k, v in settings.items() if k != "verbose"}},
        )
