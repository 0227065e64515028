"""Shared result, status and error types.

This is the one small module that ``formulation``, ``solvers`` and ``validation`` all
import. It holds no maths and imports no solver library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "UnreluError",
    "ProblemError",
    "SolverNotFound",
    "SolverError",
    "MemoryLimitError",
    "ConvergenceWarning",
    "InaccurateSolutionWarning",
    "TerminationCondition",
    "SolutionStatus",
    "Solution",
]


class UnreluError(Exception):
    """Base class of every error raised by unrelu."""


class ProblemError(UnreluError, ValueError):
    """Bad input: a wrong shape, a NaN or inf, a wrong dtype, a missing key or file.

    The message names the offending array and says how to fix it.
    """


class SolverNotFound(UnreluError, LookupError):
    """The requested backend is unknown, not installed, or cannot take the subproblem."""


class SolverError(UnreluError, RuntimeError):
    """A backend failed while solving. Raised ``from`` the backend's own exception."""


class MemoryLimitError(UnreluError, MemoryError):
    """The work would need more memory than is available, by an estimate made before allocating it.

    Raised before anything large is built; the message gives the estimate, the memory available and a
    smaller setting that fits.

    Attributes
    ----------
    needed, usable : float or None
        The estimate and the bytes it exceeds (set by ``formulation._checks.check_memory``).
    against : str
        What ``usable`` is: a share of the available memory, or the caller's memory budget.
    """

    needed: float | None = None
    usable: float | None = None
    against: str = ""


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before meeting its tolerances."""


class InaccurateSolutionWarning(UserWarning):
    """A backend returned a solution it flags as inaccurate."""


class TerminationCondition(enum.Enum):
    """Why a solve stopped (independent of what the returned point is)."""

    OPTIMAL = "optimal"
    """The backend proved optimality within its tolerances."""
    TIME_LIMIT = "time_limit"
    """A wall-clock limit stopped the solve; an incumbent may exist."""
    ITERATION_LIMIT = "iteration_limit"
    """An iteration or node limit stopped the solve; an incumbent may exist."""
    INFEASIBLE = "infeasible"
    """The problem was proved infeasible."""
    UNBOUNDED = "unbounded"
    """The problem was proved unbounded."""
    INFEASIBLE_OR_UNBOUNDED = "infeasible_or_unbounded"
    """The solver proved that there is no optimum without saying which: infeasible, or unbounded (HiGHS's
    and SCIP's presolve report this); not a proof of infeasibility."""
    INACCURATE = "inaccurate"
    """The backend stopped at a point it flags as inaccurate."""
    ERROR = "error"
    """The backend failed or returned a code that has no mapping here."""


class SolutionStatus(enum.Enum):
    """What the returned point is (independent of why the solve stopped)."""

    OPTIMAL = "optimal"
    """Proved optimal within the backend's tolerances."""
    FEASIBLE = "feasible"
    """A feasible point without a proof of optimality (an incumbent)."""
    NO_SOLUTION = "no_solution"
    """No point is returned."""


@dataclass
class Solution:
    """The result of solving one subproblem instance with one backend.

    Attributes
    ----------
    backend : str
        Registry key of the backend that produced it.
    termination : TerminationCondition
        Why the solve stopped.
    status : SolutionStatus
        What the returned point is.
    values : dict of str to ndarray
        Primal values, keyed by the subproblem's variable names.
    objective : float
        Objective value computed by us from ``values`` (NaN without a point).
    build_time : float
        Seconds spent building the model (0 when it was already built).
    solve_time : float
        Seconds spent in the solve call, setting parameters excluded.
    iterations : int or None
        Iterations reported by the backend, when it reports them.
    bound : float or None
        A proven bound on the optimum (mixed-integer solves), in the problem's sense.
    extras : dict
        Raw backend output (status string, claimed objective, ...), for inspection only.
    """

    backend: str
    termination: TerminationCondition
    status: SolutionStatus
    values: dict[str, np.ndarray] = field(default_factory=dict)
    objective: float = float("nan")
    build_time: float = 0.0
    solve_time: float = 0.0
    iterations: int | None = None
    bound: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """True when a point was returned (optimal or an incumbent)."""
        return self.status is not SolutionStatus.NO_SOLUTION
