r"""The closed-form block minimisers of DESIGN §3, written once.

Both ways of running a sweep use these functions: the per-block ``closed_form()`` of
:mod:`formulation.subproblems` (what the ``closed_form`` backend dispatches, and what the
contract tests check against CVXPY) and the fused sweep of :mod:`formulation.fused`. So the two
paths give the same iterates, and a fix here reaches both.

The elementwise kernels (``*_chunk``) take column chunks of ``(n, N)`` arrays and write their
results into the output arrays they are given. Their active-set logic comes from convexity:

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

import numpy as np
import scipy.linalg

__all__ = ["column_chunks", "ridge_weights", "augmented_gram", "postactivation_operator",
           "preactivation_slacks_chunk", "activation_slacks_chunk"]


def column_chunks(n: int, N: int):
    """Column slices of an ``(n, N)`` array with at most ``max(4096, min(65536, nN/16))`` entries each.

    The kernels keep about a dozen temporaries of one chunk alive: with chunks of at most 1/16 of
    the array that stays below one array's size (the trainer's memory bound), and a chunk of at
    most 65,536 entries stays in the processor's cache.
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


# ============================================================================ joint elementwise blocks
def preactivation_slacks_chunk(D, Q, P2, A3, A4, Z, S, T) -> None:
    """Joint ``(Z, S, T)`` minimiser (module docstring) on one chunk, written into ``Z, S, T``."""
    E = 1.0 - D
    num = D * P2
    num += Q
    D2 = D * D
    den = D2 + 1.0
    hinge = D * A4
    hinge -= E * A3
    np.maximum(hinge, 0.0, out=hinge)  # max(d a₄ − e a₃, 0); min(e a₃ − d a₄, 0) is its negative
    gate = hinge * E  # d φ'(z₃)/2, negated below for the other hinge
    gate -= A3 * den
    gate -= D * num
    active3 = gate > 0.0
    np.multiply(hinge, D, out=gate)  # −e φ'(z₄)/2
    gate += A4 * den
    gate += E * num
    active4 = gate > 0.0
    num -= active3 * (D * A3)
    num -= active4 * (E * A4)
    den += active3 * D2
    E *= E
    E *= active4
    den += E
    np.divide(num, den, out=Z)
    np.multiply(D, Z, out=S)
    S += A3
    np.maximum(S, 0.0, out=S)
    np.subtract(Z, D * Z, out=T)  # e z
    T += A4
    np.negative(T, out=T)
    np.maximum(T, 0.0, out=T)


def activation_slacks_chunk(Z, P2, A3, A4, D, S, T) -> None:
    """Joint ``(D, S, T)`` minimiser (module docstring) on one chunk; ``D`` holds ``D_prev`` on entry.

    Clipping ``u`` to ``[min(z, 0), max(z, 0)]`` and then dividing by ``z`` is clipping ``u / z`` to
    ``[0, 1]``, which is what is computed.
    """
    shifted = Z + A4
    both = shifted + A3
    gate = np.maximum(both, 0.0)
    gate += A3
    gate += P2
    active3 = gate < 0.0  # ψ'(−a₃)/2 = −a₃ − p₂ − max(z + a₃ + a₄, 0) > 0
    np.minimum(both, 0.0, out=gate)
    gate += shifted
    gate -= P2
    active4 = gate > 0.0  # ψ'(z + a₄)/2 = z + a₄ − p₂ + min(z + a₃ + a₄, 0) > 0
    U = active3 * A3
    np.subtract(P2, U, out=U)
    U += active4 * shifted
    np.add(active3, 1.0, out=both)
    both += active4  # 1 + (number of active hinges)
    U /= both
    np.divide(U, Z, out=D, where=Z != 0)
    np.clip(D, 0.0, 1.0, out=D)
    np.multiply(Z, D, out=U)
    np.add(U, A3, out=S)
    np.maximum(S, 0.0, out=S)
    np.subtract(U, shifted, out=T)
    np.maximum(T, 0.0, out=T)
