r"""``unrelu verify``: the numerical proof that relaxing the activations preserves the optimum (DESIGN §2, §5).

For every instance (a seeded random network with fixed weights, or the user's ``--network``):

1. build a reference problem: generative-prior recovery ``min_c ||A G(c) − y||`` (l1: MILP, l2: MIQP),
   an output bound ``max e_kᵀ G(c)`` (MILP), or tiny training of ``Σ_j s_j ReLU(w_jᵀx + b_j)`` with
   ``s_j = ±1`` and ``|W_1|, |b_1| ≤ B`` (MIQP, one per number ``p`` of ``+1`` output weights);
2. solve version (i), binary ``d`` with big-M, with every installed mixed-integer backend that takes it;
3. solve version (ii), ``d ∈ [0,1]``, ``x = d z``, ``d z ≥ 0``, ``(1 − d) z ≤ 0``, globally with SCIP;
4. round the relaxed solution, ``d̂ = 1[z > 0]``, and check it is feasible for (i) with the same
   objective (re-checked by a float64 forward pass);
5. run the local AL method on the relaxed problem from K random starts (and Adam for training), and
   report their gaps to the certified optimum; it runs before the MI solves, and the best of its points
   and of 1,002 sampled forward passes is handed to HiGHS and SCIP as a starting solution (``--no-start``).

``--backends BAB`` adds the ReLU-split branch and bound (:mod:`solvers.methods.relu_bab`, output bounds only):
its node LP is at once the LP relaxation of (i) and the McCormick relaxation of (ii) after a split of ``z`` at 0,
so its proof covers both versions by one argument; it is judged against SCIP's independent solve of (ii) like
any (i) result. ``--relu-split`` makes that SCIP solve of (ii) branch by ReLU splits too (output bounds only;
``relu_split`` of ``solvers.scip_``): the branching rule picks where SCIP splits, SCIP's own relaxation, propagation
and tree bound and prove (ii).

Pre-activation bounds come in stages (``--bounds interval|lp|obbt``, ``--tighten`` = ``lp``): interval
arithmetic, LP over the triangle relaxation, then per-neuron MILPs of the earlier layers (OBBT, ``--obbt-time``
seconds each, dual bounds only); each stage's time is printed and stored. ``--scaling`` runs the scaling
study (bound stage × solver, and OMLT + HiGHS where installed) and ``--mnist`` OMLT's MNIST logit-gap problem.

Every result is judged by the float64 forward pass of the point it returns (input or weights clipped to
their box), never by the solver's claim: its certified interval is ``[forward value, bound]`` (max) or
``[bound, forward value]`` (min). A solver that calls its point optimal while its bound or model objective
is further from the point's forward value than the tolerance is reported *inaccurate*, with both numbers.
The tolerance of a comparison is

    REL_TOL·scale + ABS_TOL + ε·κ      (REL_TOL = 1e-6, ABS_TOL = 1e-8)

where ε is the larger feasibility (or integrality) tolerance of the two solvers and ε·κ the first-order
change of the objective when every row is violated by ε relative to its big-M bound magnitude
(``allowance`` in ``formulation.mixed_integer``). It is printed per instance. When ε·κ exceeds
``1e-4·max(1, |optimum|)`` the numerics cannot resolve the comparison at this scale.

Three verdicts:

* *proved equal*: (ii) and at least one (i) proved optimal and consistent with their points, their
  intervals together no wider than the tolerance, the rounded relaxed point feasible for (i); only
  this is reported as "relaxation preserved the optimum";
* *not proved*: a solve stopped at a limit, a solver was inaccurate or the numerics are unreliable at
  this scale, and the certified intervals overlap;
* *contradicted*: an MI interval and the relaxed interval are disjoint beyond the tolerance.

The exit code is 1 for a contradicted instance or a failed one, 0 otherwise (also when not proved).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import zipfile

import numpy as np

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import ProblemError, SolutionStatus
from solvers.methods.bounds import OBBT_TIME, STAGES, staged_bounds
from solvers.methods.relaxed_al import RelaxedAL
from solvers.methods.relu_bab import relu_bab
from validation.baselines.adam import projected_adam
from validation.options import (
    atomic_open,
    json_text,
    nonnegative_float,
    nonnegative_int,
    output_directory,
    output_file,
    positive_float,
    positive_int,
    save_figure,
    scheduler_url,
    seed,
    time_limit,
)
from validation.runner import recorded_warnings

#: Progress of the solves of one instance (shown on stderr by the command line; silent in study workers).
progress = logging.getLogger("unrelu.progress")
#: Binaries above which an instance is announced as likely to stop at the time limit (DESIGN §5: 64 unstable
#: units did not close in 120 s on 2 cores; 32 closed in about 3 s).
LARGE_BINARIES = 64

REL_TOL = 1e-6
#: Absolute floor of the agreement test, for optima at 0 (an exact fit): 10x SCIP's feasibility tolerance
#: 1e-9, which is how far below 0 a relaxed l1 objective can go (-8.7e-10 measured).
ABS_TOL = 1e-8
#: Largest allowance (feasibility tolerance carried to the objective) relative to ``max(1, |optimum|)`` at
#: which a verdict can still be proved: beyond it the solvers' tolerances at this bound magnitude could
#: move the objective by more than a verdict would resolve (box 1e5 on a 3-6-4-2 network: 3.7e-3).
NUMERIC_LIMIT = 1e-4
VERDICTS = ("proved equal", "not proved", "contradicted")
DEFAULT_INSTANCES = 24
KINDS = ("recovery", "bound", "training")


# ====================================================================== instances
def default_specs(count: int, seed: int) -> list[dict]:
    """The embedded verification set: ``count`` seeded instances cycling recovery, bound, training.

    Networks have 1-3 hidden layers of width 2-12 and 2-6 inputs, with at most 14 hidden units in all
    (the global bilinear solve grows much faster than the MILP, DESIGN §5). Training instances have
    2-6 inputs, 4-6 samples and 2 hidden units (2 x N binaries per sign split).
    """
    rng = np.random.default_rng(seed)
    specs = []
    for index in range(count):
        kind = KINDS[index % 3]
        instance_seed = int(rng.integers(0, 2**31 - 1))
        n0 = int(rng.integers(2, 7))
        if kind == "training":
            specs.append({"id": index, "kind": kind, "seed": instance_seed, "n0": n0,
                          "samples": int(rng.integers(4, 7)), "hidden": 2, "weight_bound": 1.0})
            continue
        depth = int(rng.integers(1, 4))
        budget = 14
        widths = []
        for layer in range(depth):
            remaining_layers = depth - layer - 1
            high = min(12, budget - 2 * remaining_layers)
            width = int(rng.integers(2, high + 1))
            widths.append(width)
            budget -= width
        n_out = int(rng.integers(1, 4))
        # more measurements than inputs, so that the noisy y is off the range of A G and the optimum is > 0
        specs.append({"id": index, "kind": kind, "seed": instance_seed, "widths": [n0, *widths, n_out],
                      "measurements": int(rng.integers(n0 + 1, n0 + 4)), "box": 1.0})
    return specs


def build_instance(spec: dict, *, loss: str, tighten: bool = False, bounds: str | None = None,
                   obbt_time: float = OBBT_TIME):
    """The reference problem of ``spec`` (networks and data drawn from ``spec['seed']``), with pre-activation
    bounds of stage ``bounds`` (``interval``, ``lp`` or ``obbt``; ``tighten`` is the old name of ``lp``)."""
    stage = bounds or ("lp" if tighten else "interval")
    rng = np.random.default_rng(spec["seed"])
    if spec["kind"] == "training":
        X0 = rng.uniform(-1, 1, size=(spec["n0"], spec["samples"]))
        Y = rng.normal(size=spec["samples"])
        return mi.TinyTraining(X0, Y, spec["hidden"], weight_bound=spec["weight_bound"])
    network = ReluNetwork.random(spec["widths"], seed=rng)
    box = spec["box"]
    if spec["kind"] == "recovery":
        A = rng.normal(size=(spec["measurements"], spec["widths"][-1]))
        c_true = rng.uniform(-box, box, size=spec["widths"][0])
        y = A @ network.forward(c_true[:, None])[:, 0] + 0.1 * rng.normal(size=A.shape[0])
        return mi.GenerativeRecovery(network, A, y, box, loss=loss, bounds=_bounds(network, box, stage, obbt_time))
    return mi.OutputBound(network, box, k=int(rng.integers(0, spec["widths"][-1])), sense="max",
                          bounds=_bounds(network, box, stage, obbt_time))


def _bounds(network: ReluNetwork, box: float, stage: str, obbt_time: float = OBBT_TIME) -> mi.Bounds:
    """Bounds over ``[-box, box]`` by the stages up to ``stage`` (LP and OBBT solved with HiGHS)."""
    return staged_bounds(network, -box, box, stage, per_neuron_time=obbt_time)


# ====================================================================== solving
def forms(problem):
    """[(p, MixedIntegerModel)]: one per sign split for training, one otherwise."""
    if isinstance(problem, mi.TinyTraining):
        return list(enumerate(problem.models))
    return [(None, problem.model)]


def _forward_objective(problem, p, v):
    if isinstance(problem, mi.TinyTraining):
        return problem.evaluate(*problem.weights_of(p, v), p)
    return problem.evaluate(problem.input_of(v))


def _effective_tolerance(extras: dict) -> float:
    """Row/bound feasibility tolerance of a solve, or the integrality slack of its point when larger (on a
    big-M row a binary ``δ`` away from {0, 1} moves ``x`` by ``δ M``): the measured distance when the backend
    measured it, else the backend's integrality tolerance."""
    rows = float(extras.get("feasibility_tolerance") or 0.0)
    measured = extras.get("integrality_violation")
    integrality = measured if measured is not None else extras.get("integrality_tolerance")
    return max(rows, float(integrality or 0.0))


def _allowance(problem, p, tolerance: float, v=None) -> float:
    """First-order reach of ``tolerance`` (relative row/bound/integrality slack) on the objective."""
    if isinstance(problem, mi.TinyTraining):
        return problem.allowance(tolerance, p, v)
    return problem.allowance(tolerance, None if v is None else problem.input_of(v))


def _maximise(problem) -> bool:
    return getattr(problem, "sense", "min") == "max"


def _tolerance(scale: float, allowance: float) -> float:
    """Agreement tolerance: ``REL_TOL·scale + ABS_TOL + allowance`` (allowance = feasibility tolerance
    carried through the bound magnitudes to the objective, see ``formulation.mixed_integer``)."""
    return REL_TOL * scale + ABS_TOL + allowance


def _finite(*values) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(v)]


def solve_version(problem, backend: str, relaxed: bool, time_limit: float, start: dict | None = None,
                  options: dict | None = None) -> dict:
    """Solve (i) or (ii) of every sign split and judge the result by the forward pass of its points.

    Every part keeps the model objective of the returned point (``objective``, NaN without one), the solver's
    ``bound`` and the float64 forward-pass objective of the point (``forward_objective``: the input or the
    weights clipped to their box, so it is the value of a point of the problem). The combined result is
    the certified ``interval`` ``[lo, hi]`` that holds the optimum: for a max problem ``[best forward value,
    bound]``, for a min problem ``[bound, best forward value]`` (the optimum over splits is the best over
    splits). A part the solver calls optimal whose bound or model objective is further from its own forward
    value than the tolerance is ``inaccurate``; a bound on the wrong side of the part's own point is dropped.
    ``options`` go to the backend's solve (e.g. ``{"relu_split": True}`` for SCIP on (ii)).
    """
    maximise = _maximise(problem)
    parts = []
    options = options or {}
    for p, model in forms(problem):
        form = mi.RelaxedForm(model) if relaxed else mi.BinaryForm(model)
        given = start if start is not None and getattr(solvers.get_backend(backend), "takes_start", False) else None
        solution = solvers.solve(form, backend, time_limit=time_limit,
                                 **({"start": given} if given is not None else {}), **options)
        tolerance = _effective_tolerance(solution.extras)
        v = solution.values.get("v") if solution.found else None
        allowance = _allowance(problem, p, tolerance, v)
        forward = _forward_objective(problem, p, v) if v is not None else None
        part = {"p": p, "termination": solution.termination.value, "status": solution.status.value,
                "claimed_optimal": solution.status is SolutionStatus.OPTIMAL,
                "objective": solution.objective, "bound": solution.bound,
                "effective_tolerance": tolerance, "allowance": allowance,
                "seconds": solution.solve_time + solution.build_time, "inaccurate": False,
                "start_accepted": solution.extras.get("start_accepted")}
        if forward is not None:
            part["forward_objective"] = forward
            tol = _tolerance(max(abs(x) for x in _finite(forward, solution.objective, solution.bound)), allowance)
            if abs(solution.objective - forward) > tol:
                part["inaccurate"] = True
            if solution.bound is not None:
                wrong_side = (solution.bound < forward - tol) if maximise else (solution.bound > forward + tol)
                if wrong_side:  # the solver's bound is beaten by its own point: no certificate
                    part["inaccurate"], part["bound"] = True, None
                elif part["claimed_optimal"] and abs(solution.bound - forward) > tol:
                    part["inaccurate"] = True
            if relaxed:
                check = mi.rounding_check(model, v, forward, objective_tolerance=tol)
                part["rounding_ok"] = check.feasible
                part["rounding_violation"] = check.violation
        parts.append(part)
    forwards = [part["forward_objective"] for part in parts if "forward_objective" in part]
    bounds = [part["bound"] for part in parts]
    pick = max if maximise else min
    incumbent = pick(forwards) if forwards else None
    bound = pick(bounds) if all(b is not None for b in bounds) else None
    interval = _interval(incumbent, bound, maximise)
    claimed = all(part["claimed_optimal"] for part in parts)
    inaccurate = any(part["inaccurate"] for part in parts)
    allowance = max(part["allowance"] for part in parts)
    terminations = {part["termination"] for part in parts}
    scale = max([abs(x) for x in _finite(*interval)] + [0.0])
    reliable = allowance <= NUMERIC_LIMIT * max(1.0, scale)
    if claimed and not inaccurate and reliable:
        state = "proved"
    elif claimed and inaccurate:
        state = "inaccurate"
    elif claimed:
        state = "numerics unreliable"
    else:
        state = "stopped: " + "/".join(sorted(terminations - {"optimal"}))
    return {
        "backend": backend, "claimed_optimal": claimed, "optimal": state == "proved", "state": state,
        "termination": "optimal" if claimed else "/".join(sorted(terminations)),
        "objective": float("nan") if incumbent is None else incumbent, "bound": bound, "interval": interval,
        "claimed": _claimed(parts, maximise), "allowance": allowance,
        "effective_tolerance": max(part["effective_tolerance"] for part in parts),
        "best_p": None if incumbent is None else next(part["p"] for part in parts
                                                         if part.get("forward_objective") == incumbent),
        "seconds": sum(part["seconds"] for part in parts), "parts": parts,
        "rounding_ok": all(part.get("rounding_ok", False) for part in parts) if relaxed else None,
        "start_accepted": parts[0]["start_accepted"] if len(parts) == 1 else None,
        **({"options": dict(options)} if options else {}),
    }


#: The ReLU-split branch and bound (:mod:`solvers.methods.relu_bab`), chosen like a backend (``--backends BAB``);
#: it is a method on HiGHS's LPs, not a registered backend, and it takes the output-bound problem only.
BAB = "BAB"


def takes(name: str, problem) -> bool:
    """Whether the MI backend (or :data:`BAB`) ``name`` can solve ``problem``'s version (i)."""
    if name == BAB:
        return isinstance(problem, mi.OutputBound)
    return forms(problem)[0][1].requires in solvers.get_backend(name).capabilities


def solve_bab(problem, time_limit: float, start: dict | None = None) -> dict:
    """Solve an output bound by the ReLU-split branch and bound and report it in the shape of
    :func:`solve_version`'s result. Its interval is ``[forward value of its best input, safe dual bound]``
    (max; mirrored for min), so no solver feasibility tolerance enters it (``allowance`` 0); it is proved when
    no node is left open. The node LP is at once the LP relaxation of (i) and the McCormick relaxation of (ii)
    after a split of ``z`` at 0, so one proof covers both versions by the same argument: it is reported
    as a (i) result and compared against SCIP's independent solve of (ii) like any other."""
    if not isinstance(problem, mi.OutputBound):
        raise ProblemError(f"{BAB} (ReLU-split branch and bound) solves the output-bound problem only (--problem "
                           f"bound); this is a {problem.kind} problem. Use HIGHS or SCIP for it.")
    maximise = _maximise(problem)
    points = [problem.input_of(start["v"])] if start is not None else []
    result = relu_bab(problem, time_limit=time_limit, start_points=points)
    forward = problem.evaluate(result.point) if result.point is not None else None
    bound = float(result.bound) if np.isfinite(result.bound) else None
    scale = max([abs(x) for x in _finite(forward, bound)] + [0.0])
    tol = _tolerance(scale, 0.0)
    inaccurate = forward is not None and bound is not None and \
        ((bound < forward - tol) if maximise else (bound > forward + tol))
    claimed = result.proved
    state = "proved" if claimed and not inaccurate else ("inaccurate" if claimed else f"stopped: {result.status}")
    termination = "optimal" if claimed else result.status
    part = {"p": None, "termination": termination, "status": "optimal" if claimed else
            ("feasible" if forward is not None else "no_solution"), "claimed_optimal": claimed,
            "objective": float("nan") if forward is None else forward, "bound": bound, "effective_tolerance": 0.0,
            "allowance": 0.0, "seconds": result.seconds, "inaccurate": bool(inaccurate), "start_accepted": None}
    if forward is not None:
        part["forward_objective"] = forward
    interval = _interval(forward, bound, maximise)
    return {
        "backend": BAB, "claimed_optimal": claimed, "optimal": state == "proved", "state": state,
        "termination": termination, "objective": float("nan") if forward is None else forward, "bound": bound,
        "interval": interval, "claimed": forward, "allowance": 0.0, "effective_tolerance": 0.0, "best_p": None,
        "seconds": result.seconds, "parts": [part], "rounding_ok": None, "start_accepted": None,
        "nodes": result.nodes,
        "bab": {"nodes": result.nodes, "open_nodes": result.open_nodes, "max_open": result.max_open,
                "root_bound": result.root_bound, "pruned": result.pruned, "infeasible": result.infeasible,
                "lp_solves": result.lp_solves, "tighten_solves": result.tighten_solves,
                "leaf_gaps": result.leaf_gaps, "gap_tolerance": result.gap_tolerance, **result.extras,
                "proves": "(i) and (ii) by the same tree (node LP = big-M LP relaxation = McCormick relaxation)"},
    }


def _interval(incumbent: float | None, bound: float | None, maximise: bool) -> list[float]:
    """The certified interval: ``[incumbent, bound]`` (maximise) or ``[bound, incumbent]``, ``±inf`` where missing."""
    infinity = float("inf")
    if maximise:
        interval = [-infinity if incumbent is None else incumbent, infinity if bound is None else bound]
    else:
        interval = [-infinity if bound is None else bound, infinity if incumbent is None else incumbent]
    return sorted(interval)  # within the tolerance a bound may sit just past the incumbent


def _claimed(parts: list[dict], maximise: bool) -> float | None:
    """What the solver says the optimum is: its best model objective over splits (None without points)."""
    values = [part["objective"] for part in parts if "forward_objective" in part]
    return (max if maximise else min)(values) if values else None


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-9)


#: States of a solve whose bound certifies nothing (:func:`demote_beaten_bounds`, :func:`compare`).
UNTRUSTED = ("inaccurate", "numerics unreliable")


def demote_beaten_bounds(results: list[dict], maximise: bool) -> None:
    """Demote, in place, every result whose bound a point found by ANY solve beats beyond the tolerance.

    Every incumbent here is the float64 forward-pass objective of a returned input, so it is attained: a
    bound on the other side of it is false (measured: ECOS_BB claimed an optimum with upper bound 1.198e8 on
    a box of 1e8 where SCIP's point reached 1.580e8). The result becomes *inaccurate*, its bound is dropped
    and its interval runs from its own incumbent to infinity; the relaxed result's incumbent counts only
    when rounding its point is feasible for version (i).
    """
    known = [result["objective"] for result in results
             if np.isfinite(result["objective"]) and result.get("rounding_ok") is not False]
    if not known:
        return
    best = (max if maximise else min)(known)
    for result in results:
        bound = result["bound"]
        if bound is None:
            continue
        tolerance = _tolerance(max(abs(best), abs(bound)), result["allowance"])
        if (bound < best - tolerance) if maximise else (bound > best + tolerance):
            result["state"], result["optimal"], result["bound"] = "inaccurate", False, None
            result["beaten_by"] = best
            own = result["objective"]
            result["interval"] = _interval(own if np.isfinite(own) else None, None, maximise)


def compare(mi_result: dict, relaxed: dict) -> dict:
    """Judge one MI result against the relaxed one.

    ``tolerance = REL_TOL·scale + ABS_TOL + max(allowances)``. *contradicted*: the certified intervals are
    disjoint by more than the tolerance. *proved equal*: both proved optimal (claimed, consistent with their
    own points, numerics reliable) and the union of the two intervals is no wider than the tolerance.
    Otherwise *not proved*.
    """
    (lo_a, hi_a), (lo_b, hi_b) = mi_result["interval"], relaxed["interval"]
    scale = max([abs(x) for x in _finite(lo_a, hi_a, lo_b, hi_b)] + [0.0])
    tolerance = _tolerance(scale, max(mi_result["allowance"], relaxed["allowance"]))
    # an interval from a solve whose numbers are not trusted certifies nothing, so it contradicts nothing
    trusted = all(result["state"] not in UNTRUSTED for result in (mi_result, relaxed))
    if trusted and (lo_a > hi_b + tolerance or lo_b > hi_a + tolerance):
        verdict = "contradicted"
    elif mi_result["optimal"] and relaxed["optimal"] and max(hi_a, hi_b) - min(lo_a, lo_b) <= tolerance:
        verdict = "proved equal"
    else:
        verdict = "not proved"
    return {"verdict": verdict, "tolerance": tolerance}


def run_local(problem, starts: int, rng: np.random.Generator, *, points: list | None = None) -> list[float]:
    """Forward objective of the AL method from each of ``starts`` random ``θ_0`` (best split for training); with a
    list ``points``, the final input ``c`` of each run on a network problem is appended to it."""
    method = RelaxedAL()
    results = []
    for _ in range(starts):
        if isinstance(problem, mi.TinyTraining):
            method.setup(problem, 0)
            theta = method.random_theta(rng)
            values = [method.run(problem, theta, p=p).objective for p in range(problem.hidden + 1)]
            results.append(min(values))
        else:
            method.setup(problem)
            local = method.run(problem, method.random_theta(rng))
            results.append(local.objective)
            if points is not None and "c" in local.theta:
                points.append(np.asarray(local.theta["c"], float).ravel())
    return results


#: Inputs drawn in the box whose forward pass proposes a starting solution.
START_SAMPLES = 1000


def sampled_inputs(problem, count: int = START_SAMPLES, seed: int = 0) -> np.ndarray:
    """``count`` inputs uniform in the box of a network problem (columns), with its two corners."""
    rng = np.random.default_rng(seed)
    draws = rng.uniform(problem.box_lower[:, None], problem.box_upper[:, None], size=(problem.box_lower.size, count))
    return np.hstack([draws, problem.box_lower[:, None], problem.box_upper[:, None]])


def best_start(problem, candidates: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """The input among ``candidates`` (each an input ``c``) with the best forward-pass objective, and that value."""
    values = [problem.evaluate(np.clip(c, problem.box_lower, problem.box_upper)) for c in candidates]
    index = int(np.argmax(values) if _maximise(problem) else np.argmin(values))
    return np.clip(candidates[index], problem.box_lower, problem.box_upper), float(values[index])


def _starting_point(problem, local_points: list[np.ndarray]) -> tuple[dict, dict]:
    """The starting solution handed to the MI solvers: the best of the local method's points and of a forward
    pass of :data:`START_SAMPLES` sampled inputs; returns ``(start, record)``."""
    samples = sampled_inputs(problem)
    values = problem.evaluate_columns(samples)
    sampled = samples[:, int(np.argmax(values) if _maximise(problem) else np.argmin(values))]
    c, value = best_start(problem, [sampled, *local_points])
    source = "sampled forward pass" if value == best_start(problem, [sampled])[1] else "local AL method"
    return problem.start_point(c), {"objective": value, "source": source, "samples": samples.shape[1],
                                    "local_points": len(local_points)}


def _gap(problem, value: float, optimum: float) -> float:
    """Local value minus the certified optimum in the problem's sense (≥ 0 up to tolerance)."""
    return (optimum - value) if getattr(problem, "sense", "min") == "max" else (value - optimum)


def _reason(row: dict, judged: dict, requires: str) -> str:
    """Why an instance is not proved equal (empty when it is)."""
    if row["verdict"] == "proved equal":
        return ""
    relaxed = row["relaxed"]
    if row["verdict"] == "contradicted":
        names = [name for name, judgement in judged.items() if judgement["verdict"] == "contradicted"]
        return f"certified intervals disjoint beyond the tolerance: {', '.join(names)} against the relaxed model"
    if not judged:
        return f"no requested mixed-integer backend takes this {requires} problem"
    reasons = []
    for name, result in [*row["mi"].items(), ("relaxed", relaxed)]:
        if result["state"] == "numerics unreliable":
            scale = max([abs(x) for x in _finite(*result["interval"])] + [0.0])
            reasons.append(f"{name} numerics unreliable (feasibility tolerance {result['effective_tolerance']:.0e} "
                           f"carried through the bounds: {result['allowance']:.2g} > "
                           f"{NUMERIC_LIMIT:g}·max(1, |optimum|) = {NUMERIC_LIMIT * max(1.0, scale):.2g})")
        elif result["state"] == "inaccurate" and "beaten_by" in result:
            reasons.append(f"{name} inaccurate (its bound is beaten by a point found at "
                           f"{_number(result['beaten_by'], 10)})")
        elif result["state"] == "inaccurate":
            reasons.append(f"{name} inaccurate (claims {_number(result['claimed'], 10)}, its point gives "
                           f"{_number(result['objective'], 10)})")
        elif result["state"] != "proved":
            reasons.append(f"{name} {result['state']}")
    if relaxed["optimal"] and not relaxed["rounding_ok"]:
        reasons.append("the rounded relaxed point is not feasible for (i) within tolerance")
    return "; ".join(reasons) or "proved optima differ by more than the tolerance, intervals overlap"


def verify_instance(spec: dict, problem, *, backends, time_limit: float, starts: int, rng, adam: bool,
                    give_start: bool = True, relu_split: bool = False) -> dict:
    """Solve and judge one instance (module docstring); ``relu_split`` makes SCIP's solve of (ii) branch by ReLU
    splits (``solvers.scip_``, output-bound problems only; ignored for the others)."""
    row = {"spec": spec, "kind": problem.kind}
    if isinstance(problem, mi.TinyTraining):
        row["size"] = f"{problem.X0.shape[0]}-{problem.hidden}-1 N={problem.X0.shape[1]}"
        row["binaries"] = sum(model.n_binary for model in problem.models)
    else:
        row["size"] = "-".join(map(str, problem.network.widths))
        row["binaries"] = problem.model.n_binary
        row["bounds"] = {"method": problem.bounds.method, "seconds": problem.bounds.seconds,
                         "lp_solves": problem.bounds.lp_solves, "lp_failures": problem.bounds.failures,
                         "mean_width": problem.bounds.mean_width(), "stages": problem.bounds.stages,
                         **problem.bounds.hidden_counts()}
        if problem.bounds.method != "interval":
            interval = mi.interval_bounds(problem.network, problem.box_lower, problem.box_upper)
            row["bounds"]["interval_mean_width"] = interval.mean_width()
            row["bounds"]["interval_unstable"] = interval.hidden_counts()["unstable"]
    requires = forms(problem)[0][1].requires
    splits = len(forms(problem))
    if row["binaries"] > LARGE_BINARIES:
        progress.info("instance %s: %d binaries; solves of this size often stop at the time limit (%g s each)",
                      row["size"], row["binaries"], time_limit)
    # the local method runs first: its best point (or a better sampled one) is the MI solvers' starting solution
    clock = time.perf_counter()
    if starts:
        progress.info("local AL method on the relaxed problem from %d start(s)", starts)
    local_points: list[np.ndarray] = []
    row["al"] = run_local(problem, starts, rng, points=local_points) if starts else []
    row["al_seconds"] = time.perf_counter() - clock
    start = None
    if give_start and not isinstance(problem, mi.TinyTraining):
        start, row["start"] = _starting_point(problem, local_points)
    row["mi"] = {}
    for name in backends:
        if not takes(name, problem):
            continue
        if name == BAB:
            progress.info("(i)+(ii) ReLU-split branch and bound: %d unstable units, time limit %g s", row["binaries"],
                          time_limit)
            row["mi"][name] = solve_bab(problem, time_limit, start)
            progress.info("%s: %s in %.1f s, %d nodes", name, row["mi"][name]["state"], row["mi"][name]["seconds"],
                          row["mi"][name]["nodes"])
            continue
        progress.info("(i) binary %s with %s: %d binaries, %d split(s), time limit %g s each", requires, name,
                      row["binaries"], splits, time_limit)
        row["mi"][name] = solve_version(problem, name, relaxed=False, time_limit=time_limit, start=start)
        progress.info("(i) %s: %s in %.1f s", name, row["mi"][name]["state"], row["mi"][name]["seconds"])
    split = relu_split and isinstance(problem, mi.OutputBound)
    progress.info("(ii) relaxed bilinear model with SCIP%s, time limit %g s per split",
                  " (ReLU-split branching)" if split else "", time_limit)
    row["relaxed"] = solve_version(problem, "SCIP", relaxed=True, time_limit=time_limit, start=start,
                                   options={"relu_split": True} if split else None)
    progress.info("(ii) SCIP: %s in %.1f s", row["relaxed"]["state"], row["relaxed"]["seconds"])
    relaxed = row["relaxed"]
    demote_beaten_bounds([*row["mi"].values(), relaxed], _maximise(problem))
    judged = {name: compare(result, relaxed) for name, result in row["mi"].items()}
    for name, judgement in judged.items():
        row["mi"][name].update(judgement)
    verdicts = {judgement["verdict"] for judgement in judged.values()}
    agreeing = [name for name, judgement in judged.items() if judgement["verdict"] == "proved equal"]
    if "contradicted" in verdicts:
        row["verdict"] = "contradicted"
    elif agreeing and relaxed["rounding_ok"]:
        row["verdict"] = "proved equal"
    else:
        row["verdict"] = "not proved"
    row["preserved"] = row["verdict"] == "proved equal"
    deciding = [judged[name] for name in (agreeing or judged)]
    row["tolerance"] = max((judgement["tolerance"] for judgement in deciding), default=None)
    row["reason"] = _reason(row, judged, requires)
    differences = [(abs(row["mi"][name]["objective"] - relaxed["objective"]),
                    relative_difference(row["mi"][name]["objective"], relaxed["objective"])) for name in agreeing]
    row["abs_diff"] = max((d[0] for d in differences), default=float("nan"))
    row["rel_diff"] = max((d[1] for d in differences), default=float("nan"))
    # the certified optimum: the relaxed global optimum when proved, else the best proved MI one
    proved_mi = [result for result in row["mi"].values() if result["optimal"]]
    certified = relaxed["objective"] if relaxed["optimal"] else (proved_mi[0]["objective"] if proved_mi else None)
    row["certified"] = certified
    if certified is not None and row["al"]:
        gaps = [_gap(problem, value, certified) for value in row["al"]]
        row["al_gaps"] = gaps
        row["al_best_gap"], row["al_median_gap"] = min(gaps), statistics.median(gaps)
    if adam and isinstance(problem, mi.TinyTraining) and starts:
        start = time.perf_counter()
        values = projected_adam(problem, starts, rng)
        row["adam_seconds"] = time.perf_counter() - start
        if values is not None:
            row["adam"] = values
            if certified is not None:
                row["adam_gaps"] = [_gap(problem, value, certified) for value in values]
                row["adam_best_gap"] = min(row["adam_gaps"])
    return row


# ====================================================================== output
def _number(value, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _result_cell(result: dict | None) -> str:
    """Forward-pass value of the returned point; for an unproved result also why and the certified interval;
    for an inaccurate one the solver's claim next to what its point gives."""
    if result is None:
        return "n/a"
    text = _number(result["objective"], 7)
    if result["optimal"]:
        return text
    if result["state"] == "inaccurate":
        return f"{text} (inaccurate: claims {_number(result['claimed'], 7)})"
    lo, hi = result["interval"]
    claim = result["claimed"]
    scale = max([abs(x) for x in _finite(claim, result["objective"])] + [0.0])
    claims = (f", claims {_number(claim, 7)}" if claim is not None and np.isfinite(result["objective"])
              and abs(claim - result["objective"]) > _tolerance(scale, 0.0) else "")
    return f"{text} ({result['state']}{claims}, in [{_number(lo, 5)}, {_number(hi, 5)}])"


def format_table(rows: list[dict], backends) -> str:
    header = ["#", "problem", "size", "bin", *backends, "relaxed (SCIP)", "abs diff", "rel diff", "tol", "verdict",
              "round", "AL best", "AL med", "AL gap", "Adam gap", *[f"t {b}" for b in backends], "t rel", "t AL"]
    lines = []
    for row in rows:
        lines.append([
            str(row["spec"]["id"]), row["kind"], row["size"], str(row["binaries"]),
            *[_result_cell(row["mi"].get(b)) for b in backends],
            _result_cell(row["relaxed"]), _number(row["abs_diff"], 2), _number(row["rel_diff"], 2),
            _number(row["tolerance"], 2), row["verdict"],
            "-" if row["relaxed"]["rounding_ok"] is None else ("ok" if row["relaxed"]["rounding_ok"] else "FAIL"),
            _number(max(row["al"]) if row["kind"] == "bound" and row["al"] else
                    (min(row["al"]) if row["al"] else None), 6),
            _number(statistics.median(row["al"]) if row["al"] else None, 6),
            _number(row.get("al_best_gap"), 2), _number(row.get("adam_best_gap"), 2),
            *[_number(row["mi"][b]["seconds"], 2) if b in row["mi"] else "-" for b in backends],
            _number(row["relaxed"]["seconds"], 2), _number(row["al_seconds"], 2),
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    notes = [f"#{row['spec']['id']} {row['verdict']}: {row['reason']}" for row in rows if row.get("reason")]
    return "\n".join(out + notes)


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    return {verdict: sum(row["verdict"] == verdict for row in rows) for verdict in VERDICTS}


def summary_line(rows: list[dict], timed_out: int = 0) -> str:
    """One line with the three verdicts counted separately; only *proved equal* is called preserved."""
    n = len(rows) + timed_out
    counts = verdict_counts(rows)
    counts["not proved"] += timed_out
    proved = [row for row in rows if row["verdict"] == "proved equal"]
    # relative differences are meaningless at an optimum of 0 (an exact fit): report those as absolute
    zero = [row for row in proved if row["certified"] is not None and abs(row["certified"]) < 1e-6]
    relatives = [row["rel_diff"] for row in proved if np.isfinite(row["rel_diff"]) and row not in zero]
    absolutes = [row["abs_diff"] for row in zero if np.isfinite(row["abs_diff"])]
    tolerances = [row["tolerance"] for row in proved]
    rounding = sum(bool(row["relaxed"]["rounding_ok"]) for row in rows)
    details = []
    if relatives:
        details.append(f"max rel diff {max(relatives):.1e}")
    if absolutes:
        details.append(f"{len(zero)} optima at 0: max abs diff {max(absolutes):.1e}")
    if tolerances:
        details.append(f"tolerance up to {max(tolerances):.1e}")
    detail = f" ({'; '.join(details)})" if details else ""
    return (f"{n} instances: relaxation preserved the optimum (proved equal) on {counts['proved equal']}/{n}{detail}; "
            f"not proved on {counts['not proved']}/{n}; contradicted on {counts['contradicted']}/{n}; "
            f"rounding d=1[z>0] feasible with the same objective on {rounding}/{n}")


def extra_summary(rows: list[dict]) -> list[str]:
    lines = []
    al = [g for row in rows for g in row.get("al_gaps", [])]
    if al:
        found = sum(g <= 1e-6 * max(1.0, abs(row["certified"])) for row in rows for g in row.get("al_gaps", []))
        lines.append(f"AL local method: {len(al)} runs, median gap {statistics.median(al):.3g}, "
                     f"reached the certified optimum (gap <= 1e-6) on {found}/{len(al)} runs")
    adam = [g for row in rows for g in row.get("adam_gaps", [])]
    if adam:
        found = sum(g <= 1e-6 * max(1.0, abs(row["certified"])) for row in rows for g in row.get("adam_gaps", []))
        lines.append(f"Adam (training): {len(adam)} runs, median gap {statistics.median(adam):.3g}, "
                     f"reached the certified optimum on {found}/{len(adam)} runs")
    timing = {}
    for row in rows:
        for name, result in row["mi"].items():
            timing.setdefault(name, []).append(result["seconds"])
        timing.setdefault("SCIP relaxed", []).append(row["relaxed"]["seconds"])
    lines.append("solve time total: " + ", ".join(f"{k} {sum(v):.1f} s" for k, v in timing.items()))
    for row in rows:
        bab = row["mi"].get(BAB)
        if bab is not None:
            lo, hi = bab["interval"]
            lines.append(f"{BAB} on instance {row['spec']['id']}: {bab['state']}, interval [{lo:.7g}, {hi:.7g}], "
                         f"{bab['nodes']} nodes ({bab['bab']['open_nodes']} open), {bab['seconds']:.1f} s; one tree "
                         "proves (i) and (ii) by the same argument, so it is not an independent check of one "
                         "against the other")
    tightened = [row["bounds"] for row in rows if row.get("bounds", {}).get("method") in ("lp", "obbt")]
    if tightened:
        method = tightened[0]["method"].upper()
        widths = [b["mean_width"] / b["interval_mean_width"] for b in tightened if b["interval_mean_width"] > 0]
        ratio = statistics.mean(widths) if widths else float("nan")
        removed = sum(b["interval_unstable"] - b["unstable"] for b in tightened)
        lines.append(f"{method} bound tightening: mean hidden width {ratio:.2f}x of interval, {removed} binaries "
                     f"removed, {sum(b['seconds'] for b in tightened):.1f} s in "
                     f"{sum(b['lp_solves'] for b in tightened)} solves")
        failed = sum(len(b.get("lp_failures", [])) for b in tightened)
        if failed:
            lines.append(f"{method} bound tightening: {failed} bound solve(s) failed; those units kept their bounds "
                         "of the stage before (see bounds.lp_failures in --json)")
    for row in rows:
        stages = row.get("bounds", {}).get("stages", [])
        if not stages:
            continue
        text = ", ".join(f"{stage['stage']} {stage['seconds']:.2f} s ({stage['unstable']} unstable"
                         + (f", {stage['solves']} solves" if stage["solves"] else "")
                         + (f", {stage['hit_limit']} stopped at the {stage['per_neuron_time']:g} s budget"
                            if stage.get("hit_limit") else "") + ")" for stage in stages)
        lines.append(f"bound stages of instance {row['spec']['id']}: {text}")
        for stage in stages:
            if stage.get("hit_limit"):
                first = stage["limits"][0]
                reached = "no bound" if first["bound"] is None else f"its dual bound {first['bound']:.6g}"
                lines.append(f"  {stage['stage']}: {stage['hit_limit']} solve(s) hit their limit and gave their dual "
                             f"bound (first: {first['where']}, {first['termination']}, {reached}; all in --json)")
    started = [row for row in rows if row.get("start")]
    if started:
        sources = statistics.multimode([row["start"]["source"] for row in started])
        accepted: dict[str, list[int]] = {}
        for row in started:
            for name, result in [*row["mi"].items(), ("SCIP relaxed", row["relaxed"])]:
                if result.get("start_accepted") is not None:
                    accepted.setdefault(name, []).append(bool(result["start_accepted"]))
        taken = ", ".join(f"{name} {sum(flags)}/{len(flags)}" for name, flags in accepted.items())
        lines.append(f"starting solutions (best of the local AL points and {started[0]['start']['samples']} sampled "
                     f"forward passes) on {len(started)} instance(s), mostly from the {' / '.join(sources)}; "
                     f"accepted by {taken or 'no solver'}")
    raised: dict[str, list[str]] = {}
    for row in rows:
        for message in row.get("warnings", []):
            raised.setdefault(message, []).append(str(row["spec"]["id"]))
    for message, ids in raised.items():
        lines.append(f"warning on instance{'s' if len(ids) > 1 else ''} {', '.join(ids)}: {message}")
    return lines


def write_plots(rows: list[dict], directory: str, backends) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name in backends:
        pts = [(r["mi"][name]["objective"], r["relaxed"]["objective"]) for r in rows if name in r["mi"]]
        if pts:
            ax.scatter(*zip(*pts), label=name, s=18, alpha=0.7)
    values = [r["relaxed"]["objective"] for r in rows if np.isfinite(r["relaxed"]["objective"])]
    if values:
        lo, hi = min(values), max(values)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("MI optimum, binary d (i)")
    ax.set_ylabel("relaxed global optimum, d in [0,1] (ii)")
    ax.set_title("relaxation preserves the optimum")
    ax.legend()
    paths.append(os.path.join(directory, "mi_vs_relaxed.png"))
    save_figure(fig, paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    floor = 1e-10
    for key, label in (("al_gaps", "AL (relaxed, local)"), ("adam_gaps", "Adam (training)")):
        gaps = [max(g / max(1.0, abs(r["certified"])), floor) for r in rows for g in r.get(key, [])]
        if gaps:
            ax.hist(np.log10(gaps), bins=30, alpha=0.6, label=label)
    ax.set_xlabel("log10 relative gap to the certified optimum (floored at 1e-10)")
    ax.set_ylabel("runs")
    ax.legend()
    paths.append(os.path.join(directory, "local_gaps.png"))
    save_figure(fig, paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in [*backends, "SCIP relaxed"]:
        pts = [(r["binaries"], (r["relaxed"] if name == "SCIP relaxed" else r["mi"][name])["seconds"])
               for r in rows if name == "SCIP relaxed" or name in r["mi"]]
        if pts:
            ax.scatter(*zip(*pts), label=name, s=18, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("binaries (unstable units, all sign splits)")
    ax.set_ylabel("solve time [s]")
    ax.legend()
    paths.append(os.path.join(directory, "solve_times.png"))
    save_figure(fig, paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


# ====================================================================== user files
def load_array(path: str, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    """A ``.npy`` file as a float array, with a ProblemError naming ``name`` and the fix."""
    if not os.path.exists(path):
        raise ProblemError(f"{name} file {path!r} does not exist; save it with `np.save({path!r}, {name})`.")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ProblemError(
            f"{name} file {path!r} is not a readable .npy array ({exc}); save a numeric array with `np.save`."
        ) from exc
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise ProblemError(f"{name} file {path!r} is an .npz archive; save the single array with `np.save`.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ProblemError(f"{name} file {path!r} holds dtype {array.dtype}; it must be a real numeric array.")
    if array.ndim not in ndim:
        allowed = " or ".join(map(str, ndim))
        raise ProblemError(f"{name} file {path!r} has shape {array.shape}; {name} must have {allowed} dimension(s).")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ProblemError(f"{name} file {path!r} has NaN or inf entries; remove them.")
    return array


def user_problem(args, rng: np.random.Generator):
    network = ReluNetwork.load(args.network)
    box = float(args.box)
    if not np.isfinite(box) or box <= 0:
        raise ProblemError(f"--box must be positive and finite, got {args.box}.")
    if args.problem == "training" and args.samples < 1:
        raise ProblemError(f"--samples must be at least 1, got {args.samples}: training on no samples is an "
                           "empty problem.")
    if args.problem == "recovery":
        if not args.A or not args.y:
            raise ProblemError("--problem recovery needs --A A.npy (shape (m, n_L)) and --y y.npy (shape (m,)).")
        A = load_array(args.A, "A", (1, 2))
        y = load_array(args.y, "y", (1, 2))
        if A.ndim == 1:
            A = A[None, :]
        if A.shape[1] != network.widths[-1]:
            raise ProblemError(f"A from {args.A!r} has shape {A.shape} but the network {args.network!r} has "
                               f"{network.widths[-1]} outputs: A needs {network.widths[-1]} columns.")
        if y.size != A.shape[0] or (y.ndim == 2 and 1 not in y.shape):
            raise ProblemError(f"y from {args.y!r} has shape {y.shape} but A from {args.A!r} has {A.shape[0]} rows: "
                               f"y needs {A.shape[0]} entries.")
        return mi.GenerativeRecovery(network, A, y.ravel(), box, loss=args.loss,
                                     bounds=_bounds(network, box, args.bounds, args.obbt_time))
    if args.problem == "bound":
        return mi.OutputBound(network, box, k=args.k, sense=args.sense,
                              bounds=_bounds(network, box, args.bounds, args.obbt_time))
    # training: the user's network is the teacher of a tiny student with its first hidden width
    if network.depth != 2 or network.widths[-1] != 1:
        raise ProblemError(f"--problem training takes a two-layer scalar-output teacher network (n0-m-1); "
                           f"{args.network!r} has widths {network.widths}.")
    X0 = rng.uniform(-box, box, size=(network.widths[0], args.samples))
    Y = network.forward(X0)[0]
    bound = args.weight_bound or float(max(np.max(np.abs(network.weights[0])), np.max(np.abs(network.biases[0]))))
    return mi.TinyTraining(X0, Y, network.widths[1], weight_bound=bound)


# ====================================================================== command
def installed_mi_backends(requested: str = "") -> list[str]:
    """The MI backends to run: the requested ones (each checked to be installed and mixed-integer), or every
    installed backend with a mixed-integer capability."""
    installed = solvers.backends_with(solvers.MILP, solvers.MIQP)
    names = [name.strip() for name in requested.split(",") if name.strip()] if requested else installed
    for index, name in enumerate(names):
        if name.upper() == BAB:  # the branch and bound method: its LPs need HiGHS
            solvers.get_backend("HIGHS")
            names[index] = BAB
            continue
        backend = solvers.get_backend(name)  # SolverNotFound with the install command
        if not backend.capabilities & {solvers.MILP, solvers.MIQP}:
            raise ProblemError(f"--backends {name}: {backend.name} is not a mixed-integer solver, so it cannot solve "
                               f"version (i); choose from {', '.join([*installed, BAB])}.")
        names[index] = backend.name
    if "SCIP" not in solvers.available_backends():
        solvers.get_backend("SCIP")  # the relaxed model needs SCIP: raise with the install hint
    return names


def single_threaded():
    """One BLAS thread: the arrays here are tiny, and on a busy 2-core machine threaded BLAS made the
    AL 50x slower (measured: 19 s against 0.34 s CPU for 5 runs). ``run`` caps torch's threads too."""
    from solvers.methods.al_trainer import blas_threads

    return blas_threads(1)


def run(args) -> int:
    from validation.baselines.adam import torch_threads

    with single_threaded(), torch_threads(1):
        return _run(args)


#: Figures stored per case by the study runner: the whole row as JSON, and two scalars to query. The
#: verdict column replaced a ``preserved`` flag whose meaning differed; a store written before it is refused
#: with the fix (move it aside) instead of mixing the two meanings.
CASE_FIGURES = {"row": "TEXT", "verdict": "TEXT", "rel_diff": "REAL"}


def run_case(case) -> dict:
    """Runner entry point: one embedded instance (``case.problem`` is its spec).

    ``case.settings`` holds ``loss``, ``tighten``, ``time_limit``, ``starts``, ``adam`` and the
    MI ``backends``; the row is the one :func:`verify_instance` returns, stored as JSON.
    """
    settings = case.settings
    spec = case.problem
    with single_threaded(), recorded_warnings() as caught:
        problem = build_instance(spec, loss=settings["loss"], tighten=settings["tighten"],
                                 bounds=settings.get("bounds"), obbt_time=settings.get("obbt_time", OBBT_TIME))
        row = verify_instance(spec, problem, backends=settings["backends"], time_limit=settings["time_limit"],
                              starts=settings["starts"], rng=np.random.default_rng([case.seed, spec["id"]]),
                              adam=settings["adam"], give_start=settings.get("start", True),
                              relu_split=settings.get("relu_split", False))
    row["warnings"] = [f"{category.__name__}: {message}" for category, message in caught]
    return {"row": json_text(row), "verdict": row["verdict"], "rel_diff": row["rel_diff"]}


def _run_default_set(args, backends) -> tuple[list[dict], list[str], list[str]]:
    """The embedded instances through the study runner: stored as they finish, resumable."""
    from validation.runner import Case, Study, default_store, read_results, run_study

    settings = {"loss": args.loss, "tighten": args.bounds == "lp", "time_limit": args.time_limit,
                "starts": args.starts, "adam": not args.no_adam, "backends": backends}
    if args.bounds == "obbt" or args.no_start:  # settings added later: absent keys keep older stores' case ids
        settings.update({"bounds": args.bounds, "obbt_time": args.obbt_time, "start": not args.no_start})
    if args.relu_split:
        settings["relu_split"] = True
    cases = [Case(problem=spec, backend="+".join(backends), settings=settings, seed=args.seed)
             for spec in default_specs(args.instances, args.seed)]
    study = Study("verify", cases, run="validation.verify:run_case", figures=CASE_FIGURES)
    store = args.store or default_store(study.name)
    summary = run_study(study, store=store, workers=args.workers, scheduler=args.scheduler,
                        case_timeout=args.case_timeout)
    if summary.skipped:
        print(f"{summary.skipped} of {summary.total} instances were already in {store}; "
              "delete it or pass --store to run them again")
    wanted = {case.case_id: index for index, case in enumerate(cases)}
    rows, failures, timeouts = [None] * len(cases), [], []
    for stored in read_results(store, study.name):
        index = wanted.get(stored["case_id"])
        if index is None:
            continue
        line = f"instance {cases[index].problem['id']}: {stored['status']}: {stored['message']}"
        if stored["status"] == "ok":
            rows[index] = json.loads(stored["row"])
        elif stored["status"] == "timeout":
            timeouts.append(line)
        else:
            failures.append(line)
    return [row for row in rows if row is not None], failures, timeouts


def resolve_bounds(args) -> None:
    """Settle ``args.bounds`` from ``--bounds`` and its alias ``--tighten`` (= lp), and check ``--obbt-time``."""
    if args.tighten and args.bounds not in (None, "lp"):
        raise ProblemError(f"--tighten is an alias of --bounds lp; it contradicts --bounds {args.bounds}. "
                           "Give one of them.")
    args.bounds = args.bounds or ("lp" if args.tighten else "interval")
    args.tighten = args.bounds == "lp"
    if not (np.isfinite(args.obbt_time) and args.obbt_time > 0):
        raise ProblemError(f"--obbt-time must be a positive number of seconds per neuron, got {args.obbt_time}.")


def _run(args) -> int:
    resolve_bounds(args)
    if args.mnist:
        return run_mnist(args)
    if args.scaling:
        if args.network:
            raise ProblemError("--scaling runs its own random networks; it does not take --network.")
        if args.relu_split:  # the study's configurations are fixed; a silent no-op would mislabel its table
            raise ProblemError("--relu-split is not a configuration of --scaling (its (ii) runs use SCIP's own "
                               "branching); run it with --network ... --problem bound, or leave it out.")
        return run_scaling(args)
    if args.quick or args.configs:
        option = "--quick" if args.quick else "--configs"
        raise ProblemError(f"{option} is an option of --scaling; add --scaling or leave it out.")
    backends = installed_mi_backends(args.backends)
    if args.bounds != "interval":
        try:
            solvers.get_backend("HIGHS")
        except solvers.SolverNotFound as exc:
            raise solvers.SolverNotFound(f"--bounds {args.bounds} solves its bound problems with HiGHS; run with "
                                         f"--bounds interval or install it. {exc}") from exc
    if args.instances < 1:
        raise ProblemError(f"--instances must be at least 1, got {args.instances}.")
    # every output is checked before any work, so that a finished run is never lost to a bad path
    json_path = output_file(args.json, "--json") if args.json else ""
    plot_dir = output_directory(args.plot, "--plot") if args.plot else ""
    if args.store and not args.network:
        output_file(args.store, "--store")
    started = time.perf_counter()
    failures, timeouts = [], []
    if args.network:
        spec = {"id": 0, "kind": args.problem, "seed": args.seed, "file": args.network}
        problem = user_problem(args, np.random.default_rng(args.seed))
        requires = forms(problem)[0][1].requires
        if BAB in backends and not takes(BAB, problem):
            raise ProblemError(f"--backends {BAB}: the ReLU-split branch and bound solves the output-bound problem "
                               f"only (--problem bound), not --problem {args.problem}; leave {BAB} out for it.")
        if args.relu_split and not isinstance(problem, mi.OutputBound):
            raise ProblemError(f"--relu-split: SCIP's ReLU-split branching on (ii) takes the output-bound problem only "
                               f"(--problem bound), not --problem {args.problem}; leave --relu-split out for it.")
        if not any(takes(name, problem) for name in backends):
            raise ProblemError(f"None of the MI backends {', '.join(backends)} takes this {requires} problem; "
                               f"add one that does (SCIP takes MILP and MIQP).")
        with recorded_warnings() as caught:
            rows = [verify_instance(spec, problem, backends=backends, time_limit=args.time_limit, starts=args.starts,
                                    rng=np.random.default_rng([args.seed, spec["id"]]), adam=not args.no_adam,
                                    give_start=not args.no_start, relu_split=args.relu_split)]
        rows[0]["warnings"] = [f"{category.__name__}: {message}" for category, message in caught]
    else:
        rows, failures, timeouts = _run_default_set(args, backends)
    elapsed = time.perf_counter() - started
    print(format_table(rows, backends))
    print()
    for line in extra_summary(rows):
        print(line)
    print(f"wall time {elapsed:.1f} s")
    summary = summary_line(rows, timed_out=len(timeouts))
    print(summary)
    if json_path:
        settings = {k: v for k, v in vars(args).items() if k != "func"}
        counts = verdict_counts(rows)
        document = {"settings": settings, "backends": backends, "wall_seconds": elapsed, "summary": summary,
                    "verdicts": {**counts, "not proved": counts["not proved"] + len(timeouts)},
                    "tolerance": {"rel_tol": REL_TOL, "abs_tol": ABS_TOL, "numeric_limit": NUMERIC_LIMIT},
                    "failures": failures, "timeouts": timeouts, "rows": rows}
        with atomic_open(json_path, "w") as handle:
            handle.write(json_text(document, indent=1))
        print(f"wrote {json_path}")
    if plot_dir:
        for path in write_plots(rows, plot_dir, backends):
            print(f"wrote {path}")
    for line in timeouts:
        print(f"NOT PROVED {line}")
    for line in failures:
        print(f"FAILED {line}")
    contradicted = verdict_counts(rows)["contradicted"]
    return 1 if contradicted or failures else 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="prove numerically that relaxing d to [0,1] preserves the optimum (MI vs bilinear)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=positive_int, default=DEFAULT_INSTANCES,
                        help=f"number of embedded random instances (default {DEFAULT_INSTANCES})")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the instance set and the local starts")
    parser.add_argument("--time-limit", type=time_limit, default=30.0,
                        help="seconds per MI / global solve (default 30)")
    parser.add_argument("--bounds", choices=STAGES, default=None,
                        help="pre-activation bounds: interval arithmetic, then LP tightening, then per-neuron MILP "
                             "tightening (OBBT); each stage starts from the one before (default interval)")
    parser.add_argument("--tighten", action="store_true", help="alias of --bounds lp")
    parser.add_argument("--obbt-time", type=positive_float, default=OBBT_TIME, metavar="SECONDS",
                        help=f"--bounds obbt: time budget of each per-neuron MILP (default {OBBT_TIME:g} s); a solve "
                             "stopped at it gives its dual bound, still sound")
    parser.add_argument("--no-start", action="store_true",
                        help="do not hand the best local-method or sampled point to the MI solvers as a start")
    parser.add_argument("--loss", choices=("l1", "l2"), default="l1", help="recovery loss: l1 (MILP) or l2 (MIQP)")
    parser.add_argument("--starts", type=nonnegative_int, default=5,
                        help="random starts of the AL method and Adam (default 5)")
    parser.add_argument("--backends", default="",
                        help="comma-separated MI backends (default: every installed mixed-integer backend); BAB "
                             "adds the ReLU-split branch and bound (output-bound problem only; proves (i) and (ii) by "
                             "one tree)")
    parser.add_argument("--no-adam", action="store_true", help="skip the Adam baseline of the training problems")
    parser.add_argument("--relu-split", action="store_true",
                        help="SCIP's solve of (ii) branches by ReLU splits (z of the unit with the largest intercept "
                             "score, at 0) and tries the forward pass of every node LP's input (output-bound "
                             "problems only; SCIP still bounds and proves (ii) itself)")
    parser.add_argument("--json", default="", help="write every result to this JSON file")
    parser.add_argument("--plot", default="", help="write plots (PNG) to this directory")
    scaling = parser.add_argument_group("scaling study")
    scaling.add_argument("--scaling", action="store_true",
                         help="time to proved optimality (or gap at --time-limit) of output bounds of random 8-...-1 "
                              "networks of 2-3 hidden layers, 16 to 256 hidden units, per bound stage and solver "
                              "(and OMLT + HiGHS where installed); each configuration stops after its first size "
                              "not closed; resumable (--store)")
    scaling.add_argument("--quick", action="store_true", help="--scaling on two small networks (well under a minute)")
    scaling.add_argument("--configs", default="", metavar="LIST",
                         help="--scaling with only these configurations: comma-separated SOLVER or STAGE:SOLVER, "
                              "e.g. lp:BAB,OMLT (default: all; stored cells of the others are kept)")
    mnist = parser.add_argument_group("MNIST logit gap (OMLT's notebook problem)")
    mnist.add_argument("--mnist", action="store_true",
                       help="784-50-50-10 trained on the first 8,000 t10k images: max logit(label+1) - logit(label) "
                            "over the L-inf ball around a test image, (i) against (ii), OMLT + HiGHS beside it")
    mnist.add_argument("--epsilon", type=positive_float, default=MNIST_EPSILON,
                       help=f"radius of the L-inf ball (default {MNIST_EPSILON:g}), intersected with [0, 1]")
    mnist.add_argument("--image", type=nonnegative_int, default=0, help="index among the 2,000 test images")
    study = parser.add_argument_group("running the embedded set as a resumable study")
    study.add_argument("--store", default="",
                       help="SQLite results store; finished instances are kept and skipped on a rerun "
                            "(default results/verify.sqlite)")
    study.add_argument("--workers", type=positive_int, default=1,
                       help="instances at once in local processes (default 1)")
    study.add_argument("--scheduler", type=scheduler_url, default=None, metavar="tcp://HOST:PORT",
                       help="run the instances on Dask")
    study.add_argument("--case-timeout", type=positive_float, default=None, metavar="SECONDS",
                       help="stop an instance after this long and record it as timeout")
    user = parser.add_argument_group("your own network")
    user.add_argument("--network", default="",
                      help="network file instead of the random set: .npz (W1, b1, ..., WL, bL) or .onnx (Gemm or "
                           "MatMul+Add and Relu nodes); .pt/.pth pickles are refused")
    user.add_argument("--problem", choices=KINDS, default="recovery", help="reference problem for --network")
    user.add_argument("--A", default="", help="measurement matrix A.npy, shape (m, n_L) (recovery)")
    user.add_argument("--y", default="", help="measurements y.npy, shape (m,) (recovery)")
    user.add_argument("--box", type=positive_float, default=1.0, help="input box [-B, B] (default 1)")
    user.add_argument("--k", type=nonnegative_int, default=0, help="output index of the bound problem (default 0)")
    user.add_argument("--sense", choices=("max", "min"), default="max", help="bound problem: max or min")
    user.add_argument("--samples", type=positive_int, default=6, help="training: samples drawn in the box (default 6)")
    user.add_argument("--weight-bound", type=nonnegative_float, default=0.0,
                      help="training: |W1|,|b1| bound (default: the teacher's largest first-layer entry)")
    parser.set_defaults(func=run)


# ====================================================================== scaling study
#: (bound stage, solver) of every configuration of the scaling study; "SCIP relaxed" is version (ii), and
#: "OMLT+HIGHS" the optional peer (its own interval bounds), run only where OMLT is installed.
SCALING_CONFIGS = [(stage, solver) for stage in STAGES for solver in ("HIGHS", "SCIP", "SCIP relaxed")]
#: The ReLU-split branch and bound from LP bounds (it tightens the later layers' root bounds itself); it proves
#: (i) and (ii) by one tree, so in the (i)-against-(ii) summary it is left out like OMLT.
SCALING_CONFIGS.append(("lp", BAB))
OMLT_CONFIG = ("omlt", "OMLT+HIGHS")
#: Hidden units in all, per number of hidden layers (n0 = 8 inputs, equal widths, one output, box [-1, 1]).
#: Each configuration runs a series in increasing size and stops after the first size it does not close.
SCALING_SERIES = {2: (16, 32, 48, 64, 96, 128, 256), 3: (24, 48, 96)}
SCALING_QUICK = {2: (8, 16)}
SCALING_INPUTS = 8
SCALING_FIGURES = {"closed": "INTEGER", "state": "TEXT", "binaries": "INTEGER", "bounds_s": "REAL",
                   "solve_s": "REAL", "total_s": "REAL", "incumbent": "REAL", "bound": "REAL", "gap": "REAL",
                   "hit_limit": "INTEGER", "result": "TEXT"}
SCALING_TIMING = ("bounds_s", "solve_s", "total_s")


def scaling_problem(depth: int, units: int) -> dict:
    """The network of one point of the scaling study: ``8-w-...-w-1`` with ``depth`` hidden layers of
    ``w = units // depth``, He weights seeded by ``(depth, units)``."""
    width = units // depth
    return {"depth": depth, "units": width * depth, "widths": [SCALING_INPUTS, *([width] * depth), 1],
            "seed": 1000 * depth + units, "box": 1.0, "k": 0, "sense": "max"}


def _cached_bounds(spec: dict, stage: str, obbt_time: float, cache: str | None) -> mi.Bounds:
    """Bounds of stage ``stage`` for the network of ``spec``, kept in ``cache`` (a folder) so that the three
    solvers of one stage share one computation; the stage records keep the seconds of that computation."""
    network = ReluNetwork.random(spec["widths"], seed=spec["seed"])
    key = json_text({"widths": spec["widths"], "seed": spec["seed"], "box": spec["box"], "stage": stage,
                     "obbt_time": obbt_time if stage == "obbt" else None})
    path = None
    if cache:
        import hashlib

        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, hashlib.sha256(key.encode()).hexdigest()[:20] + ".json")
        if os.path.exists(path):
            with open(path) as handle:
                stored = json.load(handle)
            return mi.Bounds([np.array(x) for x in stored["lower"]], [np.array(x) for x in stored["upper"]],
                             stored["method"], stored["seconds"], stored["solves"], stored["failures"],
                             stored["stages"])
    bounds = staged_bounds(network, -spec["box"], spec["box"], stage, per_neuron_time=obbt_time)
    if path:
        with atomic_open(path, "w") as handle:
            handle.write(json_text({"lower": [x.tolist() for x in bounds.lower],
                                    "upper": [x.tolist() for x in bounds.upper], "method": bounds.method,
                                    "seconds": bounds.seconds, "solves": bounds.lp_solves,
                                    "failures": bounds.failures, "stages": bounds.stages}))
    return bounds


def run_scaling_case(case) -> dict:
    """Runner entry point of the scaling study: one network, one bound stage, one solver."""
    spec, settings = case.problem, case.settings
    network = ReluNetwork.random(spec["widths"], seed=spec["seed"])
    time_limit = settings["time_limit"]
    with single_threaded(), recorded_warnings() as caught:
        if case.backend == OMLT_CONFIG[1]:
            from validation.baselines import omlt

            peer = omlt.output_bound(network, -spec["box"], spec["box"], k=spec["k"], time_limit=time_limit)
            forward = (float(network.forward(peer["point"][:, None])[spec["k"], 0])
                       if peer["point"] is not None else None)
            # its incumbent is judged by the forward pass of its input, as ours are
            consistent = forward is not None and peer["objective"] is not None and \
                abs(forward - peer["objective"]) <= _tolerance(abs(forward), 1e-6 * (1 + abs(forward)))
            result = {"state": "proved" if peer["proved"] and consistent else
                      ("inaccurate" if peer["proved"] else f"stopped: {peer['termination']}"),
                      "objective": float("nan") if forward is None else forward, "bound": peer["bound"],
                      "seconds": peer["build_s"] + peer["solve_s"], "build_s": peer["build_s"],
                      "termination": peer["termination"]}
            binaries, bounds_s, hit_limit = peer["binaries"], 0.0, 0
        else:
            bounds = _cached_bounds(spec, settings["bounds"], settings["obbt_time"], settings.get("cache"))
            problem = mi.OutputBound(network, spec["box"], k=spec["k"], sense=spec["sense"], bounds=bounds)
            start = problem.start_point(best_start(problem, list(sampled_inputs(problem).T))[0])
            relaxed = case.backend == "SCIP relaxed"
            if case.backend == BAB:
                result = solve_bab(problem, time_limit, start)
            else:
                result = solve_version(problem, "SCIP" if relaxed else case.backend, relaxed=relaxed,
                                       time_limit=time_limit, start=start)
            result["stages"] = bounds.stages
            binaries, bounds_s = problem.model.n_binary, bounds.seconds
            hit_limit = sum(stage.get("hit_limit", 0) for stage in bounds.stages)
    result["warnings"] = [f"{category.__name__}: {message}" for category, message in caught]
    incumbent, bound = result["objective"], result["bound"]
    gap = (bound - incumbent) if bound is not None and np.isfinite(incumbent) else None
    return {"closed": int(result["state"] == "proved"), "state": result["state"], "binaries": int(binaries),
            "bounds_s": float(bounds_s), "solve_s": float(result["seconds"]),
            "total_s": float(bounds_s + result["seconds"]),
            "incumbent": float(incumbent) if np.isfinite(incumbent) else None,
            "bound": None if bound is None else float(bound), "gap": gap, "hit_limit": int(hit_limit),
            "result": json_text(result)}


def _scaling_configs() -> list[tuple[str, str]]:
    from validation.baselines import omlt

    configs = list(SCALING_CONFIGS)
    if omlt.available():
        configs.append(OMLT_CONFIG)
    else:
        print(f"OMLT peer not installed: its column is left out ({omlt.INSTALL})")
    return configs


def select_configs(configs: list[tuple[str, str]], selection: str) -> list[tuple[str, str]]:
    """The configurations named by ``--configs`` (comma-separated ``SOLVER`` or ``STAGE:SOLVER``, any case;
    ``OMLT`` names OMLT + HiGHS), in the study's order; all of them when ``selection`` is empty."""
    if not selection.strip():
        return configs

    def names(config):
        stage, solver = config
        solver = "OMLT" if config == OMLT_CONFIG else solver
        return {solver.lower(), f"{stage}:{solver}".lower()}

    wanted = [item.strip().lower() for item in selection.split(",") if item.strip()]
    unknown = [item for item in wanted if not any(item in names(config) for config in configs)]
    if unknown:
        offered = ", ".join(sorted({name for config in configs for name in names(config) if ":" in name or
                                    config == OMLT_CONFIG}))
        raise ProblemError(f"--configs names {unknown}, which the scaling study does not run here; choose from "
                           f"{offered} (or a solver alone; OMLT needs `make omlt`).")
    return [config for config in configs if any(item in names(config) for item in wanted)]


def run_scaling(args) -> int:
    """``verify --scaling``: every configuration over its series of sizes, stored as each case finishes."""
    from validation.runner import Case, Study, default_store, read_results, run_study

    series = SCALING_QUICK if args.quick else SCALING_SERIES
    time_limit = args.time_limit
    name = "verify_scaling_quick" if args.quick else "verify_scaling"
    store = args.store or default_store(name)
    json_path = output_file(args.json, "--json") if args.json else ""
    plot_dir = output_directory(args.plot, "--plot") if args.plot else ""
    configs = select_configs(_scaling_configs(), args.configs)  # before the store is touched
    output_file(store, "--store")
    settings = {"time_limit": time_limit, "obbt_time": args.obbt_time, "cache": store + ".bounds"}
    started = time.perf_counter()
    rows, failures = [], []
    for depth, sizes in series.items():
        alive = list(configs)
        for units in sizes:
            if not alive:
                break
            spec = scaling_problem(depth, units)
            cases = [Case(problem=spec, backend=solver, settings={**settings, "bounds": stage}, seed=0)
                     for stage, solver in alive]
            study = Study(name, cases, run="validation.verify:run_scaling_case", figures=SCALING_FIGURES,
                          timing=SCALING_TIMING)
            run_study(study, store=store, workers=args.workers, scheduler=args.scheduler,
                      case_timeout=args.case_timeout or max(600.0, 4 * time_limit))
            stored = {row["case_id"]: row for row in read_results(store, name)}
            still = []
            for case, config in zip(cases, alive):
                row = stored.get(case.case_id)
                if row is None:
                    continue
                record = {"depth": depth, "units": spec["units"], "widths": spec["widths"], "stage": config[0],
                          "solver": config[1], "status": row["status"], "message": row["message"],
                          **{key: row.get(key) for key in SCALING_FIGURES if key != "result"}}
                if row["status"] == "ok":
                    record["result"] = json.loads(row["result"])
                else:
                    failures.append(f"{'-'.join(map(str, spec['widths']))} {config[0]} {config[1]}: "
                                    f"{row['status']}: {row['message']}")
                rows.append(record)
                if row["status"] == "ok" and row["closed"]:
                    still.append(config)
            alive = still
    elapsed = time.perf_counter() - started
    print(format_scaling(rows, configs))
    for line in scaling_summary(rows, configs, time_limit):
        print(line)
    print(f"wall time {elapsed:.1f} s")
    if json_path:
        document = {"settings": {k: v for k, v in vars(args).items() if k != "func"}, "time_limit": time_limit,
                    "series": {str(k): list(v) for k, v in series.items()}, "wall_seconds": elapsed,
                    "configs": [list(config) for config in configs], "rows": rows, "failures": failures,
                    "largest_closed": largest_closed(rows, configs)}
        with atomic_open(json_path, "w") as handle:
            handle.write(json_text(document, indent=1))
        print(f"wrote {json_path}")
    if plot_dir:
        print(f"wrote {write_scaling_plot(rows, configs, plot_dir, time_limit)}")
    for line in failures:
        print(f"FAILED {line}")
    return 1 if failures else 0


def read_scaling(store: str, *, quick: bool = False) -> list[dict]:
    """The stored rows of the scaling study (each with its network's depth, units, stage and solver)."""
    from validation.runner import read_results

    rows = []
    for row in read_results(store, "verify_scaling_quick" if quick else "verify_scaling", missing_ok=True):
        problem, settings = json.loads(row["problem"]), json.loads(row["settings"])
        rows.append({"depth": problem["depth"], "units": problem["units"], "stage": settings["bounds"],
                     "solver": row["backend"], "status": row["status"],
                     **{key: row[key] for key in SCALING_FIGURES if key != "result"}})
    return rows


def _label(config) -> str:
    return f"{config[1]} ({config[0]})" if config[0] != "omlt" else config[1]


def _scaling_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row["status"] != "ok":
        return row["status"]
    if row["closed"]:
        return f"{row['total_s']:.1f} s"
    if row["incumbent"] is None or row["bound"] is None:
        return f"not proved ({row['state']})"
    return f"gap {row['bound'] - row['incumbent']:.3g} ({row['incumbent']:.4g}/{row['bound']:.4g})"


def format_scaling(rows: list[dict], configs) -> str:
    """One line per network, one column per configuration: time to proved optimality (bounds + solve) or the
    gap at the limit (incumbent/bound), and the binaries left after each bound stage."""
    networks = sorted({(row["depth"], row["units"]) for row in rows})
    header = ["network", "units", *[f"bin {stage}" for stage in (*STAGES, "omlt")], *[_label(c) for c in configs]]
    lines = []
    for depth, units in networks:
        mine = [row for row in rows if (row["depth"], row["units"]) == (depth, units)]
        binaries = {row["stage"]: row["binaries"] for row in mine if row["binaries"] is not None}
        lines.append(["-".join(map(str, mine[0]["widths"])), str(units),
                      *[str(binaries.get(stage, "-")) for stage in (*STAGES, "omlt")],
                      *[_scaling_cell(next((row for row in mine if (row["stage"], row["solver"]) == config), None))
                        for config in configs]])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    return "\n".join(out + [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines])


def largest_closed(rows: list[dict], configs) -> dict[str, dict]:
    """Per configuration and depth, the largest number of hidden units it closed (proved optimal)."""
    result = {}
    for config in configs:
        for depth in sorted({row["depth"] for row in rows}):
            closed = [row["units"] for row in rows if (row["stage"], row["solver"]) == config
                      and row["depth"] == depth and row.get("closed")]
            result.setdefault(_label(config), {})[str(depth)] = max(closed) if closed else 0
    return result


def scaling_summary(rows: list[dict], configs, time_limit: float) -> list[str]:
    lines = [f"largest size closed (proved optimal) within {time_limit:g} s, hidden units per depth:"]
    for label, per_depth in largest_closed(rows, configs).items():
        lines.append(f"  {label}: " + ", ".join(f"depth {d}: {u}" for d, u in per_depth.items()))
    # (i) against (ii) per network, with the three verdicts
    for depth, units in sorted({(row["depth"], row["units"]) for row in rows}):
        mine = {(row["stage"], row["solver"]): row for row in rows
                if (row["depth"], row["units"]) == (depth, units) and row.get("result")}
        relaxed = [row["result"] for (stage, solver), row in mine.items() if solver == "SCIP relaxed"]
        binary = [row["result"] for (stage, solver), row in mine.items() if solver in ("HIGHS", "SCIP")]
        if not relaxed or not binary:
            continue
        best_relaxed = _restored(max(relaxed, key=lambda result: result["state"] == "proved"))
        verdicts = [compare(_restored(result), best_relaxed)["verdict"] for result in binary if "interval" in result]
        if verdicts:
            counts = {verdict: verdicts.count(verdict) for verdict in VERDICTS if verdicts.count(verdict)}
            lines.append(f"  {depth} hidden layers, {units} units: (i) against (ii): "
                         + ", ".join(f"{verdict} {count}" for verdict, count in counts.items()))
    return lines


def _restored(result: dict) -> dict:
    """A stored result with its certified interval's missing ends (JSON null) back to ``±inf``."""
    lo, hi = result["interval"]
    return {**result, "interval": [-np.inf if lo is None else lo, np.inf if hi is None else hi]}


def write_scaling_plot(rows: list[dict], configs, directory: str, time_limit: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"interval": "o", "lp": "s", "obbt": "^", "omlt": "x"}
    colours = {"HIGHS": "C0", "SCIP": "C1", "SCIP relaxed": "C2", "OMLT+HIGHS": "C3", BAB: "C4"}
    for config in configs:
        mine = [row for row in rows if (row["stage"], row["solver"]) == config and row["status"] == "ok"]
        closed = [(row["binaries"], row["total_s"]) for row in mine if row["closed"]]
        stopped = [(row["binaries"], row["total_s"]) for row in mine if not row["closed"]]
        if closed:
            ax.scatter(*zip(*closed), marker=markers[config[0]], color=colours[config[1]], label=_label(config), s=28)
        if stopped:  # hollow markers ("x" has no face: drawn thin instead)
            hollow = ({"facecolors": "none", "edgecolors": colours[config[1]]} if markers[config[0]] != "x"
                      else {"color": colours[config[1]], "linewidths": 0.6})
            ax.scatter(*zip(*stopped), marker=markers[config[0]], s=40, **hollow)
    ax.axhline(time_limit, color="k", lw=0.6, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("binaries after bound tightening")
    ax.set_ylabel("bounds + solve time [s] (hollow: not proved at the limit)")
    ax.legend(fontsize=7, ncol=2)
    path = os.path.join(directory, "scaling_time_vs_binaries.png")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# ====================================================================== MNIST logit gap (OMLT's notebook problem)
MNIST_WIDTHS = (784, 50, 50, 10)
MNIST_EPSILON = 0.05


def mnist_network(store_dir: str, seed: int = 0, seconds: float = 60.0) -> tuple[ReluNetwork, dict]:
    """A 784-50-50-10 network trained with Adam (squared loss on one-hot targets) on the first 8,000 images of
    the t10k split, kept in ``store_dir`` (trained once); returns it with its test accuracy on the last 2,000.
    Raises ``ProblemError`` when the MNIST folder is absent (no fallback: the problem is MNIST's)."""
    from validation.baselines.adam import train_adam
    from validation.datasets import _MNIST_TEST, _find, default_mnist_dir, load_mnist, read_idx

    data = load_mnist(allow_fallback=False)
    labels = read_idx(_find(default_mnist_dir(), _MNIST_TEST[1])).astype(int)
    train_labels, test_labels = labels[:8000], labels[-2000:]
    path = os.path.join(store_dir, f"mnist_784_50_50_10_seed{seed}.npz")
    info = {"source": data.source, "path": path}
    if os.path.exists(path):
        network = ReluNetwork.load(path)
    else:
        onehot = np.eye(10)[train_labels].T
        started = time.perf_counter()
        trained = train_adam(data.train.T, onehot, hidden=MNIST_WIDTHS[1:-1], seed=seed, time_budget=seconds,
                             standardize=False, init="ridge", dtype="float32", threads=1)
        network = trained["network"]
        info["train_seconds"] = time.perf_counter() - started
        os.makedirs(store_dir, exist_ok=True)
        network.save(path)
    info["test_accuracy"] = float(np.mean(np.argmax(network.forward(data.test.T), axis=0) == test_labels))
    return network, {**info, "test": data.test, "test_labels": test_labels}


def run_mnist(args) -> int:
    """``verify --mnist``: max logit(label+1) − logit(label) over the L∞ ball of radius ``--epsilon`` around a test
    image (within [0, 1]), solved to proven optimality, (i) against (ii), with OMLT + HiGHS beside it."""
    from validation.datasets import default_mnist_dir

    folder = default_mnist_dir()
    if folder is None or not os.path.isdir(folder):
        print(f"MNIST logit gap skipped: no MNIST folder ({folder or 'no data folder'}); it needs the t10k files.")
        return 0
    json_path = output_file(args.json, "--json") if args.json else ""
    store_dir = os.path.dirname(args.store) if args.store else "results"
    network, info = mnist_network(store_dir or ".", seed=args.seed)
    image, label = info["test"][args.image], int(info["test_labels"][args.image])
    target = (label + 1) % 10
    lower, upper = np.clip(image - args.epsilon, 0.0, 1.0), np.clip(image + args.epsilon, 0.0, 1.0)
    direction = np.zeros(10)
    direction[target], direction[label] = 1.0, -1.0
    print(f"network 784-50-50-10 ({info['path']}), test accuracy {info['test_accuracy']:.4f} on the last 2,000 "
          f"t10k images; test image {args.image} (label {label}), epsilon {args.epsilon:g}: "
          f"max logit({target}) - logit({label})")
    clock = time.perf_counter()
    bounds = staged_bounds(network, lower, upper, args.bounds, per_neuron_time=args.obbt_time)
    problem = mi.OutputBound(network, (lower, upper), direction=direction, sense="max", bounds=bounds)
    spec = {"id": 0, "kind": "bound", "mnist_image": args.image, "label": label, "target": target,
            "epsilon": args.epsilon}
    backends = installed_mi_backends(args.backends or "HIGHS")
    row = verify_instance(spec, problem, backends=backends, time_limit=args.time_limit, starts=args.starts,
                          rng=np.random.default_rng(args.seed), adam=False, give_start=not args.no_start,
                          relu_split=args.relu_split)
    ours = time.perf_counter() - clock
    print(format_table([row], backends))
    for line in extra_summary([row]):
        print(line)
    print(f"ours: bounds {bounds.seconds:.1f} s + solves, {ours:.1f} s in all (AL starts included)")
    document = {"settings": {k: v for k, v in vars(args).items() if k != "func"}, "network": info["path"],
                "test_accuracy": info["test_accuracy"], "row": row, "ours_seconds": ours}
    from validation.baselines import omlt

    if omlt.available():
        peer = omlt.logit_gap(network, lower, upper, target=target, label=label, time_limit=args.time_limit)
        forward = None if peer["point"] is None else float(direction @ network.forward(peer["point"][:, None])[:, 0])
        print(f"OMLT + HiGHS: {peer['termination']}, objective {peer['objective']} (forward pass of its input "
              f"{forward}), bound {peer['bound']}, {peer['binaries']} binaries, build {peer['build_s']:.1f} s, "
              f"solve {peer['solve_s']:.1f} s")
        document["omlt"] = {**{k: v for k, v in peer.items() if k != "point"}, "forward": forward}
    else:
        print(f"OMLT peer not installed ({omlt.INSTALL})")
    print(summary_line([row]))
    if json_path:
        with atomic_open(json_path, "w") as handle:
            handle.write(json_text(document, indent=1))
        print(f"wrote {json_path}")
    return 1 if row["verdict"] == "contradicted" else 0
