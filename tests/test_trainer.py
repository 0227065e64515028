"""Tests of the AL trainer (solvers/methods/al_trainer.py), the `train` command and the Adam baseline."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from formulation.learning import ALProblem
from formulation.results import ConvergenceWarning, ProblemError
from solvers.methods.al_trainer import ALTrainer
from solvers.methods.scaling import Standardizer
from validation.train import load_data
from validation.train_data import teacher_student

pytestmark = pytest.mark.filterwarnings("ignore::solvers.methods.al_trainer.ConvergenceWarning")


def _tiny(seed=0, N=20):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2, N))
    Y = np.sin(2 * X[:1]) + X[1:]
    return X, Y


def _comparable(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("mode", ["restarted", "exact"])
@pytest.mark.parametrize("hidden, iters", [((32,), 60), pytest.param((32, 32), 150, marks=pytest.mark.slow)],
                         ids=["2-layer", "3-layer"])
def test_teacher_student_fits(hidden, iters, mode):
    data = teacher_student(N=400, N_val=200, n0=5, teacher_hidden=(16,) * len(hidden), seed=1)
    result = ALTrainer(hidden, mode=mode, max_iters=iters, seed=0, keep_state=True).fit(
        data["X"], data["Y"], data["X_val"], data["Y_val"])
    final = result.final
    assert final["train_loss"] < 0.05, (result.init_train_loss, final)
    # the AL iterations must not undo the initialisation
    assert final["train_loss"] <= result.init_train_loss * 1.05
    assert np.isfinite(final["val_loss"])
    # the returned network is in original units and reproduces the recorded loss
    residual = result.network(data["X"]) - data["Y"]
    variance = np.sum((data["Y"] - data["Y"].mean()) ** 2)
    # float64: to rounding; float32 (the restarted default): the recorded loss is that of the
    # float32-rounded standardised data (relative rounding 6e-8 per entry), not of the float64 data
    rel = 1e-9 if result.extras["problem"].dtype == np.float64 else 1e-5
    assert np.sum(residual ** 2) / variance == pytest.approx(final["train_loss"], rel=rel)


@pytest.mark.slow
def test_tiny_net_reaches_kkt_tolerance():
    X, Y = _tiny()
    # fixed penalty (gamma = 1): with the default growth rule rho reaches its cap on this instance
    # and block coordinate descent stalls before 1e-6; with rho = 10 fixed it converges.
    # mu = 0: the problem is unregularised. With mu = 1e-6 (measured; any mu > 0) the ReLU rescaling symmetry
    # (row l of W_1 times c, column l of W_2 over c) leaves a valley along which only mu pulls; the
    # iterates creep along it (measured: output weight -13.26 moving 1.5e-5 per sweep, KKT fixed at
    # 1.4e-5 from 5,000 to 20,000 sweeps). With mu = 0 every point of the valley is critical and
    # the method stops there (measured: converged after 3,569 outer iterations).
    result = ALTrainer((4,), mode="exact", max_iters=20000, tol=1e-6, seed=0, gamma=1.0, mu=0.0,
                       keep_state=True).fit(X, Y)
    assert result.stop_reason == "converged", result.message
    assert result.final["kkt"] <= 1e-6 and result.final["violation"] <= 1e-6
    # the returned state, diagnosed afresh, is feasible to the tolerance too
    problem, state = result.extras["problem"], result.extras["state"]
    assert problem.violation(state)["max"] <= 1e-6


@pytest.mark.parametrize("mode", ["restarted", "exact"])
@pytest.mark.parametrize("backend", ["OSQP", "CLARABEL"])
def test_cvxpy_backend_history_matches_closed_form(backend, mode):
    X, Y = _tiny(seed=3, N=12)
    reference = ALTrainer((3,), mode=mode, max_iters=5, seed=2, kkt_every=1, dtype="float64").fit(X, Y)
    other = ALTrainer((3,), mode=mode, max_iters=5, seed=2, backend=backend, kkt_every=1).fit(X, Y)
    assert len(other.history) == len(reference.history) == 6
    for ours, theirs in zip(_comparable(other.history), _comparable(reference.history)):
        for key in ("objective", "train_loss", "violation", "kkt", "rho"):
            # interior-point / ADMM solves at 1e-9 tolerances: agreement to 1e-5 relative over 5 sweeps
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), (key, ours, theirs)


def test_diagnostics_match_the_explicit_residuals_and_projected_gradient():
    """The streamed diagnostics against the residuals C_k, the projected gradient and Λ + ρC written out."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3, 30)), rng.normal(size=(2, 30))
    problem = ALProblem(X, Y, (3, 5, 4, 2), mu=0.1, loss_scale=0.3)
    state = problem.random_state(rng, rho=0.7)
    state.D[0][0, :3] = (-0.2, 1.3, 0.5)  # out of the box: the bounds family counts it
    residuals = problem.constraints(state)
    projected = problem.projected_gradient(state)
    expected = {family: max(float(np.max(np.abs(C))) for C in arrays) for family, arrays in residuals.items()}
    expected_kkt = max(float(np.max(np.abs(g))) for arrays in projected.values() for g in arrays)
    before = state.copy()
    diag = problem.diagnostics(state, update=True, bound=2.0)
    for family in ("C1", "C2", "C3", "C4"):
        assert diag["violation"][family] == pytest.approx(expected[family], rel=1e-12)
    assert diag["violation"]["bounds"] == pytest.approx(0.3, rel=1e-12)
    assert diag["kkt"] == pytest.approx(max(expected_kkt, diag["violation"]["max"]), rel=1e-12)
    for family, arrays in residuals.items():
        name = "lam" + family[1]
        for index, C in enumerate(arrays):
            updated = np.clip(getattr(before, name)[index] + 0.7 * C, -2.0, 2.0)
            np.testing.assert_allclose(getattr(state, name)[index], updated, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("variant", [dict(mode="restarted"), dict(mode="exact"),
                                     dict(mode="restarted", anderson=5, relaxation=1.5),
                                     dict(mode="restarted", batch_size=40),
                                     dict(mode="restarted", restore_best=True)],
                         ids=["restarted", "exact", "restarted-anderson", "restarted-batches", "restore-best"])
def test_checkpoint_resume_is_exact(tmp_path, monkeypatch, variant):
    data = teacher_student(N=150, N_val=50, n0=4, teacher_hidden=(8,), seed=4)
    args = (data["X"], data["Y"], data["X_val"], data["Y_val"])
    settings = dict(seed=5, checkpoint_every=4, **variant)
    straight = ALTrainer((8, 6), max_iters=25, **settings).fit(*args)

    # a run stopped at 9 iterations, then continued to 25
    path = tmp_path / "run.npz"
    ALTrainer((8, 6), max_iters=9, checkpoint=path, **settings).fit(*args)
    continued = ALTrainer((8, 6), max_iters=25, checkpoint=path, **settings).fit(*args)
    assert continued.extras["resumed"]
    assert _comparable(continued.history) == _comparable(straight.history)

    # a run killed during iteration 14 (its second sweep): the checkpoint of iteration 12 stays and the
    # rerun matches. With batches of 40 of the 150 samples an iteration is 3 sweeps.
    killed = tmp_path / "killed.npz"
    trainer = ALTrainer((8, 6), max_iters=25, checkpoint=killed, **settings)
    sweeps_per_iteration = 150 // variant.get("batch_size", 150)
    original_sweep = ALTrainer.sweep
    calls = {"n": 0}

    def dying_sweep(self, problem, state):
        calls["n"] += 1
        if calls["n"] == 13 * sweeps_per_iteration + min(2, sweeps_per_iteration):
            raise KeyboardInterrupt
        return original_sweep(self, problem, state)

    monkeypatch.setattr(ALTrainer, "sweep", dying_sweep)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*args)
    monkeypatch.setattr(ALTrainer, "sweep", original_sweep)
    meta, _ = ALTrainer.load_checkpoint(str(killed))
    assert meta["loop"]["iteration"] == 12
    resumed = ALTrainer((8, 6), max_iters=25, checkpoint=killed, **settings).fit(*args)
    assert _comparable(resumed.history) == _comparable(straight.history)
    for W1, W2 in zip(resumed.network.weights + resumed.network.biases,
                      straight.network.weights + straight.network.biases):
        assert np.array_equal(W1, W2)  # bit for bit

    assert resumed.extras["selected"] == straight.extras["selected"]

    # the checkpoint is plain arrays: it loads without pickle
    with np.load(killed, allow_pickle=False) as archive:
        assert "__meta__" in archive.files


def _overfitting(seed=3):
    """Few noisy training samples for a wide network: the validation loss turns up while training goes on."""
    rng = np.random.default_rng(seed)
    X, X_val = rng.normal(size=(3, 25)), rng.normal(size=(3, 400))
    def target(X):
        return np.tanh(X[:1] - X[1:2]) + 0.5 * X[2:]
    return X, target(X) + 0.8 * rng.normal(size=(1, 25)), X_val, target(X_val)


def test_restore_best_returns_the_iterate_of_least_validation_loss():
    from solvers.methods.scaling import forward_loss_fraction

    X, Y, X_val, Y_val = _overfitting()
    last = ALTrainer((40,), max_iters=60, seed=1, nonmonotone=1).fit(X, Y, X_val, Y_val)
    best = ALTrainer((40,), max_iters=60, seed=1, nonmonotone=1, restore_best=True).fit(X, Y, X_val, Y_val)
    assert _comparable(best.history) == _comparable(last.history)  # selection changes what is returned, not the run
    val = [row["val_loss"] for row in best.history]
    k = int(np.argmin(val))
    assert 0 < k < len(val) - 1 and val[-1] > val[k]  # the case overfits: the least loss is neither start nor end
    assert best.extras["selected"] == {"iteration": k, "val_loss": val[k], "rule": "least validation loss"}
    assert last.extras["selected"]["iteration"] == last.final["iteration"]
    # the returned networks are those iterates (losses recomputed in original units)
    assert forward_loss_fraction(best.network, X_val, Y_val) == pytest.approx(val[k], rel=1e-9)
    assert forward_loss_fraction(last.network, X_val, Y_val) == pytest.approx(val[-1], rel=1e-9)


def test_patience_stops_after_that_many_iterations_without_a_new_least_validation_loss():
    X, Y, X_val, Y_val = _overfitting()
    result = ALTrainer((40,), max_iters=60, seed=1, nonmonotone=1, patience=5).fit(X, Y, X_val, Y_val)
    assert result.stop_reason == "early_stopping" and "patience=5" in result.message
    val = [row["val_loss"] for row in result.history]
    k = int(np.argmin(val))
    assert len(val) - 1 - k == 5  # stopped exactly 5 iterations after the least loss
    assert all(v >= val[k] for v in val[k + 1:])  # ... and none of those 5 went below it


def test_early_stopping_needs_validation_data_and_a_positive_patience(tmp_path):
    X, Y = _tiny()
    for options in (dict(restore_best=True), dict(patience=3)):
        with pytest.raises(ProblemError, match="X_val and Y_val"):
            ALTrainer((4,), max_iters=2, **options).fit(X, Y)
    with pytest.raises(ProblemError, match="patience"):
        ALTrainer((4,), patience=0)
    # a checkpoint written without them is refused with the settings named
    path = tmp_path / "c.npz"
    ALTrainer((4,), max_iters=2, checkpoint=path).fit(X, Y, X, Y)
    with pytest.raises(ProblemError, match="restore_best"):
        ALTrainer((4,), max_iters=4, checkpoint=path, restore_best=True).fit(X, Y, X, Y)


def test_checkpoint_refuses_other_data_or_settings(tmp_path):
    X, Y = _tiny()
    path = tmp_path / "c.npz"
    ALTrainer((4,), max_iters=2, checkpoint=path).fit(X, Y)
    with pytest.raises(ProblemError, match="other data"):
        ALTrainer((4,), max_iters=4, checkpoint=path).fit(X + 1, Y)
    with pytest.raises(ProblemError, match=r"other settings \(rho: 1\.0 -> 3\.0\); use the same") as raised:
        ALTrainer((4,), max_iters=4, checkpoint=path, rho=3.0).fit(X, Y)
    assert "nonmonotone" not in str(raised.value)  # only what differs is named


def test_time_budget_and_warning():
    X, Y = _tiny()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ALTrainer((4,), max_iters=10**6, time_budget=0.2).fit(X, Y)
    assert result.stop_reason == "time_budget"
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _poison_sweeps(monkeypatch, first: int) -> None:
    """From sweep number ``first`` on, every sweep leaves a NaN in ``W_1``."""
    original = ALTrainer.sweep
    calls = {"n": 0}

    def poisoned(self, problem, state):
        calls["n"] += 1
        original(self, problem, state)
        if calls["n"] >= first:
            state.W[0][0, 0] = np.nan

    monkeypatch.setattr(ALTrainer, "sweep", poisoned)


def test_divergence_is_reported(monkeypatch, tmp_path):
    X, Y = _tiny()
    _poison_sweeps(monkeypatch, 7)
    path = tmp_path / "d.npz"
    result = ALTrainer((4,), mode="exact", max_iters=50, checkpoint=path, checkpoint_every=5).fit(X, Y)
    assert result.stop_reason == "diverged" and "NaN" in result.message and "checkpoint" in result.message
    meta, _ = ALTrainer.load_checkpoint(str(path))
    assert meta["loop"]["iteration"] == 5  # the last good checkpoint is kept
    assert all(np.all(np.isfinite(W)) for W in result.network.weights)


def test_divergence_after_a_resume_returns_the_resumed_checkpoint(monkeypatch, tmp_path):
    X, Y = _tiny()
    path = tmp_path / "r.npz"
    first = ALTrainer((4,), mode="exact", max_iters=5, checkpoint=path).fit(X, Y)
    _poison_sweeps(monkeypatch, 1)
    result = ALTrainer((4,), mode="exact", max_iters=50, checkpoint=path).fit(X, Y)
    assert result.stop_reason == "diverged" and "checkpoint" in result.message
    for ours, theirs in zip(result.network.weights, first.network.weights):
        np.testing.assert_array_equal(ours, theirs)  # the checkpoint's iterate, not the initial network


def test_restarted_mode_rejects_a_bad_sweep(monkeypatch):
    """The safeguard: a sweep whose weights raise the objective (here: NaN) is not taken; rho goes up."""
    X, Y = _tiny()
    _poison_sweeps(monkeypatch, 7)
    result = ALTrainer((4,), max_iters=12, nonmonotone=1).fit(X, Y)
    assert result.stop_reason == "max_iters"
    assert result.extras["accepted"] + result.extras["rejected"] == 12 and result.extras["rejected"] >= 6
    rhos = [row["rho"] for row in result.history]
    assert rhos[7:] == pytest.approx([2.0 ** k * rhos[6] for k in range(1, 7)])  # every poisoned sweep rejected
    # the objective the safeguard compares (float64 sums of the state's forward pass): monotone, and it
    # stays at the last good point
    objectives = [row["objective"] for row in result.history]
    assert objectives[12] == objectives[6] and all(np.diff(objectives) <= 0)
    assert all(np.all(np.isfinite(W)) for W in result.network.weights)


def test_restarted_mode_stops_when_stalled_at_rho_max(monkeypatch):
    """``penalty_period`` rejections in a row with rho at rho_max: stop as "stalled", keep the last accepted weights."""
    X, Y = _tiny()
    _poison_sweeps(monkeypatch, 3)  # sweeps 1 and 2 are accepted, every later one is rejected
    with pytest.warns(ConvergenceWarning, match="stalled at outer iteration 7"):
        result = ALTrainer((4,), max_iters=100, rho_max=8.0, penalty_period=5).fit(X, Y)
    assert result.stop_reason == "stalled" and result.iterations == 7
    rhos = [row["rho"] for row in result.history]
    assert rhos[2] == pytest.approx(1 / 1.1**2) and rhos[6:] == [8.0, 8.0]  # doubled from iteration 3, capped at 6
    assert result.extras["rejected"] == 5 and all(np.all(np.isfinite(W)) for W in result.network.weights)
    # no stall without the adaptive penalty (rho never reaches rho_max): the iteration limit stops it
    assert ALTrainer((4,), max_iters=12, rho_max=8.0, penalty_period=5, adaptive_penalty=False).fit(
        X, Y).stop_reason == "max_iters"


def test_restarted_mode_nonmonotone_rule():
    """The reference of the default rule is the largest objective of the last 20 accepted iterates: that maximum
    never rises, single steps may; ``nonmonotone=1`` is the monotone rule."""
    X, Y = _tiny()
    result = ALTrainer((4,), max_iters=80).fit(X, Y)
    objectives = [row["objective"] for row in result.history]
    accepted = [objectives[0]]  # objectives of the accepted iterates (a rejected step repeats the last one)
    for before, after in zip(objectives, objectives[1:]):
        assert after <= max(accepted[-20:]) + 1e-15
        if after != before:
            accepted.append(after)
    assert any(np.diff(objectives) > 0)  # on this tiny net the rule does take rising steps
    assert max(objectives[-20:]) <= max(objectives[:20])
    monotone = ALTrainer((4,), max_iters=80, nonmonotone=1).fit(X, Y)
    assert all(np.diff([row["objective"] for row in monotone.history]) <= 0)
    with pytest.raises(ProblemError, match="nonmonotone"):
        ALTrainer((4,), nonmonotone=0)


def test_restarted_mode_objective_never_rises_and_anderson_steps_are_taken():
    data = teacher_student(N=300, N_val=50, n0=5, teacher_hidden=(8,), seed=2)
    result = ALTrainer((16,), max_iters=60, seed=1, anderson=5, relaxation=1.5, keep_state=True,
                       nonmonotone=1).fit(data["X"], data["Y"])
    objectives = [row["objective"] for row in result.history]
    assert all(np.diff(objectives) <= 0)
    assert result.extras["anderson_steps"] > 0
    assert result.final["train_loss"] < 0.5 * result.init_train_loss
    # the KKT residual is computed every kkt_every = 10 rows; the state is a forward state: computing
    # every residual from scratch (no products reused) finds every constraint exact
    rows = [row for row in result.history[1:] if row["kkt"] is not None]
    assert len(rows) == 6
    problem, state = result.extras["problem"], result.extras["state"]
    assert problem.diagnostics(state)["violation"]["max"] == 0.0


def test_sample_batches_visit_every_batch_and_learn():
    """batch_size: N // B restarted steps per iteration, each on B distinct samples, a new order each iteration."""
    data = teacher_student(N=1030, N_val=200, n0=5, teacher_hidden=(8,), seed=3)
    trainer = ALTrainer((16,), max_iters=15, seed=2, batch_size=200, keep_state=True)
    seen = []
    original = ALTrainer.sweep

    def recording(self, problem, state):
        seen.append(problem.X0.copy())
        return original(self, problem, state)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ALTrainer, "sweep", recording)
        result = trainer.fit(data["X"], data["Y"], data["X_val"], data["Y_val"])
    assert len(seen) == 15 * 5 and all(batch.shape == (5, 200) for batch in seen)
    assert result.extras["accepted"] + result.extras["rejected"] == 15 * 5
    problem = result.extras["problem"]
    columns = {tuple(column) for column in problem.X0.T}
    first_pass = [tuple(column) for batch in seen[:5] for column in batch.T]
    assert len(set(first_pass)) == 1000 and set(first_pass) <= columns  # distinct training samples
    assert not np.array_equal(seen[0], seen[5])  # reshuffled for the second pass
    assert result.final["train_loss"] < 0.5 * result.init_train_loss
    assert result.final["val_loss"] < result.init_val_loss
    # the full state is restarted at the returned weights: every constraint exact, and the history's
    # objective (from the float64 forward pass) is the objective there
    assert problem.diagnostics(result.extras["state"])["violation"]["max"] == 0.0
    assert result.final["objective"] == pytest.approx(problem.objective(result.extras["state"]), rel=1e-5)
    # deterministic: the same run again gives the same history
    again = ALTrainer((16,), max_iters=15, seed=2, batch_size=200).fit(data["X"], data["Y"], data["X_val"],
                                                                        data["Y_val"])
    assert _comparable(again.history) == _comparable(result.history)


def test_the_result_keeps_the_state_only_when_asked():
    X, Y = _tiny()
    assert "state" not in ALTrainer((4,), max_iters=2).fit(X, Y).extras
    kept = ALTrainer((4,), max_iters=2, keep_state=True).fit(X, Y).extras
    assert kept["state"].W[0].shape == (4, 2) and kept["problem"].N == 20


def test_batch_size_is_pinned_in_the_checkpoint_and_small_batches_warn(tmp_path, monkeypatch):
    import solvers.methods.al_trainer as al_trainer

    data = teacher_student(N=400, N_val=50, n0=4, teacher_hidden=(8,), seed=4)
    monkeypatch.setattr(al_trainer, "AUTO_BATCH", 100)  # auto: batches of 100 when N >= 400
    path = tmp_path / "pinned.npz"
    ALTrainer((8,), max_iters=3, checkpoint=path).fit(data["X"], data["Y"])
    assert ALTrainer.load_checkpoint(str(path))[0]["batch_size"] == 100
    monkeypatch.setattr(al_trainer, "AUTO_BATCH", 1000)  # the same settings now resolve to the full batch
    with pytest.raises(ProblemError, match="batches of 100 samples, this run would use all"):
        ALTrainer((8,), max_iters=6, checkpoint=path).fit(data["X"], data["Y"])
    with pytest.warns(UserWarning, match="batch_size=10 is less than twice"):
        ALTrainer((8,), max_iters=1, batch_size=10).fit(data["X"], data["Y"])


def test_batch_size_rule_and_errors():
    widths = (10, 64, 64, 1)
    assert ALTrainer((4,)).resolved_batch_size(3999, widths) is None  # auto: full batch below 4 x 1000 samples
    assert ALTrainer((4,)).resolved_batch_size(4000, widths) == 1000
    # at least twice the widest layer input plus one: 1000 hidden units need 2002 samples per batch
    assert ALTrainer((4,)).resolved_batch_size(8007, (100, 1000, 784)) is None
    assert ALTrainer((4,)).resolved_batch_size(8008, (100, 1000, 784)) == 2002
    assert ALTrainer((4,), anderson=3).resolved_batch_size(10**5, widths) is None
    assert ALTrainer((4,), mode="exact").resolved_batch_size(10**5, widths) is None
    assert ALTrainer((4,), batch_size=None).resolved_batch_size(10**5, widths) is None
    assert ALTrainer((4,), batch_size=64).resolved_batch_size(64, widths) is None  # as large as the data
    for bad in (0, -5, 2.5, "half"):
        with pytest.raises(ProblemError, match="batch_size"):
            ALTrainer((4,), batch_size=bad)
    for settings in (dict(mode="exact"), dict(anderson=2), dict(engine="dispatched")):
        with pytest.raises(ProblemError, match="batch_size=64 needs mode='restarted'"):
            ALTrainer((4,), batch_size=64, **settings)


def test_standardizer_folds_exactly():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(3, 5, size=(4, 50)), rng.normal(-2, 7, size=(3, 50))
    scaler = Standardizer.fit(X, Y)
    from formulation.network import ReluNetwork

    net = ReluNetwork.random((4, 6, 3), 1)
    np.testing.assert_allclose(scaler.unscale_network(net)(X), scaler.y_inverse(net(scaler.x(X))), atol=1e-10)
    np.testing.assert_allclose(scaler.scale_network(scaler.unscale_network(net)).weights[0], net.weights[0])


@pytest.mark.parametrize("mode, batch_size", [("restarted", None), ("exact", None), ("restarted", 500)])
def test_peak_memory_within_twice_the_state(mode, batch_size):
    """Peak traced memory of fit: at most twice the AL state, the data twice, and the Anderson history."""
    data = teacher_student(N=3000, N_val=10, n0=10, teacher_hidden=(16,), seed=0)
    X, Y = np.ascontiguousarray(data["X"]), np.ascontiguousarray(data["Y"])
    trainer = ALTrainer((64, 64), mode=mode, max_iters=12, batch_size=batch_size)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = trainer.fit(X, Y)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    data_bytes = X.nbytes + Y.nbytes
    bound = 2 * result.state_bytes + 2 * data_bytes + result.extras["anderson_bytes"]
    assert peak <= bound, (peak, result.state_bytes, data_bytes, result.extras["anderson_bytes"])


# ------------------------------------------------------------------ the data file of `unrelu train`
def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_load_data_errors(tmp_path):
    good = {"X": np.ones((5, 2)), "Y": np.zeros((5, 1))}
    assert load_data(_write(tmp_path / "ok.npz", **good))["X"].shape == (2, 5)
    with pytest.raises(ProblemError, match="no key 'Y'"):
        load_data(_write(tmp_path / "a.npz", X=good["X"]))
    with pytest.raises(ProblemError, match="5 rows but `Y` has 4"):
        load_data(_write(tmp_path / "b.npz", X=good["X"], Y=np.zeros((4, 1))))
    bad = good["X"].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ProblemError, match="NaN"):
        load_data(_write(tmp_path / "c.npz", X=bad, Y=good["Y"]))
    with pytest.raises(ProblemError, match="dtype"):
        load_data(_write(tmp_path / "d.npz", X=np.array([["a", "b"]] * 5), Y=good["Y"]))
    with pytest.raises(ProblemError, match="does not exist"):
        load_data(str(tmp_path / "missing.npz"))
    with pytest.raises(ProblemError, match="only one of"):
        load_data(_write(tmp_path / "e.npz", X_val=good["X"], **good))


def test_train_command(tmp_path):
    from validation.cli import main

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    Y = np.maximum(X @ np.array([[1.0], [-2.0], [0.5]]), 0)
    data = _write(tmp_path / "d.npz", X=X, Y=Y, X_val=X[:10], Y_val=Y[:10])
    out, hist, plot = tmp_path / "net.npz", tmp_path / "h.csv", tmp_path / "h.png"
    code = main(["train", "--data", data, "--hidden", "8,8", "--iters", "4", "--quiet", "--out", str(out),
                 "--history", str(hist), "--plot", str(plot)])
    assert code == 0 and out.exists() and plot.exists()
    assert len(hist.read_text().strip().splitlines()) == 1 + 5  # header, initialisation, 4 iterations
    bad = _write(tmp_path / "bad.npz", X=X, Y=Y[:5])
    assert main(["train", "--data", bad, "--quiet"]) == 2


def test_train_command_restore_best_and_patience(tmp_path, capsys):
    from formulation.network import ReluNetwork
    from solvers.methods.scaling import forward_loss_fraction
    from validation.cli import main

    X, Y, X_val, Y_val = _overfitting()
    data = _write(tmp_path / "d.npz", X=X.T, Y=Y.T, X_val=X_val.T, Y_val=Y_val.T)
    out = tmp_path / "net.npz"
    code = main(["train", "--data", data, "--hidden", "40", "--iters", "60", "--nonmonotone", "1", "--quiet",
                 "--restore-best", "--patience", "5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "stopped early" in printed and "returned: the iterate of least validation loss" in printed
    returned = printed.split("returned: the iterate of least validation loss")[1]
    reported = float(returned.split("val loss ")[1].split(")")[0])
    assert forward_loss_fraction(ReluNetwork.load(str(out)), X_val, Y_val) == pytest.approx(reported, rel=1e-3)
    no_val = _write(tmp_path / "noval.npz", X=X.T, Y=Y.T)
    assert main(["train", "--data", no_val, "--quiet", "--restore-best"]) == 2
    assert "X_val and Y_val" in capsys.readouterr().err


def test_adam_baseline_runs():
    pytest.importorskip("torch")
    from validation.baselines.adam import train_adam

    data = teacher_student(N=300, N_val=100, n0=5, teacher_hidden=(8,), seed=0)
    out = train_adam(data["X"], data["Y"], data["X_val"], data["Y_val"], hidden=(16,), time_budget=0.5)
    assert out["history"][-1]["train_loss"] <= out["init_train_loss"]
    start = ALTrainer((16,), max_iters=0, dtype="float64").fit(data["X"], data["Y"])
    assert out["init_train_loss"] == pytest.approx(start.init_train_loss, rel=1e-9)  # same start


def test_adam_restore_best_returns_the_recorded_network_of_least_validation_loss():
    pytest.importorskip("torch")
    from solvers.methods.scaling import forward_loss_fraction
    from validation.baselines.adam import train_adam

    X, Y, X_val, Y_val = _overfitting()
    out = train_adam(X, Y, X_val, Y_val, hidden=(40,), max_epochs=300, time_budget=60, record_every=0,
                     batch_size=25, lr=1e-2, restore_best=True)
    val = [row["val_loss"] for row in out["history"]]
    k = int(np.argmin(val))
    assert 0 < k < len(val) - 1 and val[-1] > val[k]  # Adam overfits this case too
    assert out["selected"] == {"epoch": out["history"][k]["epoch"], "val_loss": val[k], "rule": "least validation loss"}
    assert forward_loss_fraction(out["network"], X_val, Y_val) == pytest.approx(val[k], rel=1e-9)
    with pytest.raises(ProblemError, match="X_val and Y_val"):
        train_adam(X, Y, hidden=(4,), max_epochs=1, restore_best=True)


def test_adam_weight_decay_is_the_al_objective():
    """With weight_decay = mu, Adam's loss on the full batch is 2/(α N n_L) times the AL objective."""
    torch = pytest.importorskip("torch")
    from validation.baselines.adam import batch_loss, torch_modules

    data = teacher_student(N=300, N_val=100, n0=5, teacher_hidden=(8,), seed=0)
    result = ALTrainer((16,), max_iters=3, dtype="float64", mu=0.3, keep_state=True).fit(data["X"], data["Y"])
    problem, state = result.extras["problem"], result.extras["state"]
    problem.restart(state)
    model = torch_modules(state.network(), "float64")
    inputs, targets = torch.from_numpy(problem.X0.T.copy()), torch.from_numpy(problem.Y.T.copy())
    N, n_L = problem.N, problem.widths[-1]
    weights = [layer.weight for layer in model if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():  # train_adam's coefficient: weight_decay / (n_L N)
        adam_loss = batch_loss(torch, model, weights, inputs, targets, 0.3 / problem.Y.size)
    alpha = result.extras["alpha"]
    assert float(adam_loss) == pytest.approx(2.0 / (alpha * N * n_L) * problem.objective(state), rel=1e-10)


def test_a_checkpoint_above_the_default_npz_cap_resumes(tmp_path, monkeypatch):
    """The trainer reads its checkpoint up to the size its own run implies, not the generic npz cap."""
    import formulation._checks as checks
    import solvers.methods.al_trainer as module
    from formulation._checks import read_npz

    X, Y = _tiny()
    path = tmp_path / "big.npz"
    ALTrainer((4,), max_iters=3, checkpoint=path).fit(X, Y)
    monkeypatch.setattr(checks, "MAX_NPZ_BYTES", 1000)  # every checkpoint is now "large"
    monkeypatch.setattr(module, "MAX_NPZ_BYTES", 1000)
    with pytest.raises(ProblemError, match="above the limit"):
        read_npz(path, "Checkpoint", "delete it")
    resumed = ALTrainer((4,), max_iters=5, checkpoint=path).fit(X, Y)
    assert resumed.extras["resumed"] and resumed.final["iteration"] == 5


@pytest.mark.parametrize("hidden", [(70,), (45, 60), (44, 40, 55)])
def test_pairs_start_is_the_ridge_decoder(hidden):
    """init="pairs": the starting network (1-3 hidden layers, original units) is the ridge decoder of the
    targets on the inputs, computed independently by scikit-learn, to 1e-10 on the training data."""
    from validation.baselines.linear import ridge

    rng = np.random.default_rng(3)
    A = rng.normal(size=(20, 30))
    S = rng.uniform(size=(200, 30))
    Y = S @ A.T + 0.1 * rng.normal(size=(200, 20))
    trainer = ALTrainer(hidden, init="pairs", ridge=0.3, seed=1)
    X0, T, _, _ = trainer.check_data(Y.T, S.T)
    scaler = Standardizer.fit(X0, T)
    network = scaler.unscale_network(trainer.initial_network(scaler.x(X0), scaler.y(T)))
    model, _ = ridge(Y, S, 0.3)
    np.testing.assert_allclose(network.forward(Y.T).T, model.predict(Y), rtol=0, atol=1e-10)
    # the He units are there, with zero output weights: the AL method can grow them
    assert network.widths == (20, *hidden, 30)
    assert np.all(network.weights[-1][:, 40:] == 0) and np.any(network.weights[0][40:] != 0)
    # a first AL iteration from it: a finite run that does not start above its own start
    result = ALTrainer(hidden, init="pairs", ridge=0.3, seed=1, max_iters=3, progress=False).fit(Y.T, S.T)
    assert result.history[0]["train_loss"] == pytest.approx(result.init_train_loss)
    assert result.final["train_loss"] <= result.init_train_loss + 1e-12


def test_pairs_needs_room_for_the_pairs():
    X, Y = _tiny()
    with pytest.raises(ProblemError, match="at least 4"):
        ALTrainer((3,), init="pairs", max_iters=1, progress=False).fit(X, Y)
    with pytest.raises(ProblemError, match="Unknown init"):
        ALTrainer((3,), init="linear")
