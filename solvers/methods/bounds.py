r"""LP-based bound tightening (OBBT) of the pre-activations of a fixed network, layer by layer (DESIGN §5).

Layer ``l``'s bounds come from ``2 n_l`` LPs over the relaxation of layers ``1..l−1`` with their bounds
already tightened (:class:`formulation.mixed_integer.BoundLP` builds them; this module solves them through
:func:`solvers.solve`). An LP that fails or stops without an optimum leaves the unit's interval bound in
place; it is counted in ``Bounds.failures`` and announced by a :class:`TighteningWarning`, so a looser
result is never passed off as LP-tightened.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

import solvers
from formulation.mixed_integer import (
    BoundLP,
    Bounds,
    check_bound_magnitude,
    check_box,
    interval_bounds,
)
from formulation.network import ReluNetwork
from formulation.results import SolutionStatus, SolverError

__all__ = ["tighten_bounds", "TighteningWarning"]


class TighteningWarning(UserWarning):
    """Some bound LPs failed: those units keep their interval bounds (sound, but looser)."""


def tighten_bounds(network: ReluNetwork, lower, upper, *, backend: str = "HIGHS", margin: float = 1e-7,
                   **options) -> Bounds:
    r"""LP-tightened pre-activation bounds of ``network`` over the input box ``[lower, upper]``.

    Each LP optimum is moved outward by ``margin·(1 + |v|)`` and intersected with the interval bound, so
    the result is never looser than interval arithmetic; a unit whose two LPs give ``u < l`` (numerically
    inconsistent) falls back to its interval bounds.

    Parameters
    ----------
    network : ReluNetwork
    lower, upper : float or ndarray, shape (n0,)
        The input box.
    backend : str
        A registry key of a backend that takes ``LP`` (HiGHS by default: a simplex optimum).
    margin : float
        Relative outward move of every LP bound.
    **options
        Passed to the backend.

    Raises
    ------
    SolverNotFound
        ``backend`` is not installed (the message gives its install command) or takes no LP.
    ProblemError
        The box or the interval bounds are beyond what a solver can resolve (checked before any LP).

    Warns
    -----
    TighteningWarning
        When an LP failed; ``Bounds.failures`` lists them.
    """
    chosen = solvers.get_backend(backend)
    if solvers.LP not in chosen.capabilities:
        able = solvers.backends_with(solvers.LP)
        raise solvers.SolverNotFound(f"LP bound tightening needs a backend that takes LPs; {chosen.name} does not. "
                                     f"Backends that do: {', '.join(able) or 'none installed'}.")
    start = time.perf_counter()
    box_lower, box_upper = check_box(network, lower, upper)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        interval = interval_bounds(network, box_lower, box_upper)
    check_bound_magnitude(interval, box_lower, box_upper)
    lowers, uppers = [interval.lower[0].copy()], [interval.upper[0].copy()]
    solves, failures = 0, []
    for layer in range(1, network.depth):
        lp = BoundLP(network, box_lower, box_upper, lowers, uppers, layer)
        new_lo, new_up = lp.interval_lower.copy(), lp.interval_upper.copy()
        for unit in range(lp.units):
            for sign in (1.0, -1.0):
                lp.set_direction(unit, sign)
                where = f"layer {layer + 1} unit {unit} {'lower' if sign > 0 else 'upper'} bound"
                try:
                    solution = solvers.solve(lp, chosen.name, **options)
                except SolverError as exc:
                    failures.append(f"{where}: {exc}")
                    continue
                solves += 1
                if solution.status is not SolutionStatus.OPTIMAL:
                    failures.append(f"{where}: {chosen.name} stopped with {solution.termination.value}")
                    continue
                if sign > 0:
                    new_lo[unit] = lp.bound(unit, sign, solution.objective, margin)
                else:
                    new_up[unit] = lp.bound(unit, sign, solution.objective, margin)
        bad = new_up < new_lo
        for unit in np.flatnonzero(bad):
            failures.append(f"layer {layer + 1} unit {unit}: LP bounds cross ({new_lo[unit]:.3g} > {new_up[unit]:.3g})")
        new_lo[bad], new_up[bad] = lp.interval_lower[bad], lp.interval_upper[bad]
        lowers.append(new_lo)
        uppers.append(new_up)
    if failures:
        warnings.warn(f"LP bound tightening: {len(failures)} LP bound(s) kept their interval value "
                      f"(first: {failures[0]})", TighteningWarning, stacklevel=2)
    return Bounds(lowers, uppers, "lp", time.perf_counter() - start, solves, failures)
