r"""The convex block subproblems of the augmented Lagrangian (DESIGN §3).

Every block minimises :math:`L_\rho` over one group of primal variables with the others fixed.
Each objective below equals :math:`(2/\rho)\,L_\rho` restricted to the block, up to a constant,
with the scaled residuals :math:`C_k + \Lambda_k/\rho` expanded. Every class carries

1. ``closed_form()``: the NumPy minimiser, where one exists (``has_closed_form``);
2. ``model``: a disciplined-convex CVXPY problem built once in ``__init__`` from
   ``cp.Parameter`` objects; it passes ``is_dpp()``, so a re-solve only sets ``.value``;
3. ``objective(values)``: the objective evaluated by us in NumPy, so that every backend is
   judged by the same number and not by its own claim;
4. ``canonical(values)``: the quantities the problem determines uniquely (for example the
   fitted values ``W X + b 1ᵀ`` when ``X`` is rank-deficient and ``μ = 0``), which is what
   backends are compared on.

``requires`` names the cone class a backend must handle: ``"QP"`` (convex quadratic) or
``"EXP"`` (exponential cone).
"""

from __future__ import annotations

import abc
import time
from typing import ClassVar

import cvxpy as cp
import numpy as np
import scipy.special

from formulation._checks import as_float_array, check_positive_int, check_shape
from formulation.closed_forms import (
    activation_slacks_chunk,
    preactivation_slacks_chunk,
    ridge_weights,
    solve_postactivation,
)
from formulation.results import ProblemError

__all__ = [
    "Subproblem",
    "WeightLeastSquares",
    "ActivationBoxQP",
    "HiddenPreactivation",
    "HiddenPostactivation",
    "SlackProjection",
    "OutputSquaredLoss",
    "OutputSoftmaxCrossEntropy",
    "PreactivationSlacks",
    "ActivationSlacks",
    "SUBPROBLEM_TYPES",
]


class Subproblem(abc.ABC):
    """Base class: parameters, CVXPY model, closed form and NumPy objective of one block."""

    #: Short key used in tables and the command line.
    key: ClassVar[str]
    #: Cone class a backend must support: "QP" or "EXP".
    requires: ClassVar[str] = "QP"
    #: Whether :meth:`closed_form` is available.
    has_closed_form: ClassVar[bool] = True
    #: How the cost of building the CVXPY model grows, which sets benchmark sizes:
    #: ``"linear"`` (no parameter multiplies a variable), ``"elementwise"`` (a parameter
    #: multiplies the variable entry by entry: CVXPY's DPP canonicalisation grows faster than
    #: the number of entries), ``"matrix"`` (a parameter matrix multiplies the variable) or
    #: ``"exp"`` (one exponential cone per entry).
    build_growth: ClassVar[str] = "linear"

    def __init__(self, *, build_model: bool = True):
        self.parameters: dict[str, np.ndarray | float] = {}
        self.model: cp.Problem | None = None
        self.variables: dict[str, cp.Variable] = {}
        self._cp_parameters: dict[str, cp.Parameter] = {}
        self.build_time = 0.0
        if build_model:
            start = time.perf_counter()
            self.variables, self._cp_parameters, self.model = self._build()
            if not self.model.is_dpp():  # pragma: no cover - guarded by the tests
                raise AssertionError(f"{type(self).__name__} model is not DPP")
            self.build_time = time.perf_counter() - start

    # ---------------------------------------------------------------- interface
    @property
    @abc.abstractmethod
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter (``()`` for scalars)."""

    @property
    @abc.abstractmethod
    def variable_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every primal variable."""

    @abc.abstractmethod
    def _build(self) -> tuple[dict[str, cp.Variable], dict[str, cp.Parameter], cp.Problem]:
        """Create variables, parameters and the problem (called once)."""

    @abc.abstractmethod
    def objective(self, values: dict[str, np.ndarray]) -> float:
        """Objective at ``values`` computed in NumPy."""

    def closed_form(self) -> dict[str, np.ndarray]:
        """The minimiser in NumPy. Raises ``NotImplementedError`` where none exists."""
        raise NotImplementedError(f"{type(self).__name__} has no closed form")

    def canonical(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The uniquely determined part of a solution (default: all values)."""
        return dict(values)

    def infeasibility(self, values: dict[str, np.ndarray]) -> float:
        """Largest violation of the block's bounds at ``values`` (0 when unconstrained)."""
        return 0.0

    # ---------------------------------------------------------------- parameters
    def set_parameters(self, **values) -> Subproblem:
        """Validate and set parameter values; returns ``self``.

        Every parameter must be given on the first call; later calls may change a subset.
        """
        shapes = self.parameter_shapes
        unknown = sorted(set(values) - set(shapes))
        if unknown:
            raise ProblemError(
                f"{type(self).__name__} has no parameter(s) {unknown}; its parameters are {sorted(shapes)}."
            )
        checked = {}
        for name, value in values.items():
            array = as_float_array(name, value)
            if shapes[name] == ():
                if array.size != 1:
                    raise ProblemError(f"`{name}` must be a scalar, got shape {array.shape}.")
                array = float(array.reshape(()))
                if name in self._nonnegative_parameters and array < 0:
                    raise ProblemError(f"`{name}` must be nonnegative, got {array}.")
            else:
                check_shape(name, array, shapes[name], f"{type(self).__name__} was built for this shape.")
            checked[name] = array
        missing = sorted(set(shapes) - set(self.parameters) - set(checked))
        if missing:
            raise ProblemError(f"{type(self).__name__} needs parameter(s) {missing} before it can be solved.")
        self.parameters.update(checked)
        self._push_parameters(checked)
        return self

    #: Scalar parameters that must be nonnegative (they multiply convex terms).
    _nonnegative_parameters: ClassVar[frozenset[str]] = frozenset()

    def _push_parameters(self, checked: dict) -> None:
        for name, value in checked.items():
            if name in self._cp_parameters:
                self._cp_parameters[name].value = value

    @property
    def ready(self) -> bool:
        return set(self.parameters) >= set(self.parameter_shapes)

    def variable_values(self) -> dict[str, np.ndarray]:
        """Current values of the CVXPY variables (after a solve)."""
        return {name: None if var.value is None else np.array(var.value, dtype=float)
                for name, var in self.variables.items()}

    def size(self) -> int:
        """Number of scalar unknowns."""
        return int(sum(np.prod(shape) for shape in self.variable_shapes.values()))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{v}" for k, v in self.variable_shapes.items())
        return f"{type(self).__name__}({shapes})"


class _Elementwise(Subproblem):
    """A block whose variables are ``(n, N)`` arrays: ``n`` units by ``N`` samples."""

    def __init__(self, n: int, N: int, *, build_model: bool = True):
        self.n = check_positive_int("n", n)
        self.N = check_positive_int("N", N)
        super().__init__(build_model=build_model)


class _ActivationBlock(_Elementwise):
    """Shared by the blocks over ``D``: ``D_prev`` where ``Z = 0``, and the box in ``U = Z ⊙ D``.

    The CVXPY models are written in ``U = Z ⊙ D`` with the parameters ``lower = min(Z, 0)`` and
    ``upper = max(Z, 0)``, so that no parameter multiplies a variable.
    """

    def __init__(self, n: int, N: int, *, build_model: bool = True):
        super().__init__(n, N, build_model=build_model)
        self.D_prev = np.zeros((self.n, self.N))

    def set_parameters(self, D_prev=None, **values):
        """As :meth:`Subproblem.set_parameters`; ``D_prev`` is the value kept where ``Z = 0``."""
        if D_prev is not None:
            D_prev = as_float_array("D_prev", D_prev)
            check_shape("D_prev", D_prev, (self.n, self.N), "It is the previous D of this block.")
            self.D_prev = np.clip(D_prev, 0.0, 1.0)
        return super().set_parameters(**values)

    def _push_parameters(self, checked):
        super()._push_parameters(checked)
        if self.model is not None and "Z" in checked:
            self._cp_parameters["lower"].value = np.minimum(checked["Z"], 0.0)
            self._cp_parameters["upper"].value = np.maximum(checked["Z"], 0.0)


def _activation_from_product(U: np.ndarray, Z: np.ndarray, D_prev: np.ndarray) -> np.ndarray:
    """``D = clip(U / Z, 0, 1)`` where ``Z ≠ 0``; ``D_prev`` where ``Z = 0`` (there ``D`` is free)."""
    D = D_prev.copy()
    nonzero = Z != 0
    D[nonzero] = np.clip(U[nonzero] / Z[nonzero], 0.0, 1.0)
    return D


def _param(shape, name, **kw) -> cp.Parameter:
    return cp.Parameter(shape, name=name, **kw)


def _sq(residual: np.ndarray) -> float:
    return float(np.sum(np.square(residual)))


# ============================================================================ W_l, b_l
class WeightLeastSquares(Subproblem):
    r"""Weight least squares for layer ``l``.

    .. math::

        \min_{W, b}\ \|W X_{l-1} + b 1^T - P\|_F^2 + r \|W\|_F^2,
        \qquad P = Z_l + \Lambda_{1,l}/\rho,\quad r = \mu/\rho .

    Parameters (``cp.Parameter``): ``X`` ``(n_in, N)``, ``P`` ``(n_out, N)``, ``r ≥ 0``.
    Closed form: ridge normal equations on ``[X; 1ᵀ]`` (bias unpenalised) by Cholesky, with a
    fall-back to ``lstsq`` (minimum-norm) when the system is singular.
    """

    key = "weights"
    build_growth = "matrix"
    _nonnegative_parameters = frozenset({"r"})

    def __init__(self, n_in: int, n_out: int, N: int, *, build_model: bool = True):
        self.n_in = check_positive_int("n_in", n_in)
        self.n_out = check_positive_int("n_out", n_out)
        self.N = check_positive_int("N", N)
        super().__init__(build_model=build_model)

    @property
    def parameter_shapes(self):
        return {"X": (self.n_in, self.N), "P": (self.n_out, self.N), "r": ()}

    @property
    def variable_shapes(self):
        return {"W": (self.n_out, self.n_in), "b": (self.n_out,)}

    def _build(self):
        W = cp.Variable((self.n_out, self.n_in), name="W")
        b = cp.Variable(self.n_out, name="b")
        X = _param((self.n_in, self.N), "X")
        P = _param((self.n_out, self.N), "P")
        r = _param((), "r", nonneg=True)
        fit = W @ X + cp.reshape(b, (self.n_out, 1), order="F") @ np.ones((1, self.N))
        problem = cp.Problem(cp.Minimize(cp.sum_squares(fit - P) + r * cp.sum_squares(W)))
        return {"W": W, "b": b}, {"X": X, "P": P, "r": r}, problem

    def _fit(self, values):
        return values["W"] @ self.parameters["X"] + values["b"][:, None]

    def objective(self, values):
        return _sq(self._fit(values) - self.parameters["P"]) + self.parameters["r"] * _sq(values["W"])

    def closed_form(self):
        W, b = ridge_weights(self.parameters["X"], self.parameters["P"], self.parameters["r"])
        return {"W": W, "b": b}

    def canonical(self, values):
        out = {"fit": self._fit(values)}
        design = np.vstack([self.parameters["X"], np.ones((1, self.N))])
        if self.parameters["r"] > 0 or np.linalg.matrix_rank(design) == self.n_in + 1:
            out.update(W=values["W"], b=values["b"])  # unique only then
        return out


# ============================================================================ D_l
class ActivationBoxQP(_ActivationBlock):
    r"""Activation box-constrained QP for hidden layer ``l``.

    .. math::

        \min_{0 \le D \le 1}\ \sum_{k=2}^{4} \|Z \odot D - P_k\|_F^2,
        \quad P_2 = X + \Lambda_2/\rho,\ P_3 = S - \Lambda_3/\rho,\ P_4 = Z + T + \Lambda_4/\rho .

    Parameters: ``Z``, ``P2``, ``P3``, ``P4``, all ``(n, N)``. Closed form:
    ``D = clip(P̄ / Z, 0, 1)`` with ``P̄`` the mean of the ``P_k``; where ``Z = 0`` the objective
    does not depend on ``D`` and the previous value ``D_prev`` (an optional extra argument of
    :meth:`set_parameters`, default 0) is kept. Only ``Z ⊙ D`` is unique. The CVXPY model
    is written in ``U = Z ⊙ D`` (see ``_build``); ``D`` is recovered from it.
    """

    key = "activation"

    @property
    def parameter_shapes(self):
        shape = (self.n, self.N)
        return {"Z": shape, "P2": shape, "P3": shape, "P4": shape}

    @property
    def variable_shapes(self):
        return {"D": (self.n, self.N)}

    def _build(self):
        # Written in the product U = Z ⊙ D: the box 0 ≤ D ≤ 1 becomes min(Z,0) ≤ U ≤ max(Z,0).
        # This is the same QP under a diagonal change of variables, and no parameter multiplies
        # a variable: CVXPY's DPP canonicalisation of multiply(Z, D) grows quadratically with
        # the number of entries (30 GiB at 64,000), this form grows linearly.
        shape = (self.n, self.N)
        U = cp.Variable(shape, name="U")
        params = {name: _param(shape, name) for name in ("P2", "P3", "P4", "lower", "upper")}
        objective = sum(cp.sum_squares(U - params[k]) for k in ("P2", "P3", "P4"))
        problem = cp.Problem(cp.Minimize(objective), [U >= params["lower"], U <= params["upper"]])
        return {"U": U}, params, problem

    def variable_values(self):
        """``D = U / Z`` where ``Z ≠ 0``; ``D_prev`` where ``Z = 0`` (there ``D`` is free)."""
        U = self.variables["U"].value
        if U is None:
            return {"D": None}
        return {"D": _activation_from_product(np.asarray(U), self.parameters["Z"], self.D_prev)}

    def objective(self, values):
        ZD = self.parameters["Z"] * values["D"]
        return sum(_sq(ZD - self.parameters[k]) for k in ("P2", "P3", "P4"))

    def closed_form(self):
        Z = self.parameters["Z"]
        P_mean = (self.parameters["P2"] + self.parameters["P3"] + self.parameters["P4"]) / 3.0
        return {"D": _activation_from_product(P_mean, Z, self.D_prev)}

    def canonical(self, values):
        return {"Z*D": self.parameters["Z"] * values["D"]}

    def infeasibility(self, values):
        D = values["D"]
        return float(max(np.max(-D, initial=0.0), np.max(D - 1.0, initial=0.0)))


# ============================================================================ Z_l hidden
class HiddenPreactivation(_Elementwise):
    r"""Pre-activation ``Z_l`` of a hidden layer: a separable QP coupling C1–C4.

    .. math::

        \min_Z\ \|Z - Q\|^2 + \|D \odot Z - P_2\|^2 + \|D \odot Z - P_3\|^2
               + \|(1 - D) \odot Z - P_4\|^2

    with ``Q = W_l X_{l-1} + b_l 1ᵀ − Λ1/ρ``, ``P2 = X + Λ2/ρ``, ``P3 = S − Λ3/ρ``,
    ``P4 = −T − Λ4/ρ``. Parameters ``D, Q, P2, P3, P4`` of shape ``(n, N)``. Closed form,
    elementwise: ``Z = (Q + D P2 + D P3 + (1 − D) P4) / (1 + 2D² + (1 − D)²)``; the
    denominator is at least 1, so the minimiser is unique.
    """

    key = "preactivation"
    build_growth = "elementwise"

    @property
    def parameter_shapes(self):
        shape = (self.n, self.N)
        return {name: shape for name in ("D", "Q", "P2", "P3", "P4")}

    @property
    def variable_shapes(self):
        return {"Z": (self.n, self.N)}

    def _build(self):
        shape = (self.n, self.N)
        Z = cp.Variable(shape, name="Z")
        p = {name: _param(shape, name) for name in self.parameter_shapes}
        DZ = cp.multiply(p["D"], Z)
        objective = (
            cp.sum_squares(Z - p["Q"])
            + cp.sum_squares(DZ - p["P2"])
            + cp.sum_squares(DZ - p["P3"])
            + cp.sum_squares(Z - DZ - p["P4"])
        )
        return {"Z": Z}, p, cp.Problem(cp.Minimize(objective))

    def objective(self, values):
        p, Z = self.parameters, values["Z"]
        DZ = p["D"] * Z
        return _sq(Z - p["Q"]) + _sq(DZ - p["P2"]) + _sq(DZ - p["P3"]) + _sq(Z - DZ - p["P4"])

    def closed_form(self):
        p = self.parameters
        D = p["D"]
        numerator = p["Q"] + D * (p["P2"] + p["P3"]) + (1.0 - D) * p["P4"]
        return {"Z": numerator / (1.0 + 2.0 * D * D + (1.0 - D) ** 2)}


# ============================================================================ X_l hidden
class HiddenPostactivation(Subproblem):
    r"""Post-activation ``X_l`` of a hidden layer: least squares coupling C2_l and C1_{l+1}.

    .. math::

        \min_X\ \|X - R\|_F^2 + \|W X - Q\|_F^2,
        \qquad R = D_l \odot Z_l - \Lambda_{2,l}/\rho,\quad
        Q = Z_{l+1} - b_{l+1} 1^T + \Lambda_{1,l+1}/\rho,\quad W = W_{l+1}.

    Parameters ``W`` ``(n_next, n)``, ``R`` ``(n, N)``, ``Q`` ``(n_next, N)``. Closed form:
    ``(I + WᵀW) X = R + WᵀQ``, one Cholesky of ``n × n`` shared by all samples.
    """

    key = "postactivation"
    build_growth = "matrix"

    def __init__(self, n: int, n_next: int, N: int, *, build_model: bool = True):
        self.n = check_positive_int("n", n)
        self.n_next = check_positive_int("n_next", n_next)
        self.N = check_positive_int("N", N)
        super().__init__(build_model=build_model)

    @property
    def parameter_shapes(self):
        return {"W": (self.n_next, self.n), "R": (self.n, self.N), "Q": (self.n_next, self.N)}

    @property
    def variable_shapes(self):
        return {"X": (self.n, self.N)}

    def _build(self):
        X = cp.Variable((self.n, self.N), name="X")
        p = {name: _param(shape, name) for name, shape in self.parameter_shapes.items()}
        objective = cp.sum_squares(X - p["R"]) + cp.sum_squares(p["W"] @ X - p["Q"])
        return {"X": X}, p, cp.Problem(cp.Minimize(objective))

    def objective(self, values):
        p, X = self.parameters, values["X"]
        return _sq(X - p["R"]) + _sq(p["W"] @ X - p["Q"])

    def closed_form(self):
        W, R, Q = self.parameters["W"], self.parameters["R"], self.parameters["Q"]
        return {"X": solve_postactivation(W, R + W.T @ Q)}


# ============================================================================ S_l, T_l
class SlackProjection(_Elementwise):
    r"""Slacks ``S_l, T_l`` of the sign constraints: projection onto the nonnegative orthant.

    .. math::

        \min_{S \ge 0,\ T \ge 0}\ \|S - P_S\|_F^2 + \|T - P_T\|_F^2,
        \qquad P_S = D \odot Z + \Lambda_3/\rho,\quad P_T = -(1 - D) \odot Z - \Lambda_4/\rho .

    Closed form ``S = max(P_S, 0)``, ``T = max(P_T, 0)``.
    """

    key = "slacks"

    @property
    def parameter_shapes(self):
        return {"PS": (self.n, self.N), "PT": (self.n, self.N)}

    @property
    def variable_shapes(self):
        return {"S": (self.n, self.N), "T": (self.n, self.N)}

    def _build(self):
        shape = (self.n, self.N)
        S, T = cp.Variable(shape, name="S"), cp.Variable(shape, name="T")
        p = {name: _param(shape, name) for name in ("PS", "PT")}
        objective = cp.sum_squares(S - p["PS"]) + cp.sum_squares(T - p["PT"])
        return {"S": S, "T": T}, p, cp.Problem(cp.Minimize(objective), [S >= 0, T >= 0])

    def objective(self, values):
        return _sq(values["S"] - self.parameters["PS"]) + _sq(values["T"] - self.parameters["PT"])

    def closed_form(self):
        return {"S": np.maximum(self.parameters["PS"], 0.0), "T": np.maximum(self.parameters["PT"], 0.0)}

    def infeasibility(self, values):
        return float(max(np.max(-values["S"], initial=0.0), np.max(-values["T"], initial=0.0)))


# ============================================================================ Z_L
class OutputSquaredLoss(_Elementwise):
    r"""Output pre-activation ``Z_L``: proximal step of the squared loss.

    .. math::

        \min_Z\ w \|Z - Y\|_F^2 + \|Z - Q\|_F^2,
        \qquad w = \alpha/\rho,\quad Q = W_L X_{L-1} + b_L 1^T - \Lambda_{1,L}/\rho,

    for the loss ``f = (α/2)||Z_L − Y||²``. Closed form ``Z = (w Y + Q) / (1 + w)``. To stay
    DPP and cheap to canonicalise, the model carries the residual ``V = Z − Y`` as a variable.
    """

    key = "output_l2"
    _nonnegative_parameters = frozenset({"w"})

    @property
    def parameter_shapes(self):
        return {"Y": (self.n, self.N), "Q": (self.n, self.N), "w": ()}

    @property
    def variable_shapes(self):
        return {"Z": (self.n, self.N)}

    def _build(self):
        # w ||Z − Y||² is not DPP as written (a parameter times a parameter-affine term), and
        # expanding it puts the product w·Y against Z, whose DPP canonicalisation grows
        # quadratically. The residual V = Z − Y as its own variable keeps every product
        # parameter-free: w ||V||² with V == Z − Y.
        shape = (self.n, self.N)
        Z, V = cp.Variable(shape, name="Z"), cp.Variable(shape, name="V")
        p = {"Y": _param(shape, "Y"), "Q": _param(shape, "Q"), "w": _param((), "w", nonneg=True)}
        objective = p["w"] * cp.sum_squares(V) + cp.sum_squares(Z - p["Q"])
        problem = cp.Problem(cp.Minimize(objective), [V == Z - p["Y"]])
        return {"Z": Z, "V": V}, p, problem

    def variable_values(self):
        return {"Z": super().variable_values()["Z"]}

    def objective(self, values):
        p = self.parameters
        return p["w"] * _sq(values["Z"] - p["Y"]) + _sq(values["Z"] - p["Q"])

    def closed_form(self):
        p = self.parameters
        return {"Z": (p["w"] * p["Y"] + p["Q"]) / (1.0 + p["w"])}


class OutputSoftmaxCrossEntropy(_Elementwise):
    r"""Output pre-activation ``Z_L``: proximal step of softmax cross-entropy.

    .. math::

        \min_Z\ 2w \sum_j \big(\operatorname{lse}(z_j) - y_j^T z_j\big) + \|Z - Q\|_F^2,
        \qquad w = \alpha/\rho,

    for ``f = α Σ_j (lse(z_j) − y_jᵀ z_j)`` (columns ``z_j``; ``y_j`` on the simplex). There is
    no closed form; the model needs an exponential-cone backend. To stay DPP, the product
    ``2w·Y`` is its own parameter ``wY`` and is set together with ``w``.
    """

    key = "output_softmax"
    build_growth = "exp"
    requires = "EXP"
    has_closed_form = False
    _nonnegative_parameters = frozenset({"w"})

    @property
    def parameter_shapes(self):
        return {"Y": (self.n, self.N), "Q": (self.n, self.N), "w": ()}

    @property
    def variable_shapes(self):
        return {"Z": (self.n, self.N)}

    def set_parameters(self, **values):
        if "Y" in values:
            Y = as_float_array("Y", values["Y"])
            if np.any(Y < 0) or not np.allclose(Y.sum(axis=0), 1.0, atol=1e-8):
                raise ProblemError(
                    "`Y` for softmax cross-entropy must have nonnegative columns summing to 1 "
                    "(one-hot labels or class probabilities, samples as columns)."
                )
        return super().set_parameters(**values)

    def _push_parameters(self, checked):
        super()._push_parameters({k: v for k, v in checked.items() if k in ("Q", "w")})
        if self.model is not None:
            self._cp_parameters["wY"].value = 2.0 * self.parameters["w"] * self.parameters["Y"]

    def _build(self):
        Z = cp.Variable((self.n, self.N), name="Z")
        p = {
            "Q": _param((self.n, self.N), "Q"),
            "w": _param((), "w", nonneg=True),
            "wY": _param((self.n, self.N), "wY"),
        }
        objective = (
            2 * p["w"] * cp.sum(cp.log_sum_exp(Z, axis=0))
            - cp.sum(cp.multiply(p["wY"], Z))
            + cp.sum_squares(Z - p["Q"])
        )
        return {"Z": Z}, p, cp.Problem(cp.Minimize(objective))

    def objective(self, values):
        p, Z = self.parameters, values["Z"]
        lse = scipy.special.logsumexp(Z, axis=0)
        return 2.0 * p["w"] * float(np.sum(lse) - np.sum(p["Y"] * Z)) + _sq(Z - p["Q"])

    def gradient(self, Z: np.ndarray) -> np.ndarray:
        """Gradient of the objective at ``Z`` (used by reference solvers and tests)."""
        p = self.parameters
        return 2.0 * p["w"] * (scipy.special.softmax(Z, axis=0) - p["Y"]) + 2.0 * (Z - p["Q"])


# ============================================================================ joint blocks with the slacks
class PreactivationSlacks(_Elementwise):
    r"""Joint block ``(Z_l, S_l, T_l)`` of a hidden layer: pre-activation and sign slacks together.

    .. math::

        \min_{Z,\ S \ge 0,\ T \ge 0}\ \|Z - Q\|^2 + \|D \odot Z - P_2\|^2
            + \|D \odot Z - S + A_3\|^2 + \|(1 - D) \odot Z + T + A_4\|^2,

    with ``Q = W_l X_{l-1} + b_l 1ᵀ − Λ1/ρ``, ``P2 = X + Λ2/ρ``, ``A3 = Λ3/ρ``, ``A4 = Λ4/ρ``:
    the same ``(2/ρ) L_ρ`` as :class:`HiddenPreactivation` and :class:`SlackProjection`, minimised
    over the three variables at once (a convex QP: every term is a square of an affine function).
    Splitting ``Z`` from ``S, T`` makes the old slacks act as a proximal anchor on ``Z`` (a sweep
    moves ``Z`` only part of the way); the joint block has no such anchor.

    Closed form, elementwise: minimising over ``S, T`` first leaves the convex piecewise quadratic
    ``φ(z) = (z − q)² + (dz − p₂)² + min(dz + a₃, 0)² + max((1 − d)z + a₄, 0)²``; its minimiser is
    the stationary point of the quadratic given by which of the two hinge terms is active, and the
    active set follows from the sign of ``φ'`` at the two hinge points
    (:func:`formulation.closed_forms.preactivation_slacks_chunk`). Then
    ``S = max(dz + a₃, 0)`` and ``T = max(−(1 − d)z − a₄, 0)``.
    """

    key = "preactivation_slacks"
    build_growth = "elementwise"

    @property
    def parameter_shapes(self):
        shape = (self.n, self.N)
        return {name: shape for name in ("D", "Q", "P2", "A3", "A4")}

    @property
    def variable_shapes(self):
        shape = (self.n, self.N)
        return {"Z": shape, "S": shape, "T": shape}

    def _build(self):
        shape = (self.n, self.N)
        Z, S, T = (cp.Variable(shape, name=name) for name in ("Z", "S", "T"))
        p = {name: _param(shape, name) for name in self.parameter_shapes}
        DZ = cp.multiply(p["D"], Z)
        objective = (cp.sum_squares(Z - p["Q"]) + cp.sum_squares(DZ - p["P2"])
                     + cp.sum_squares(DZ - S + p["A3"]) + cp.sum_squares(Z - DZ + T + p["A4"]))
        return {"Z": Z, "S": S, "T": T}, p, cp.Problem(cp.Minimize(objective), [S >= 0, T >= 0])

    def objective(self, values):
        p, Z = self.parameters, values["Z"]
        DZ = p["D"] * Z
        return (_sq(Z - p["Q"]) + _sq(DZ - p["P2"]) + _sq(DZ - values["S"] + p["A3"])
                + _sq(Z - DZ + values["T"] + p["A4"]))

    def closed_form(self):
        p = self.parameters
        out = {name: np.empty((self.n, self.N)) for name in ("Z", "S", "T")}
        preactivation_slacks_chunk(*(p[k] for k in ("D", "Q", "P2", "A3", "A4")), *(out[k] for k in ("Z", "S", "T")))
        return out

    def infeasibility(self, values):
        return float(max(np.max(-values["S"], initial=0.0), np.max(-values["T"], initial=0.0)))


class ActivationSlacks(_ActivationBlock):
    r"""Joint block ``(D_l, S_l, T_l)`` of a hidden layer: activation and sign slacks together.

    .. math::

        \min_{0 \le D \le 1,\ S \ge 0,\ T \ge 0}\ \|Z \odot D - P_2\|^2 + \|Z \odot D - S + A_3\|^2
            + \|Z - Z \odot D + T + A_4\|^2,

    ``P2 = X + Λ2/ρ``, ``A3 = Λ3/ρ``, ``A4 = Λ4/ρ`` (the terms of ``(2/ρ) L_ρ`` that involve
    ``D, S, T``). Convex: written in ``U = Z ⊙ D`` the box becomes ``min(Z,0) ≤ U ≤ max(Z,0)``.

    Closed form, elementwise: minimising over ``S, T`` leaves the convex piecewise quadratic
    ``ψ(u) = (u − p₂)² + min(u + a₃, 0)² + max(z − u + a₄, 0)²``; its unconstrained minimiser is the
    stationary point of the quadratic given by the active hinge terms (read off the sign of ``ψ'``
    at the hinge points, :func:`formulation.closed_forms.activation_slacks_chunk`), and the
    constrained one is its projection on the interval. ``D = U / Z`` where ``Z ≠ 0``; where
    ``Z = 0``, ``D`` is free: it keeps ``D_prev`` (as :class:`ActivationBoxQP`). Then
    ``S = max(U + a₃, 0)``, ``T = max(U − Z − a₄, 0)``.
    """

    key = "activation_slacks"

    @property
    def parameter_shapes(self):
        shape = (self.n, self.N)
        return {name: shape for name in ("Z", "P2", "A3", "A4")}

    @property
    def variable_shapes(self):
        shape = (self.n, self.N)
        return {"D": shape, "S": shape, "T": shape}

    def _build(self):
        shape = (self.n, self.N)
        U, S, T = (cp.Variable(shape, name=name) for name in ("U", "S", "T"))
        p = {name: _param(shape, name) for name in ("Z", "P2", "A3", "A4", "lower", "upper")}
        objective = (cp.sum_squares(U - p["P2"]) + cp.sum_squares(U - S + p["A3"])
                     + cp.sum_squares(p["Z"] - U + T + p["A4"]))
        constraints = [U >= p["lower"], U <= p["upper"], S >= 0, T >= 0]
        return {"U": U, "S": S, "T": T}, p, cp.Problem(cp.Minimize(objective), constraints)

    def variable_values(self):
        values = super().variable_values()
        U = values.pop("U")
        if U is None:
            return {"D": None, "S": values["S"], "T": values["T"]}
        D = _activation_from_product(U, self.parameters["Z"], self.D_prev)
        return {"D": D, "S": values["S"], "T": values["T"]}

    def objective(self, values):
        p = self.parameters
        U = p["Z"] * values["D"]
        return (_sq(U - p["P2"]) + _sq(U - values["S"] + p["A3"])
                + _sq(p["Z"] - U + values["T"] + p["A4"]))

    def closed_form(self):
        p = self.parameters
        out = {"D": self.D_prev.copy(), "S": np.empty((self.n, self.N)), "T": np.empty((self.n, self.N))}
        activation_slacks_chunk(*(p[k] for k in ("Z", "P2", "A3", "A4")), *(out[k] for k in ("D", "S", "T")))
        return out

    def canonical(self, values):
        # D is not unique where Z = 0; Z ⊙ D and the slacks are
        return {"Z*D": self.parameters["Z"] * values["D"], "S": values["S"], "T": values["T"]}

    def infeasibility(self, values):
        D = values["D"]
        return float(max(np.max(-D, initial=0.0), np.max(D - 1.0, initial=0.0),
                         np.max(-values["S"], initial=0.0), np.max(-values["T"], initial=0.0)))


#: All block types, in DESIGN §3 order.
SUBPROBLEM_TYPES: tuple[type[Subproblem], ...] = (
    WeightLeastSquares,
    ActivationBoxQP,
    HiddenPreactivation,
    HiddenPostactivation,
    SlackProjection,
    OutputSquaredLoss,
    OutputSoftmaxCrossEntropy,
    PreactivationSlacks,
    ActivationSlacks,
)


