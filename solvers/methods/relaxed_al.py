r"""A compact augmented-Lagrangian local method for the relaxed reference problems (DESIGN §2, §5).

This is *not* :class:`solvers.methods.al_trainer.ALTrainer`: that trainer learns every layer with free output
weights and no weight box, while the reference problems need fixed weights with a free input ``c``
(recovery, output bound) or fixed ``±1`` output weights with ``|W_1|, |b_1| ≤ B`` (tiny training).

Unknowns: ``θ`` (either ``c`` in its box, or ``W_1, b_1`` in theirs) and, for every hidden layer, ``Z, X``
and ``D ∈ [0,1]``, ``S, T ≥ 0``. Constraints (the un-rectified network, DESIGN §3):

.. math::

    C1_l = Z_l - W_l X_{l-1} - b_l 1^T,\quad C2 = X - D\odot Z,\quad C3 = D\odot Z - S,
    \quad C4 = (1 - D)\odot Z + T,

and the objective ``f(o)`` of the output ``o = W_L X_H + b_L``: ``||A o − y||²``, or ``1ᵀ(r⁺ + r⁻)`` with
``C5 = A o − y − r⁺ + r⁻`` and ``r^± ≥ 0`` (l1), or ``σ o_k`` (output bound, ``σ = −1`` to maximise).
Each outer iteration minimises

.. math::

    L_\rho = f + \tfrac{\rho}{2}\sum_k \|C_k + \Lambda_k/\rho\|^2

over all unknowns with their bounds by L-BFGS-B, then ``Λ ← clip(Λ + ρ C)`` and ``ρ ← γρ`` when the
violation did not shrink by ``τ``. The reported result is the objective of a float64 forward pass at
the final ``θ`` (always a feasible point of the original problem, so it is an upper bound on the
minimum and its gap to the certified optimum is ≥ 0).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from formulation.mixed_integer import GenerativeRecovery, OutputBound, TinyTraining
from formulation.results import ProblemError


def _one_blas_thread():
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - optional: only speed depends on it
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(1)


@dataclass
class LocalResult:
    """One local run: forward objective at the final ``θ`` (problem sense), ``θ``, violation, time."""

    objective: float
    theta: dict
    violation: float
    outer: int
    seconds: float


class RelaxedAL:
    """Safeguarded AL (L-BFGS-B inner solves) on the relaxed problem; see the module docstring.

    Parameters
    ----------
    rho : float
        Initial penalty.
    gamma, tau : float
        ``ρ ← min(γρ, rho_max)`` when ``V_k > τ V_{k−1}``.
    outer, inner : int
        Outer iterations; L-BFGS-B iterations per outer iteration.
    tol : float
        Stop when the violation ``max_k ||C_k||∞`` is below it.
    """

    # defaults: measured on the verification set, rho=1, gamma=3, 40x200 iterations took 2.6x longer
    # (0.95 s against 0.36 s per run) for slightly better local optima on 2 of 30 runs
    def __init__(self, *, rho: float = 10.0, gamma: float = 10.0, tau: float = 0.5, rho_max: float = 1e8,
                 outer: int = 15, inner: int = 100, tol: float = 1e-8, multiplier_bound: float = 1e6):
        self.rho0, self.gamma, self.tau, self.rho_max = rho, gamma, tau, rho_max
        self.outer, self.inner, self.tol, self.bound = outer, inner, tol, multiplier_bound

    # ------------------------------------------------------------------ problem set-up
    def setup(self, problem, p: int | None = None) -> RelaxedAL:
        """Lay out the unknowns of ``problem`` (split ``p`` for :class:`TinyTraining`) and return ``self``.

        :meth:`run` and :meth:`check_gradient` call it; call it yourself before :meth:`random_theta`.
        """
        if isinstance(problem, TinyTraining):
            if p is None:
                raise ProblemError("TinyTraining needs the number p of +1 output weights.")
            m, n0 = problem.hidden, problem.X0.shape[0]
            B = problem.weight_bound
            self.mode = "weights"
            self.X0 = problem.X0
            self.hidden_W = [None]  # first layer is the unknown
            self.hidden_b = [None]
            self.out_W, self.out_b = problem.signs(p)[None, :], np.zeros(1)
            self.theta_shapes = {"W1": (m, n0), "b1": (m,)}
            self.theta_bounds = {"W1": (-B, B), "b1": (-B, B)}
            self.widths = [m]
            self.N = problem.X0.shape[1]
            self.kind, self.A, self.y = "l2", np.eye(self.N), problem.Y
            self.evaluate = lambda th: problem.evaluate(th["W1"], th["b1"], p)
        else:
            net = problem.network
            self.mode = "input"
            self.hidden_W, self.hidden_b = net.weights[:-1], net.biases[:-1]
            self.out_W, self.out_b = net.weights[-1], net.biases[-1]
            self.theta_shapes = {"c": (net.widths[0], 1)}
            self.theta_bounds = {"c": (problem.box_lower[:, None], problem.box_upper[:, None])}
            self.widths = list(net.widths[1:-1])
            self.N = 1
            if isinstance(problem, GenerativeRecovery):
                self.kind, self.A, self.y = problem.loss, problem.A, problem.y
                self.evaluate = lambda th: problem.evaluate(th["c"][:, 0])
            elif isinstance(problem, OutputBound):
                self.kind = "linear"
                self.sigma = 1.0 if problem.sense == "min" else -1.0
                self.k = problem.k
                self.evaluate = lambda th: problem.evaluate(th["c"][:, 0])
            else:
                raise ProblemError(f"RelaxedAL takes a reference problem, got {type(problem).__name__}.")
        # packing layout: theta blocks, then per hidden layer Z, X, D, S, T, then r+, r- (l1)
        self.layout = []
        for name, shape in self.theta_shapes.items():
            self.layout.append((name, shape))
        for l, n in enumerate(self.widths):
            for name in "ZXDST":
                self.layout.append((f"{name}{l}", (n, self.N)))
        if self.kind == "l1":
            self.layout += [("rp", (self.A.shape[0],)), ("rm", (self.A.shape[0],))]
        self.offsets = {}
        start = 0
        for name, shape in self.layout:
            size = int(np.prod(shape))
            self.offsets[name] = (start, start + size, shape)
            start += size
        self.size = start
        lower, upper = np.full(self.size, -np.inf), np.full(self.size, np.inf)
        for name, (lo, up) in self.theta_bounds.items():
            a, b, shape = self.offsets[name]
            lower[a:b] = np.broadcast_to(lo, shape).ravel()
            upper[a:b] = np.broadcast_to(up, shape).ravel()
        for l in range(len(self.widths)):
            for name, lo, up in (("D", 0.0, 1.0), ("S", 0.0, np.inf), ("T", 0.0, np.inf)):
                a, b, _ = self.offsets[f"{name}{l}"]
                lower[a:b], upper[a:b] = lo, up
        if self.kind == "l1":
            for name in ("rp", "rm"):
                a, b, _ = self.offsets[name]
                lower[a:b] = 0.0
        self.bounds = list(zip(np.where(np.isfinite(lower), lower, None), np.where(np.isfinite(upper), upper, None)))
        self.lower, self.upper = lower, upper

    def unpack(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        return {name: vector[a:b].reshape(shape) for name, (a, b, shape) in self.offsets.items()}

    def _first_affine(self, values):
        if self.mode == "weights":
            return values["W1"] @ self.X0 + values["b1"][:, None]
        return self.hidden_W[0] @ values["c"] + self.hidden_b[0][:, None]

    def _affine(self, l, values):
        if l == 0:
            return self._first_affine(values)
        return self.hidden_W[l] @ values[f"X{l - 1}"] + self.hidden_b[l][:, None]

    def constraints(self, values) -> dict[str, np.ndarray]:
        C = {}
        for l in range(len(self.widths)):
            Z, X, D, S, T = (values[f"{n}{l}"] for n in "ZXDST")
            C[f"C1_{l}"] = Z - self._affine(l, values)
            C[f"C2_{l}"] = X - D * Z
            C[f"C3_{l}"] = D * Z - S
            C[f"C4_{l}"] = (1 - D) * Z + T
        if self.kind == "l1":
            o = self.out_W @ values[f"X{len(self.widths) - 1}"] + self.out_b[:, None]
            C["C5"] = self.A @ o.ravel() - self.y - values["rp"] + values["rm"]
        return C

    def _value_and_grad(self, vector, lam, rho):
        values = self.unpack(vector)
        grad = {name: np.zeros(shape) for name, shape in self.layout}
        C = self.constraints(values)
        R = {key: C[key] + lam[key] / rho for key in C}
        H = len(self.widths)
        XH = values[f"X{H - 1}"]
        o = self.out_W @ XH + self.out_b[:, None]
        if self.kind == "l2":
            residual = self.A @ o.ravel() - self.y
            f = float(residual @ residual)
            grad_o = (2.0 * self.A.T @ residual).reshape(o.shape)
        elif self.kind == "l1":
            f = float(np.sum(values["rp"]) + np.sum(values["rm"]))
            grad_o = (rho * self.A.T @ R["C5"]).reshape(o.shape)
            grad["rp"] = 1.0 - rho * R["C5"]
            grad["rm"] = 1.0 + rho * R["C5"]
        else:
            f = self.sigma * float(o[self.k, 0])
            grad_o = np.zeros_like(o)
            grad_o[self.k, 0] = self.sigma
        value = f + 0.5 * rho * sum(float(np.sum(r * r)) for r in R.values())
        grad[f"X{H - 1}"] += self.out_W.T @ grad_o
        for l in range(H):
            Z, D = values[f"Z{l}"], values[f"D{l}"]
            R1, R2, R3, R4 = (R[f"C{i}_{l}"] for i in (1, 2, 3, 4))
            grad[f"Z{l}"] += rho * (R1 - D * R2 + D * R3 + (1 - D) * R4)
            grad[f"D{l}"] += rho * Z * (-R2 + R3 - R4)
            grad[f"S{l}"] += -rho * R3
            grad[f"T{l}"] += rho * R4
            grad[f"X{l}"] += rho * R2
            if l == 0:
                if self.mode == "weights":
                    grad["W1"] += -rho * R1 @ self.X0.T
                    grad["b1"] += -rho * R1.sum(axis=1)
                else:
                    grad["c"] += -rho * self.hidden_W[0].T @ R1
            else:
                grad[f"X{l - 1}"] += -rho * self.hidden_W[l].T @ R1
        return value, np.concatenate([grad[name].ravel() for name, _ in self.layout])

    def initial(self, theta: dict[str, np.ndarray]) -> np.ndarray:
        """Pack ``θ`` and the forward pass at ``θ`` (violation 0)."""
        values = {name: np.zeros(shape) for name, shape in self.layout}
        for name, array in theta.items():
            values[name] = np.asarray(array, float).reshape(self.theta_shapes[name])
        for l in range(len(self.widths)):
            Z = self._affine(l, values)
            D = (Z > 0).astype(float)
            values[f"Z{l}"], values[f"D{l}"], values[f"X{l}"] = Z, D, D * Z
            values[f"S{l}"], values[f"T{l}"] = D * Z, -(1 - D) * Z
        if self.kind == "l1":
            o = self.out_W @ values[f"X{len(self.widths) - 1}"] + self.out_b[:, None]
            r = self.A @ o.ravel() - self.y
            values["rp"], values["rm"] = np.maximum(r, 0), np.maximum(-r, 0)
        return np.concatenate([values[name].ravel() for name, _ in self.layout])

    def random_theta(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``θ`` uniform in its box."""
        theta = {}
        for name, shape in self.theta_shapes.items():
            lo, up = (np.broadcast_to(b, shape) for b in self.theta_bounds[name])
            theta[name] = rng.uniform(lo, up)
        return theta

    # ------------------------------------------------------------------ the method
    def run(self, problem, theta0: dict[str, np.ndarray], *, p: int | None = None) -> LocalResult:
        """Run from ``θ_0`` (with the forward pass as the other unknowns, multipliers 0).

        BLAS is held to one thread: the arrays are tiny, and threaded BLAS on a busy 2-core machine made
        five runs take 19 s of CPU instead of 0.34 s (measured).
        """
        with _one_blas_thread():
            return self._run(problem, theta0, p=p)

    def _run(self, problem, theta0, *, p):
        start = time.perf_counter()
        self.setup(problem, p)
        vector = np.clip(self.initial(theta0), self.lower, self.upper)
        lam = {key: np.zeros_like(c) for key, c in self.constraints(self.unpack(vector)).items()}
        rho, previous = self.rho0, np.inf
        violation, outer = np.inf, 0
        for outer in range(1, self.outer + 1):  # noqa: B007 - reported after the loop
            result = scipy.optimize.minimize(self._value_and_grad, vector, args=(lam, rho), jac=True,
                                             method="L-BFGS-B", bounds=self.bounds,
                                             options={"maxiter": self.inner, "ftol": 1e-15, "gtol": 1e-10})
            vector = result.x
            C = self.constraints(self.unpack(vector))
            violation = max(float(np.max(np.abs(c), initial=0.0)) for c in C.values())
            for key in lam:
                lam[key] = np.clip(lam[key] + rho * C[key], -self.bound, self.bound)
            if violation < self.tol:
                break
            if violation > self.tau * previous:
                rho = min(self.gamma * rho, self.rho_max)
            previous = violation
        values = self.unpack(vector)
        theta = {name: values[name] for name in self.theta_shapes}
        return LocalResult(float(self.evaluate(theta)), theta, violation, outer, time.perf_counter() - start)

    def check_gradient(self, problem, rng: np.random.Generator, *, p: int | None = None) -> float:
        """Max abs error of the analytic gradient of ``L_ρ`` against central differences."""
        self.setup(problem, p)
        vector = self.initial(self.random_theta(rng)) + 0.1 * rng.normal(size=self.size)
        lam = {key: rng.normal(size=c.shape) for key, c in self.constraints(self.unpack(vector)).items()}
        _, grad = self._value_and_grad(vector, lam, 2.0)
        numeric = np.zeros_like(grad)
        for i in range(self.size):
            step = np.zeros(self.size)
            step[i] = 1e-6
            numeric[i] = (self._value_and_grad(vector + step, lam, 2.0)[0]
                          - self._value_and_grad(vector - step, lam, 2.0)[0]) / 2e-6
        return float(np.max(np.abs(grad - numeric)))
