"""Contract test: every installed backend x every subproblem x 20 seeded instances.

Each backend's canonical primal solution and objective (both computed by us, not taken from
the solver) must agree with the closed form, or, for the softmax block that has none, with a
tight SciPy reference. The instances include exact zeros in ``Z``, rank-deficient ``X`` with
``μ = 0``, widths 1 and ``N = 1`` (see ``tests/problems.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special
from problems import CONTRACT_SEEDS, contract_instance

import solvers
from formulation.instances import KINDS, make_subproblem, random_parameters
from formulation.results import InaccurateSolutionWarning, SolutionStatus, TerminationCondition

# Each backend states its accuracy (commented) in its own module; `unrelu compare-solvers` uses the same figures.
#: Backends for continuous blocks; mixed-integer-only backends must refuse every AL block.
CONTINUOUS = solvers.backends_with(solvers.QP, solvers.EXP)
MIXED_INTEGER_ONLY = [b for b in solvers.available_backends() if b not in CONTINUOUS]
CASES = [(backend, kind) for backend in CONTINUOUS for kind in KINDS]


def _softmax_reference(sub) -> dict:
    """Damped Newton on the strongly convex softmax prox, column by column.

    Hessian per column: ``2w (diag(p) − p pᵀ) + 2 I`` with ``p = softmax(z)``.
    """
    w = sub.parameters["w"]
    Z = sub.parameters["Q"].copy()
    for _ in range(100):
        gradient = sub.gradient(Z)
        if np.max(np.abs(gradient)) < 1e-12:
            break
        P = scipy.special.softmax(Z, axis=0)
        step = np.empty_like(Z)
        for j in range(Z.shape[1]):
            p = P[:, j]
            hessian = 2 * w * (np.diag(p) - np.outer(p, p)) + 2 * np.eye(len(p))
            step[:, j] = np.linalg.solve(hessian, gradient[:, j])
        t, f0 = 1.0, sub.objective({"Z": Z})
        while sub.objective({"Z": Z - t * step}) > f0 and t > 1e-8:
            t /= 2
        Z = Z - t * step
    assert np.max(np.abs(sub.gradient(Z))) < 1e-10, "reference did not converge"
    return {"Z": Z}


def _reference(sub) -> dict:
    return sub.closed_form() if sub.has_closed_form else _softmax_reference(sub)


def test_every_backend_is_covered():
    # the required backends are installed by the project; none may silently drop out
    assert {"closed_form", "ECOS", "OSQP", "CLARABEL", "SCS"} <= set(CONTINUOUS)
    for name in CONTINUOUS:  # each states its own, measured figures (a newcomer gets the strict default)
        backend = solvers.get_backend(name)
        assert isinstance(backend.accuracy, solvers.Accuracy) and "accuracy" in vars(type(backend)), name


@pytest.mark.parametrize("backend", MIXED_INTEGER_ONLY)
@pytest.mark.parametrize("kind", list(KINDS))
def test_mixed_integer_backends_refuse_al_blocks(backend, kind):
    with pytest.raises(solvers.SolverNotFound, match="cannot take"):
        solvers.solve(contract_instance(kind, 1), backend)


@pytest.mark.parametrize("backend,kind", CASES, ids=[f"{b}-{k}" for b, k in CASES])
def test_backend_agrees_with_closed_form(backend, kind):
    primal_tol, objective_tol = solvers.get_backend(backend).accuracy
    probe = contract_instance(kind, 0)
    if not solvers.get_backend(backend).accepts(probe):
        with pytest.raises(solvers.SolverNotFound, match="cannot take"):
            solvers.solve(probe, backend)
        pytest.skip(f"{backend} cannot take {kind} ({probe.requires}); refusal checked")
    for seed in CONTRACT_SEEDS:
        sub = contract_instance(kind, seed)
        reference = _reference(sub)
        with warnings.catch_warnings():
            warnings.simplefilter("error", InaccurateSolutionWarning)
            solution = solvers.solve(sub, backend)
        assert solution.termination is TerminationCondition.OPTIMAL, (seed, solution.extras)
        assert solution.status is SolutionStatus.OPTIMAL
        assert sub.infeasibility(solution.values) <= 1e-9, seed
        ours, theirs = sub.canonical(solution.values), sub.canonical(reference)
        assert set(ours) == set(theirs)
        scale = max(1.0, max(float(np.max(np.abs(v))) for v in theirs.values()))
        error = max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in theirs) / scale
        assert error <= primal_tol, f"seed {seed}: primal error {error:.2e} > {primal_tol:.0e}"
        f_ref = sub.objective(reference)
        assert abs(solution.objective - f_ref) <= objective_tol * max(1.0, abs(f_ref)), seed
        # nothing beats the minimiser: a check that the reference is optimal, not just equal
        assert solution.objective >= f_ref - objective_tol * max(1.0, abs(f_ref))


@pytest.mark.parametrize("kind", list(KINDS))
def test_models_are_dpp_and_resolve_only_sets_values(kind):
    rng = np.random.default_rng(5)
    sub = make_subproblem(kind, 6, 3)
    assert sub.model.is_dpp()
    model, variables = sub.model, dict(sub.variables)
    objectives = []
    for _ in range(2):
        sub.set_parameters(**random_parameters(sub, rng))
        solution = solvers.solve(sub, "CLARABEL")
        reference = _reference(sub)
        assert abs(solution.objective - sub.objective(reference)) <= 1e-7 * max(1, abs(solution.objective))
        objectives.append(solution.objective)
    assert sub.model is model and sub.variables == variables  # built once, never rebuilt
    assert objectives[0] != objectives[1]  # the new parameter values were used


def test_contract_instances_have_the_hard_features():
    shapes = {(contract_instance("activation", s).N, contract_instance("activation", s).n) for s in CONTRACT_SEEDS}
    assert any(N == 1 for N, _ in shapes) and any(n == 1 for _, n in shapes)
    assert any(np.any(contract_instance("activation", s).parameters["Z"] == 0) for s in CONTRACT_SEEDS)
    deficient = [contract_instance("weights", s) for s in CONTRACT_SEEDS if s % 3 == 1]
    for sub in deficient:
        assert sub.parameters["r"] == 0.0
        design = np.vstack([sub.parameters["X"], np.ones((1, sub.N))])
        assert np.linalg.matrix_rank(design) < sub.n_in + 1
