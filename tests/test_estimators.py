"""The scikit-learn estimator over the AL trainer (solvers.methods.estimators.ALRegressor)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6", reason="the estimator needs scikit-learn >= 1.6")
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from formulation.results import ConvergenceWarning  # noqa: E402
from solvers.methods.al_trainer import ALTrainer  # noqa: E402
from solvers.methods.estimators import ALRegressor  # noqa: E402

# every fit below stops at its iteration budget on purpose, which the trainer reports as a ConvergenceWarning
pytestmark = pytest.mark.filterwarnings("ignore::formulation.results.ConvergenceWarning")

#: Checks that ALRegressor cannot meet, each with the reason; empty: it meets all of scikit-learn 1.9's checks
#: (two are skipped by scikit-learn itself when pandas or SCIPY_ARRAY_API are absent).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _teacher(N: int = 200, n0: int = 4, outputs: int = 1, seed: int = 0):
    """Samples as rows: a small ReLU teacher plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, n0))
    hidden = np.maximum(X @ rng.normal(size=(n0, 6)) + 0.1, 0.0)
    Y = hidden @ rng.normal(size=(6, outputs)) + 0.01 * rng.normal(size=(N, outputs))
    return X, (Y[:, 0] if outputs == 1 else Y)


@parametrize_with_checks([ALRegressor(hidden_layer_sizes=(8,), max_iter=20)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_fit_predict_attributes_and_the_transpose_at_the_boundary():
    X, y = _teacher()
    model = ALRegressor(hidden_layer_sizes=(12,), max_iter=15, random_state=3, dtype="float64").fit(X, y)
    assert model.n_iter_ == 15 and model.stop_reason_ == "max_iters"
    assert len(model.loss_curve_) == model.n_iter_ + 1 and len(model.history_) == model.n_iter_ + 1
    assert model.loss_curve_[-1] < model.loss_curve_[0]  # the AL iterations improved on the initialisation
    assert model.n_features_in_ == 4 and model.network_.widths == (4, 12, 1)
    prediction = model.predict(X)
    assert prediction.shape == (200,)
    np.testing.assert_array_equal(prediction, model.network_.forward(X.T)[0])
    # the same network as the trainer itself on samples as columns, with the int random_state as its seed
    direct = ALTrainer((12,), seed=3, max_iters=15, progress=False, dtype="float64").fit(X.T, y[None, :]).network
    for ours, theirs in zip(model.network_.weights + model.network_.biases, direct.weights + direct.biases):
        np.testing.assert_array_equal(ours, theirs)
    # score is R² and agrees with the last loss fraction, R² = 1 - ||N(X) - y||² / ||y - ȳ||², to float64
    # rounding (the history's loss is computed on the standardised data; with the default float32 state it is
    # computed on float32-rounded data and agrees to about 1e-9 only)
    assert model.score(X, y) == pytest.approx(1.0 - model.loss_curve_[-1], abs=1e-12)


def test_early_stopping_holds_out_a_split_and_keeps_the_best_iterate():
    from sklearn.model_selection import train_test_split

    from solvers.methods.scaling import forward_loss_fraction

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    y = np.tanh(X[:, 0] - X[:, 1]) + 0.5 * X[:, 2] + 0.8 * rng.normal(size=40)  # noisy: a wide net overfits
    model = ALRegressor(hidden_layer_sizes=(40,), max_iter=80, random_state=1, dtype="float64", early_stopping=True,
                        validation_fraction=0.3, n_iter_no_change=5, trainer_options={"nonmonotone": 1}).fit(X, y)
    curve = model.validation_loss_curve_
    assert model.stop_reason_ == "early_stopping" and len(curve) == model.n_iter_ + 1
    assert model.best_iteration_ == int(np.argmin(curve)) == model.n_iter_ - 5
    # the held-out split is scikit-learn's train_test_split with the int random_state, and the returned
    # network has the least loss on it
    _, X_val, _, y_val = train_test_split(X, y[:, None], test_size=12, random_state=1)
    assert forward_loss_fraction(model.network_, X_val.T, y_val.T) == pytest.approx(min(curve), rel=1e-9)
    plain = ALRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=1).fit(X, y)
    assert plain.validation_loss_curve_ is None and plain.best_iteration_ == plain.n_iter_ == 3
    for fraction in (0.0, 1.0, 0.99):
        with pytest.raises(ValueError, match="validation_fraction"):
            ALRegressor(max_iter=2, early_stopping=True, validation_fraction=fraction).fit(X, y)
    with pytest.raises(ValueError, match="n_iter_no_change"):
        ALRegressor(max_iter=2, trainer_options={"patience": 3}).fit(X, y)


def test_multi_output_and_a_one_column_y():
    X, Y = _teacher(outputs=2)
    model = ALRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, Y)
    assert model.predict(X).shape == (200, 2)
    column = ALRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, Y[:, :1])
    assert column.predict(X).shape == (200, 1)


def test_random_state_none_draws_a_seed_and_an_int_repeats():
    X, y = _teacher(N=80)
    first, second = (ALRegressor(hidden_layer_sizes=(6,), max_iter=3, random_state=7).fit(X, y) for _ in range(2))
    np.testing.assert_array_equal(first.predict(X), second.predict(X))
    drawn = [ALRegressor(hidden_layer_sizes=(6,), max_iter=0, random_state=None).fit(X, y).network_.weights[0]
             for _ in range(2)]
    assert not np.array_equal(*drawn)


def test_time_budget_stops_the_fit():
    X, y = _teacher(N=400)
    model = ALRegressor(hidden_layer_sizes=(16,), max_iter=10**6, time_budget=0.3, random_state=0).fit(X, y)
    assert model.stop_reason_ == "time_budget" and 0 < model.n_iter_ < 10**6


def test_pipeline_and_grid_search():
    X, y = _teacher(N=240)
    pipeline = make_pipeline(StandardScaler(), ALRegressor(hidden_layer_sizes=(16,), max_iter=30, random_state=0))
    assert pipeline.fit(X, y).score(X, y) > 0.9  # ridge on ReLU features of a ReLU teacher, then 30 AL iterations
    search = GridSearchCV(
        make_pipeline(StandardScaler(), ALRegressor(max_iter=10, random_state=0)),
        {"alregressor__hidden_layer_sizes": [(2,), (16,)], "alregressor__mu": [1e-3, 1e-1]}, cv=2,
    ).fit(X, y)
    assert set(search.best_params_) == {"alregressor__hidden_layer_sizes", "alregressor__mu"}
    assert search.cv_results_["mean_test_score"].shape == (4,)
    assert search.best_estimator_[-1].network_.widths[1] == search.best_params_["alregressor__hidden_layer_sizes"][0]
    assert search.score(X, y) > 0.5


def test_bad_input_gives_scikit_learn_errors():
    X, y = _teacher(N=30)
    model = ALRegressor(hidden_layer_sizes=(4,), max_iter=2)
    with pytest.raises(NotFittedError):
        model.predict(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.fit(bad, y)
    with pytest.raises(ValueError, match="Input y contains infinity"):
        model.fit(X, np.where(np.arange(30) == 2, np.inf, y))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[30, 29\]"):
        model.fit(X, y[:-1])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        model.fit(X[:, 0], y)
    with pytest.raises(ValueError, match=r"1 sample\(s\)"):
        model.fit(X[:1], y[:1])
    model.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but ALRegressor is expecting 4 features"):
        model.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"trainer_options sets \['max_iters'\].*max_iters -> max_iter"):
        ALRegressor(trainer_options={"max_iters": 3}).fit(X, y)
    with pytest.raises(ValueError, match="Unknown mode 'fast'"):
        ALRegressor(mode="fast").fit(X, y)


def test_the_learned_network_leaves_through_onnx():
    pytest.importorskip("onnx", reason="needs the onnx package")
    from onnx.reference import ReferenceEvaluator

    X, y = _teacher(N=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ALRegressor(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = model.network_.to_onnx(f"{folder}/model.onnx")
        output = ReferenceEvaluator(path).run(None, {"input": X})[0]
    np.testing.assert_allclose(output[:, 0], model.predict(X), rtol=0, atol=1e-12)
