r"""Anderson acceleration of a fixed-point map on a flat vector (type II, Walker & Ni 2011).

For iterates ``x_k`` and map values ``φ(x_k)``, with residuals ``g_k = φ(x_k) − x_k`` and the
last ``m`` differences ``ΔX = [x_{i+1} − x_i]``, ``ΔG = [g_{i+1} − g_i]``, the accelerated point is

.. math::

    x_{k+1} = φ(x_k) − (ΔX + ΔG)\,γ,\qquad
    γ = \arg\min_γ \|g_k − ΔG\,γ\|^2 + λ\,\frac{\operatorname{tr}(ΔG^TΔG)}{m}\,\|γ\|^2 ,

the Tikhonov term keeping the ``m × m`` system well posed when the differences are nearly
dependent (as SCS 3 does). This class only proposes the point; the caller safeguards it (the
restarted AL method accepts it only when the training objective does not rise, else takes the
plain ``φ(x_k)``) and calls :meth:`reset` after a rejected step. The adaptive penalty changes
the map a little after every accepted step (``ρ̂/1.1``); the history is kept across those small
changes, treating the map as slowly varying.
"""

from __future__ import annotations

import numpy as np

from formulation.results import ProblemError

__all__ = ["Anderson"]


class Anderson:
    """Type-II Anderson acceleration with memory ``memory`` (``0`` turns it off).

    Memory used: ``2 · memory + 2`` vectors of the size and dtype of ``x`` (the history is kept in
    the dtype of the iterates: float32 weights keep a float32 history).
    """

    def __init__(self, memory: int = 5, regularization: float = 1e-8):
        if isinstance(memory, bool) or not isinstance(memory, (int, np.integer)) or memory < 0:
            raise ProblemError(f"Anderson memory must be an integer >= 0, got {memory!r}; 0 turns acceleration off.")
        if not np.isfinite(regularization) or regularization < 0:
            raise ProblemError(f"Anderson regularization must be a finite number >= 0, got {regularization!r}.")
        self.memory = int(memory)
        self.regularization = float(regularization)
        self.reset()

    def reset(self) -> None:
        """Forget the history (the next :meth:`propose` returns ``None``)."""
        self.dX: list[np.ndarray] = []
        self.dG: list[np.ndarray] = []
        self.x_prev: np.ndarray | None = None
        self.g_prev: np.ndarray | None = None

    def propose(self, x: np.ndarray, phi: np.ndarray) -> np.ndarray | None:
        """Record the pair ``(x, φ(x))``; the accelerated point, or ``None`` while there is no history."""
        if self.memory == 0:
            return None
        g = np.subtract(phi, x, dtype=x.dtype)
        if self.x_prev is not None:
            self.dX.append(x - self.x_prev)
            self.dG.append(g - self.g_prev)
            if len(self.dX) > self.memory:
                del self.dX[0], self.dG[0]
        self.x_prev, self.g_prev = x.copy(), g
        if not self.dX:
            return None
        # the m x m system from dot products: no stacked copy of the history
        m = len(self.dG)
        gram = np.empty((m, m))
        for i in range(m):
            for j in range(i, m):
                gram[i, j] = gram[j, i] = float(np.dot(self.dG[i], self.dG[j]))
        rhs = np.array([float(np.dot(d, g)) for d in self.dG])
        scale = np.trace(gram) / m
        if not np.isfinite(scale) or scale <= 0:
            return None
        gram[np.diag_indices_from(gram)] += self.regularization * scale
        try:
            gamma = np.linalg.solve(gram, rhs)
        except np.linalg.LinAlgError:
            return None
        candidate = phi.astype(np.float64)
        for weight, dx, dg in zip(gamma, self.dX, self.dG):
            candidate -= weight * dx
            candidate -= weight * dg
        return candidate if np.all(np.isfinite(candidate)) else None

    # ------------------------------------------------------------------ checkpoints
    def arrays(self) -> dict[str, np.ndarray]:
        """The history as named arrays (for a checkpoint); :meth:`load` restores it exactly."""
        out = {f"aa_dx_{i}": a for i, a in enumerate(self.dX)}
        out.update({f"aa_dg_{i}": a for i, a in enumerate(self.dG)})
        if self.x_prev is not None:
            out["aa_x_prev"], out["aa_g_prev"] = self.x_prev, self.g_prev
        return out

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.reset()
        count = sum(1 for key in arrays if key.startswith("aa_dx_"))
        self.dX = [np.array(arrays[f"aa_dx_{i}"]) for i in range(count)]
        self.dG = [np.array(arrays[f"aa_dg_{i}"]) for i in range(count)]
        if "aa_x_prev" in arrays:
            self.x_prev, self.g_prev = np.array(arrays["aa_x_prev"]), np.array(arrays["aa_g_prev"])
