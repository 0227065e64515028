r"""The fused closed-form sweep: every block of one AL sweep, BLAS products and compiled passes, no dispatch.

:meth:`ALProblem.sweep` runs a sweep block by block through subproblem objects, so that any
block can go to any backend (``--backend OSQP``, the contract tests). For the ``closed_form``
backend that costs, per block, a parameter dictionary, validation copies and a registry call;
on small networks that overhead is most of the sweep. :class:`FusedSweep` runs the same sweep
(``scheme="joint"``, ``order="forward"``, squared loss) with the same closed forms
(:mod:`formulation.closed_forms`), in place:

* for each hidden layer ``l``: ``(W_l, b_l)`` by ridge normal equations (the Gram matrix of the
  input ``X_0`` is computed once and reused, until :meth:`FusedSweep.data_changed`);
  ``(Z_l, S_l, T_l)`` and ``(D_l, S_l, T_l)`` by one compiled pass over the layer
  (:func:`~formulation.closed_forms.joint_layer`), which forms their parameters entry by entry and
  adds ``D⊙Z − Λ2/ρ`` to the right-hand side ``W_{l+1}ᵀQ`` of the post-activation block;
  ``X_l = (I + W_{l+1}ᵀW_{l+1})⁻¹ rhs`` by
  :func:`~formulation.closed_forms.solve_postactivation` (Woodbury when layer ``l+1`` is
  narrower), all into preallocated buffers;
* then ``(W_L, b_L)`` and ``Z_L = (w Y + Q) / (1 + w)``.

It also keeps ``W_l X_{l−1} + b_l 1ᵀ`` of every layer, which is unchanged at the end of the sweep
(``X_{l−1}`` is updated before ``W_l``), so :meth:`ALProblem.diagnostics` does not recompute it
(:attr:`products`). The state's dtype (float64 or float32) is kept; the small ``n × n`` systems
are solved in float64 either way. In float64 the iterates equal those of the dispatched
``closed_form`` sweep to rounding (tested: 5 outer iterations, every array within 1e-10).
"""

from __future__ import annotations

import numpy as np

from formulation.closed_forms import (
    augmented_gram,
    compile_kernels,
    joint_layer,
    ridge_weights,
    solve_postactivation,
)
from formulation.learning import ALProblem, ALState
from formulation.results import ProblemError

__all__ = ["FusedSweep"]


class FusedSweep:
    """One forward sweep of the joint blocks of ``problem`` with every block's closed form, in place.

    Parameters
    ----------
    problem : ALProblem
        Squared loss (the softmax output block has no closed form: use the dispatched sweep).
    """

    def __init__(self, problem: ALProblem):
        if problem.loss != "squared":
            raise ProblemError(f"The fused sweep needs the squared loss (its output block has a closed form); the "
                               f"problem has loss {problem.loss!r}: use the dispatched sweep (engine='dispatched').")
        self.problem = problem
        self.dtype = problem.X0.dtype
        compile_kernels(self.dtype)
        self._gram0 = augmented_gram(problem.X0)
        N = problem.N
        widths = problem.widths
        #: ``W_l X_{l−1} + b_l 1ᵀ`` after the sweep, per layer (read by :meth:`ALProblem.diagnostics`).
        self.products = [np.empty((widths[l + 1], N), dtype=self.dtype) for l in range(problem.L)]
        # P of a weight block is formed in products[l] before W_l X_{l−1} + b_l overwrites it, and Q of the
        # post-activation block in products[l+1] before that layer's weights: two buffers fewer
        self._rhs = np.empty((max(widths[1:-1], default=1), N), dtype=self.dtype)
        self.valid = False  # products match the state (set by a sweep, cleared by the caller on change)

    def data_changed(self) -> None:
        """Recompute what depends on the data after ``problem.X0`` or ``problem.Y`` was overwritten in place.

        The restarted trainer's sample batches reuse one batch-sized problem, copying each batch's
        columns into it (:class:`~solvers.methods.al_trainer.ALTrainer`, ``batch_size``).
        """
        self._gram0 = augmented_gram(self.problem.X0)
        self.valid = False

    def _weights(self, state: ALState, l: int, r: float) -> None:
        problem = self.problem
        X_prev = problem.X0 if l == 0 else state.X[l - 1]
        P = self.products[l]  # scratch until the fitted values overwrite it
        np.multiply(state.lam1[l], r, out=P)
        P += state.Z[l]
        state.W[l], state.b[l] = ridge_weights(X_prev, P, problem.mu * r, gram=self._gram0 if l == 0 else None)
        fitted = self.products[l]
        np.matmul(state.W[l], X_prev, out=fitted)
        fitted += state.b[l][:, None]

    def __call__(self, state: ALState) -> ALState:
        problem = self.problem
        L, r = problem.L, 1.0 / state.rho
        for l in range(L - 1):
            self._weights(state, l, r)
            Z, D, S, T, X = state.Z[l], state.D[l], state.S[l], state.T[l], state.X[l]
            lam1, lam2, lam3, lam4 = state.lam1[l], state.lam2[l], state.lam3[l], state.lam4[l]
            fitted = self.products[l]
            # X_l = (I + WᵀW)⁻¹ (D⊙Z − Λ2/ρ + Wᵀ(Z_{l+1} − b_{l+1} 1ᵀ + Λ1_{l+1}/ρ)), W = W_{l+1}: the product
            # first (it does not depend on this layer's blocks), the rest added by joint_layer
            W_next = state.W[l + 1]
            Q = self.products[l + 1]  # scratch: that layer's weights come next and overwrite it
            np.multiply(state.lam1[l + 1], r, out=Q)
            Q += state.Z[l + 1]
            Q -= state.b[l + 1][:, None]
            rhs = self._rhs[: W_next.shape[1]]
            np.matmul(W_next.T, Q, out=rhs)
            joint_layer(fitted, X, lam1, lam2, lam3, lam4, self.dtype.type(r), Z, D, S, T, rhs)
            solve_postactivation(W_next, rhs, out=X)
        last = L - 1
        self._weights(state, last, r)
        w = problem.loss_scale * r
        Z_L = state.Z[last]
        np.multiply(state.lam1[last], -r, out=Z_L)
        Z_L += self.products[last]
        Z_L += w * problem.Y
        Z_L /= 1.0 + w
        self.valid = True
        return state
