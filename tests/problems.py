"""Shared problem factories for the tests. Names encode sizes and features."""

from __future__ import annotations

import numpy as np

from formulation.instances import KINDS, random_instance

#: (N, n) sizes cycled through by the contract instances: widths 1 and N = 1 included.
CONTRACT_SIZES = [(1, 1), (1, 3), (6, 1), (7, 3), (12, 4)]
CONTRACT_SEEDS = range(20)


def contract_instance(kind: str, seed: int):
    """Seeded instance ``seed`` of ``kind`` with hard features on some seeds.

    * seeds 0 mod 3: exact zeros in ``Z`` (activation blocks) and ``D`` (pre-activation blocks);
    * seeds 1 mod 3 of the weight block: rank-deficient ``X`` with ``μ = 0`` (r = 0);
    * sizes cycle through ``CONTRACT_SIZES`` (widths 1, N = 1).
    """
    rng = np.random.default_rng(1000 * list(KINDS).index(kind) + seed)
    N, n = CONTRACT_SIZES[seed % len(CONTRACT_SIZES)]
    n_other = 1 + seed % 3
    features = {}
    if seed % 3 == 0 and kind in ("activation", "preactivation", "activation_slacks", "preactivation_slacks"):
        features["zeros"] = 0.4
    if kind == "weights" and seed % 3 == 1:
        features.update(rank=max(0, min(N, n_other) - 1), r=0.0)
    if kind == "weights" and seed % 3 == 2:
        features["r"] = 0.0  # unregularised, full rank where N allows
    if kind == "output_softmax":
        n = max(n, 2)  # one class is degenerate: Y is all ones
    return random_instance(kind, N, n, rng, n_other=n_other, **features)


def small_network_data(seed: int = 0, widths=(3, 5, 4, 2), N: int = 15):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(widths[0], N)), rng.normal(size=(widths[-1], N)), widths


def milp_optimum(problem) -> tuple[float, float]:
    """HiGHS's MILP optimum of version (i) of an output-bound ``problem`` (a forward value) and ``verify``'s
    agreement tolerance for it: the reference the branch and bound and SCIP's ReLU splits are checked against."""
    import solvers
    from formulation import mixed_integer as mi
    from formulation.results import SolutionStatus
    from validation import verify

    solution = solvers.solve(mi.BinaryForm(problem.model), "HIGHS", time_limit=60)
    assert solution.status is SolutionStatus.OPTIMAL
    value = problem.evaluate(problem.input_of(solution.values["v"]))
    allowance = problem.allowance(verify._effective_tolerance(solution.extras))
    return value, verify._tolerance(abs(value), allowance)
