r"""The augmented-Lagrangian learning problem of DESIGN §3.

.. math::

    \min\ f(Z_L; Y) + \tfrac{\mu}{2}\sum_l \|W_l\|^2 \quad\text{s.t., for } l = 1..L:\
    C1_l = Z_l - W_l X_{l-1} - b_l 1^T = 0,

and for hidden ``l < L``: ``C2_l = X_l − D_l⊙Z_l = 0``, ``C3_l = D_l⊙Z_l − S_l = 0``,
``C4_l = (1 − D_l)⊙Z_l + T_l = 0`` with ``S_l, T_l ≥ 0`` and ``0 ≤ D_l ≤ 1``. The loss is
``f = (α/2)||Z_L − Y||²`` (``loss="squared"``) or ``f = α Σ_j (lse(z_j) − y_jᵀ z_j)``
(``loss="softmax"``), with ``α = loss_scale``. The augmented Lagrangian is

.. math::

    L_\rho = f + \tfrac{\mu}{2}\sum\|W\|^2 + \sum_k \langle \Lambda_k, C_k\rangle
             + \tfrac{\rho}{2}\sum_k \|C_k\|^2 .

**Block order of one sweep** (each block minimises ``L_ρ`` exactly, so ``L_ρ`` never increases):
for ``l = 1..L−1``: ``(W_l, b_l)``, ``Z_l``, ``D_l``, ``(S_l, T_l)``, ``X_l``; then
``(W_L, b_L)`` and ``Z_L``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import numpy as np
import scipy.special

from formulation import subproblems as sp
from formulation._checks import as_float_array, check_nonnegative
from formulation.closed_forms import column_chunks
from formulation.network import ReluNetwork
from formulation.results import ProblemError

__all__ = ["ALState", "ALProblem", "BLOCK_ORDER_DOC"]

#: State arrays a joint block overwrites and does not read through its parameters.
_OVERWRITTEN = {"preactivation_slacks": ("Z", "S", "T"), "activation_slacks": ("D", "S", "T")}

BLOCK_ORDER_DOC = "for each hidden l: W_l,b_l -> Z_l -> D_l -> S_l,T_l -> X_l; then W_L,b_L -> Z_L"

LOSSES = ("squared", "softmax")
SCHEMES = ("split", "joint")
ORDERS = ("forward", "backward")
DTYPES = ("float64", "float32")


def check_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)`` if it is one of :data:`DTYPES`, else a ``ProblemError`` naming them."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked is None or checked.name not in DTYPES:
        raise ProblemError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    return checked


@dataclass
class ALState:
    """Primal variables, multipliers and penalty of the AL method.

    Lists are indexed by layer, 0-based (``W[0]`` is ``W_1``). ``W, b, Z, lam1`` have ``L``
    entries; ``X, D, S, T, lam2, lam3, lam4`` have ``L − 1`` (hidden layers only).
    """

    W: list[np.ndarray]
    b: list[np.ndarray]
    Z: list[np.ndarray]
    X: list[np.ndarray]
    D: list[np.ndarray]
    S: list[np.ndarray]
    T: list[np.ndarray]
    lam1: list[np.ndarray]
    lam2: list[np.ndarray]
    lam3: list[np.ndarray]
    lam4: list[np.ndarray]
    rho: float = 1.0
    extra: dict = field(default_factory=dict)

    #: Primal blocks in a fixed order (used to flatten for gradient checks).
    PRIMAL = ("W", "b", "Z", "X", "D", "S", "T")
    MULTIPLIERS = ("lam1", "lam2", "lam3", "lam4")

    def copy(self) -> ALState:
        kwargs = {f.name: [a.copy() for a in getattr(self, f.name)]
                  for f in fields(self) if f.name not in ("rho", "extra")}
        return ALState(rho=self.rho, extra=dict(self.extra), **kwargs)

    def network(self) -> ReluNetwork:
        """The network with the current weights (what is actually learned)."""
        return ReluNetwork(self.W, self.b)

    def arrays(self) -> Iterator[tuple[str, int, np.ndarray]]:
        """Every array as ``(name, layer index, array)``."""
        for name in self.PRIMAL + self.MULTIPLIERS:
            for index, array in enumerate(getattr(self, name)):
                yield name, index, array


class ALProblem:
    """The AL learning problem for data ``X0 (n0, N)``, ``Y (nL, N)`` and given layer widths.

    Parameters
    ----------
    X0, Y : ndarray
        Inputs and targets, samples as columns.
    widths : sequence of int
        ``(n0, n1, ..., nL)``; ``n0`` and ``nL`` must match ``X0`` and ``Y``.
    mu : float
        Weight decay ``μ ≥ 0``.
    loss : {"squared", "softmax"}
    loss_scale : float
        ``α > 0`` in ``f``.
    dtype : {"float64", "float32"}
        Floating type of the data and of every array of the state (float32 halves the memory and
        the time of the matrix products; the small linear systems are solved in float64 either way).
    """

    def __init__(self, X0, Y, widths, *, mu: float = 0.0, loss: str = "squared", loss_scale: float = 1.0,
                 dtype: str | np.dtype = "float64"):
        self.dtype = check_dtype(dtype)
        self.X0 = as_float_array("X0", X0, ndim=2).astype(self.dtype, copy=False)
        self.Y = as_float_array("Y", Y, ndim=2).astype(self.dtype, copy=False)
        if self.X0.shape[1] != self.Y.shape[1]:
            raise ProblemError(
                f"`X0` has {self.X0.shape[1]} columns but `Y` has {self.Y.shape[1]}: samples are columns, "
                "so both need one column per sample."
            )
        self.widths = tuple(int(w) for w in widths)
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ProblemError(f"`widths` must be (n0, ..., nL) with positive entries, got {widths}.")
        if self.widths[0] != self.X0.shape[0] or self.widths[-1] != self.Y.shape[0]:
            raise ProblemError(
                f"`widths` {self.widths} do not match the data: X0 has {self.X0.shape[0]} rows and Y has "
                f"{self.Y.shape[0]}; the first and last widths must equal them."
            )
        if loss not in LOSSES:
            raise ProblemError(f"Unknown loss {loss!r}; choose one of {LOSSES}.")
        if loss == "softmax" and (np.any(self.Y < 0) or not np.allclose(self.Y.sum(axis=0), 1.0, atol=1e-8)):
            raise ProblemError("For the softmax loss `Y` needs nonnegative columns summing to 1 (one-hot labels).")
        self.mu = check_nonnegative("mu", mu)
        self.loss = loss
        self.loss_scale = check_nonnegative("loss_scale", loss_scale)
        if self.loss_scale == 0:
            raise ProblemError("`loss_scale` must be positive.")
        self.N = self.X0.shape[1]
        self.L = len(self.widths) - 1
        self._subproblems: dict[tuple[str, int], sp.Subproblem] = {}

    # ------------------------------------------------------------------ states
    def initial_state(self, network: ReluNetwork, rho: float = 1.0) -> ALState:
        """Auxiliary variables from a forward pass of ``network``; multipliers zero.

        Then every constraint holds exactly (violation 0) and ``D = 1[Z > 0]``.
        """
        if tuple(network.widths) != self.widths:
            raise ProblemError(f"The network has widths {network.widths} but the problem expects {self.widths}.")
        rho = check_nonnegative("rho", rho)
        if rho == 0:
            raise ProblemError("`rho` must be positive.")
        dtype = self.dtype
        hidden = [np.empty((self.widths[l + 1], self.N), dtype=dtype) for l in range(self.L - 1)]

        def like_hidden():
            return [np.empty_like(a) for a in hidden]

        Z = self.forward_preactivations([w.astype(dtype) for w in network.weights],
                                        [b.astype(dtype) for b in network.biases])
        state = ALState(
            W=[w.astype(dtype) for w in network.weights],
            b=[b.astype(dtype) for b in network.biases],
            Z=Z, X=hidden, D=like_hidden(), S=like_hidden(), T=like_hidden(),
            lam1=[np.zeros_like(z) for z in Z],
            lam2=[np.zeros_like(a) for a in hidden],
            lam3=[np.zeros_like(a) for a in hidden],
            lam4=[np.zeros_like(a) for a in hidden],
            rho=float(rho),
        )
        self._set_auxiliaries(state)
        return state

    def _set_auxiliaries(self, state: ALState) -> None:
        """``X = S = max(Z, 0)``, ``T = max(−Z, 0)``, ``D = 1[Z > 0]`` from ``state.Z``, in place."""
        for l in range(self.L - 1):
            Zl = state.Z[l]
            np.maximum(Zl, 0.0, out=state.X[l])
            np.copyto(state.S[l], state.X[l])
            np.negative(Zl, out=state.T[l])
            np.maximum(state.T[l], 0.0, out=state.T[l])
            np.greater(Zl, 0.0, out=state.D[l], casting="unsafe")

    def warm_multipliers(self, state: ALState) -> None:
        """Set the multipliers, in place, to the first-order estimate at a forward-pass state.

        At a state from :meth:`initial_state` (every constraint exact, ``D`` binary) these make the
        gradient of the Lagrangian vanish over every block except ``W, b``, whose gradient is then
        the backpropagation gradient of the training loss: ``Λ1_L = −∇f(Z_L)``, and for
        ``l = L−1..1``: ``Λ2_l = W_{l+1}ᵀ Λ1_{l+1}``, ``Λ1_l = D ⊙ Λ2_l``,
        ``Λ3_l = (1 − D) ⊙ min(Λ2_l, 0)``, ``Λ4_l = D ⊙ max(−Λ2_l, 0)`` (the signs keep ``D`` and
        the slacks at their bounds stationary). The first sweep then sees the loss at every layer
        instead of waiting for multipliers to build up from zero.
        """
        np.negative(self.loss_gradient(state.Z[-1]), out=state.lam1[-1])
        for l in range(self.L - 2, -1, -1):
            D, lam2 = state.D[l], state.lam2[l]
            np.matmul(state.W[l + 1].T, state.lam1[l + 1], out=lam2)
            np.multiply(D, lam2, out=state.lam1[l])
            lam3, lam4 = state.lam3[l], state.lam4[l]
            np.minimum(lam2, 0.0, out=lam3)
            lam3 -= D * lam3  # (1 − D) ⊙ min(Λ2, 0)
            np.negative(lam2, out=lam4)
            np.maximum(lam4, 0.0, out=lam4)
            lam4 *= D

    def forward_preactivations(self, W, b, out: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """``Z_l = W_l X_{l−1} + b_l 1ᵀ`` of the plain forward pass of the weights ``W, b`` (into ``out``)."""
        Z = out if out is not None else [np.empty((self.widths[l + 1], self.N), dtype=self.dtype)
                                         for l in range(self.L)]
        H = self.X0
        for l in range(self.L):
            np.matmul(W[l], H, out=Z[l])
            Z[l] += b[l][:, None]
            if l < self.L - 1:
                H = np.maximum(Z[l], 0.0)
        return Z

    def restart(self, state: ALState, Z: list[np.ndarray] | None = None) -> ALState:
        """Put ``state`` at the forward pass of its own weights, in place, with first-order multipliers.

        Afterwards ``Z`` is the forward pass (given, or computed by :meth:`forward_preactivations`),
        ``X = S = max(Z, 0)``, ``T = max(−Z, 0)``, ``D = 1[Z > 0]`` (every constraint exact) and the
        multipliers are :meth:`warm_multipliers`: the same point as :meth:`initial_state` followed by
        :meth:`warm_multipliers`, without allocating. There the KKT residual of
        :meth:`diagnostics` is the ∞-norm of the backpropagation gradient of ``f + (μ/2)Σ||W||²``.
        """
        if Z is None:
            self.forward_preactivations(state.W, state.b, out=state.Z)
        else:
            for l in range(self.L):
                np.copyto(state.Z[l], Z[l])
        self._set_auxiliaries(state)
        self.warm_multipliers(state)
        return state

    def random_state(self, rng: np.random.Generator, rho: float = 1.0, scale: float = 1.0) -> ALState:
        """A state with every block random (constraints violated), for tests and checks."""
        state = self.initial_state(ReluNetwork.random(self.widths, rng), rho)
        for name, _, array in state.arrays():
            noise = rng.normal(0.0, scale, size=array.shape)
            if name == "D":
                array[...] = rng.uniform(0.0, 1.0, size=array.shape)
            elif name in ("S", "T"):
                array[...] = np.abs(noise)
            else:
                array[...] = noise
        return state

    def _previous_X(self, state: ALState, l: int) -> np.ndarray:
        """``X_{l-1}`` for 0-based layer ``l`` (the input for ``l = 0``)."""
        return self.X0 if l == 0 else state.X[l - 1]

    # ------------------------------------------------------------------ values
    def constraints(self, state: ALState) -> dict[str, list[np.ndarray]]:
        """Residuals ``C1..C4`` per layer."""
        C1 = [state.Z[l] - state.W[l] @ self._previous_X(state, l) - state.b[l][:, None] for l in range(self.L)]
        C2, C3, C4 = [], [], []
        for l in range(self.L - 1):
            DZ = state.D[l] * state.Z[l]
            C2.append(state.X[l] - DZ)
            C3.append(DZ - state.S[l])
            C4.append(state.Z[l] - DZ + state.T[l])
        return {"C1": C1, "C2": C2, "C3": C3, "C4": C4}

    def loss_value(self, Z_L: np.ndarray) -> float:
        """``f(Z_L; Y)``."""
        if self.loss == "squared":  # accumulated in float64 whatever the state's dtype
            return 0.5 * self.loss_scale * float(np.sum(np.square(Z_L - self.Y), dtype=np.float64))
        lse = scipy.special.logsumexp(Z_L, axis=0)
        return self.loss_scale * float(np.sum(lse) - np.sum(self.Y * Z_L))

    def loss_gradient(self, Z_L: np.ndarray) -> np.ndarray:
        if self.loss == "squared":
            return self.loss_scale * (Z_L - self.Y)
        return self.loss_scale * (scipy.special.softmax(Z_L, axis=0) - self.Y)

    def objective(self, state: ALState) -> float:
        """``f(Z_L) + (μ/2) Σ ||W_l||²`` at ``state``."""
        return self.objective_of(state.W, state.Z[-1])

    def objective_of(self, W, Z_L: np.ndarray) -> float:
        """``f(Z_L) + (μ/2) Σ ||W_l||²`` for weights ``W`` and output pre-activations ``Z_L``."""
        return self.objective_from_loss(W, self.loss_value(Z_L))

    def objective_from_loss(self, W, loss: float) -> float:
        """``loss + (μ/2) Σ ||W_l||²``: the objective for weights ``W`` whose loss ``f`` is already known."""
        return loss + 0.5 * self.mu * sum(float(np.sum(w * w)) for w in W)

    def forward_loss(self, state: ALState, X0=None, Y=None) -> float:
        """Loss of the plain forward pass with the current weights (the learned network)."""
        X0 = self.X0 if X0 is None else X0
        Y = self.Y if Y is None else Y
        prediction = state.network().forward(X0)
        if self.loss == "squared":
            return 0.5 * self.loss_scale * float(np.sum((prediction - Y) ** 2))
        return self.loss_scale * float(np.sum(scipy.special.logsumexp(prediction, axis=0)) - np.sum(Y * prediction))

    def lagrangian(self, state: ALState) -> float:
        """``L_ρ`` at ``state``."""
        value = self.objective(state)
        for family, residuals in self.constraints(state).items():
            for lam, C in zip(getattr(state, "lam" + family[1]), residuals):
                value += float(np.sum(lam * C)) + 0.5 * state.rho * float(np.sum(C * C))
        return value

    def diagnostics(self, state: ALState, *, update: bool = False, bound: float = np.inf,
                    products: list[np.ndarray | None] | None = None, collect: dict | None = None) -> dict:
        r"""Violation per family, KKT residual and (optionally) the multiplier update, streamed by layer.

        The one definition of the AL method's diagnostics (DESIGN §3). With ``M_k = Λ_k + ρ C_k``
        the gradient of ``L_ρ`` is ``∂W_l = −M1_l X_{l−1}ᵀ + μ W_l``, ``∂b_l = −M1_l 1``,
        ``∂Z_l = M1_l + M4_l + D⊙A`` with ``A = M3 − M2 − M4``, ``∂D_l = Z⊙A``, ``∂S_l = −M3``,
        ``∂T_l = M4``, ``∂X_l = M2_l − W_{l+1}ᵀ M1_{l+1}`` and ``∂Z_L = ∇f(Z_L) + M1_L``. The KKT
        residual is the ∞-norm of this gradient projected on the bounds (for ``D ∈ [0,1]``:
        ``clip(D − g, 0, 1) − D``; for ``S, T ≥ 0``: ``max(S − g, 0) − S``), maxed with the
        violation ``max_k ||C_k||∞``. It equals the gradient of the ordinary Lagrangian at the
        multipliers ``Λ + ρ C``, so it vanishes exactly at a KKT point.

        Parameters
        ----------
        update : bool
            Afterwards ``Λ_k ← clip(Λ_k + ρ C_k, −bound, bound)`` in place (the safeguarded
            first-order update; the residual is taken before, at the unclipped ``M_k``).
        products : list, optional
            ``products[l] = W_l X_{l−1} + b_l 1ᵀ`` where the caller already has it (the fused
            sweep does); ``None`` entries are computed.
        collect : dict, optional
            Filled with the raw gradient arrays (keys :attr:`ALState.PRIMAL`, one list per block).

        Only a few temporaries of one layer are alive at a time.
        """
        rho, L = state.rho, self.L
        viol = {"C1": 0.0, "C2": 0.0, "C3": 0.0, "C4": 0.0, "bounds": 0.0}
        kkt = 0.0
        if collect is not None:
            collect.update({name: [] for name in ALState.PRIMAL})

        def amax(array):
            return float(np.max(np.abs(array), initial=0.0))

        def keep(name, array):
            if collect is not None:
                collect[name].append(array.copy())

        M2_previous = None
        for l in range(L):
            X_prev = self._previous_X(state, l)
            fitted = None if products is None else products[l]
            if fitted is None:
                M1 = state.W[l] @ X_prev
                M1 += state.b[l][:, None]
            else:
                M1 = fitted.copy()
            np.subtract(state.Z[l], M1, out=M1)
            viol["C1"] = max(viol["C1"], amax(M1))
            M1 *= rho
            M1 += state.lam1[l]
            grad = M1 @ X_prev.T
            np.negative(grad, out=grad)
            grad += self.mu * state.W[l]
            keep("W", grad)
            kkt = max(kkt, amax(grad))
            grad = -M1.sum(axis=1)
            keep("b", grad)
            kkt = max(kkt, amax(grad))
            if l > 0:  # gradient in X_{l-1}: M2_{l-1} − W_lᵀ M1_l
                grad = state.W[l].T @ M1
                np.subtract(M2_previous, grad, out=grad)
                keep("X", grad)
                kkt = max(kkt, amax(grad))
                del grad
                if update:
                    np.clip(M2_previous, -bound, bound, out=state.lam2[l - 1])
                M2_previous = None
            if l == L - 1:
                grad = self.loss_gradient(state.Z[l])
                grad += M1
                keep("Z", grad)
                kkt = max(kkt, amax(grad))
                del grad
                if update:
                    np.clip(M1, -bound, bound, out=state.lam1[l])
                break
            M2 = np.multiply(state.D[l], state.Z[l])
            np.subtract(state.X[l], M2, out=M2)
            viol["C2"] = max(viol["C2"], amax(M2))
            M2 *= rho
            M2 += state.lam2[l]
            if collect is not None:
                for name in ("Z", "D", "S", "T"):
                    collect[name].append(np.empty_like(M2))
            # the elementwise families by column chunks: a few temporaries of one chunk alive
            for cols in column_chunks(*M2.shape):
                D, Z, S, T = state.D[l][:, cols], state.Z[l][:, cols], state.S[l][:, cols], state.T[l][:, cols]
                DZ = D * Z
                M3 = np.subtract(DZ, S)
                viol["C3"] = max(viol["C3"], amax(M3))
                M3 *= rho
                M3 += state.lam3[l][:, cols]
                M4 = np.subtract(Z, DZ, out=DZ)
                del DZ
                M4 += T
                viol["C4"] = max(viol["C4"], amax(M4))
                M4 *= rho
                M4 += state.lam4[l][:, cols]
                viol["bounds"] = max(viol["bounds"], float(np.max(-D, initial=0.0)),
                                     float(np.max(D - 1, initial=0.0)), float(np.max(-S, initial=0.0)),
                                     float(np.max(-T, initial=0.0)))
                A = np.subtract(M3, M2[:, cols])
                A -= M4
                grad = D * A
                grad += M1[:, cols]
                grad += M4
                if collect is not None:
                    collect["Z"][-1][:, cols] = grad
                kkt = max(kkt, amax(grad))
                np.multiply(Z, A, out=grad)  # ∂D, projected on [0, 1]
                if collect is not None:
                    collect["D"][-1][:, cols] = grad
                    collect["S"][-1][:, cols] = -M3
                    collect["T"][-1][:, cols] = M4
                np.subtract(D, grad, out=grad)
                np.clip(grad, 0.0, 1.0, out=grad)
                grad -= D
                kkt = max(kkt, amax(grad))
                del A
                np.add(S, M3, out=grad)  # ∂S = −M3, projected on S ≥ 0
                np.maximum(grad, 0.0, out=grad)
                grad -= S
                kkt = max(kkt, amax(grad))
                np.subtract(T, M4, out=grad)  # ∂T = M4, projected on T ≥ 0
                np.maximum(grad, 0.0, out=grad)
                grad -= T
                kkt = max(kkt, amax(grad))
                del grad
                if update:
                    np.clip(M3, -bound, bound, out=state.lam3[l][:, cols])
                    np.clip(M4, -bound, bound, out=state.lam4[l][:, cols])
                del M3, M4
            if update:
                np.clip(M1, -bound, bound, out=state.lam1[l])
            del M1
            M2_previous = M2
            del M2
        viol["max"] = max(viol.values())
        return {"violation": viol, "kkt": max(kkt, viol["max"]), "stationarity": kkt}

    def violation(self, state: ALState) -> dict[str, float]:
        """``max ||C_k||∞`` per family, of the bounds, and overall (``"max"``): :meth:`diagnostics`."""
        return self.diagnostics(state)["violation"]

    def gradient(self, state: ALState) -> dict[str, list[np.ndarray]]:
        """Gradient of ``L_ρ`` with respect to every primal block (same layout as the state)."""
        grad: dict = {}
        self.diagnostics(state, collect=grad)
        return grad

    def projected_gradient(self, state: ALState) -> dict[str, list[np.ndarray]]:
        """Gradient of ``L_ρ`` projected on the bounds (zero exactly at a block-stationary point).

        For ``D ∈ [0,1]`` the entry is ``clip(D − g, 0, 1) − D``, for ``S, T ≥ 0`` it is
        ``max(S − g, 0) − S``; the unbounded blocks keep ``g``.
        """
        grad = self.gradient(state)
        for index, g in enumerate(grad["D"]):
            grad["D"][index] = np.clip(state.D[index] - g, 0.0, 1.0) - state.D[index]
        for name in ("S", "T"):
            for index, g in enumerate(grad[name]):
                x = getattr(state, name)[index]
                grad[name][index] = np.maximum(x - g, 0.0) - x
        return grad

    def kkt_residual(self, state: ALState) -> float:
        """Projected gradient over all primal blocks (∞-norm), maxed with the violation: :meth:`diagnostics`."""
        return self.diagnostics(state)["kkt"]

    # ------------------------------------------------------------------ flat vectors
    def pack(self, state: ALState) -> np.ndarray:
        """All primal blocks as one vector (order ``ALState.PRIMAL``, then layer)."""
        return np.concatenate([a.ravel() for name in ALState.PRIMAL for a in getattr(state, name)])

    def unpack(self, vector: np.ndarray, like: ALState) -> ALState:
        """Inverse of :meth:`pack`, multipliers and ``ρ`` taken from ``like``."""
        state = like.copy()
        offset = 0
        for name in ALState.PRIMAL:
            for array in getattr(state, name):
                array[...] = vector[offset: offset + array.size].reshape(array.shape)
                offset += array.size
        if offset != vector.size:
            raise ProblemError(f"vector has {vector.size} entries, the state needs {offset}.")
        return state

    def pack_gradient(self, state: ALState) -> np.ndarray:
        grad = self.gradient(state)
        return np.concatenate([g.ravel() for name in ALState.PRIMAL for g in grad[name]])

    # ------------------------------------------------------------------ blocks
    def blocks(self, scheme: str = "split", order: str = "forward") -> list[tuple[str, int]]:
        """The blocks of one sweep, in order, as ``(kind, 0-based layer)``.

        ``scheme="split"`` (DESIGN §3 table): ``Z_l``, ``D_l`` and ``(S_l, T_l)`` are separate blocks.
        ``scheme="joint"``: the slacks are minimised together with ``Z_l`` (block
        ``"preactivation_slacks"``) and again together with ``D_l`` (``"activation_slacks"``);
        both are exact, convex block minimisations of ``L_ρ``. ``order="forward"``: layer 1 to
        ``L`` (:data:`BLOCK_ORDER_DOC`); ``order="backward"``: the reverse, ``Z_L → W_L,b_L`` then
        for ``l = L−1..1``: ``X_l → D_l → S_l,T_l → Z_l → W_l,b_l`` (the loss reaches ``W_1`` within
        one sweep).
        """
        if scheme not in SCHEMES or order not in ORDERS:
            raise ProblemError(f"Unknown sweep scheme {scheme!r} or order {order!r}; choose a scheme in {SCHEMES} "
                               f"and an order in {ORDERS}.")
        if scheme == "split":
            hidden = [("weights",), ("preactivation",), ("activation",), ("slacks",), ("postactivation",)]
        else:
            hidden = [("weights",), ("preactivation_slacks",), ("activation_slacks",), ("postactivation",)]
        blocks = []
        for l in range(self.L - 1):
            blocks += [(kind, l) for (kind,) in hidden]
        blocks += [("weights", self.L - 1), ("output", self.L - 1)]
        return blocks if order == "forward" else blocks[::-1]

    def subproblem(self, block: tuple[str, int], *, build_model: bool = True) -> sp.Subproblem:
        """The (cached) subproblem object of ``block``; its CVXPY model is built once."""
        cached = self._subproblems.get(block)
        if cached is not None and (cached.model is not None or not build_model):
            return cached
        kind, l = block
        n, N = self.widths[l + 1], self.N
        if kind == "weights":
            sub = sp.WeightLeastSquares(self.widths[l], n, N, build_model=build_model)
        elif kind == "preactivation":
            sub = sp.HiddenPreactivation(n, N, build_model=build_model)
        elif kind == "activation":
            sub = sp.ActivationBoxQP(n, N, build_model=build_model)
        elif kind == "slacks":
            sub = sp.SlackProjection(n, N, build_model=build_model)
        elif kind == "preactivation_slacks":
            sub = sp.PreactivationSlacks(n, N, build_model=build_model)
        elif kind == "activation_slacks":
            sub = sp.ActivationSlacks(n, N, build_model=build_model)
        elif kind == "postactivation":
            sub = sp.HiddenPostactivation(n, self.widths[l + 2], N, build_model=build_model)
        elif kind == "output":
            cls = sp.OutputSquaredLoss if self.loss == "squared" else sp.OutputSoftmaxCrossEntropy
            sub = cls(n, N, build_model=build_model)
        else:
            raise ProblemError(f"Unknown block {block!r}; blocks are {self.blocks()} and {self.blocks('joint')}.")
        self._subproblems[block] = sub
        return sub

    def block_parameters(self, state: ALState, block: tuple[str, int]) -> dict[str, np.ndarray]:
        """Parameter values of ``block``'s subproblem at ``state`` (DESIGN §3 table)."""
        kind, l = block
        r = 1.0 / state.rho
        if kind == "weights":
            return {"X": self._previous_X(state, l), "P": state.Z[l] + r * state.lam1[l], "r": self.mu * r}
        if kind == "output":
            Q = state.W[l] @ self._previous_X(state, l) + state.b[l][:, None] - r * state.lam1[l]
            return {"Y": self.Y, "Q": Q, "w": self.loss_scale * r}
        D, Z = state.D[l], state.Z[l]
        if kind == "preactivation":
            return {
                "D": D,
                "Q": state.W[l] @ self._previous_X(state, l) + state.b[l][:, None] - r * state.lam1[l],
                "P2": state.X[l] + r * state.lam2[l],
                "P3": state.S[l] - r * state.lam3[l],
                "P4": -state.T[l] - r * state.lam4[l],
            }
        if kind == "activation":
            return {
                "Z": Z,
                "P2": state.X[l] + r * state.lam2[l],
                "P3": state.S[l] - r * state.lam3[l],
                "P4": Z + state.T[l] + r * state.lam4[l],
                "D_prev": D,
            }
        if kind == "preactivation_slacks":
            return {
                "D": D,
                "Q": state.W[l] @ self._previous_X(state, l) + state.b[l][:, None] - r * state.lam1[l],
                "P2": state.X[l] + r * state.lam2[l],
                "A3": r * state.lam3[l],
                "A4": r * state.lam4[l],
            }
        if kind == "activation_slacks":
            return {"Z": Z, "P2": state.X[l] + r * state.lam2[l], "A3": r * state.lam3[l], "A4": r * state.lam4[l],
                    "D_prev": D}
        if kind == "slacks":
            DZ = D * Z
            return {"PS": DZ + r * state.lam3[l], "PT": -(Z - DZ) - r * state.lam4[l]}
        if kind == "postactivation":
            return {
                "W": state.W[l + 1],
                "R": D * Z - r * state.lam2[l],
                "Q": state.Z[l + 1] - state.b[l + 1][:, None] + r * state.lam1[l + 1],
            }
        raise ProblemError(f"Unknown block {block!r}.")

    @staticmethod
    def assign(state: ALState, block: tuple[str, int], values: dict[str, np.ndarray]) -> None:
        """Write a block's solution into ``state`` in place."""
        kind, l = block
        if kind == "weights":
            state.W[l], state.b[l] = values["W"], values["b"]
        elif kind in ("preactivation", "output"):
            state.Z[l] = values["Z"]
        elif kind == "activation":
            state.D[l] = values["D"]
        elif kind == "slacks":
            state.S[l], state.T[l] = values["S"], values["T"]
        elif kind == "preactivation_slacks":
            state.Z[l], state.S[l], state.T[l] = values["Z"], values["S"], values["T"]
        elif kind == "activation_slacks":
            state.D[l], state.S[l], state.T[l] = values["D"], values["S"], values["T"]
        elif kind == "postactivation":
            state.X[l] = values["X"]

    def sweep(
        self,
        state: ALState,
        solve: Callable[[sp.Subproblem], dict[str, np.ndarray]],
        *,
        build_model: bool = False,
        callback: Callable[[tuple[str, int], ALState], None] | None = None,
        scheme: str = "split",
        order: str = "forward",
    ) -> ALState:
        """One block-coordinate sweep in :meth:`blocks` order (``scheme``, ``order``), in place; returns ``state``.

        ``solve`` maps a subproblem with its parameters set to the values of its variables
        (for example ``lambda sub: solvers.solve(sub, "closed_form").values``).
        ``formulation`` never imports a backend, so the caller provides it.
        """
        for block in self.blocks(scheme, order):
            sub = self.subproblem(block, build_model=build_model)
            sub.set_parameters(**self.block_parameters(state, block))
            released = {}
            if not build_model:
                # the joint blocks' parameters do not reference the arrays they overwrite: release
                # them during the solve (restored if it fails), so that fewer old and new values are
                # alive together
                for name in _OVERWRITTEN.get(block[0], ()):
                    released[name] = getattr(state, name)[block[1]]
                    getattr(state, name)[block[1]] = None
            try:
                values = solve(sub)
            except BaseException:
                for name, array in released.items():
                    getattr(state, name)[block[1]] = array
                raise
            del released
            self.assign(state, block, values)
            if not build_model:  # release the parameter arrays: they are as large as the state
                sub.parameters = {}
                if hasattr(sub, "D_prev"):
                    sub.D_prev = state.D[block[1]]
            if callback is not None:
                callback(block, state)
        return state

    def update_multipliers(self, state: ALState, bound: float = 1e6) -> None:
        """Safeguarded first-order update ``Λ ← clip(Λ + ρ C, −bound, bound)`` in place (:meth:`diagnostics`)."""
        self.diagnostics(state, update=True, bound=bound)
