"""The joint slack blocks (Z,S,T) and (D,S,T): closed form = CVXPY model, and exact block minimisers of L_ρ."""

from __future__ import annotations

import numpy as np
import pytest

import solvers
from formulation import ALProblem
from formulation.closed_forms import (
    activation_slacks_chunk,
    joint_layer,
    preactivation_slacks_chunk,
    solve_postactivation,
)
from formulation.subproblems import ActivationSlacks, PreactivationSlacks


def _random(cls, rng, n=3, N=7, zeros=0.0):
    sub = cls(n, N, build_model=N < 1000)
    values = {name: rng.normal(size=shape) for name, shape in sub.parameter_shapes.items()}
    if cls is PreactivationSlacks:
        values["D"] = rng.uniform(size=(n, N))
        values["D"][:, :2] = np.round(values["D"][:, :2])  # binary entries too
    else:
        values["Z"][rng.uniform(size=(n, N)) < zeros] = 0.0
        values["D_prev"] = rng.uniform(size=(n, N))
    # multipliers of both signs and large enough to activate every hinge
    values["A3"] = 2.0 * values["A3"]
    values["A4"] = 2.0 * values["A4"]
    return sub.set_parameters(**values)


@pytest.mark.parametrize("cls", [PreactivationSlacks, ActivationSlacks])
@pytest.mark.parametrize("backend", ["CLARABEL", "OSQP"])
def test_closed_form_matches_cvxpy_model(cls, backend):
    if backend not in solvers.available_backends():
        pytest.skip(f"{backend} not installed")
    rng = np.random.default_rng(11)
    for _ in range(5):
        sub = _random(cls, rng, zeros=0.2)
        assert sub.model.is_dpp()
        exact = sub.closed_form()
        other = solvers.solve(sub, backend).values
        f_exact, f_other = sub.objective(exact), sub.objective(other)
        assert f_exact <= f_other + 1e-9 * max(1.0, abs(f_other)), (f_exact, f_other)
        for key, value in sub.canonical(exact).items():
            np.testing.assert_allclose(sub.canonical(other)[key], value, atol=2e-6 * max(1.0, np.abs(value).max()))
        assert sub.infeasibility(exact) == 0.0


def test_joint_blocks_are_exact_block_minimisers_of_the_augmented_lagrangian():
    rng = np.random.default_rng(3)
    X0, Y = rng.normal(size=(3, 25)), rng.normal(size=(2, 25))
    problem = ALProblem(X0, Y, (3, 5, 4, 2), mu=0.2)
    state = problem.random_state(rng, rho=0.9)
    for lam in state.lam3 + state.lam4:
        lam *= 3.0
    for l in range(problem.L - 1):
        for block in (("preactivation_slacks", l), ("activation_slacks", l)):
            before = problem.lagrangian(state)
            sub = problem.subproblem(block, build_model=False)
            sub.set_parameters(**problem.block_parameters(state, block))
            problem.assign(state, block, sub.closed_form())
            assert problem.lagrangian(state) <= before + 1e-12 * max(1.0, abs(before))
            gradient = problem.projected_gradient(state)
            names = ("Z", "S", "T") if block[0] == "preactivation_slacks" else ("D", "S", "T")
            for name in names:
                g, x = gradient[name][l], getattr(state, name)[l]
                assert np.max(np.abs(g)) <= 1e-9 * max(1.0, np.max(np.abs(x))), (block, name)


def test_warm_multipliers_leave_only_the_backprop_gradient():
    from formulation import ReluNetwork

    rng = np.random.default_rng(0)
    X0, Y = rng.normal(size=(3, 15)), rng.normal(size=(2, 15))
    widths = (3, 5, 4, 2)
    problem = ALProblem(X0, Y, widths, mu=0.0, loss_scale=0.3)
    network = ReluNetwork.random(widths, rng)
    state = problem.initial_state(network, rho=0.7)
    problem.warm_multipliers(state)
    gradient = problem.gradient(state)
    for name in ("Z", "X", "D", "S", "T"):
        for index, g in enumerate(gradient[name]):
            x = getattr(state, name)[index]
            if name == "D":
                g = np.clip(x - g, 0, 1) - x
            elif name in ("S", "T"):
                g = np.maximum(x - g, 0) - x
            assert np.max(np.abs(g)) <= 1e-12, (name, index)

    def loss(W1):
        return 0.15 * np.sum((ReluNetwork([W1] + network.weights[1:], network.biases)(X0) - Y) ** 2)

    step, fd = 1e-6, np.zeros_like(network.weights[0])
    for i, j in np.ndindex(fd.shape):
        E = np.zeros_like(fd)
        E[i, j] = step
        fd[i, j] = (loss(network.weights[0] + E) - loss(network.weights[0] - E)) / (2 * step)
    np.testing.assert_allclose(gradient["W"][0], fd, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_joint_layer_equals_the_two_blocks_in_turn(dtype):
    """The fused sweep's one-pass kernel = the pre-activation block, then the activation block at its Z."""
    rng = np.random.default_rng(5)
    n, N, r = 7, 3001, 0.37
    fitted, X, lam1, lam2, lam3, lam4, rhs = (rng.normal(size=(n, N)).astype(dtype) for _ in range(7))
    D = rng.uniform(size=(n, N)).astype(dtype)
    D[:, ::5] = 0.0  # binary entries too: either hinge free
    D[:, 1::5] = 1.0
    X[:, ::7] = 0.0
    Z, S, T = (np.empty((n, N), dtype=dtype) for _ in range(3))
    expected = {"D": D.copy(), "rhs": rhs.copy()}
    joint_layer(fitted, X, lam1, lam2, lam3, lam4, dtype(r), Z, D, S, T, rhs)

    P2, A3, A4, Q = X + r * lam2, r * lam3, r * lam4, fitted - r * lam1
    Zb, Sb, Tb = (np.empty((n, N)) for _ in range(3))
    preactivation_slacks_chunk(*(a.astype(np.float64) for a in (expected["D"], Q, P2, A3, A4)), Zb, Sb, Tb)
    Db, S2, T2 = expected["D"].astype(np.float64), np.empty((n, N)), np.empty((n, N))
    activation_slacks_chunk(Zb, *(a.astype(np.float64) for a in (P2, A3, A4)), Db, S2, T2)
    tol = 1e-12 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(Z, Zb, atol=tol, rtol=tol)
    np.testing.assert_allclose(D, Db, atol=tol, rtol=tol)
    np.testing.assert_allclose(S, S2, atol=tol, rtol=tol)
    np.testing.assert_allclose(T, T2, atol=tol, rtol=tol)
    np.testing.assert_allclose(rhs, expected["rhs"] + Db * Zb - r * lam2, atol=tol, rtol=tol)


@pytest.mark.parametrize("shape", [(3, 8), (8, 8), (8, 3)], ids=["narrower (Woodbury)", "square", "wider"])
def test_solve_postactivation_both_forms(shape):
    rng = np.random.default_rng(6)
    W = rng.normal(size=shape)
    rhs = rng.normal(size=(shape[1], 50))
    expected = np.linalg.solve(np.eye(shape[1]) + W.T @ W, rhs)
    np.testing.assert_allclose(solve_postactivation(W, rhs), expected, atol=1e-12)
    out = np.empty_like(rhs)
    assert solve_postactivation(W, rhs, out=out) is out
    np.testing.assert_allclose(out, expected, atol=1e-12)


# ------------------------------------------------------------------ the compiled kernels against NumPy
def _numpy_preactivation(D, Q, P2, A3, A4, Z, S, T) -> None:
    """The NumPy kernel the compiled one replaced (a reference written independently of it)."""
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


def _numpy_activation(Z, P2, A3, A4, D, S, T) -> None:
    """The NumPy kernel the compiled one replaced; ``D`` holds ``D_prev`` on entry."""
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


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_kernels_equal_the_numpy_reference(seed):
    """Both joint blocks against the vectorised NumPy kernels they replaced, with binary D, zero Z and
    zero hinge offsets among the entries (float64: equal to the last bit, as measured)."""
    rng = np.random.default_rng(seed)
    shape = (5, 4000)
    D = rng.uniform(size=shape)
    D[:, ::6], D[:, 1::6] = 0.0, 1.0
    Q, P2, A3, A4, Z0 = (rng.normal(size=shape) for _ in range(5))
    A3[:, 2::7], A4[:, 3::7], Z0[:, ::5] = 0.0, 0.0, 0.0
    outputs = {}
    for name, pre, act in (("numpy", _numpy_preactivation, _numpy_activation),
                           ("compiled", preactivation_slacks_chunk, activation_slacks_chunk)):
        Z, S, T = (np.empty(shape) for _ in range(3))
        pre(D, Q, P2, A3, A4, Z, S, T)
        D_new, S2, T2 = D.copy(), np.empty(shape), np.empty(shape)
        act(Z0, P2, A3, A4, D_new, S2, T2)
        outputs[name] = (Z, S, T, D_new, S2, T2)
    for ours, theirs in zip(outputs["compiled"], outputs["numpy"]):
        np.testing.assert_array_equal(ours, theirs)


def test_kernels_refuse_mismatched_shapes():
    a, b = np.zeros((2, 3)), np.zeros((2, 4))
    with pytest.raises(ValueError, match="one shape"):
        preactivation_slacks_chunk(a, a, a, a, a, a, a, b)
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="share memory"):
        solve_postactivation(np.ones((1, 3)), x, out=x)
