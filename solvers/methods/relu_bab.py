r"""ReLU-split branch and bound for the output-bound problem (DESIGN §5, problem 2), as complete verifiers do.

Problem: ``max`` (or ``min``) of ``aᵀ G(c)`` over the input box, ``G`` a ReLU network with fixed weights
(:class:`formulation.mixed_integer.OutputBound`). Internally everything is a maximisation of ``σ aᵀ G(c)``,
``σ = ±1``.

**Node.** A node is a box of pre-activation bounds ``l ≤ z ≤ u`` of every hidden unit. A unit with ``l ≥ 0``
is *active* (``x = z``), one with ``u ≤ 0`` *inactive* (``x = 0``); the others are unstable. Branching on an
unstable unit ``j`` makes two children, ``z_j ≥ 0`` (``l_j ← 0``) and ``z_j ≤ 0`` (``u_j ← 0``); then the
bounds of the later layers are re-tightened under the new fix, each step intersected with the bounds before:

* interval arithmetic (:func:`formulation.mixed_integer.affine_interval`) and, at every node, back-substitution
  of linear ReLU relaxations to the input (:func:`_linear_tighten`, a few small matrix products);
* at nodes of depth at most ``lp_depth``, by LP: max and min of every still unstable ``z`` of the second
  hidden layer on over the node LP, each bound the safe dual bound below;
* after the node LP, reduced-cost tightening (:func:`_reduced_cost_tighten`): bounds that every point *better
  than the incumbent* satisfies; a unit it makes stable is fixed and the node LP solved again.

Before the search, the root bounds of the second hidden layer on are tightened by this branch and bound itself
on the network truncated after each layer (max and min of each unstable ``z``, ``root_unit_time`` seconds each,
the sound bound reached kept; :func:`_bab_bounds`), which is OBBT with this method as its solver.

**Node LP** (the triangle relaxation, solved with HiGHS, warm-started from the parent's final basis):

.. math::

    \max\ σ aᵀ(W_L x_{L-1} + b_L)\quad\text{s.t.}\quad c \in [c_{lo}, c_{hi}],\ z_k = W_k x_{k-1} + b_k,\
    l \le z \le u,\ x \ge 0,\ x \ge z,\ x \le \tfrac{u}{u - l}(z - l)\ \text{(unstable)},

with ``x = z`` (active) and ``x = 0`` (inactive). It is, at the same time,

* the LP relaxation (``d ∈ [0, 1]``) of the big-M model of version (i) with the node's bounds: for one unit,
  eliminating ``d`` from ``x ≥ 0, x ≥ z, x ≤ z − l(1 − d), x ≤ u d`` leaves exactly the triangle, and a unit
  split at 0 is the binary branch ``d = 1`` / ``d = 0``;
* the McCormick relaxation of version (ii) at the node after a spatial branch of ``z`` at 0: with ``w = d z``
  the envelopes over ``[l, u] × [0, 1]`` are ``w ≥ l d``, ``w ≥ u d + z − u``, ``w ≤ u d``,
  ``w ≤ l d + z − l``, and the sign constraints ``d z ≥ 0``, ``(1 − d) z ≤ 0`` become ``w ≥ 0``, ``w ≥ z``;
  the first two envelopes are implied by the last two rows, the rest is the big-M LP with ``x = w``. On
  ``z ∈ [0, u]`` the envelopes give ``x = z``, on ``z ∈ [l, 0]`` they give ``x = 0``.

So one tree proves (i) and (ii) by the *same* argument; it is not an independent check of one against the
other.

**Sound bounds.** The node bound is never the LP's reported value and never an incumbent: from the LP's row
duals ``y`` (any ``y`` will do), with the node's row bounds ``[r_lo, r_hi]`` and column bounds
``[v_lo, v_hi]`` (all finite) and ``ρ = c − Aᵀy``,

.. math::

    σ aᵀ G(c) \le \sum_i \max(y_i r_{lo,i},\ y_i r_{hi,i}) + \sum_j \max(ρ_j v_{lo,j},\ ρ_j v_{hi,j}) + c_0

for every feasible point (weak duality written out for the box; rounding of this sum is covered by an outward
move of ``1e-12`` of the sum of its absolute terms). A node whose LP HiGHS calls infeasible is dropped only
when HiGHS's dual ray certifies it the same way (the sum above with ``c = 0`` is negative); otherwise the node
keeps its interval bound. Incumbents are float64 forward passes of input points (the LP's input at every node,
the given starting inputs, and a local search that solves the exact LP over the linear region of an improving
point's activation pattern), so they are values of the network, never of a model. The pre-activation bounds
the relaxation starts from are those of ``problem.bounds`` (interval arithmetic and LP bounds in floating point,
as everywhere in this project).

**Search.** Best first on the node bound; a node is pruned when its bound is at most
``incumbent + gap_abs + gap_rel·|incumbent|``. Branching: the unstable unit with the largest
``λ_j · u_j (−l_j)/(u_j − l_j)``, where ``λ_j ≥ 0`` is the dual of its triangle row. That term is what the
triangle's intercept contributes to the node's dual bound, and both children remove it (their upper row is
``x ≤ z`` or ``x ≤ 0``), so it estimates the bound improvement of the split (as BaBSR does with its dual
variables); when every such score is 0, the largest triangle height ``u(−l)/(u − l)`` of the earliest layer.
The run stops when no node is open (proved), at ``time_limit`` or at ``max_nodes`` (not proved: the result
is the interval ``[incumbent, bound]``).
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sps

import solvers
from formulation.mixed_integer import Bounds, OutputBound, affine_interval, relax_relu_coefficients
from formulation.network import ReluNetwork
from formulation.results import ProblemError

__all__ = ["relu_bab", "BabResult", "GAP_REL", "GAP_ABS", "LP_DEPTH"]

#: Relative and absolute gap at which a node is pruned (and the run proved): 1e-7 relative keeps a proved
#: interval well inside ``verify``'s agreement tolerance (1e-6 relative + 1e-8).
GAP_REL = 1e-7
GAP_ABS = 1e-9
#: Nodes of depth at most this get LP re-tightening of the later layers' bounds (the root always does).
LP_DEPTH = 2
#: Seconds per bound of the root tightening of the second hidden layer on by this branch and bound itself
#: (max and min of each unstable ``z`` over the network truncated after its layer, the bound reached at the
#: budget kept): much tighter than the LP's bounds, as OBBT with a MILP solver but cheaper.
ROOT_UNIT_TIME = 0.5
#: Re-solves of a node LP after reduced-cost tightening made units stable (the last solve is not tightened, so
#: the node's LP always matches its stable units).
RESOLVES = 3
#: Seconds of a first run without that root tightening (networks of two hidden layers and more): an instance it
#: closes never pays for the tightening (on 8-16-16-16-1 the tightening took 9.8 s, the search 1.3 s without it).
PROBE_TIME = 5.0
#: HiGHS's primal and dual feasibility tolerances of the node LPs: a wrong-signed reduced cost of size ε loosens
#: the safe bound by ε times a column range, so the default 1e-7 would cost ~1e-5 on the networks here.
LP_TOLERANCE = 1e-9
#: HiGHS options of the node LPs (small LPs re-solved from a nearby basis: no presolve).
LP_OPTIONS = {"presolve": "off", "primal_feasibility_tolerance": LP_TOLERANCE,
              "dual_feasibility_tolerance": LP_TOLERANCE}
#: Relative outward move of the safe bound for the rounding of its sum and of its reduced costs (the size of
#: every term, and of ``(|cost| + |A|ᵀ|y|)·max|v|`` per column, which bounds the error of ``cost − Aᵀy``).
ROUNDING = 1e-12


@dataclass
class BabResult:
    """Outcome of :func:`relu_bab`, in the problem's own sense (max: ``incumbent ≤ optimum ≤ bound``; min:
    ``bound ≤ optimum ≤ incumbent``).

    Attributes
    ----------
    status : str
        ``"optimal"`` (no open node: proved to the gap), ``"time_limit"`` or ``"node_limit"`` (not proved), or
        ``"inconsistent_bounds"`` (the root was found empty, which a box never is: the unit bounds given in
        ``problem.bounds`` exclude feasible points; not proved, bound ``+inf``).
    incumbent : float
        Best forward-pass value found (``nan`` if none).
    point : ndarray or None
        Its input.
    bound : float
        Sound bound on the optimum (dual side).
    nodes : int
        Nodes whose LP was solved (root included).
    """

    status: str
    incumbent: float
    point: np.ndarray | None
    bound: float
    nodes: int
    seconds: float
    root_bound: float
    open_nodes: int
    max_open: int
    pruned: int
    infeasible: int
    lp_solves: int
    tighten_solves: int
    leaf_gaps: int
    gap_tolerance: float
    sense: str
    extras: dict = field(default_factory=dict)

    @property
    def proved(self) -> bool:
        return self.status == "optimal"


class _NodeLP:
    """The triangle-relaxation LP of a network in highspy, changed in place from node to node."""

    def __init__(self, highspy, network, box_lower, box_upper, objective_weights, objective_offset):
        self.highspy = highspy
        self.network = network
        hidden = network.widths[1:-1]
        n0 = network.widths[0]
        self.n0 = n0
        self.widths = hidden
        self.offsets = np.concatenate([[0], np.cumsum(hidden)]).astype(int)  # unit offsets per hidden layer
        units = int(self.offsets[-1])
        self.units = units
        # columns: c, then per hidden layer z_k, x_k
        self.zcol = np.zeros(units, dtype=np.int32)
        self.xcol = np.zeros(units, dtype=np.int32)
        column = n0
        for k, width in enumerate(hidden):
            sl = slice(self.offsets[k], self.offsets[k + 1])
            self.zcol[sl] = np.arange(column, column + width)
            self.xcol[sl] = np.arange(column + width, column + 2 * width)
            column += 2 * width
        self.ncol = column
        # rows: per hidden unit an equality z - W x_prev = b, then x - z >= 0, then the triangle x - s z <= -s l
        rows, cols, vals = [], [], []
        eq_rhs = np.zeros(units)
        for k, width in enumerate(hidden):
            W, b = network.weights[k], network.biases[k]
            previous = np.arange(n0) if k == 0 else self.xcol[self.offsets[k - 1]:self.offsets[k]]
            for j in range(width):
                unit = self.offsets[k] + j
                nonzero = np.flatnonzero(W[j])
                rows += [unit] * (1 + nonzero.size)
                cols += [self.zcol[unit], *previous[nonzero]]
                vals += [1.0, *(-W[j, nonzero])]
                eq_rhs[unit] = b[j]
        lower_rows = units + np.arange(units)
        rows += [*lower_rows, *lower_rows]
        cols += [*self.xcol, *self.zcol]
        vals += [1.0] * units + [-1.0] * units
        self.tri_rows = 2 * units + np.arange(units, dtype=np.int32)
        rows += list(self.tri_rows)
        cols += list(self.xcol)
        vals += [1.0] * units
        self.nrow = 3 * units
        # the static part (the triangle rows' z coefficients live in self.tri_coef)
        self.A = sps.csr_matrix((vals, (rows, cols)), shape=(self.nrow, self.ncol))
        self.AT = self.A.T.tocsr()
        self.abs_AT = abs(self.AT)  # for the rounding of the reduced costs in safe_bound
        self.tri_coef = np.zeros(units)
        inf = highspy.kHighsInf
        self.row_lo = np.concatenate([eq_rhs, np.zeros(units), np.full(units, -np.inf)])
        self.row_hi = np.concatenate([eq_rhs, np.full(units, np.inf), np.zeros(units)])
        self.col_lo = np.zeros(self.ncol)
        self.col_hi = np.zeros(self.ncol)
        self.col_lo[:n0], self.col_hi[:n0] = box_lower, box_upper
        last = self.xcol[self.offsets[-2]:self.offsets[-1]]
        self.objective = np.zeros(self.ncol)
        self.objective[last] = objective_weights
        self.offset = float(objective_offset)

        lp = highspy.HighsLp()
        full = self.A.tocsc()
        lp.num_col_, lp.num_row_ = self.ncol, self.nrow
        lp.col_cost_ = self.objective
        lp.col_lower_ = self.col_lo.copy()
        lp.col_upper_ = self.col_hi.copy()  # the node's columns are set by set_bounds
        lp.row_lower_ = np.where(np.isfinite(self.row_lo), self.row_lo, -inf)
        lp.row_upper_ = np.where(np.isfinite(self.row_hi), self.row_hi, inf)
        lp.offset_ = self.offset
        lp.sense_ = highspy.ObjSense.kMaximize
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = self.ncol, self.nrow
        lp.a_matrix_.start_ = full.indptr.astype(np.int32)
        lp.a_matrix_.index_ = full.indices.astype(np.int32)
        lp.a_matrix_.value_ = full.data.astype(float)
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        for key, value in LP_OPTIONS.items():
            if highs.setOptionValue(key, value) == highspy.HighsStatus.kError:
                raise ProblemError(f"HiGHS does not take the option {key}={value!r}.")
        highs.passModel(lp)
        self.highs = highs
        self.all_columns = np.arange(self.ncol, dtype=np.int32)

    # ---------------------------------------------------------------- node data
    def set_bounds(self, lower: np.ndarray, upper: np.ndarray) -> None:
        """Columns and triangle rows of the node with hidden pre-activation bounds ``[lower, upper]``."""
        active, inactive = lower >= 0, upper <= 0
        unstable = ~(active | inactive)
        self.col_lo[self.zcol], self.col_hi[self.zcol] = lower, upper
        self.col_lo[self.xcol] = np.where(active, lower, 0.0)
        self.col_hi[self.xcol] = np.where(inactive, 0.0, upper)
        span = np.where(unstable, upper - lower, 1.0)
        slope = np.where(unstable, upper / span, np.where(active, 1.0, 0.0))
        coef = -slope
        rhs = np.where(unstable, -slope * lower, 0.0)
        highs = self.highspy
        self.highs.changeColsBounds(self.ncol - self.n0, self.all_columns[self.n0:], self.col_lo[self.n0:],
                                    self.col_hi[self.n0:])
        for unit in np.flatnonzero(coef != self.tri_coef):
            self.highs.changeCoeff(int(self.tri_rows[unit]), int(self.zcol[unit]), float(coef[unit]))
        self.tri_coef = coef
        self.row_hi[self.tri_rows] = rhs
        self.highs.changeRowsBounds(self.units, self.tri_rows, np.full(self.units, -highs.kHighsInf), rhs)

    def set_cost(self, cost: np.ndarray) -> None:
        self.highs.changeColsCost(self.ncol, self.all_columns, cost)

    # ---------------------------------------------------------------- solving
    def solve(self, cost: np.ndarray, offset: float) -> tuple[str, float | None, np.ndarray | None, np.ndarray | None]:
        """Maximise ``costᵀv + offset``; returns ``(status, safe bound, column values, row duals)``. The safe
        bound is ``-inf`` for a certified infeasible node and None when no certificate could be read."""
        highs = self.highs
        highs.run()
        status = highs.getModelStatus()
        hs = self.highspy.HighsModelStatus
        if status == hs.kOptimal:
            solution = highs.getSolution()
            duals = np.asarray(solution.row_dual, dtype=float)
            bound = self.safe_bound(duals, cost, offset)
            return "optimal", bound, np.asarray(solution.col_value, dtype=float), duals
        if status == hs.kInfeasible:
            _, has_ray, ray = highs.getDualRay()
            if has_ray:
                ray = np.asarray(ray, dtype=float)
                if self.safe_bound(ray, np.zeros(self.ncol), 0.0, signs=(1.0, -1.0)) < 0:
                    return "infeasible", -np.inf, None, None
            return "infeasible (no certificate)", None, None, None
        return status.name, None, None, None

    def safe_bound(self, duals: np.ndarray, cost: np.ndarray, offset: float, signs=(1.0,)) -> float:
        """``max over the node's box`` of ``costᵀv`` bounded by weak duality with row multipliers ``duals``, see
        the module docstring; any multipliers give a valid bound. HiGHS's row duals of a maximisation are used
        as they come (``signs=(1,)``: then ``cost − Aᵀy`` are its reduced costs; a test checks the bound meets
        the LP optimum); a dual ray's sign is not fixed, so it is tried both ways."""
        best = np.inf
        self.last_reduced = None
        for sign in signs:
            y = sign * duals
            # a multiplier on a row side that is infinite is dropped (still a valid multiplier vector)
            y = np.where((y > 0) & ~np.isfinite(self.row_hi), 0.0, y)
            y = np.where((y < 0) & ~np.isfinite(self.row_lo), 0.0, y)
            rows = np.where(y > 0, y * np.where(np.isfinite(self.row_hi), self.row_hi, 0.0),
                            y * np.where(np.isfinite(self.row_lo), self.row_lo, 0.0))
            reduced = cost - self.AT @ y
            reduced[self.zcol] -= y[self.tri_rows] * self.tri_coef
            columns = np.where(reduced > 0, reduced * self.col_hi, reduced * self.col_lo)
            total = float(np.sum(rows) + np.sum(columns)) + offset
            magnitude = np.abs(cost) + self.abs_AT @ np.abs(y)
            magnitude[self.zcol] += np.abs(y[self.tri_rows] * self.tri_coef)
            size = np.maximum(np.abs(self.col_lo), np.abs(self.col_hi))
            size = np.where(np.isfinite(size), size, 0.0)  # an infinite column bound already makes `total` inf
            scale = float(np.sum(np.abs(rows)) + np.sum(np.abs(columns)) + abs(offset) + magnitude @ size)
            if total + ROUNDING * scale < best:
                best = total + ROUNDING * scale
                self.last_reduced = reduced
        return best

    def basis(self):
        return self.highs.getBasis()

    def set_basis(self, basis) -> None:
        if basis is not None:
            self.highs.setBasis(basis)


def _propagate(network, offsets, lower, upper, start_layer: int) -> bool:
    """Interval bounds of layers ``start_layer + 1 ..`` from the bounds of the layer before, intersected with
    the node's (in place). Returns False when some unit's bounds cross (the node holds no point)."""
    hidden = len(offsets) - 1
    for k in range(start_layer + 1, hidden):
        sl_prev = slice(offsets[k - 1], offsets[k])
        lo, up = affine_interval(network.weights[k], network.biases[k], np.maximum(lower[sl_prev], 0.0),
                                 np.maximum(upper[sl_prev], 0.0))
        sl = slice(offsets[k], offsets[k + 1])
        lower[sl] = np.maximum(lower[sl], lo)
        upper[sl] = np.minimum(upper[sl], up)
    return _consistent(lower, upper)


def _linear_tighten(network, offsets, lower, upper, center, radius) -> bool:
    r"""Bounds of the hidden layers from the second on by back-substitution of linear relaxations (in place).

    For a layer ``k`` and each of its units, ``z_k = W_k x_{k-1} + b_k`` is bounded above by replacing every
    ``x_m`` (``m < k``) by a linear bound in ``z_m`` chosen by the sign of its coefficient: the triangle's
    upper line ``x ≤ u (z − l)/(u − l)`` for a positive coefficient, the lower line ``x ≥ α z`` (``α = 1``
    when ``u > −l``, else 0) for a negative one, ``x = z`` (active) and ``x = 0`` (inactive) exactly; then
    ``z_m = W_m x_{m-1} + b_m`` down to the input, and the max over the box in closed form. The lower bound is
    the same for ``−z_k``. Every step is a valid inequality for the node's points, so the result is a sound
    bound, looser than the LP's and tighter than interval arithmetic under the fixes; it costs a few small
    matrix products. Returns False when some unit's bounds cross."""
    hidden = len(offsets) - 1
    for k in range(1, hidden):
        sl = slice(offsets[k], offsets[k + 1])
        for sign in (1.0, -1.0):
            coefficient = sign * network.weights[k]
            constant = sign * network.biases[k]
            for m in range(k - 1, -1, -1):
                relaxed, intercept = relax_relu_coefficients(coefficient, lower[offsets[m]:offsets[m + 1]],
                                                             upper[offsets[m]:offsets[m + 1]])
                constant = constant + intercept.sum(axis=1)
                constant = constant + relaxed @ network.biases[m]
                coefficient = relaxed @ network.weights[m]
            value = coefficient @ center + np.abs(coefficient) @ radius + constant
            value = value + ROUNDING * (1.0 + np.abs(coefficient) @ (np.abs(center) + radius) + np.abs(constant))
            if sign > 0:
                upper[sl] = np.minimum(upper[sl], value)
            else:
                lower[sl] = np.maximum(lower[sl], -value)
        if not _consistent(lower, upper):
            return False
    return True


def _reduced_cost_tighten(lp: _NodeLP, reduced: np.ndarray, lower, upper, slack: float) -> bool:
    r"""Bounds of the hidden ``z`` that every point of the node *better than the incumbent* satisfies (in place).

    With the multipliers of the safe bound ``B`` and their reduced costs ``ρ``, every point has
    ``objective ≤ B − |ρ_j| · dist_j``, ``dist_j`` the distance of ``v_j`` from the column bound where ``ρ_j v_j``
    is largest. A point above the incumbent ``T`` therefore has ``dist_j < (B − T)/|ρ_j| =: δ_j`` (reduced-cost
    tightening, as MIP solvers fix variables). On ``z_j``: ``ρ > 0`` gives ``z_j ≥ u_j − δ_j``, ``ρ < 0`` gives
    ``z_j ≤ l_j + δ_j``. On ``x_j = ReLU(z_j)`` (column ``[0, u_j]``): ``ρ > 0`` gives ``x_j ≥ u_j − δ_j``, so
    ``z_j ≥ u_j − δ_j`` when that is positive; ``ρ < 0`` gives ``x_j ≤ δ_j``, hence ``z_j ≤ δ_j``. Points cut
    off are no better than the incumbent, so the final bound ``max(incumbent, node bounds)`` stays sound.
    ``reduced`` must come from the LP of this node with the column bounds ``lp`` holds now.
    Returns False when no point of the node can beat the incumbent."""
    if slack < 0:
        return False
    tiny = 1e-12
    for columns, is_x in ((lp.zcol, False), (lp.xcol, True)):
        rho = reduced[columns]
        col_lo, col_hi = lp.col_lo[columns], lp.col_hi[columns]
        with np.errstate(divide="ignore", invalid="ignore"):
            reach = slack / np.abs(rho)
        reach = reach * (1 + tiny) + tiny
        up_side, down_side = rho > tiny, rho < -tiny
        if is_x:
            new_lo = np.where(up_side & (col_hi - reach > 0), col_hi - reach, -np.inf)
            new_hi = np.where(down_side, reach + col_lo, np.inf)
        else:
            new_lo = np.where(up_side, col_hi - reach, -np.inf)
            new_hi = np.where(down_side, col_lo + reach, np.inf)
        np.maximum(lower, new_lo, out=lower)
        np.minimum(upper, new_hi, out=upper)
    return _consistent(lower, upper)


def _consistent(lower, upper) -> bool:
    """False when bounds cross beyond rounding; crossings within rounding are closed to one point."""
    crossed = lower > upper
    if not np.any(crossed):
        return True
    slack = 1e-12 * (1.0 + np.abs(lower) + np.abs(upper))
    if np.any(lower[crossed] - upper[crossed] > slack[crossed]):
        return False
    middle = 0.5 * (lower[crossed] + upper[crossed])
    lower[crossed], upper[crossed] = middle, middle
    return True


def _bab_bounds(problem: OutputBound, lowers: list, uppers: list, unit_time: float, deadline: float) -> dict:
    """Root bounds of the hidden layers from the second on (in place) by :func:`relu_bab` on the network
    truncated after each layer: for every unit still unstable, the max of ``z_j`` (then its min unless the max
    proved ``z_j ≤ 0``), each run stopped at ``unit_time`` seconds and its sound bound kept (OBBT with the
    branch and bound as its solver; the later layer's interval bound is recomputed from the tightened one)."""
    network = problem.network
    clock = time.perf_counter()
    solves = stopped = 0
    for k in range(1, network.depth - 1):
        lo, up = affine_interval(network.weights[k], network.biases[k], np.maximum(lowers[k - 1], 0.0),
                                 np.maximum(uppers[k - 1], 0.0))
        lowers[k] = np.maximum(lowers[k], lo)
        uppers[k] = np.minimum(uppers[k], up)
        truncated = ReluNetwork(network.weights[:k + 1], network.biases[:k + 1])
        for unit in range(network.widths[k + 1]):
            for sense in ("max", "min"):
                remaining = deadline - time.perf_counter()
                if not (lowers[k][unit] < 0 < uppers[k][unit]) or remaining <= 0:
                    break
                direction = np.zeros(network.widths[k + 1])
                direction[unit] = 1.0
                sub = OutputBound(truncated, (problem.box_lower, problem.box_upper), direction=direction, sense=sense,
                                  bounds=Bounds(lowers[:k + 1], uppers[:k + 1]))
                result = relu_bab(sub, time_limit=min(unit_time, remaining), root_unit_time=None, polish_steps=0)
                solves += 1
                stopped += not result.proved
                if not np.isfinite(result.bound):
                    continue
                if sense == "max":
                    uppers[k][unit] = min(uppers[k][unit], result.bound)
                else:
                    lowers[k][unit] = max(lowers[k][unit], result.bound)
            if lowers[k][unit] > uppers[k][unit]:
                # two sound bounds of a unit that some input reaches can cross only by rounding: keep the hull
                lowers[k][unit], uppers[k][unit] = uppers[k][unit], lowers[k][unit]
    return {"seconds": time.perf_counter() - clock, "solves": solves, "stopped": stopped,
            "per_unit_time": unit_time}


def relu_bab(problem: OutputBound, *, time_limit: float, start_points=(), gap_rel: float = GAP_REL,
             gap_abs: float = GAP_ABS, lp_depth: int = LP_DEPTH, max_nodes: int | None = None,
             warm_start: bool = True, linear: bool = True, candidates: int = 1,
             reduced_costs: bool = True, polish_steps: int = 5,
             root_unit_time: float | None = ROOT_UNIT_TIME, probe_time: float | None = PROBE_TIME) -> BabResult:
    r"""Maximise (or minimise) the output of an :class:`OutputBound` problem by ReLU-split branch and bound.

    Parameters
    ----------
    problem : OutputBound
        Network, box, direction ``a``, sense, and the root pre-activation bounds (``problem.bounds``: interval,
        LP or OBBT; they are re-tightened at the root by LP anyway).
    time_limit : float
        Seconds (positive); the run stops there with status ``"time_limit"`` and the interval it reached.
    start_points : sequence of ndarray
        Inputs whose forward pass seeds the incumbent (e.g. the sampled and local-method starts of ``verify``).
    gap_rel, gap_abs : float
        Prune when ``bound ≤ incumbent + gap_abs + gap_rel·|incumbent|``.
    lp_depth : int
        LP re-tightening of the later layers' bounds at nodes of depth ≤ ``lp_depth`` (``-1``: never, not even
        at the root).
    max_nodes : int, optional
        Node limit (status ``"node_limit"``).
    warm_start : bool
        Start each node LP from its parent's final basis.
    linear : bool
        Back-substitution bounds of the later layers at every node.
    candidates : int
        Above 1: filtered strong branching on that many best dual scores (both children's LPs solved each).
    reduced_costs : bool
        Reduced-cost tightening after each node LP.
    polish_steps : int
        LPs of the local search for incumbents per improving point (0: none).
    root_unit_time : float or None
        Seconds per bound of the root tightening by this branch and bound on the truncated network (None: off).
    probe_time : float or None
        With ``root_unit_time``: seconds of a first run without the root tightening; a run it closes is returned.

    Returns
    -------
    BabResult

    Raises
    ------
    ProblemError
        ``problem`` is not an output bound, or ``time_limit`` is not a positive number.
    SolverNotFound
        HiGHS (highspy) is not installed.
    """
    if not isinstance(problem, OutputBound):
        raise ProblemError(f"The ReLU branch and bound solves the output-bound problem (OutputBound, `verify "
                           f"--problem bound`) only; got {type(problem).__name__}. Solve it with a MILP backend "
                           f"(HIGHS, SCIP) instead.")
    try:
        limit = float(time_limit)
    except (TypeError, ValueError):
        limit = float("nan")
    if not np.isfinite(limit) or limit <= 0:
        raise ProblemError(f"The branch and bound needs a positive time limit in seconds, got {time_limit!r}.")
    if max_nodes is not None and int(max_nodes) < 1:
        raise ProblemError(f"`max_nodes` must be at least 1, got {max_nodes!r}.")
    solvers.get_backend("HIGHS")  # SolverNotFound with the install command
    import highspy  # noqa: PLC0415 - an optional backend, checked just above

    clock = time.perf_counter()
    deadline = clock + limit
    network = problem.network
    probe = None
    if root_unit_time and network.depth > 2 and probe_time:
        # the root tightening pays only on hard instances: a short run without it first
        probe = relu_bab(problem, time_limit=min(float(probe_time), limit), start_points=start_points, gap_rel=gap_rel,
                         gap_abs=gap_abs, lp_depth=lp_depth, max_nodes=max_nodes, warm_start=warm_start,
                         linear=linear, candidates=candidates, reduced_costs=reduced_costs,
                         polish_steps=polish_steps, root_unit_time=None)
        probe.extras["probe"] = {"seconds": probe.seconds, "nodes": probe.nodes, "status": probe.status}
        if probe.status != "time_limit" or time.perf_counter() >= deadline:
            probe.seconds = time.perf_counter() - clock
            return probe
        if probe.point is not None:
            start_points = [*start_points, probe.point]
    hidden_lower = [lo.astype(float).copy() for lo in problem.bounds.lower[:-1]]
    hidden_upper = [up.astype(float).copy() for up in problem.bounds.upper[:-1]]
    tightening = {"seconds": 0.0, "solves": 0, "stopped": 0}
    if root_unit_time and network.depth > 2:
        tightening = _bab_bounds(problem, hidden_lower, hidden_upper, float(root_unit_time), deadline)
    sigma = 1.0 if problem.sense == "max" else -1.0
    weights = sigma * (problem.direction @ network.weights[-1])
    offset = sigma * float(problem.direction @ network.biases[-1])
    lp = _NodeLP(highspy, network, problem.box_lower, problem.box_upper, weights, offset)
    center = 0.5 * (problem.box_lower + problem.box_upper)
    radius = 0.5 * (problem.box_upper - problem.box_lower)
    offsets = lp.offsets
    cost = lp.objective.copy()

    best_value, best_point = -np.inf, None

    def consider(points: np.ndarray) -> bool:
        """Forward passes of ``points`` (columns); True when one of them became the incumbent."""
        nonlocal best_value, best_point
        points = np.clip(points, problem.box_lower[:, None], problem.box_upper[:, None])
        values = sigma * problem.evaluate_columns(points)
        index = int(np.argmax(values))
        if values[index] > best_value:
            best_value, best_point = float(values[index]), points[:, index].copy()
            return True
        return False

    def polish(point: np.ndarray) -> None:
        """Local search for incumbents: the LP over the linear region of ``point``'s activation pattern (every
        unit fixed to its sign at ``point``, inside the root bounds) is exact, and its optimum is the best input
        of that region; repeated from that optimum while it improves (at most ``polish_steps`` LPs)."""
        c = np.clip(point, problem.box_lower, problem.box_upper)
        for _ in range(polish_steps):
            Z = network.unrectify(c[:, None]).Z[:-1]
            active = np.concatenate([z[:, 0] > 0 for z in Z])
            lp.set_bounds(np.where(active, np.maximum(root_lower, 0.0), root_lower),
                          np.where(active, root_upper, np.minimum(root_upper, 0.0)))
            status, _, values, _ = lp.solve(cost, offset)
            counters["polish"] += 1
            if values is None or not consider(values[:lp.n0, None]):
                return
            c = best_point

    starts = [np.asarray(p, dtype=float).ravel() for p in start_points]
    if starts:
        consider(np.column_stack(starts))

    def tolerance() -> float:
        return gap_abs + gap_rel * abs(best_value) if np.isfinite(best_value) else 0.0

    def output_interval(lower, upper) -> float:
        sl = slice(offsets[-2], offsets[-1])
        return float(np.maximum(weights, 0) @ np.maximum(upper[sl], 0) - np.maximum(-weights, 0)
                     @ np.maximum(lower[sl], 0)) + offset + ROUNDING * (1 + abs(offset))

    counters = {"lp": 0, "tighten": 0, "pruned": 0, "infeasible": 0, "leaf_gaps": 0, "no_certificate": 0,
                "strong": 0, "polish": 0, "lp_failures": 0}
    closed_bound = -np.inf  # the largest bound of a node closed (pruned, or a leaf that could not be closed)

    def tighten(lower, upper) -> bool:
        """LP re-tightening of the unstable units of the second hidden layer on (in place); the LP's objective
        is restored on every way out."""
        try:
            return _tighten(lower, upper)
        finally:
            lp.set_cost(cost)

    def _tighten(lower, upper) -> bool:
        for k in range(1, len(offsets) - 1):
            lp.set_bounds(lower, upper)
            for unit in range(offsets[k], offsets[k + 1]):
                if time.perf_counter() > deadline:
                    return True
                for sign in (1.0, -1.0):
                    if not (lower[unit] < 0 < upper[unit]):
                        break
                    direction = np.zeros(lp.ncol)
                    direction[lp.zcol[unit]] = sign
                    lp.set_cost(direction)
                    status, bound, _, _ = lp.solve(direction, 0.0)
                    counters["tighten"] += 1
                    if status == "infeasible" and bound == -np.inf:
                        return False
                    if bound is None or not np.isfinite(bound):
                        continue
                    if sign > 0:
                        upper[unit] = min(upper[unit], bound)
                    else:
                        lower[unit] = max(lower[unit], -bound)
                if lower[unit] > upper[unit] and not _consistent(lower[unit:unit + 1], upper[unit:unit + 1]):
                    return False
            if not _propagate(network, offsets, lower, upper, k):
                return False
        lp.set_cost(cost)
        return True

    def evaluate(lower, upper, depth, basis):
        """Solve the node LP; returns ``(bound, branch unit or -1, basis)``, or None when the node is empty."""
        if linear and not _linear_tighten(network, offsets, lower, upper, center, radius):
            return None
        if depth <= lp_depth:
            if not tighten(lower, upper):
                return None
            lp.set_cost(cost)
        lp.set_bounds(lower, upper)
        if warm_start:
            lp.set_basis(basis)
        bound = np.inf
        for attempt in range(RESOLVES + 1):
            status, lp_bound, values, duals = lp.solve(cost, offset)
            counters["lp"] += 1
            interval = output_interval(lower, upper)
            if status == "infeasible" and lp_bound == -np.inf:
                return None
            if lp_bound is None:  # no optimum or no certificate: the interval bound keeps the node sound
                counters["no_certificate" if status.startswith("infeasible") else "lp_failures"] += 1
                bound = min(bound, interval)
                values = duals = None
                break
            bound = min(bound, lp_bound, interval)
            reduced = lp.last_reduced  # of this node's LP (polishing below solves other LPs)
            if consider(values[:lp.n0, None]) and polish_steps:
                polish(values[:lp.n0])
                lp.set_bounds(lower, upper)
            if not reduced_costs or reduced is None or attempt == RESOLVES or not np.isfinite(best_value):
                break
            was_unstable = (lower < 0) & (upper > 0)
            if not _reduced_cost_tighten(lp, reduced, lower, upper, lp_bound - best_value):
                return None
            if np.array_equal(was_unstable, (lower < 0) & (upper > 0)):
                break
            # units became stable: the LP solved above relaxed them, so solve the node again with them fixed
            # (a node whose every unit is fixed must have an exact LP)
            lp.set_bounds(lower, upper)
        unstable = np.flatnonzero((lower < 0) & (upper > 0))
        if unstable.size == 0:
            return bound, -1, None
        if duals is not None:
            lam = np.abs(duals[lp.tri_rows[unstable]])
            height = upper[unstable] * (-lower[unstable]) / (upper[unstable] - lower[unstable])
            score = lam * height
            if np.max(score) > 0:
                basis_here = lp.basis() if warm_start else None
                if candidates > 1:
                    order = unstable[np.argsort(-score)[:candidates]]
                    order = order[score[np.argsort(-score)[:candidates]] > 0]
                    return bound, _strong(order, lower, upper, bound, basis_here), basis_here
                return bound, int(unstable[int(np.argmax(score))]), basis_here
        # no dual information: the largest triangle of the earliest layer with an unstable unit
        layer = np.searchsorted(offsets, unstable[0], side="right") - 1
        mine = unstable[unstable < offsets[layer + 1]]
        height = upper[mine] * (-lower[mine]) / (upper[mine] - lower[mine])
        return bound, int(mine[int(np.argmax(height))]), lp.basis() if warm_start and duals is not None else None

    def _strong(order, lower, upper, bound, basis):
        """The candidate whose worse child bound is smallest (both children's LPs solved; filtered strong
        branching on the best dual scores)."""
        best_unit, best_key = int(order[0]), (np.inf, np.inf)
        for unit in order:
            layer = int(np.searchsorted(offsets, unit, side="right") - 1)
            children = []
            for side in (1, -1):
                child_lower, child_upper = lower.copy(), upper.copy()
                if side > 0:
                    child_lower[unit] = 0.0
                else:
                    child_upper[unit] = 0.0
                if not (_propagate(network, offsets, child_lower, child_upper, layer) and
                        (not linear or _linear_tighten(network, offsets, child_lower, child_upper, center, radius))):
                    children.append(-np.inf)
                    continue
                lp.set_bounds(child_lower, child_upper)
                if warm_start:
                    lp.set_basis(basis)
                status, value, _, _ = lp.solve(cost, offset)
                counters["strong"] += 1
                children.append(min(bound, output_interval(child_lower, child_upper),
                                    value if value is not None else np.inf))
            key = (max(children), sum(children))
            if key < best_key:
                best_unit, best_key = int(unit), key
        return best_unit

    root_lower = np.concatenate(hidden_lower)
    root_upper = np.concatenate(hidden_upper)
    heap: list = []
    counter = itertools.count()
    nodes = 0
    max_open = 0
    status = "optimal"
    root_bound = np.inf
    if _propagate(network, offsets, root_lower, root_upper, 0):
        if best_point is not None and polish_steps:
            polish(best_point)
        evaluated = evaluate(root_lower, root_upper, 0, None)
        nodes += 1
        if evaluated is not None:
            root_bound = evaluated[0]
            heapq.heappush(heap, (-evaluated[0], next(counter), 0, evaluated[1], root_lower, root_upper,
                                  evaluated[2]))
        else:
            root_bound, status = -np.inf, "inconsistent_bounds"
    else:
        root_bound, status = -np.inf, "inconsistent_bounds"
    # a box is never empty, so an empty root means the given unit bounds exclude feasible points: not a proof
    while heap:
        negative, _, depth, unit, lower, upper, basis = heap[0]
        bound = -negative
        if bound <= best_value + tolerance():
            break  # best first: every open node is within the gap
        if time.perf_counter() > deadline:
            status = "time_limit"
            break
        if max_nodes is not None and nodes >= max_nodes:
            status = "node_limit"
            break
        heapq.heappop(heap)
        if unit < 0:  # every unit fixed: the LP is exact, its bound cannot be split further
            counters["leaf_gaps"] += 1
            closed_bound = max(closed_bound, bound)
            continue
        for side in (1, -1):
            child_lower, child_upper = lower.copy(), upper.copy()
            if side > 0:
                child_lower[unit] = max(child_lower[unit], 0.0)
            else:
                child_upper[unit] = min(child_upper[unit], 0.0)
            layer = int(np.searchsorted(offsets, unit, side="right") - 1)
            if not _propagate(network, offsets, child_lower, child_upper, layer):
                counters["infeasible"] += 1
                continue
            if output_interval(child_lower, child_upper) <= best_value + tolerance():
                counters["pruned"] += 1
                closed_bound = max(closed_bound, output_interval(child_lower, child_upper))
                continue
            evaluated = evaluate(child_lower, child_upper, depth + 1, basis)
            nodes += 1
            if evaluated is None:
                counters["infeasible"] += 1
                continue
            child_bound, child_unit, child_basis = evaluated
            child_bound = min(child_bound, bound)  # a child's set lies in its parent's
            if child_bound <= best_value + tolerance():
                counters["pruned"] += 1
                closed_bound = max(closed_bound, child_bound)
                continue
            heapq.heappush(heap, (-child_bound, next(counter), depth + 1, child_unit, child_lower, child_upper,
                                  child_basis))
        max_open = max(max_open, len(heap))
    open_bound = -heap[0][0] if heap else -np.inf
    if status == "optimal" and heap:  # stopped because every open node is within the gap
        closed_bound = max(closed_bound, open_bound)
    upper_bound = max(closed_bound, open_bound if status != "optimal" else -np.inf, best_value)
    if status == "inconsistent_bounds":
        upper_bound = np.inf  # nothing is known: the bounds the search started from are wrong
    if status == "optimal" and upper_bound > best_value + tolerance():
        status = "leaf_gap"  # a node with every unit fixed kept a gap above the tolerance
    if probe is not None:  # both runs' bounds are sound: keep the better one
        upper_bound = max(min(upper_bound, sigma * probe.bound), best_value)
        nodes += probe.nodes
        counters["lp"] += probe.lp_solves
        counters["tighten"] += probe.tighten_solves
    seconds = time.perf_counter() - clock
    incumbent = sigma * best_value if np.isfinite(best_value) else float("nan")
    return BabResult(
        status=status, incumbent=incumbent, point=best_point, bound=sigma * upper_bound, nodes=nodes,
        seconds=seconds, root_bound=sigma * root_bound, open_nodes=len(heap), max_open=max_open,
        pruned=counters["pruned"], infeasible=counters["infeasible"], lp_solves=counters["lp"],
        tighten_solves=counters["tighten"], leaf_gaps=counters["leaf_gaps"], gap_tolerance=tolerance(),
        sense=problem.sense,
        extras={"lp_depth": lp_depth, "warm_start": warm_start, "no_certificate": counters["no_certificate"],
                "lp_failures": counters["lp_failures"], "strong_solves": counters["strong"],
                "polish_solves": counters["polish"],
                "root_tightening": tightening,
                "probe": None if probe is None else probe.extras["probe"]})
