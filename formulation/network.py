r"""ReLU networks and their un-rectified representation (DESIGN §1–2).

Samples are columns: an input batch ``X0`` has shape ``(n0, N)``. For ``l = 1..L``

.. math::

    Z_l = W_l X_{l-1} + b_l 1^T,\qquad X_l = \max(Z_l, 0)\ (l < L),

and the output layer is linear: ``Z_L`` is the prediction. Un-rectifying writes every ReLU as

.. math::

    X = D \odot Z,\quad D \odot Z \ge 0,\quad (1 - D) \odot Z \le 0,\quad D \in \{0,1\}
    \tag{U}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from formulation._checks import as_float_array, check_positive_int, check_shape, read_npz
from formulation.results import ProblemError

__all__ = ["ReluNetwork", "UnrectifiedBatch"]


@dataclass
class UnrectifiedBatch:
    """The un-rectified representation of a forward pass.

    ``Z[l]``, ``X[l]`` are the pre- and post-activations of layer ``l + 1`` (0-based lists),
    ``D[l]`` the activation pattern of hidden layer ``l + 1``. ``X0`` is the input.
    """

    X0: np.ndarray
    Z: list[np.ndarray]
    X: list[np.ndarray]
    D: list[np.ndarray]


class ReluNetwork:
    """A fully connected ReLU network with a linear output layer.

    Parameters
    ----------
    weights : sequence of ndarray
        ``W_l`` of shape ``(n_l, n_{l-1})`` for ``l = 1..L``.
    biases : sequence of ndarray
        ``b_l`` of shape ``(n_l,)`` (a column ``(n_l, 1)`` is accepted).

    Raises
    ------
    ProblemError
        On mismatched shapes, NaN or inf, or a non-numeric dtype.
    """

    def __init__(self, weights: Sequence, biases: Sequence):
        if len(weights) == 0:
            raise ProblemError("A network needs at least one layer: pass one weight matrix W1 or more.")
        if len(weights) != len(biases):
            raise ProblemError(
                f"Got {len(weights)} weight matrices but {len(biases)} bias vectors; pass one bias per layer."
            )
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        previous = None
        for index, (W, b) in enumerate(zip(weights, biases), start=1):
            W = as_float_array(f"W{index}", W, ndim=2)
            b = as_float_array(f"b{index}", b)
            if b.ndim == 2 and b.shape[1] == 1:
                b = b[:, 0]
            check_shape(f"b{index}", b, (W.shape[0],), f"b{index} needs one entry per row of W{index}.")
            if previous is not None and W.shape[1] != previous:
                raise ProblemError(
                    f"`W{index}` has shape {W.shape} but layer {index - 1} has {previous} units: "
                    f"W{index} must have {previous} columns."
                )
            if W.shape[0] == 0 or W.shape[1] == 0:
                raise ProblemError(f"`W{index}` has an empty dimension {W.shape}; every layer needs a unit.")
            previous = W.shape[0]
            self.weights.append(W)
            self.biases.append(b)

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(cls, widths: Sequence[int], seed: int | np.random.Generator = 0, scale: str = "he") -> ReluNetwork:
        """A network with He-initialised weights (normal, variance ``2 / n_{l-1}``) and small biases.

        ``widths = (n0, n1, ..., nL)``.
        """
        widths = [check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
        if len(widths) < 2:
            raise ProblemError(f"`widths` needs at least an input and an output size, got {widths}.")
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            std = np.sqrt(2.0 / n_in) if scale == "he" else 1.0
            weights.append(rng.normal(0.0, std, size=(n_out, n_in)))
            biases.append(rng.normal(0.0, 0.1, size=n_out))
        return cls(weights, biases)

    # ------------------------------------------------------------------ properties
    @property
    def depth(self) -> int:
        """Number of affine layers ``L``."""
        return len(self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        """``(n0, n1, ..., nL)``."""
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

    def __repr__(self) -> str:
        return f"ReluNetwork(widths={self.widths})"

    def copy(self) -> ReluNetwork:
        return ReluNetwork([W.copy() for W in self.weights], [b.copy() for b in self.biases])

    # ------------------------------------------------------------------ evaluation
    def _check_input(self, X0) -> np.ndarray:
        X0 = as_float_array("X0", X0)
        if X0.ndim == 1:
            X0 = X0[:, None]
        check_shape(
            "X0", X0, (self.widths[0], None),
            f"The network takes {self.widths[0]} inputs and samples are columns; "
            "transpose a samples-as-rows array with `.T`.",
        )
        return X0

    def unrectify(self, X0) -> UnrectifiedBatch:
        """Forward pass returning ``Z_l``, ``X_l`` and the activation pattern ``D_l = 1[Z_l > 0]``."""
        X = inputs = self._check_input(X0)
        Zs, Xs, Ds = [], [], []
        for index, (W, b) in enumerate(zip(self.weights, self.biases)):
            Z = W @ X + b[:, None]
            Zs.append(Z)
            if index < self.depth - 1:
                D = (Z > 0).astype(np.float64)
                X = D * Z
                Ds.append(D)
            else:
                X = Z
            Xs.append(X)
        return UnrectifiedBatch(X0=inputs, Z=Zs, X=Xs, D=Ds)

    def forward(self, X0) -> np.ndarray:
        """Network output ``Z_L`` of shape ``(nL, N)`` for inputs ``X0`` of shape ``(n0, N)``."""
        return self.unrectify(X0).Z[-1]

    __call__ = forward

    def activation_pattern(self, X0) -> list[np.ndarray]:
        """Binary ``D_l = 1[Z_l > 0]`` for every hidden layer (``Z = 0`` maps to 0)."""
        return self.unrectify(X0).D

    # ------------------------------------------------------------------ (U)
    @staticmethod
    def check_unrectified(Z, X, D, *, atol: float = 1e-9, binary: bool = False) -> dict[str, float]:
        """Residuals of (U) for one layer; all zero (within ``atol``) iff (U) holds.

        Returns a dict with the max violations of ``X = D⊙Z``, ``D⊙Z ≥ 0``, ``(1−D)⊙Z ≤ 0``,
        ``0 ≤ D ≤ 1`` (and of ``D ∈ {0,1}`` when ``binary``) and ``holds``: 1.0 or 0.0.
        """
        Z = as_float_array("Z", Z)
        X = as_float_array("X", X)
        D = as_float_array("D", D)
        check_shape("X", X, Z.shape, "X, Z and D must have the same shape.")
        check_shape("D", D, Z.shape, "X, Z and D must have the same shape.")
        residuals = {
            "X=D*Z": float(np.max(np.abs(X - D * Z), initial=0.0)),
            "D*Z>=0": float(np.max(-(D * Z), initial=0.0)),
            "(1-D)*Z<=0": float(np.max((1 - D) * Z, initial=0.0)),
            "0<=D<=1": float(max(np.max(-D, initial=0.0), np.max(D - 1, initial=0.0))),
        }
        if binary:
            residuals["D binary"] = float(np.max(np.minimum(np.abs(D), np.abs(D - 1)), initial=0.0))
        residuals["holds"] = float(all(value <= atol for value in residuals.values()))
        return residuals

    # ------------------------------------------------------------------ other formats (formulation.interchange)
    @classmethod
    def from_onnx(cls, path: str | os.PathLike) -> ReluNetwork:
        """Read an ONNX file of ``Gemm`` or ``MatMul`` (+``Add``) and ``Relu`` nodes (``Flatten`` at the input).

        Any other operator is refused with its name and node; needs the ``onnx`` package
        (:func:`formulation.interchange.from_onnx`).
        """
        from formulation.interchange import from_onnx

        return from_onnx(path)

    def to_onnx(self, path: str | os.PathLike, *, dtype: str = "float64") -> str:
        """Write an ONNX file of ``Gemm`` and ``Relu`` nodes, input ``(N, n0)``, samples as rows; float64 by
        default, so that :meth:`from_onnx` gives back the same weights (:func:`formulation.interchange.to_onnx`)."""
        from formulation.interchange import to_onnx

        return to_onnx(self, path, dtype=dtype)

    @classmethod
    def from_torch(cls, module) -> ReluNetwork:
        """The network of an ``nn.Sequential`` of ``nn.Linear`` / ``nn.ReLU`` (``nn.Flatten`` first), exactly in
        float64; any other module is refused by name (:func:`formulation.interchange.from_torch`)."""
        from formulation.interchange import from_torch

        return from_torch(module)

    def to_torch(self, dtype="float64"):
        """``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)`` with these weights in ``dtype`` (``"float64"``
        exact, ``"float32"`` rounded; :func:`formulation.interchange.to_torch`)."""
        from formulation.interchange import to_torch

        return to_torch(self, dtype=dtype)

    @classmethod
    def from_sklearn(cls, estimator) -> ReluNetwork:
        """The network of a fitted scikit-learn ``MLPRegressor`` with ``activation="relu"`` (``W_l =
        coefs_[l-1]ᵀ``, ``b_l = intercepts_[l-1]``; :func:`formulation.interchange.from_sklearn`)."""
        from formulation.interchange import from_sklearn

        return from_sklearn(estimator)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> str:
        """Save as ``.npz`` with keys ``W1, b1, ..., WL, bL`` (``W_l`` of shape ``(n_l, n_{l-1})``), or as ONNX
        when ``path`` ends with ``.onnx`` (:meth:`to_onnx`, float64). Returns the path written.

        ``.npz`` is appended to any other path. The file is written to a temporary name and renamed, so an
        interruption never leaves a truncated file behind.
        """
        path = os.fspath(path)
        if path.lower().endswith(".onnx"):
            return self.to_onnx(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays = {}
        for index, (W, b) in enumerate(zip(self.weights, self.biases), start=1):
            arrays[f"W{index}"] = W
            arrays[f"b{index}"] = b
        temporary = path + ".tmp.npz"
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReluNetwork:
        """Load a network saved by :meth:`save`: ``.onnx`` through :meth:`from_onnx`, any other path as ``.npz``.

        Never unpickles: a PyTorch ``.pt``/``.pth`` file (a pickle) is refused with a ``ProblemError`` that
        points to ONNX or to saving the ``state_dict`` as ``.npz``.
        """
        from formulation.interchange import PICKLE_SUFFIXES, refuse_pickle

        path = os.fspath(path)
        if path.lower().endswith(".onnx"):
            return cls.from_onnx(path)
        if path.lower().endswith(PICKLE_SUFFIXES):
            refuse_pickle(path)
        arrays = read_npz(path, "Network file", "check the path, or write the file with `ReluNetwork.save` or "
                                                "`np.savez(path, W1=..., b1=..., ...)`.")
        depth = 0
        while f"W{depth + 1}" in arrays or f"b{depth + 1}" in arrays:
            depth += 1
        if depth == 0:
            raise ProblemError(
                f"Network file {path!r} has keys {sorted(arrays)} but no `W1`; "
                "it must hold W1, b1, ..., WL, bL with W_l of shape (n_l, n_{l-1})."
            )
        for index in range(1, depth + 1):
            for key in (f"W{index}", f"b{index}"):
                if key not in arrays:
                    raise ProblemError(
                        f"Network file {path!r} is missing key `{key}` (found {sorted(arrays)}); "
                        "every layer needs both W_l and b_l."
                    )
        extra = sorted(set(arrays) - {f"{k}{i}" for i in range(1, depth + 1) for k in "Wb"})
        if extra:
            raise ProblemError(
                f"Network file {path!r} has unexpected keys {extra}; layers must be numbered 1..L without gaps."
            )
        return cls([arrays[f"W{i}"] for i in range(1, depth + 1)], [arrays[f"b{i}"] for i in range(1, depth + 1)])
