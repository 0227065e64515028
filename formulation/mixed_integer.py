r"""Mixed-integer reference problems for a ReLU network with fixed weights (DESIGN §5).

Every hidden unit with pre-activation bounds ``l ≤ z ≤ u`` is written, in version (i), with big-M:

.. math::

    x \ge 0,\quad x \ge z,\quad x \le z - l(1 - d),\quad x \le u\,d,\quad d \in \{0, 1\},

and a unit with ``u ≤ 0`` (stably inactive: ``x = 0``) or ``l ≥ 0`` (stably active: ``x = z``) gets no
binary. Version (ii) is the relaxation of DESIGN §2 on the same data: ``d ∈ [0, 1]`` with

.. math::

    x = d z,\quad d z \ge 0,\quad (1 - d) z \le 0,

which is bilinear; it is built from the same :class:`MixedIntegerModel` by ``solvers/scip_.py``
(CVXPY cannot express it). The relaxation lemma says both have the same optimal value.

The three reference problems (DESIGN §5):

1. :class:`GenerativeRecovery`: ``min_c ||A G(c) − y||_1`` (MILP) or ``||A G(c) − y||²`` (MIQP),
   ``c`` in a box, ``G`` the network;
2. :class:`OutputBound`: ``max`` or ``min`` of ``e_kᵀ G(c)`` over the box (MILP);
3. :class:`TinyTraining`: a two-layer scalar-output network ``ŷ = Σ_j s_j ReLU(w_jᵀ x + b_j)`` with
   ``s_j = ±1`` and ``|W_1|, |b_1| ≤ B``, squared loss (MIQP). Only the number ``p`` of ``+1`` output
   weights matters (units of equal sign can be permuted), so it is one MIQP per ``p = 0..m``.

This module never imports a solver library and never solves: it builds CVXPY models (the bound LPs of
:class:`BoundLP` included) that ``solvers`` solves; LP bound tightening is ``solvers.methods.bounds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import scipy.sparse as sps

from formulation._checks import as_float_array, check_positive_int, check_shape
from formulation.network import ReluNetwork
from formulation.results import ProblemError

__all__ = [
    "Bounds",
    "interval_bounds",
    "affine_interval",
    "relax_relu_coefficients",
    "BoundLP",
    "check_box",
    "MixedIntegerModel",
    "NetworkLayers",
    "BinaryForm",
    "RelaxedForm",
    "GenerativeRecovery",
    "OutputBound",
    "TinyTraining",
    "round_activations",
]


# ====================================================================== bounds
@dataclass
class Bounds:
    """Pre-activation bounds ``l_l ≤ Z_l ≤ u_l`` of every layer ``l = 1..L`` (0-based lists).

    Attributes
    ----------
    lower, upper : list of ndarray
        ``lower[l]``, ``upper[l]`` of shape ``(n_{l+1},)``.
    method : str
        ``"interval"`` or ``"lp"``.
    seconds : float
        Time spent computing them.
    lp_solves : int
        Number of LPs solved (0 for interval arithmetic).
    failures : list of str
        The LPs that failed or stopped without an optimum (``"lp"`` only), one line each; those units
        keep their interval bound.
    """

    lower: list[np.ndarray]
    upper: list[np.ndarray]
    method: str = "interval"
    seconds: float = 0.0
    lp_solves: int = 0
    failures: list[str] = field(default_factory=list)
    #: One record per stage that produced these bounds (``interval``, ``lp``, ``obbt``): its ``seconds``,
    #: ``solves``, the hidden ``unstable`` count and ``mean_width`` after it, and for ``obbt`` the solves that
    #: stopped at a limit (``hit_limit``, with the bound each reached in ``limits``).
    stages: list[dict] = field(default_factory=list)

    def hidden_counts(self) -> dict[str, int]:
        """Numbers of stably active (``l ≥ 0``), stably inactive (``u ≤ 0``) and unstable hidden units."""
        active = inactive = unstable = 0
        for lo, up in zip(self.lower[:-1], self.upper[:-1]):
            active += int(np.sum(lo >= 0))
            inactive += int(np.sum(up <= 0))
            unstable += int(np.sum((lo < 0) & (up > 0)))
        return {"active": active, "inactive": inactive, "unstable": unstable}

    def stage_record(self, stage: str, seconds: float, solves: int, **extra) -> dict:
        """The record of one stage (see ``stages``) as these bounds stand after it."""
        return {"stage": stage, "seconds": seconds, "solves": solves, "unstable": self.hidden_counts()["unstable"],
                "mean_width": self.mean_width(), **extra}

    def contains(self, Z: list[np.ndarray], slack: float = 0.0) -> bool:
        """Whether every pre-activation ``Z[l]`` (shape ``(n_l, N)``) lies within these bounds, to ``slack``."""
        return all(np.all(z >= lo[:, None] - slack) and np.all(z <= up[:, None] + slack)
                   for z, lo, up in zip(Z, self.lower, self.upper))

    def mean_width(self) -> float:
        """Mean of ``u − l`` over the hidden units (the output layer is left out)."""
        widths = [up - lo for lo, up in zip(self.lower[:-1], self.upper[:-1])]
        return float(np.mean(np.concatenate(widths))) if widths else 0.0


def check_box(network: ReluNetwork, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    n0 = network.widths[0]
    lower = np.broadcast_to(as_float_array("box lower", lower), (n0,)).astype(np.float64).copy() \
        if np.ndim(lower) == 0 else as_float_array("box lower", lower, ndim=1)
    upper = np.broadcast_to(as_float_array("box upper", upper), (n0,)).astype(np.float64).copy() \
        if np.ndim(upper) == 0 else as_float_array("box upper", upper, ndim=1)
    check_shape("box lower", lower, (n0,), f"The network takes {n0} inputs; give one bound per input or a scalar.")
    check_shape("box upper", upper, (n0,), f"The network takes {n0} inputs; give one bound per input or a scalar.")
    if np.any(lower > upper):
        index = int(np.argmax(lower > upper))
        raise ProblemError(
            f"Input box is empty at coordinate {index}: lower {lower[index]} > upper {upper[index]}; swap them."
        )
    return lower, upper


def affine_interval(W: np.ndarray, bias: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""``[l, u]`` of ``z = W x + bias`` over the box ``x ∈ [a, b]``: with ``W = W⁺ − W⁻``,
    ``l = W⁺a − W⁻b + bias`` and ``u = W⁺b − W⁻a + bias`` (one step of :func:`interval_bounds`)."""
    Wp, Wm = np.maximum(W, 0.0), np.maximum(-W, 0.0)
    return Wp @ a - Wm @ b + bias, Wp @ b - Wm @ a + bias


def relax_relu_coefficients(coefficient: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    r"""One back-substitution step of an upper bound ``κᵀ x`` through ``x = ReLU(z)``, ``z ∈ [l, u]``.

    Every ``x_j`` is replaced by a linear bound in ``z_j`` chosen by the sign of its coefficient ``κ_j``: the
    triangle's upper line ``x ≤ s (z − l)`` (``s = u/(u − l)``) for ``κ_j > 0`` on an unstable unit, the lower
    line ``x ≥ α z`` (``α = 1[u > −l]``) otherwise, ``x = z`` (active, ``l ≥ 0``) and ``x = 0`` (inactive,
    ``u ≤ 0``) exactly. ``coefficient`` may be 1-D or 2-D (rows of coefficients; the bounds run along its last
    axis). Returns ``(relaxed, intercept)`` of ``coefficient``'s shape: ``κᵀ x ≤ relaxedᵀ z + Σ intercept``, with
    ``intercept = κ s (−l)`` where the upper line is used and 0 elsewhere.
    """
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    span = np.where(unstable, upper - lower, 1.0)
    slope = np.where(unstable, upper / span, 0.0)
    alpha = (upper > -lower).astype(float)
    positive = coefficient > 0
    relaxed = np.where(active, coefficient, np.where(inactive, 0.0, coefficient * np.where(positive, slope, alpha)))
    intercept = np.where(positive & unstable, coefficient * (-slope * lower), 0.0)
    return relaxed, intercept


def interval_bounds(network: ReluNetwork, lower, upper) -> Bounds:
    r"""Interval arithmetic through the network.

    With ``x_{l−1} ∈ [a, b]`` (``a = max(l_{l−1}, 0)`` after a ReLU), ``W = W⁺ − W⁻``:

    .. math::

        l_l = W^+ a - W^- b + b_l,\qquad u_l = W^+ b - W^- a + b_l.
    """
    start = time.perf_counter()
    a, b = check_box(network, lower, upper)
    lowers, uppers = [], []
    for index, (W, bias) in enumerate(zip(network.weights, network.biases)):
        lo, up = affine_interval(W, bias, a, b)
        lowers.append(lo)
        uppers.append(up)
        if index < network.depth - 1:
            a, b = np.maximum(lo, 0.0), np.maximum(up, 0.0)
    bounds = Bounds(lowers, uppers, "interval", time.perf_counter() - start, 0)
    bounds.stages = [bounds.stage_record("interval", bounds.seconds, 0)]
    return bounds


class BoundLP:
    r"""The LP whose optimum bounds one pre-activation of layer ``l`` from below or above (OBBT, DESIGN §5).

    Over the LP relaxation of layers ``1..l−1`` (the input box, ``z_k = W_k x_{k−1} + b_k``, and for every
    earlier hidden unit with bounds ``l < 0 < u`` the triangle

    .. math::

        x \ge 0,\quad x \ge z,\quad x \le u (z - l) / (u - l),

    with ``x = 0`` when ``u ≤ 0`` and ``x = z`` when ``l ≥ 0``) it minimises ``σ (W_l x_{l−1})_j``; the
    objective vector is a ``cp.Parameter`` (:meth:`set_direction`), so one model per layer is re-solved
    ``2 n_l`` times. A lower bound of ``z_j`` is ``f* + b_j`` (``σ = 1``), an upper bound ``−f* + b_j``
    (``σ = −1``). This class only builds the LP; ``solvers.methods.bounds`` solves it through the registry.

    Parameters
    ----------
    network : ReluNetwork
    box_lower, box_upper : ndarray, shape (n0,)
    lowers, uppers : list of ndarray
        Bounds of layers ``1..l−1`` (0-based ``0..layer−1``), already tightened.
    layer : int
        0-based index of the layer whose pre-activations are bounded (at least 1).

    Attributes
    ----------
    interval_lower, interval_upper : ndarray
        Interval bounds of layer ``layer`` from the bounds of the layer before it; an LP bound is
        intersected with them.
    """

    requires = "LP"
    has_closed_form = False

    def __init__(self, network: ReluNetwork, box_lower, box_upper, lowers, uppers, layer: int):
        start = time.perf_counter()
        self.layer = layer
        W, self.bias = network.weights[layer], network.biases[layer]
        self.interval_lower, self.interval_upper = affine_interval(
            W, self.bias, np.maximum(lowers[layer - 1], 0.0), np.maximum(uppers[layer - 1], 0.0))
        x0 = cp.Variable(network.widths[0])
        constraints = [x0 >= box_lower, x0 <= box_upper]
        x, self._variables = x0, [x0]
        for k in range(layer):
            z = network.weights[k] @ x + network.biases[k]
            xk = cp.Variable(network.widths[k + 1])
            lo, up = lowers[k], uppers[k]
            inactive, active = up <= 0, lo >= 0
            unstable = ~(inactive | active)
            constraints += [xk >= 0, xk >= z]
            if np.any(inactive):
                constraints.append(xk[np.flatnonzero(inactive)] == 0)
            if np.any(active):
                idx = np.flatnonzero(active)
                constraints.append(xk[idx] == z[idx])
            if np.any(unstable):
                idx = np.flatnonzero(unstable)
                slope = up[idx] / (up[idx] - lo[idx])
                constraints.append(xk[idx] <= cp.multiply(slope, z[idx] - lo[idx]))
            x = xk
            self._variables.append(xk)
        self._x, self._W = x, W
        self.direction = cp.Parameter(W.shape[0])
        self.model = cp.Problem(cp.Minimize(self.direction @ (W @ x)), constraints)
        self.build_time = time.perf_counter() - start

    @property
    def units(self) -> int:
        return self._W.shape[0]

    def set_direction(self, unit: int, sign: float) -> None:
        """Minimise ``sign · (W_l x_{l−1})_unit``."""
        vector = np.zeros(self.units)
        vector[unit] = sign
        self.direction.value = vector

    @property
    def ready(self) -> bool:
        return self.direction.value is not None

    def variable_values(self) -> dict[str, np.ndarray]:
        return {"x": None if self._x.value is None else np.asarray(self._x.value, float)}

    def objective(self, values: dict[str, np.ndarray]) -> float:
        """``σ (W_l x)_j`` at the returned last hidden ``x``, in float64."""
        return float(self.direction.value @ (self._W @ values["x"]))

    def bound(self, unit: int, sign: float, objective: float, margin: float) -> float:
        """The bound of ``z_unit`` from an LP optimum, moved outward by ``margin·(1 + |v|)`` and intersected
        with the interval bound, so it is never looser than interval arithmetic."""
        value = sign * objective + self.bias[unit]
        if sign > 0:
            return max(self.interval_lower[unit], value - margin * (1 + abs(value)))
        return min(self.interval_upper[unit], value + margin * (1 + abs(value)))

    def size(self) -> int:
        return sum(v.size for v in self._variables)


#: Largest magnitude of an input or pre-activation bound a model may carry. HiGHS and SCIP treat 1e20 as
#: infinity, so a larger bound silently becomes no bound, and float64 spaces numbers 0.125 apart at 1e15,
#: far above any solver feasibility tolerance: such a model cannot be solved meaningfully.
MAX_BOUND = 1e15


def check_bound_magnitude(bounds: Bounds, box_lower, box_upper) -> None:
    """Raise ``ProblemError`` when the input box or a pre-activation bound exceeds :data:`MAX_BOUND`."""
    largest_box = float(max(np.max(np.abs(box_lower), initial=0.0), np.max(np.abs(box_upper), initial=0.0)))
    largest = max([largest_box] + [float(np.max(np.abs(np.concatenate([lo, up])), initial=0.0))
                                   for lo, up in zip(bounds.lower, bounds.upper)])
    if not np.isfinite(largest) or largest > MAX_BOUND:
        raise ProblemError(
            f"The input box (largest |bound| {largest_box:.3g}) gives pre-activation bounds up to {largest:.3g}, "
            f"beyond {MAX_BOUND:.0e}: mixed-integer solvers treat 1e20 as infinity and float64 cannot resolve "
            f"their feasibility tolerances at that size. Use a smaller box (--box) or rescale the network's inputs."
        )


def _hidden_error(network: ReluNetwork, bounds: Bounds, box_lower, box_upper, tolerance: float) -> np.ndarray:
    r"""First-order error of the last hidden ``X`` of a point whose rows, bounds and integrality hold only to
    ``tolerance`` relative to ``1 + |magnitude|``, against the float64 forward pass of its input.

    With ``M_j = max(|l_j|, |u_j|)`` per unit, ReLU 1-Lipschitz and ``E_0 = ε (1 + |box|)``:

    .. math::

        E_l = |W_l| E_{l-1} + 2 ε (1 + M_l)

    (one ``ε (1 + M)`` for the row ``z = W x + b``, one for the ReLU encoding: big-M rows, where an
    integrality slack ``δ`` moves ``x`` by ``δ M``, or ``x = d z``).
    """
    error = tolerance * (1.0 + np.maximum(np.abs(box_lower), np.abs(box_upper)))
    for layer in range(network.depth - 1):
        magnitude = np.maximum(np.abs(bounds.lower[layer]), np.abs(bounds.upper[layer]))
        error = np.abs(network.weights[layer]) @ error + 2.0 * tolerance * (1.0 + magnitude)
    return error


# ====================================================================== the neutral model
class MixedIntegerModel:
    r"""A solver-neutral mixed-integer model with ReLU units.

    Variables form one vector ``v`` with bounds ``lb ≤ v ≤ ub`` (named blocks in ``blocks``). Constraints:

    .. math::

        A_{eq} v = b_{eq},\qquad A_{ub} v \le b_{ub},

    and for every *unstable* unit ``k`` (``l_k < 0 < u_k``) with pre-activation ``z = v[z_k]`` and
    post-activation ``x = v[x_k]`` either the big-M rows with ``d_k ∈ {0,1}`` (version (i),
    :class:`BinaryForm`) or ``x = d z``, ``d z ≥ 0``, ``(1 − d) z ≤ 0``, ``d ∈ [0,1]`` (version (ii),
    :class:`RelaxedForm`). Stable units are already written into the linear rows and bounds. Objective:

    .. math::

        \text{sense}\ \ c^T v + c_0 + \|F v - g\|^2 \quad (F \text{ absent for a MILP}).
    """

    def __init__(self, name: str):
        self.name = name
        self.blocks: dict[str, tuple[slice, tuple[int, ...]]] = {}
        self.lb = np.zeros(0)
        self.ub = np.zeros(0)
        self._eq_rows: list[tuple[np.ndarray, np.ndarray, float]] = []
        self._ub_rows: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.unit_z = np.zeros(0, dtype=int)
        self.unit_x = np.zeros(0, dtype=int)
        self.unit_lower = np.zeros(0)
        self.unit_upper = np.zeros(0)
        #: Per unstable unit, ``z = wᵀ v[inputs] + b`` as ``(inputs, w, b)`` when ``z`` is an affine map of
        #: bounded variables (a network layer), else None; used by :meth:`ideal_cuts`.
        self.unit_affine: list[tuple[np.ndarray, np.ndarray, float] | None] = []
        #: The network the model encodes, when it encodes one with fixed weights (``_encode_network``), else None.
        self.layers: NetworkLayers | None = None
        self.c = np.zeros(0)
        self.c0 = 0.0
        self.F: sps.csr_matrix | None = None
        self.g: np.ndarray | None = None
        self.sense = "min"

    # ---------------------------------------------------------------- construction
    @property
    def n(self) -> int:
        return self.lb.size

    @property
    def n_binary(self) -> int:
        return self.unit_z.size

    def add_block(self, name: str, shape, lower=-np.inf, upper=np.inf) -> np.ndarray:
        """Add variables of ``shape``; returns their indices in ``v`` as an array of that shape."""
        shape = tuple(int(s) for s in np.atleast_1d(shape))
        size = int(np.prod(shape))
        start = self.n
        self.blocks[name] = (slice(start, start + size), shape)
        self.lb = np.concatenate([self.lb, np.broadcast_to(np.asarray(lower, float), shape).ravel()])
        self.ub = np.concatenate([self.ub, np.broadcast_to(np.asarray(upper, float), shape).ravel()])
        return np.arange(start, start + size).reshape(shape)

    def add_eq(self, index, coefficient, rhs: float) -> None:
        self._eq_rows.append((np.asarray(index, int).ravel(), np.asarray(coefficient, float).ravel(), float(rhs)))

    def add_ub(self, index, coefficient, rhs: float) -> None:
        self._ub_rows.append((np.asarray(index, int).ravel(), np.asarray(coefficient, float).ravel(), float(rhs)))

    def add_relu(self, z: int, x: int, lower: float, upper: float, affine=None) -> None:
        """Rectify ``x = ReLU(z)`` given ``lower ≤ z ≤ upper``: stable units need no binary. ``affine`` =
        ``(inputs, w, b)`` when ``z = wᵀ v[inputs] + b`` (kept for :meth:`ideal_cuts`)."""
        self.lb[z] = max(self.lb[z], lower)
        self.ub[z] = min(self.ub[z], upper)
        if upper <= 0:  # stably inactive
            self.lb[x], self.ub[x] = 0.0, 0.0
        elif lower >= 0:  # stably active
            self.add_eq([x, z], [1.0, -1.0], 0.0)
            self.lb[x], self.ub[x] = max(lower, 0.0), upper
        else:
            self.lb[x], self.ub[x] = 0.0, upper
            self.unit_z = np.append(self.unit_z, z)
            self.unit_x = np.append(self.unit_x, x)
            self.unit_lower = np.append(self.unit_lower, lower)
            self.unit_upper = np.append(self.unit_upper, upper)
            self.unit_affine.append(affine)

    def finish(self, c, c0: float = 0.0, F=None, g=None, sense: str = "min") -> MixedIntegerModel:
        self.c = np.asarray(c, float)
        self.c0 = float(c0)
        self.F = None if F is None else sps.csr_matrix(F)
        self.g = None if g is None else np.asarray(g, float)
        if sense not in ("min", "max"):
            raise ProblemError(f"`sense` must be 'min' or 'max', got {sense!r}.")
        if sense == "max" and self.F is not None:
            raise ProblemError("Maximising a convex quadratic is not a MIQP; use a linear objective with 'max'.")
        self.sense = sense
        return self

    @staticmethod
    def _matrix(rows, n) -> tuple[sps.csr_matrix, np.ndarray]:
        if not rows:
            return sps.csr_matrix((0, n)), np.zeros(0)
        indptr = np.cumsum([0] + [len(r[0]) for r in rows])
        indices = np.concatenate([r[0] for r in rows])
        data = np.concatenate([r[1] for r in rows])
        return sps.csr_matrix((data, indices, indptr), shape=(len(rows), n)), np.array([r[2] for r in rows])

    @property
    def equalities(self) -> tuple[sps.csr_matrix, np.ndarray]:
        return self._matrix(self._eq_rows, self.n)

    @property
    def inequalities(self) -> tuple[sps.csr_matrix, np.ndarray]:
        return self._matrix(self._ub_rows, self.n)

    @property
    def requires(self) -> str:
        return "MILP" if self.F is None else "MIQP"

    def ideal_cuts(self, v: np.ndarray, d: np.ndarray, tolerance: float = 1e-6) -> list[tuple]:
        r"""Most violated inequality of the ideal formulation of each single ReLU at ``(v, d)`` (Anderson et al.,
        "Strong mixed-integer programming formulations for trained neural networks", 2020).

        For a unit ``x = ReLU(wᵀy + b)`` whose inputs lie in the box ``L ≤ y ≤ U`` (their variable bounds), with
        ``L̆_i, Ŭ_i`` = ``L_i, U_i`` where ``w_i ≥ 0`` and ``U_i, L_i`` otherwise, every ``I`` gives the valid row

        .. math::

            x \le \sum_{i \in I} w_i (y_i - L̆_i (1 - d)) + \Big(b + \sum_{i \notin I} w_i Ŭ_i\Big) d;

        the most violated one takes ``i ∈ I`` iff ``w_i (y_i − L̆_i (1 − d)) < w_i Ŭ_i d``. Returns rows
        ``(columns, coefficients, rhs)`` meaning ``coefficients · [v, d][columns] ≤ rhs``, for the units where
        the row is violated by more than ``tolerance·(1 + |rhs|)``.
        """
        cuts = []
        for k, affine in enumerate(self.unit_affine):
            if affine is None:
                continue
            inputs, w, b = affine
            y, dk, x = v[inputs], float(d[k]), float(v[self.unit_x[k]])
            L, U = self.lb[inputs], self.ub[inputs]
            if not (np.all(np.isfinite(L)) and np.all(np.isfinite(U))):
                continue
            Lb, Ub = np.where(w >= 0, L, U), np.where(w >= 0, U, L)
            chosen = w * (y - Lb * (1.0 - dk)) < w * Ub * dk
            slope = b + float(np.sum(w[chosen] * Lb[chosen])) + float(np.sum(w[~chosen] * Ub[~chosen]))
            rhs = -float(np.sum(w[chosen] * Lb[chosen]))
            value = x - float(w[chosen] @ y[chosen]) - slope * dk
            if value > rhs + tolerance * (1.0 + abs(rhs)):
                columns = np.concatenate([[self.unit_x[k]], inputs[chosen], [self.n + k]])
                coefficients = np.concatenate([[1.0], -w[chosen], [-slope]])
                cuts.append((columns.astype(int), coefficients, rhs))
        return cuts

    # ---------------------------------------------------------------- evaluation
    def objective(self, v: np.ndarray) -> float:
        """``c^T v + c_0 + ||F v − g||²`` in float64 (in the model's own sense)."""
        value = float(self.c @ v) + self.c0
        if self.F is not None:
            residual = self.F @ v - self.g
            value += float(residual @ residual)
        return value

    def unpack(self, v: np.ndarray) -> dict[str, np.ndarray]:
        return {name: v[s].reshape(shape) for name, (s, shape) in self.blocks.items()}

    def violation(self, v: np.ndarray, d: np.ndarray | None = None, *, binary: bool = True) -> dict[str, float]:
        """Largest violations at ``v`` of bounds, linear rows and the unit constraints.

        With ``binary`` the big-M rows and ``d ∈ {0,1}`` are checked; otherwise ``x = d z`` and the sign
        constraints with ``d ∈ [0,1]``. Relative to ``1 + |rhs|`` for the linear rows.
        """
        A_eq, b_eq = self.equalities
        A_ub, b_ub = self.inequalities
        result = {
            "bounds": float(max(np.max(self.lb - v, initial=0.0), np.max(v - self.ub, initial=0.0))),
            "eq": float(np.max(np.abs(A_eq @ v - b_eq) / (1 + np.abs(b_eq)), initial=0.0)),
            "ub": float(np.max((A_ub @ v - b_ub) / (1 + np.abs(b_ub)), initial=0.0)),
        }
        if d is None:
            d = (v[self.unit_z] > 0).astype(float)
        z, x, lo, up = v[self.unit_z], v[self.unit_x], self.unit_lower, self.unit_upper
        if binary:
            result["units"] = float(np.max(np.concatenate([
                -x, z - x, x - (z - lo * (1 - d)), x - up * d, np.zeros(1)])))
            result["binary"] = float(np.max(np.minimum(np.abs(d), np.abs(d - 1)), initial=0.0))
        else:
            result["units"] = float(np.max(np.concatenate([
                np.abs(x - d * z), -d * z, (1 - d) * z, -d, d - 1, np.zeros(1)])))
        return result


class BinaryForm:
    """Version (i) of a :class:`MixedIntegerModel`: binary ``d`` and big-M, as a CVXPY problem.

    ``requires`` is ``"MILP"`` or ``"MIQP"``; solve it with ``solvers.solve(form, "HIGHS" | "SCIP" | ...)``.
    """

    has_closed_form = False

    def __init__(self, model: MixedIntegerModel):
        self.mi = model
        self.requires = model.requires
        self.build_time = 0.0
        self._problem = None

    @property
    def model(self) -> cp.Problem:
        """The CVXPY problem, built on first use (a backend that reads ``mi`` directly never builds it)."""
        if self._problem is None:
            start = time.perf_counter()
            self._v = cp.Variable(self.mi.n, name="v")
            self._d = cp.Variable(self.mi.n_binary, boolean=True, name="d") if self.mi.n_binary else None
            self._problem = self._build()
            self.build_time = time.perf_counter() - start
        return self._problem

    @property
    def v(self) -> cp.Variable:
        self.model  # noqa: B018 - builds the CVXPY problem and its variables on first use
        return self._v

    @property
    def d(self) -> cp.Variable | None:
        self.model  # noqa: B018 - builds the CVXPY problem and its variables on first use
        return self._d

    def _build(self) -> cp.Problem:
        m, v = self.mi, self._v
        constraints = []
        finite_lb, finite_ub = np.isfinite(m.lb), np.isfinite(m.ub)
        if finite_lb.any():
            constraints.append(v[np.flatnonzero(finite_lb)] >= m.lb[finite_lb])
        if finite_ub.any():
            constraints.append(v[np.flatnonzero(finite_ub)] <= m.ub[finite_ub])
        A_eq, b_eq = m.equalities
        if A_eq.shape[0]:
            constraints.append(A_eq @ v == b_eq)
        A_ub, b_ub = m.inequalities
        if A_ub.shape[0]:
            constraints.append(A_ub @ v <= b_ub)
        if m.n_binary:
            z, x, d = v[m.unit_z], v[m.unit_x], self._d
            constraints += [x >= z, x <= z - cp.multiply(m.unit_lower, 1 - d), x <= cp.multiply(m.unit_upper, d)]
        expression = m.c @ v + m.c0
        if m.F is not None:
            expression = expression + cp.sum_squares(m.F @ v - m.g)
        objective = cp.Minimize(expression) if m.sense == "min" else cp.Maximize(expression)
        return cp.Problem(objective, constraints)

    def variable_values(self) -> dict[str, np.ndarray]:
        values = {"v": np.asarray(self.v.value, float)}
        values["d"] = np.asarray(self.d.value, float) if self.d is not None else np.zeros(0)
        return values

    def objective(self, values: dict[str, np.ndarray]) -> float:
        return self.mi.objective(values["v"])

    def size(self) -> int:
        return self.mi.n + self.mi.n_binary


class RelaxedForm:
    """Version (ii) of a :class:`MixedIntegerModel`: ``d ∈ [0,1]``, ``x = d z`` and the sign constraints.

    ``requires = "BILINEAR"``; only a global nonconvex solver takes it (SCIP through PySCIPOpt).
    """

    requires = "BILINEAR"
    has_closed_form = False

    def __init__(self, model: MixedIntegerModel):
        self.mi = model
        self.build_time = 0.0

    def objective(self, values: dict[str, np.ndarray]) -> float:
        return self.mi.objective(values["v"])

    def size(self) -> int:
        return self.mi.n + self.mi.n_binary


def round_activations(model: MixedIntegerModel, v: np.ndarray) -> np.ndarray:
    """``d̂ = 1[z > 0]`` for every unstable unit: turns a relaxed solution into a binary one."""
    return (v[model.unit_z] > 0).astype(np.float64)


# ====================================================================== network encoding
@dataclass
class NetworkLayers:
    r"""Where a network with fixed weights sits in a :class:`MixedIntegerModel`: ``Z_l = W_l X_{l-1} + b_l`` and
    ``X_l = ReLU(Z_l)`` for every hidden layer ``l`` (0-based lists), ``X_0`` the input block.

    Attributes
    ----------
    inputs : ndarray of int
        Indices in ``v`` of the input block.
    weights, biases : list of ndarray
        ``W_l`` of shape ``(n_l, n_{l-1})`` and ``b_l`` of shape ``(n_l,)`` of the hidden layers.
    z, x : list of ndarray of int
        Indices in ``v`` of ``Z_l`` and ``X_l``.
    """

    inputs: np.ndarray
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)
    z: list[np.ndarray] = field(default_factory=list)
    x: list[np.ndarray] = field(default_factory=list)


def _encode_network(model: MixedIntegerModel, network: ReluNetwork, inputs: np.ndarray,
                    bounds: Bounds) -> np.ndarray:
    """Add ``Z_l = W_l X_{l−1} + b_l`` and ReLU units of every hidden layer; return the last ``X`` indices.
    The layers are recorded in ``model.layers`` (:class:`NetworkLayers`)."""
    x = inputs
    model.layers = NetworkLayers(np.asarray(inputs, int).ravel().copy())
    for layer in range(network.depth - 1):
        W, b = network.weights[layer], network.biases[layer]
        lo, up = bounds.lower[layer], bounds.upper[layer]
        z = model.add_block(f"Z{layer + 1}", W.shape[0], lo, up)
        xs = model.add_block(f"X{layer + 1}", W.shape[0], 0.0, np.maximum(up, 0.0))
        for name, value in (("weights", W), ("biases", b), ("z", z), ("x", xs)):
            getattr(model.layers, name).append(np.array(value, copy=True))
        for j in range(W.shape[0]):
            # z_j - W_j x = b_j
            model.add_eq(np.concatenate([[z[j]], x]), np.concatenate([[1.0], -W[j]]), b[j])
            model.add_relu(int(z[j]), int(xs[j]), float(lo[j]), float(up[j]),
                           affine=(np.asarray(x, int), W[j].copy(), float(b[j])))
        x = xs
    return x


class _NetworkProblem:
    """Shared part of the fixed-weight problems: network, input box, bounds."""

    def __init__(self, network: ReluNetwork, box, *, bounds: Bounds | None = None):
        if not isinstance(network, ReluNetwork):
            raise ProblemError(f"`network` must be a ReluNetwork, got {type(network).__name__}.")
        if network.depth < 2:
            raise ProblemError(
                f"The network {network.widths} has no hidden layer, so there is no ReLU to encode; "
                "use a network with at least one hidden layer."
            )
        self.network = network
        lower, upper = (box if isinstance(box, tuple) else (-float(box), float(box)))
        self.box_lower, self.box_upper = check_box(network, lower, upper)
        if bounds is None:
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
                bounds = interval_bounds(network, self.box_lower, self.box_upper)
        elif [lo.shape for lo in bounds.lower] != [(n,) for n in network.widths[1:]] or \
                [up.shape for up in bounds.upper] != [(n,) for n in network.widths[1:]]:
            raise ProblemError(f"`bounds` do not fit the network {network.widths}: they need one (n_l,) array per "
                               "layer; compute them for this network and box (interval_bounds, or "
                               "solvers.methods.bounds.tighten_bounds).")
        self.bounds = bounds
        check_bound_magnitude(self.bounds, self.box_lower, self.box_upper)

    def output(self, c: np.ndarray) -> np.ndarray:
        """``G(c)`` by a float64 forward pass."""
        return self.network.forward(np.asarray(c, float)[:, None])[:, 0]

    def _start(self, name: str) -> tuple[MixedIntegerModel, np.ndarray, np.ndarray]:
        model = MixedIntegerModel(name)
        c = model.add_block("c", self.network.widths[0], self.box_lower, self.box_upper)
        last = _encode_network(model, self.network, c, self.bounds)
        return model, c, last

    def input_of(self, v: np.ndarray) -> np.ndarray:
        """The input block ``c`` of a model point, clipped to the box so that its forward pass is a point
        of the problem (a solver may return ``c`` outside the box by its feasibility tolerance)."""
        return np.clip(self.model.unpack(v)["c"], self.box_lower, self.box_upper)

    def start_point(self, c) -> dict[str, np.ndarray]:
        """A point ``{"v": ..., "d": ...}`` of version (i) from the input ``c`` (clipped to the box) by a float64
        forward pass: ``c``, every ``Z_l`` and ``X_l``, ``d = 1[z > 0]``, and the problem's own extra
        variables (:meth:`_extra_start`). A starting solution for the MI solvers."""
        c = np.clip(np.asarray(c, dtype=float).ravel(), self.box_lower, self.box_upper)
        v = np.zeros(self.model.n)
        v[self.model.blocks["c"][0]] = c
        x = c
        for layer in range(self.network.depth - 1):
            z = self.network.weights[layer] @ x + self.network.biases[layer]
            # a bound is sound for every input of the box, so clipping only removes rounding noise
            z = np.clip(z, self.bounds.lower[layer], self.bounds.upper[layer])
            x = np.maximum(z, 0.0)
            v[self.model.blocks[f"Z{layer + 1}"][0]] = z
            v[self.model.blocks[f"X{layer + 1}"][0]] = x
        self._extra_start(v, c)
        return {"v": v, "d": round_activations(self.model, v)}

    def _extra_start(self, v: np.ndarray, c: np.ndarray) -> None:
        """Fill the problem's own variables of a start point (none by default)."""

    def _last_hidden_error(self, tolerance: float) -> np.ndarray:
        return _hidden_error(self.network, self.bounds, self.box_lower, self.box_upper, tolerance)

    def binary(self) -> BinaryForm:
        return BinaryForm(self.model)

    def relaxed(self) -> RelaxedForm:
        return RelaxedForm(self.model)


class GenerativeRecovery(_NetworkProblem):
    r"""Compressed sensing with a generative ReLU prior ``G``:

    .. math::

        \min_{c \in [c_{lo}, c_{hi}]} \|A G(c) - y\|_1 \ \ (\text{loss}=\text{l1, MILP})
        \quad\text{or}\quad \|A G(c) - y\|_2^2 \ \ (\text{loss}=\text{l2, MIQP}).

    The l1 loss uses ``t ≥ ±(A G(c) − y)`` and minimises ``1ᵀt``.

    Parameters
    ----------
    network : ReluNetwork
        ``G`` with ``n_0`` inputs and ``n_L`` outputs.
    A : ndarray, shape (m, n_L)
    y : ndarray, shape (m,)
    box : float or (lower, upper)
        ``c ∈ [−box, box]`` or the given bounds.
    loss : {"l1", "l2"}
    bounds : Bounds, optional
        Pre-activation bounds for this network and box; interval arithmetic when omitted (LP-tightened ones
        come from ``solvers.methods.bounds.tighten_bounds``).
    """

    kind = "recovery"

    def __init__(self, network: ReluNetwork, A, y, box=1.0, *, loss: str = "l1", bounds: Bounds | None = None):
        super().__init__(network, box, bounds=bounds)
        n_out = network.widths[-1]
        A = as_float_array("A", A)
        if A.ndim == 1:
            A = A[None, :]
        check_shape("A", A, (None, n_out), f"A multiplies the network output, so it needs {n_out} columns.")
        if A.shape[0] == 0:
            raise ProblemError("A has 0 rows: there are no measurements, so every input fits and the problem is "
                               "empty; give A of shape (m, n_L) with m >= 1.")
        y = as_float_array("y", y)
        if y.ndim == 2 and 1 in y.shape:
            y = y.ravel()
        check_shape("y", y, (A.shape[0],), f"A has {A.shape[0]} rows, so y needs {A.shape[0]} entries.")
        if loss not in ("l1", "l2"):
            raise ProblemError(f"`loss` must be 'l1' (MILP) or 'l2' (MIQP), got {loss!r}.")
        self.A, self.y, self.loss = A, y, loss
        model, c, last = self._start(f"recovery-{loss}")
        W, b = network.weights[-1], network.biases[-1]
        M = A @ W  # A G(c) - y = M x_H + (A b - y)
        offset = A @ b - y
        if loss == "l1":
            t = model.add_block("t", A.shape[0], 0.0, np.inf)
            for i in range(A.shape[0]):
                model.add_ub(np.concatenate([last, [t[i]]]), np.concatenate([M[i], [-1.0]]), -offset[i])
                model.add_ub(np.concatenate([last, [t[i]]]), np.concatenate([-M[i], [-1.0]]), offset[i])
            cost = np.zeros(model.n)
            cost[t] = 1.0
            self.model = model.finish(cost)
        else:
            F = sps.lil_matrix((A.shape[0], model.n))
            F[:, last] = M
            self.model = model.finish(np.zeros(model.n), F=F, g=-offset)

    def _extra_start(self, v: np.ndarray, c: np.ndarray) -> None:
        if self.loss == "l1":
            v[self.model.blocks["t"][0]] = np.abs(self.A @ self.output(c) - self.y)

    def evaluate(self, c: np.ndarray) -> float:
        """``||A G(c) − y||`` (l1 or squared l2) by a float64 forward pass."""
        return float(self.evaluate_columns(np.asarray(c, float)[:, None])[0])

    def evaluate_columns(self, C: np.ndarray) -> np.ndarray:
        """:meth:`evaluate` of every column of ``C`` (inputs as columns), in one forward pass."""
        residual = self.A @ self.network.forward(C) - self.y[:, None]
        return np.sum(np.abs(residual), axis=0) if self.loss == "l1" else np.sum(residual**2, axis=0)

    def allowance(self, tolerance: float, c: np.ndarray | None = None) -> float:
        r"""How far the model objective of a point that meets every row, bound and integrality only to
        ``tolerance`` (relative to ``1 + |magnitude|``) can be from the forward-pass objective of its input,
        to first order: with ``e = |A W_L| E`` (``E`` the error of the last hidden layer, :func:`_hidden_error`)
        and ``r`` the residual at ``c`` (its interval bound without ``c``),
        ``Σ_i e_i + ε (1 + |r_i|)`` for l1 (the rows ``t ≥ ±r``) and ``Σ_i 2|r_i| e_i + e_i² + ε (1 + ||r||²)``
        for l2 (the cone row).
        """
        W, b = self.network.weights[-1], self.network.biases[-1]
        M = self.A @ W
        e = np.abs(M) @ self._last_hidden_error(tolerance)
        if c is not None:
            r = np.abs(self.A @ self.output(c) - self.y)
        else:
            upper = np.maximum(self.bounds.upper[-2], 0.0) if self.network.depth > 1 else np.zeros(W.shape[1])
            r = np.abs(self.A @ b - self.y) + np.abs(M) @ upper
        if self.loss == "l1":
            return float(np.sum(e + tolerance * (1.0 + r)))
        return float(np.sum(2.0 * r * e + e * e) + tolerance * (1.0 + r @ r))


class OutputBound(_NetworkProblem):
    r"""Output bound ``max`` (or ``min``) of ``e_kᵀ G(c)`` (or of ``aᵀ G(c)`` for a ``direction`` ``a``, e.g. a
    logit gap ``e_t − e_label``) over the input box (MILP).

    A sound bound is the solver's dual bound, never its incumbent (DESIGN §5).
    """

    kind = "bound"

    def __init__(self, network: ReluNetwork, box=1.0, *, k: int = 0, sense: str = "max",
                 bounds: Bounds | None = None, direction=None):
        super().__init__(network, box, bounds=bounds)
        n_out = network.widths[-1]
        if direction is None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n_out:
                raise ProblemError(f"Output index k={k!r} is out of range: the network has {n_out} outputs "
                                   f"(0..{n_out-1}).")
            direction = np.zeros(n_out)
            direction[int(k)] = 1.0
        else:  # a linear function of the outputs, e.g. a logit gap e_t − e_label
            direction = as_float_array("direction", direction, ndim=1)
            check_shape("direction", direction, (n_out,), f"The network has {n_out} outputs.")
            k = int(np.argmax(np.abs(direction)))
        self.k, self.sense, self.direction = int(k), sense, direction
        model, c, last = self._start(f"bound-{sense}")
        cost = np.zeros(model.n)
        cost[last] = direction @ network.weights[-1]
        self.model = model.finish(cost, c0=float(direction @ network.biases[-1]), sense=sense)

    def evaluate(self, c: np.ndarray) -> float:
        return float(self.evaluate_columns(np.asarray(c, float)[:, None])[0])

    def evaluate_columns(self, C: np.ndarray) -> np.ndarray:
        """The objective ``aᵀ G(c)`` of every column of ``C`` (inputs as columns), in one forward pass."""
        return self.direction @ self.network.forward(C)

    def allowance(self, tolerance: float, c: np.ndarray | None = None) -> float:
        """First-order distance between model objective and forward-pass objective of a point whose rows,
        bounds and integrality hold to ``tolerance``: ``|aᵀ W_L|ᵀ E`` (:func:`_hidden_error`, ``a`` the
        direction, ``e_k`` by default)."""
        return float(np.abs(self.direction @ self.network.weights[-1]) @ self._last_hidden_error(tolerance))


class TinyTraining:
    r"""Certified global training of a tiny two-layer network (DESIGN §5, problem 3).

    .. math::

        \min_{W_1, b_1} \sum_i \big(\textstyle\sum_j s_j \,\mathrm{ReLU}(w_j^T x_i + b_j) - y_i\big)^2
        \quad\text{s.t.}\ |W_1| \le B,\ |b_1| \le B,

    with ``s_j = +1`` for ``j < p`` and ``−1`` otherwise, output bias 0. Pre-activations are bounded by
    ``|z_{ji}| ≤ B(||x_i||_1 + 1)`` (big-M from the weight bound). Units of equal sign are interchangeable,
    so ``b_j ≥ b_{j+1}`` within each sign group is added (it removes permutation symmetry and keeps the
    optimum). One MIQP per ``p``; the certified optimum is the minimum over ``p = 0..m``.

    Parameters
    ----------
    X0 : ndarray, shape (n0, N)
        Inputs, samples are columns.
    Y : ndarray, shape (N,) or (1, N)
    hidden : int
        ``m``, the number of hidden units.
    weight_bound : float
        ``B``.
    """

    kind = "training"

    def __init__(self, X0, Y, hidden: int, *, weight_bound: float = 1.0, symmetry_breaking: bool = True):
        X0 = as_float_array("X0", X0, ndim=2)
        Y = as_float_array("Y", Y)
        if Y.ndim == 2 and Y.shape[0] == 1:
            Y = Y[0]
        check_shape("Y", Y, (X0.shape[1],), f"X0 has {X0.shape[1]} columns (samples), so Y needs {X0.shape[1]}.")
        if X0.shape[1] == 0:
            raise ProblemError("X0 has 0 columns: there are no samples to train on, so the problem is empty; "
                               "give at least one sample (samples are columns).")
        self.X0, self.Y = X0, Y
        self.hidden = check_positive_int("hidden", hidden)
        if not np.isfinite(weight_bound) or weight_bound <= 0:
            raise ProblemError(f"`weight_bound` must be positive and finite, got {weight_bound!r}.")
        self.weight_bound = float(weight_bound)
        largest = self.weight_bound * (float(np.max(np.sum(np.abs(X0), axis=0))) + 1.0)
        if not np.isfinite(largest) or largest > MAX_BOUND:
            raise ProblemError(f"The weight bound {weight_bound:g} and inputs give big-M bounds up to {largest:.3g}, "
                               f"beyond {MAX_BOUND:.0e}: mixed-integer solvers treat 1e20 as infinity. Use a smaller "
                               "weight bound or rescale the inputs.")
        self.symmetry_breaking = symmetry_breaking
        self.models = [self._model(p) for p in range(self.hidden + 1)]

    def signs(self, p: int) -> np.ndarray:
        return np.where(np.arange(self.hidden) < p, 1.0, -1.0)

    def _model(self, p: int) -> MixedIntegerModel:
        n0, N = self.X0.shape
        m, B = self.hidden, self.weight_bound
        model = MixedIntegerModel(f"training-p{p}")
        W = model.add_block("W1", (m, n0), -B, B)
        b = model.add_block("b1", m, -B, B)
        big = B * (np.sum(np.abs(self.X0), axis=0) + 1.0)
        Z = model.add_block("Z1", (m, N), -big[None, :] * np.ones((m, 1)), big[None, :] * np.ones((m, 1)))
        X = model.add_block("X1", (m, N), 0.0, big[None, :] * np.ones((m, 1)))
        for j in range(m):
            for i in range(N):
                # z_ji - w_j^T x_i - b_j = 0
                model.add_eq(np.concatenate([[Z[j, i]], W[j], [b[j]]]),
                             np.concatenate([[1.0], -self.X0[:, i], [-1.0]]), 0.0)
                model.add_relu(int(Z[j, i]), int(X[j, i]), -big[i], big[i])
        if self.symmetry_breaking:
            for j in range(m - 1):
                if (j < p) == (j + 1 < p):  # same sign group
                    model.add_ub([b[j + 1], b[j]], [1.0, -1.0], 0.0)
        s = self.signs(p)
        F = sps.lil_matrix((N, model.n))
        for i in range(N):
            F[i, X[:, i]] = s
        return model.finish(np.zeros(model.n), F=F, g=self.Y)

    def weights_of(self, p: int, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W_1, b_1)`` of a model point, clipped to ``[−B, B]`` so that they are a point of the problem."""
        values = self.models[p].unpack(v)
        B = self.weight_bound
        return np.clip(values["W1"], -B, B), np.clip(values["b1"], -B, B)

    def allowance(self, tolerance: float, p: int, v: np.ndarray | None = None) -> float:
        r"""First-order distance between model objective and forward-pass objective of a point of split ``p``
        whose rows, bounds and integrality hold to ``tolerance`` (relative to ``1 + |magnitude|``).

        With ``β_i = B(||x_i||_1 + 1)`` the big-M of sample ``i``, each unit's output moves by at most
        ``e_ji = 2 ε (1 + β_i) + ε (1 + B)(||x_i||_1 + 1)`` (row, ReLU encoding, weight bounds), so the
        prediction by ``e_i = m max_j e_ji``; with ``r`` the residual at ``v`` (its bound without ``v``) the
        objective moves by ``Σ_i 2|r_i| e_i + e_i² + ε (1 + ||r||²)`` (the cone row).
        """
        B, m = self.weight_bound, self.hidden
        norms = np.sum(np.abs(self.X0), axis=0) + 1.0
        big = B * norms
        e = m * (2.0 * tolerance * (1.0 + big) + tolerance * (1.0 + B) * norms)
        if v is not None:
            W1, b1 = self.weights_of(p, v)
            r = np.abs(self.signs(p) @ np.maximum(W1 @ self.X0 + b1[:, None], 0.0) - self.Y)
        else:
            r = np.abs(self.Y) + m * big
        return float(np.sum(2.0 * r * e + e * e) + tolerance * (1.0 + r @ r))

    def evaluate(self, W1: np.ndarray, b1: np.ndarray, p: int) -> float:
        """Squared loss of the network ``(W1, b1, s(p))`` by a float64 forward pass."""
        hidden = np.maximum(W1 @ self.X0 + b1[:, None], 0.0)
        residual = self.signs(p) @ hidden - self.Y
        return float(residual @ residual)

    def binary(self, p: int) -> BinaryForm:
        return BinaryForm(self.models[p])

    def relaxed(self, p: int) -> RelaxedForm:
        return RelaxedForm(self.models[p])


@dataclass
class RoundingCheck:
    """Result of rounding a relaxed solution ``d̂ = 1[z > 0]`` and checking it against version (i)."""

    feasible: bool
    objective_binary: float
    objective_forward: float
    violation: dict[str, float] = field(default_factory=dict)


def rounding_check(model: MixedIntegerModel, v: np.ndarray, forward_objective: float, *,
                   tolerance: float = 1e-6, objective_tolerance: float | None = None) -> RoundingCheck:
    """Round ``d̂ = 1[z > 0]`` and check the point is feasible for version (i) within ``tolerance``
    (bounds, rows and big-M scaled by ``1 + |bound|``) with the same objective as the float64 forward pass,
    within ``objective_tolerance`` (default ``1e-5 max(1, |forward objective|)``).
    """
    if objective_tolerance is None:
        objective_tolerance = 1e-5 * max(1.0, abs(forward_objective))
    d = round_activations(model, v)
    violation = model.violation(v, d, binary=True)
    scale = 1.0 + max(np.max(np.abs(model.unit_lower), initial=0.0), np.max(np.abs(model.unit_upper), initial=0.0))
    objective = model.objective(v)
    feasible = (violation["bounds"] <= tolerance * scale and violation["eq"] <= tolerance
                and violation["ub"] <= tolerance and violation["units"] <= tolerance * scale
                and abs(objective - forward_objective) <= objective_tolerance)
    return RoundingCheck(bool(feasible), objective, forward_objective, violation)
