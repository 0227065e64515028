"""The fused closed-form sweep against the dispatched one, and the closed-form kernels against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from formulation import ALProblem, ProblemError
from formulation.closed_forms import activation_slacks_chunk, preactivation_slacks_chunk
from formulation.fused import FusedSweep
from solvers.methods.al_trainer import ALTrainer
from validation.train_data import teacher_student

pytestmark = pytest.mark.filterwarnings("ignore::formulation.results.ConvergenceWarning")


@pytest.mark.parametrize("mode", ["exact", "restarted"])
@pytest.mark.parametrize("hidden", [(7,), (6, 5)])
def test_fused_sweep_equals_dispatched_closed_form(hidden, mode):
    """Five outer iterations (sweeps, diagnostics, multiplier and penalty updates): every array within 1e-10."""
    data = teacher_student(N=120, N_val=30, n0=4, teacher_hidden=(5,), seed=3)
    states = {}
    for engine in ("fused", "dispatched"):
        trainer = ALTrainer(hidden, mode=mode, engine=engine, max_iters=5, tol=0.0, penalty_period=2, kkt_every=1,
                            keep_state=True, dtype="float64", progress=False)
        result = trainer.fit(data["X"], data["Y"], data["X_val"], data["Y_val"])
        states[engine] = (result.extras["state"], result.history)
    (fused, fused_history), (dispatched, dispatched_history) = states["fused"], states["dispatched"]
    assert len(fused_history) == 6
    assert fused.rho == dispatched.rho
    for (name, index, ours), (_, _, theirs) in zip(fused.arrays(), dispatched.arrays()):
        assert np.max(np.abs(ours - theirs)) <= 1e-10, (name, index, np.max(np.abs(ours - theirs)))
    for ours, theirs in zip(fused_history[1:], dispatched_history[1:]):
        for key in ("train_loss", "violation", "kkt"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-8, abs=1e-12), key


def test_fused_products_are_the_fitted_values_after_the_sweep():
    rng = np.random.default_rng(1)
    X0, Y = rng.normal(size=(3, 40)), rng.normal(size=(2, 40))
    problem = ALProblem(X0, Y, (3, 5, 4, 2), mu=0.1)
    state = problem.random_state(rng, rho=0.8)
    sweep = FusedSweep(problem)
    sweep(state)
    for l in range(problem.L):
        X_prev = X0 if l == 0 else state.X[l - 1]
        np.testing.assert_allclose(sweep.products[l], state.W[l] @ X_prev + state.b[l][:, None], rtol=1e-12,
                                   atol=1e-12)
    with_products = problem.diagnostics(state.copy(), products=sweep.products)
    without = problem.diagnostics(state.copy())
    assert with_products["kkt"] == pytest.approx(without["kkt"], rel=1e-10)


def test_fused_sweep_in_float32_tracks_float64():
    data = teacher_student(N=300, N_val=50, n0=4, teacher_hidden=(5,), seed=2)
    finals = {}
    for dtype in ("float64", "float32"):
        trainer = ALTrainer((8,), dtype=dtype, max_iters=20, tol=0.0, progress=False, keep_state=True)
        result = trainer.fit(data["X"], data["Y"], data["X_val"], data["Y_val"])
        assert result.extras["state"].Z[0].dtype == np.dtype(dtype)
        finals[dtype] = result.history[-1]["train_loss"]
    assert finals["float32"] == pytest.approx(finals["float64"], rel=1e-3)


def test_engine_and_dtype_errors():
    with pytest.raises(ProblemError, match="Unknown engine 'gpu'; choose one of auto, fused, dispatched"):
        ALTrainer((4,), engine="gpu")
    with pytest.raises(ProblemError, match="needs backend='closed_form', scheme='joint'"):
        ALTrainer((4,), engine="fused", scheme="split")
    with pytest.raises(ProblemError, match="Unknown dtype 'float16'; choose one of float64, float32"):
        ALTrainer((4,), dtype="float16")
    with pytest.raises(ProblemError, match="needs the fused engine"):
        ALTrainer((4,), dtype="float32", engine="dispatched")
    rng = np.random.default_rng(0)
    problem = ALProblem(rng.normal(size=(2, 5)), np.eye(3)[:, [0, 1, 2, 0, 1]], (2, 3, 3), loss="softmax")
    with pytest.raises(ProblemError, match="needs the squared loss"):
        FusedSweep(problem)


def _brute_force(objective, candidates):
    """The candidate with the smallest objective, entry by entry (the reference for the active-set kernels)."""
    stacked = np.stack(candidates)
    values = np.stack([objective(c) for c in candidates])
    return np.take_along_axis(stacked, np.argmin(values, axis=0)[None], axis=0)[0]


def test_joint_kernels_equal_the_best_of_the_four_active_sets():
    rng = np.random.default_rng(7)
    shape = (6, 4000)
    D = rng.uniform(0.0, 1.0, size=shape)
    D[:, :300], D[:, 300:600] = 0.0, 1.0  # the hinge that does not depend on z
    Q, P2, A3, A4 = (rng.normal(size=shape) for _ in range(4))
    E = 1.0 - D

    def phi(z):
        return (z - Q) ** 2 + (D * z - P2) ** 2 + np.minimum(D * z + A3, 0) ** 2 + np.maximum(E * z + A4, 0) ** 2

    candidates = [(Q + D * P2 - c3 * D * A3 - c4 * E * A4) / (1 + D * D + c3 * D * D + c4 * E * E)
                  for c3 in (0, 1) for c4 in (0, 1)]
    Z, S, T = (np.empty(shape) for _ in range(3))
    preactivation_slacks_chunk(D, Q, P2, A3, A4, Z, S, T)
    np.testing.assert_allclose(Z, _brute_force(phi, candidates), rtol=1e-12, atol=1e-12)

    Zs = rng.normal(size=shape)
    Zs[:, :200] = 0.0

    def psi(u):
        return (u - P2) ** 2 + np.minimum(u + A3, 0) ** 2 + np.maximum(Zs - u + A4, 0) ** 2

    candidates = [(P2 - c3 * A3 + c4 * (Zs + A4)) / (1 + c3 + c4) for c3 in (0, 1) for c4 in (0, 1)]
    U = np.clip(_brute_force(psi, candidates), np.minimum(Zs, 0), np.maximum(Zs, 0))
    D_out = D.copy()
    activation_slacks_chunk(Zs, P2, A3, A4, D_out, S, T)
    np.testing.assert_allclose(Zs * D_out, U, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(D_out[:, :200], D[:, :200])  # D is free where Z = 0: kept
    assert D_out.min() >= 0.0 and D_out.max() <= 1.0


def test_outer_method_settings_errors():
    with pytest.raises(ProblemError, match="Unknown mode 'fast'; choose one of restarted, exact"):
        ALTrainer((4,), mode="fast")
    with pytest.raises(ProblemError, match="must be an integer >= 0, got -1; 0 turns it off"):
        ALTrainer((4,), anderson=-1)
    with pytest.raises(ProblemError, match="with mode='exact' leave them unset"):
        ALTrainer((4,), mode="exact", anderson=5)
    with pytest.raises(ProblemError, match="with mode='exact' leave them unset"):
        ALTrainer((4,), mode="exact", relaxation=1.5)
    with pytest.raises(ProblemError, match=r"`relaxation` must be in \(0, 2\)"):
        ALTrainer((4,), relaxation=2.5)
    with pytest.raises(ProblemError, match="penalty_up >= 1"):
        ALTrainer((4,), penalty_up=0.5)
    with pytest.raises(ProblemError, match="kkt_every"):
        ALTrainer((4,), kkt_every=0)
    with pytest.raises(ProblemError, match="threads"):
        ALTrainer((4,), threads=0)


def test_default_dtype_follows_mode_and_engine():
    assert ALTrainer((4,)).dtype == "float32"
    assert ALTrainer((4,), mode="exact").dtype == "float64"
    assert ALTrainer((4,), engine="dispatched").dtype == "float64"
