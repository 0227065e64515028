r"""Staged bound tightening of the pre-activations of a fixed network, layer by layer (DESIGN §5):
interval arithmetic → LP (:func:`tighten_bounds`) → MILP-based OBBT (:func:`obbt_bounds`); :func:`staged_bounds`
runs the stages up to the one asked for and records the time each took.

LP stage:
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
    BinaryForm,
    BoundLP,
    Bounds,
    OutputBound,
    affine_interval,
    check_bound_magnitude,
    check_box,
    interval_bounds,
)
from formulation.network import ReluNetwork
from formulation.results import ProblemError, SolutionStatus, SolverError, TerminationCondition

__all__ = ["tighten_bounds", "obbt_bounds", "staged_bounds", "STAGES", "TighteningWarning"]

#: The bound stages, in order: each starts from the bounds of the one before it.
STAGES = ("interval", "lp", "obbt")
#: Default per-neuron time budget of an OBBT solve (seconds).
OBBT_TIME = 1.0
#: Relative gap at which an OBBT solve stops: its dual bound is what is used, so stopping once the incumbent
#: is within 0.1 % of it loosens a bound by at most that much and saves the proof of the last digits.
OBBT_GAP = 1e-3


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
        if getattr(chosen, "takes_relax", False):  # the LP relaxation of the MILP model, straight to the solver
            new_lo, new_up, count = _lp_layer(network, box_lower, box_upper, lowers, uppers, layer, chosen.name,
                                              margin, failures, options)
            solves += count
            lowers.append(new_lo)
            uppers.append(new_up)
            continue
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
    bounds = Bounds(lowers, uppers, "lp", time.perf_counter() - start, solves, failures)
    bounds.stages = [*interval.stages, bounds.stage_record("lp", bounds.seconds, solves, failures=len(failures))]
    return bounds


def _lp_layer(network, box_lower, box_upper, lowers, uppers, layer, backend, margin, failures, options):
    """LP bounds of layer ``layer`` from the LP relaxation (``d ∈ [0, 1]``) of the big-M model of the layers
    before it, which for every earlier unit is the triangle of :class:`BoundLP`; solved by a backend that
    takes ``relax=True``. Returns ``(lower, upper, solves)``; a failed LP keeps the interval bound."""
    W, bias = network.weights[layer], network.biases[layer]
    interval_lo, interval_up = affine_interval(W, bias, np.maximum(lowers[layer - 1], 0.0),
                                               np.maximum(uppers[layer - 1], 0.0))
    new_lo, new_up = interval_lo.copy(), interval_up.copy()
    truncated = ReluNetwork(network.weights[:layer + 1], network.biases[:layer + 1])
    problem = OutputBound(truncated, (box_lower, box_upper), k=0,
                          bounds=Bounds(lowers[:layer] + [interval_lo], uppers[:layer] + [interval_up]))
    model, last = problem.model, problem.model.blocks[f"X{layer}"][0]
    solves = 0
    for unit in range(W.shape[0]):
        for sense in ("min", "max"):
            cost = np.zeros(model.n)
            cost[last] = W[unit]
            model.finish(cost, c0=float(bias[unit]), sense=sense)
            where = f"layer {layer + 1} unit {unit} {'lower' if sense == 'min' else 'upper'} bound"
            try:
                solution = solvers.solve(BinaryForm(model), backend, relax=True, **options)
            except SolverError as exc:
                failures.append(f"{where}: {exc}")
                continue
            solves += 1
            if solution.status is not SolutionStatus.OPTIMAL or solution.bound is None:
                failures.append(f"{where}: {backend} stopped with {solution.termination.value}")
                continue
            value = solution.bound
            if sense == "min":
                new_lo[unit] = max(interval_lo[unit], value - margin * (1 + abs(value)))
            else:
                new_up[unit] = min(interval_up[unit], value + margin * (1 + abs(value)))
    bad = new_up < new_lo
    for unit in np.flatnonzero(bad):
        failures.append(f"layer {layer + 1} unit {unit}: LP bounds cross ({new_lo[unit]:.3g} > {new_up[unit]:.3g})")
    new_lo[bad], new_up[bad] = interval_lo[bad], interval_up[bad]
    return new_lo, new_up, solves


def _check_budget(per_neuron_time) -> float:
    try:
        budget = float(per_neuron_time)
    except (TypeError, ValueError):
        budget = float("nan")
    if not np.isfinite(budget) or budget <= 0:
        raise ProblemError(f"The OBBT per-neuron time budget must be a positive number of seconds, got "
                           f"{per_neuron_time!r}; give e.g. 1.0 (--obbt-time 1).")
    return budget


def obbt_bounds(network: ReluNetwork, lower, upper, *, start: Bounds | None = None, per_neuron_time: float = OBBT_TIME,
                backend: str = "HIGHS", margin: float = 1e-6, samples: int = 256, seed: int = 0) -> Bounds:
    r"""MILP-based bounds (OBBT, as MIPVerify's last stage) of the hidden pre-activations of ``network``.

    Layer by layer from the second hidden layer on, for every unit ``j`` still unstable (``l_j < 0 < u_j``):

    .. math::

        u_j \leftarrow \max\ z_j,\qquad l_j \leftarrow \min\ z_j \quad\text{over the MILP of layers } 1..l-1

    (version (i) of the truncated network: binaries of every earlier unstable unit kept, big-M from the bounds
    already tightened). Each solve gets ``per_neuron_time`` seconds and a starting solution: the best, for its
    direction, of a forward pass of ``samples`` inputs drawn in the box and of every input returned by an
    earlier solve (warm start). The new bound is the solver's **dual bound**, never its incumbent, so a solve
    stopped at its limit still gives a sound (looser) bound; it is moved outward by ``margin·(1 + |v|)`` and
    intersected with the bound before, so OBBT is never looser than ``start``. The maximum is solved first:
    a unit proved ``u ≤ 0`` is stably inactive and needs no minimum. The first hidden layer is exact already
    (a linear map of the box); the output layer keeps the bounds of ``start``.

    Parameters
    ----------
    network : ReluNetwork
    lower, upper : float or ndarray, shape (n0,)
    start : Bounds, optional
        Bounds to start from (default: :func:`tighten_bounds`, LP).
    per_neuron_time : float
        Seconds per solve (positive).
    backend : str
        A mixed-integer backend that takes a starting point (HiGHS by default; SCIP takes one too).
    margin : float
        Relative outward move of every bound.
    samples : int
        Inputs drawn uniformly in the box for the starting solutions.
    seed : int
        Seed of those inputs.

    Returns
    -------
    Bounds
        ``method = "obbt"``; ``stages`` ends with the OBBT record, whose ``hit_limit`` counts the solves that
        stopped at a limit and ``limits`` lists each (unit, direction, why, the bound it reached).

    Raises
    ------
    ProblemError
        ``per_neuron_time`` is not positive, or the box is empty or too large.
    SolverNotFound
        ``backend`` is not installed or takes no MILP.
    """
    budget = _check_budget(per_neuron_time)
    chosen = solvers.get_backend(backend)
    if solvers.MILP not in chosen.capabilities:
        able = solvers.backends_with(solvers.MILP)
        raise solvers.SolverNotFound(f"OBBT solves MILPs; {chosen.name} does not. Backends that do: "
                                     f"{', '.join(able) or 'none installed'}.")
    box_lower, box_upper = check_box(network, lower, upper)
    if start is None:
        start = tighten_bounds(network, box_lower, box_upper)
    clock = time.perf_counter()
    lowers = [lo.copy() for lo in start.lower]
    uppers = [up.copy() for up in start.upper]
    rng = np.random.default_rng(seed)
    pool = rng.uniform(box_lower[:, None], box_upper[:, None], size=(box_lower.size, max(int(samples), 1)))
    solves, limits, failures = 0, [], []
    for layer in range(1, network.depth - 1):
        truncated = ReluNetwork(network.weights[:layer + 1], network.biases[:layer + 1])
        problem = OutputBound(truncated, (box_lower, box_upper), k=0,
                              bounds=Bounds(lowers[:layer + 1], uppers[:layer + 1]))
        model, last = problem.model, problem.model.blocks[f"X{layer}"][0]
        W, bias = network.weights[layer], network.biases[layer]
        pool_z = truncated.forward(pool)  # this layer's pre-activations of the pool, extended as the pool grows
        for unit in range(W.shape[0]):
            for sense in ("max", "min"):
                if not (lowers[layer][unit] < 0 < uppers[layer][unit]):
                    break  # stable: no binary, nothing to gain here
                cost = np.zeros(model.n)
                cost[last] = W[unit]
                model.finish(cost, c0=float(bias[unit]), sense=sense)
                values = pool_z[unit]
                best = pool[:, int(np.argmax(values) if sense == "max" else np.argmin(values))]
                where = f"layer {layer + 1} unit {unit} {'upper' if sense == 'max' else 'lower'} bound"
                try:
                    solution = solvers.solve(BinaryForm(model), chosen.name, time_limit=budget, gap=OBBT_GAP,
                                             start=problem.start_point(best))
                except SolverError as exc:
                    failures.append(f"{where}: {exc}")
                    continue
                solves += 1
                if solution.found:
                    point = problem.input_of(solution.values["v"])[:, None]
                    pool = np.hstack([pool, point])
                    pool_z = np.hstack([pool_z, truncated.forward(point)])
                bound = solution.bound
                if solution.termination is not TerminationCondition.OPTIMAL:
                    limits.append({"where": where, "termination": solution.termination.value,
                                   "bound": bound, "seconds": solution.solve_time})
                if bound is None or not np.isfinite(bound):
                    continue
                if sense == "max":
                    uppers[layer][unit] = min(uppers[layer][unit], bound + margin * (1 + abs(bound)))
                else:
                    lowers[layer][unit] = max(lowers[layer][unit], bound - margin * (1 + abs(bound)))
            if uppers[layer][unit] < lowers[layer][unit]:
                failures.append(f"{where}: bounds cross ({lowers[layer][unit]:.3g} > {uppers[layer][unit]:.3g}); "
                                "kept the bounds before OBBT")
                lowers[layer][unit], uppers[layer][unit] = start.lower[layer][unit], start.upper[layer][unit]
    seconds = time.perf_counter() - clock
    if failures:
        warnings.warn(f"OBBT: {len(failures)} solve(s) failed and kept the bound before OBBT "
                      f"(first: {failures[0]})", TighteningWarning, stacklevel=2)
    bounds = Bounds(lowers, uppers, "obbt", start.seconds + seconds, start.lp_solves + solves,
                    [*start.failures, *failures])
    bounds.stages = [*start.stages, bounds.stage_record("obbt", seconds, solves, per_neuron_time=budget,
                                                        hit_limit=len(limits), limits=limits,
                                                        failures=len(failures))]
    return bounds


def staged_bounds(network: ReluNetwork, lower, upper, method: str = "interval", *,
                  per_neuron_time: float = OBBT_TIME, backend: str = "HIGHS") -> Bounds:
    """Bounds by the stages of :data:`STAGES` up to ``method`` (each from the one before), with the time and
    outcome of each stage in ``Bounds.stages``."""
    if method not in STAGES:
        raise ProblemError(f"Unknown bound stage {method!r}; choose one of {', '.join(STAGES)}.")
    if method == "obbt":
        _check_budget(per_neuron_time)  # refused before any work
    box_lower, box_upper = check_box(network, lower, upper)
    if method == "interval":
        with np.errstate(over="ignore", invalid="ignore"):
            bounds = interval_bounds(network, box_lower, box_upper)
        check_bound_magnitude(bounds, box_lower, box_upper)
        return bounds
    bounds = tighten_bounds(network, box_lower, box_upper, backend="HIGHS" if backend == "SCIP" else backend)
    if method == "lp":
        return bounds
    return obbt_bounds(network, box_lower, box_upper, start=bounds, per_neuron_time=per_neuron_time,
                       backend=backend)
