"""The AL learning problem: gradient, exact sweeps, un-rectified representation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from problems import small_network_data

import solvers
from formulation import ALProblem, ReluNetwork


def _closed_form(sub):
    return solvers.solve(sub, "closed_form").values


@pytest.mark.parametrize("loss", ["squared", "softmax"])
@pytest.mark.parametrize("widths", [(3, 5, 4, 2), (2, 1, 3), (3, 2)])
def test_gradient_matches_finite_differences(loss, widths):
    rng = np.random.default_rng(1)
    N = 6
    Y = rng.normal(size=(widths[-1], N)) if loss == "squared" else np.eye(widths[-1])[:, rng.integers(0, widths[-1], N)]
    problem = ALProblem(rng.normal(size=(widths[0], N)), Y, widths, mu=0.3, loss=loss, loss_scale=0.7)
    state = problem.random_state(rng, rho=1.7)
    x0 = problem.pack(state)
    error = scipy.optimize.check_grad(
        lambda x: problem.lagrangian(problem.unpack(x, state)),
        lambda x: problem.pack_gradient(problem.unpack(x, state)),
        x0,
    )
    scale = np.linalg.norm(problem.pack_gradient(state))
    assert error <= 1e-6 * max(1.0, scale), (error, scale)


@pytest.mark.parametrize("widths", [(3, 5, 4, 2), (2, 1, 1), (4, 3, 3, 3, 1)])
def test_exact_sweep_never_increases_the_augmented_lagrangian(widths):
    rng = np.random.default_rng(2)
    X0, Y = rng.normal(size=(widths[0], 9)), rng.normal(size=(widths[-1], 9))
    problem = ALProblem(X0, Y, widths, mu=0.1)
    state = problem.random_state(rng, rho=0.8)
    for sweep in range(3):
        values = [problem.lagrangian(state)]
        problem.sweep(state, _closed_form, callback=lambda _, current, v=values: v.append(problem.lagrangian(current)))
        # every block step is an exact minimisation over its block: L_ρ never increases
        assert np.all(np.diff(values) <= 1e-10 * max(1.0, abs(values[0]))), (sweep, np.diff(values))
        assert values[-1] < values[0]  # and a sweep from a non-stationary point makes progress
        problem.update_multipliers(state)  # a multiplier step may raise L_ρ; each sweep restarts


def test_every_block_step_is_a_block_minimiser():
    # at a block's solution the block gradient of L_ρ vanishes (projected, for bounded blocks)
    rng = np.random.default_rng(3)
    X0, Y, widths = small_network_data(3)
    problem = ALProblem(X0, Y, widths, mu=0.2)
    state = problem.random_state(rng, rho=1.3)
    names = {"weights": ("W", "b"), "preactivation": ("Z",), "activation": ("D",), "slacks": ("S", "T"),
             "postactivation": ("X",), "output": ("Z",)}
    for block in problem.blocks():
        sub = problem.subproblem(block, build_model=False)
        sub.set_parameters(**problem.block_parameters(state, block))
        problem.assign(state, block, _closed_form(sub))
        gradient = problem.projected_gradient(state)
        kind, l = block
        for name in names[kind]:
            g, x = gradient[name][l], getattr(state, name)[l]
            assert np.max(np.abs(g)) <= 1e-9 * max(1.0, np.max(np.abs(x))), (block, name)


def test_initial_state_is_feasible_and_unrectified():
    X0, Y, widths = small_network_data(4)
    network = ReluNetwork.random(widths, seed=4)
    problem = ALProblem(X0, Y, widths)
    state = problem.initial_state(network, rho=2.0)
    assert problem.violation(state)["max"] <= 1e-12
    assert problem.lagrangian(state) == pytest.approx(problem.objective(state))
    assert problem.forward_loss(state) == pytest.approx(problem.objective(state))
    for l in range(problem.L - 1):
        assert ReluNetwork.check_unrectified(state.Z[l], state.X[l], state.D[l], binary=True)["holds"] == 1.0


def test_kkt_residual_vanishes_only_at_a_critical_point():
    X0, Y, widths = small_network_data(5)
    problem = ALProblem(X0, Y, widths)
    state = problem.initial_state(ReluNetwork.random(widths, seed=5))
    assert problem.kkt_residual(state) > 1e-3  # a random network is not critical for the loss
    assert problem.kkt_residual(state) >= problem.violation(state)["max"]
