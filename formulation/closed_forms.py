r"""The closed-form block minimisers of DESIGN §3, written once.

Both ways of running a sweep use these functions: the per-block ``closed_form()`` of
:mod:`formulation.subproblems` (what the ``closed_form`` backend dispatches, and what the
contract tests check against CVXPY) and the fused sweep of :mod:`formulation.fused`. So the two
paths give the same iterates, and a fix here reaches both.

The elementwise kernels (``*_chunk``, and :func:`joint_layer`, which runs both joint blocks of a
layer in one pass) are compiled by numba: they take ``(n, m)`` arrays of any strides and write
their results into the output arrays they are given, allocating nothing. The maths of one entry is
in ``_preactivation_entry`` and ``_activation_entry``. Their active-set logic comes from convexity:

* **Joint pre-activation block** ``(Z, S, T)``. Minimising over the slacks leaves, per entry,
  ``φ(z) = (z − q)² + (dz − p₂)² + min(dz + a₃, 0)² + max(ez + a₄, 0)²`` with ``e = 1 − d``:
  strictly convex and continuously differentiable, so ``φ'`` is increasing. The ``S`` hinge is
  active at the minimiser ``z*`` iff ``z* < z₃ = −a₃/d``, i.e. iff ``φ'(z₃) > 0``; the ``T`` hinge
  iff ``z* > z₄ = −a₄/e``, i.e. iff ``φ'(z₄) < 0``. Multiplying by ``d, e ≥ 0`` removes the
  divisions:
  ``d φ'(z₃)/2 = −a₃(1 + d²) − d(q + d p₂) + e·max(d a₄ − e a₃, 0)`` and
  ``e φ'(z₄)/2 = −a₄(1 + d²) − e(q + d p₂) + d·min(e a₃ − d a₄, 0)``.
  With the active set known, ``z*`` is the stationary point of one quadratic. Where ``d = 0``
  (or ``e = 0``) the corresponding hinge does not depend on ``z`` and either choice gives the same
  point.
* **Joint activation block** ``(D, S, T)``, in ``u = z d``:
  ``ψ(u) = (u − p₂)² + min(u + a₃, 0)² + max(z − u + a₄, 0)²``, strictly convex and ``C¹``. The
  ``S`` hinge is active iff ``ψ'(−a₃) > 0``, the ``T`` hinge iff ``ψ'(z + a₄) > 0``; the
  constrained minimiser is the stationary point clipped to ``[min(z, 0), max(z, 0)]`` (a 1-D
  convex problem). ``d = u / z`` where ``z ≠ 0``; where ``z = 0``, ``d`` is free and keeps its
  previous value.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg

__all__ = ["column_chunks", "ridge_weights", "augmented_gram", "postactivation_operator",
           "solve_postactivation", "preactivation_slacks_chunk", "activation_slacks_chunk",
           "joint_layer", "compile_kernels"]


def column_chunks(n: int, N: int):
    """Column slices of an ``(n, N)`` array with at most ``max(4096, min(65536, nN/16))`` entries each.

    For streamed computations that keep a few temporaries of one chunk alive (the diagnostics of
    :meth:`~formulation.learning.ALProblem.diagnostics`): with chunks of at most 1/16 of the array
    they stay below one array's size (the trainer's memory bound), and a chunk of at most 65,536
    entries stays in the processor's cache.
    """
    entries = max(4096, min(1 << 16, (n * N) // 16))
    step = max(1, entries // max(n, 1))
    return [slice(start, min(start + step, N)) for start in range(0, N, step)]


# ============================================================================ W_l, b_l
def augmented_gram(X: np.ndarray) -> np.ndarray:
    """``[X; 1ᵀ][X; 1ᵀ]ᵀ`` in float64, without forming ``[X; 1ᵀ]`` (``X`` is ``(n_in, N)``)."""
    n_in = X.shape[0]
    gram = np.empty((n_in + 1, n_in + 1))
    gram[:n_in, :n_in] = X @ X.T
    sums = X.sum(axis=1, dtype=np.float64)
    gram[:n_in, n_in] = sums
    gram[n_in, :n_in] = sums
    gram[n_in, n_in] = X.shape[1]
    return gram


def ridge_weights(X: np.ndarray, P: np.ndarray, r: float, gram: np.ndarray | None = None):
    r"""``argmin_{W,b} ||W X + b 1ᵀ − P||² + r ||W||²``, bias unpenalised: ``(W, b)``.

    Ridge normal equations on ``[X; 1ᵀ]`` by Cholesky (the small system in float64 whatever the
    data's dtype), with a fall-back to the minimum-norm ``lstsq`` solution when ``r = 0`` or the
    system is singular. ``gram`` is :func:`augmented_gram` of ``X`` when the caller has it (it does
    not depend on ``P``).
    """
    n_in, N = X.shape
    gram = augmented_gram(X) if gram is None else gram.copy()
    gram[np.arange(n_in), np.arange(n_in)] += r
    rhs = np.empty((n_in + 1, P.shape[0]))
    rhs[:n_in] = X @ P.T
    rhs[n_in] = P.sum(axis=1, dtype=np.float64)
    try:
        if r <= 0:
            raise np.linalg.LinAlgError("unregularised: use the minimum-norm solution")
        factor = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
        theta = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    except np.linalg.LinAlgError:
        design = np.vstack([X, np.ones((1, N), dtype=X.dtype)]).astype(np.float64, copy=False)
        target = np.asarray(P, dtype=np.float64)
        if r > 0:
            penalty = np.zeros((n_in + 1, n_in))
            penalty[:n_in] = np.sqrt(r) * np.eye(n_in)
            design = np.hstack([design, penalty])
            target = np.hstack([target, np.zeros((target.shape[0], n_in))])
        theta, *_ = np.linalg.lstsq(design.T, target.T, rcond=None)
    return np.ascontiguousarray(theta[:n_in].T, dtype=X.dtype), theta[n_in].astype(X.dtype)


# ============================================================================ X_l
def postactivation_operator(W: np.ndarray) -> np.ndarray:
    """``(I + WᵀW)⁻¹`` (``n × n``, float64) by Cholesky: the post-activation block is ``X = M (R + WᵀQ)``.

    ``I + WᵀW`` has every eigenvalue in ``[1, 1 + ||W||²]``, so the explicit inverse is as
    accurate as the factorisation, and applying it to all samples is one matrix product.
    """
    W = np.asarray(W, dtype=np.float64)
    gram = W.T @ W
    gram[np.diag_indices_from(gram)] += 1.0
    factor = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
    return scipy.linalg.cho_solve(factor, np.eye(gram.shape[0]), check_finite=False)


def solve_postactivation(W: np.ndarray, rhs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(I + WᵀW)⁻¹ rhs`` for ``W`` of shape ``(m, n)`` and ``rhs`` of shape ``(n, N)``, into ``out``.

    When the next layer is less than half as wide (``2m < n``) by the Woodbury identity
    ``(I + WᵀW)⁻¹ = I − Wᵀ(I + WWᵀ)⁻¹W``: two products with ``W`` (``2mnN`` flops) instead of one with
    the ``n × n`` inverse (``n²N``); otherwise with :func:`postactivation_operator`. ``out`` may not
    share memory with ``rhs``. The small systems are solved in float64; the products run in ``rhs``'s
    dtype.
    """
    m, n = W.shape
    if rhs.shape[0] != n:
        raise ValueError(f"rhs has {rhs.shape[0]} rows, W has {n} columns")
    out = np.empty_like(rhs) if out is None else out
    if out.shape != rhs.shape or np.shares_memory(out, rhs):
        raise ValueError("out must have rhs's shape and not share memory with it")
    if 2 * m < n:
        W64 = np.asarray(W, dtype=np.float64)
        gram = W64 @ W64.T
        gram[np.diag_indices_from(gram)] += 1.0
        factor = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
        inner = scipy.linalg.cho_solve(factor, W64, check_finite=False)  # (I + WWᵀ)⁻¹W, m × n
        np.matmul(W.T.astype(rhs.dtype, copy=False), inner.astype(rhs.dtype, copy=False) @ rhs, out=out)
        np.subtract(rhs, out, out=out)
        return out
    np.matmul(postactivation_operator(W).astype(rhs.dtype, copy=False), rhs, out=out)
    return out


# ============================================================================ joint elementwise blocks
# Compiled by numba: each entry is a few dozen flops, and one pass over memory instead of some forty
# NumPy passes over temporaries (measured: the sweep of the 2 x 64 teacher-student net 13.1 -> 4.4 ms,
# float32, one thread). The entry functions hold the maths; the loops only apply them; the public
# functions check shapes first (a compiled loop would read out of bounds silently).
@numba.njit(cache=True, inline="always", error_model="numpy")
def _preactivation_entry(d, q, p2, a3, a4):
    """``(z, s, t)`` of the joint pre-activation block at one entry (module docstring)."""
    e = 1.0 - d
    num = q + d * p2
    d2 = d * d
    den = 1.0 + d2
    hinge = max(d * a4 - e * a3, 0.0)  # max(d a₄ − e a₃, 0); min(e a₃ − d a₄, 0) is its negative
    active3 = hinge * e - a3 * den - d * num > 0.0  # d φ'(z₃)/2 > 0: the S hinge is active
    active4 = hinge * d + a4 * den + e * num > 0.0  # −e φ'(z₄)/2 > 0: the T hinge is active
    if active3:
        num -= d * a3
        den += d2
    if active4:
        num -= e * a4
        den += e * e
    z = num / den
    return z, max(d * z + a3, 0.0), max(-(z - d * z + a4), 0.0)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _activation_entry(z, p2, a3, a4, d_prev):
    """``(d, s, t)`` of the joint activation block at one entry; ``d_prev`` is kept where ``z = 0``."""
    shifted = z + a4
    both = shifted + a3
    active3 = max(both, 0.0) + a3 + p2 < 0.0  # ψ'(−a₃)/2 = −a₃ − p₂ − max(z + a₃ + a₄, 0) > 0
    active4 = min(both, 0.0) + shifted - p2 > 0.0  # ψ'(z + a₄)/2 = z + a₄ − p₂ + min(z + a₃ + a₄, 0) > 0
    u = p2
    count = 1.0
    if active3:
        u -= a3
        count += 1.0
    if active4:
        u += shifted
        count += 1.0
    u /= count
    d = u / z if z != 0.0 else d_prev
    d = min(max(d, 0.0), 1.0)
    u = z * d
    return d, max(u + a3, 0.0), max(u - shifted, 0.0)


@numba.njit(cache=True, error_model="numpy")
def _preactivation_loop(D, Q, P2, A3, A4, Z, S, T) -> None:
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j], S[i, j], T[i, j] = _preactivation_entry(D[i, j], Q[i, j], P2[i, j], A3[i, j], A4[i, j])


@numba.njit(cache=True, error_model="numpy")
def _activation_loop(Z, P2, A3, A4, D, S, T) -> None:
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            D[i, j], S[i, j], T[i, j] = _activation_entry(Z[i, j], P2[i, j], A3[i, j], A4[i, j], D[i, j])


@numba.njit(cache=True, error_model="numpy")
def _joint_layer_loop(fitted, X, lam1, lam2, lam3, lam4, r, Z, D, S, T, rhs) -> None:
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            p2 = X[i, j] + r * lam2[i, j]
            a3 = r * lam3[i, j]
            a4 = r * lam4[i, j]
            z, s, t = _preactivation_entry(D[i, j], fitted[i, j] - r * lam1[i, j], p2, a3, a4)
            d, s, t = _activation_entry(z, p2, a3, a4, D[i, j])
            Z[i, j] = z
            D[i, j] = d
            S[i, j] = s
            T[i, j] = t
            rhs[i, j] += d * z - r * lam2[i, j]


def _same_shape(*arrays) -> None:
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(f"the elementwise kernels need 2-D arrays of one shape, got {[a.shape for a in arrays]}")


def preactivation_slacks_chunk(D, Q, P2, A3, A4, Z, S, T) -> None:
    """Joint ``(Z, S, T)`` minimiser (module docstring) of ``(n, m)`` arrays, written into ``Z, S, T``."""
    _same_shape(D, Q, P2, A3, A4, Z, S, T)
    _preactivation_loop(D, Q, P2, A3, A4, Z, S, T)


def activation_slacks_chunk(Z, P2, A3, A4, D, S, T) -> None:
    """Joint ``(D, S, T)`` minimiser (module docstring); ``D`` holds ``D_prev`` on entry.

    Clipping ``u`` to ``[min(z, 0), max(z, 0)]`` and then dividing by ``z`` is clipping ``u / z`` to
    ``[0, 1]``, which is what is computed.
    """
    _same_shape(Z, P2, A3, A4, D, S, T)
    _activation_loop(Z, P2, A3, A4, D, S, T)


def joint_layer(fitted, X, lam1, lam2, lam3, lam4, r, Z, D, S, T, rhs) -> None:
    """Both joint blocks of one hidden layer in one pass, their parameters formed entry by entry.

    With ``q = fitted − r λ₁``, ``p₂ = x + r λ₂``, ``a₃ = r λ₃``, ``a₄ = r λ₄`` (``fitted = W X_prev + b``,
    ``r = 1/ρ``): ``(z, s, t)`` of the pre-activation block, then ``(d, s, t)`` of the activation block at
    that ``z``, and ``rhs += d z − r λ₂``, the rest of the post-activation block's right-hand side
    (``rhs`` holds ``W_nextᵀ Q_next`` on entry; it does not depend on this layer's blocks).
    """
    _same_shape(fitted, X, lam1, lam2, lam3, lam4, Z, D, S, T, rhs)
    _joint_layer_loop(fitted, X, lam1, lam2, lam3, lam4, r, Z, D, S, T, rhs)


def compile_kernels(dtype) -> None:
    """Compile (or load from numba's cache) the kernels for ``dtype`` on 1 × 1 arrays, so that the
    compilation is not charged to the first timed sweep."""
    one = [np.zeros((1, 1), dtype=dtype) for _ in range(11)]
    joint_layer(*one[:6], np.dtype(dtype).type(1.0), *one[6:])
