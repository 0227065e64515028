"""Seeded random instances of every subproblem, shared by the tests and the benchmarks.

``random_instance`` builds a subproblem of the given kind and sizes and sets random
parameters, with optional hard features: exact zeros in ``Z`` (activation block), a
rank-deficient ``X`` with ``μ = 0`` (weight block).
"""

from __future__ import annotations

import numpy as np

from formulation import subproblems as sp
from formulation.results import ProblemError

#: Subproblem kinds by key, in DESIGN §3 order.
KINDS: dict[str, type[sp.Subproblem]] = {cls.key: cls for cls in sp.SUBPROBLEM_TYPES}


def make_subproblem(kind: str, N: int, n: int, *, n_other: int | None = None, build_model: bool = True):
    """An empty subproblem of ``kind`` for ``N`` samples and ``n`` units.

    ``n_other`` is the input width of the weight block and the next layer's width of the
    post-activation block (default ``n``).
    """
    if kind not in KINDS:
        raise ProblemError(f"Unknown subproblem kind {kind!r}; choose one of {sorted(KINDS)}.")
    other = n if n_other is None else n_other
    cls = KINDS[kind]
    if kind == "weights":
        return cls(other, n, N, build_model=build_model)
    if kind == "postactivation":
        return cls(n, other, N, build_model=build_model)
    return cls(n, N, build_model=build_model)


def random_parameters(sub: sp.Subproblem, rng: np.random.Generator, *, zeros: float = 0.0,
                      rank: int | None = None, r: float | None = None) -> dict:
    """Random parameter values for ``sub``.

    Parameters
    ----------
    zeros : float
        Fraction of entries of ``Z`` (activation block) or ``D`` (pre-activation block) set
        exactly to 0.
    rank : int, optional
        Rank of the weight block's ``X`` (rank-deficient when below ``n_in``).
    r : float, optional
        The weight block's ``r = μ/ρ`` (random in [0.01, 1] by default; 0 for ``μ = 0``).
    """
    values = {}
    for name, shape in sub.parameter_shapes.items():
        values[name] = rng.normal(size=shape) if shape else float(rng.uniform(0.01, 1.0))
    if isinstance(sub, sp.WeightLeastSquares):
        if rank is not None:
            n_in, N = sub.n_in, sub.N
            k = max(0, min(rank, n_in, N))
            values["X"] = rng.normal(size=(n_in, k)) @ rng.normal(size=(k, N)) if k else np.zeros((n_in, N))
        if r is not None:
            values["r"] = float(r)
    if isinstance(sub, (sp.ActivationBoxQP, sp.ActivationSlacks)):
        Z = values["Z"]
        Z[rng.uniform(size=Z.shape) < zeros] = 0.0
        values["D_prev"] = rng.uniform(size=Z.shape)
    if isinstance(sub, (sp.HiddenPreactivation, sp.PreactivationSlacks)):
        D = rng.uniform(size=values["D"].shape)
        D[rng.uniform(size=D.shape) < zeros] = 0.0
        values["D"] = D
    if isinstance(sub, (sp.OutputSoftmaxCrossEntropy,)):
        labels = rng.integers(0, sub.n, size=sub.N)
        values["Y"] = np.eye(sub.n)[:, labels]
    return values


def random_instance(kind: str, N: int, n: int, rng: np.random.Generator, *, n_other: int | None = None,
                    build_model: bool = True, **features) -> sp.Subproblem:
    """``make_subproblem`` followed by ``set_parameters(**random_parameters(...))``."""
    sub = make_subproblem(kind, N, n, n_other=n_other, build_model=build_model)
    return sub.set_parameters(**random_parameters(sub, rng, **features))
