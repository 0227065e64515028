r"""scikit-learn estimators over :class:`~solvers.methods.al_trainer.ALTrainer` (needs ``scikit-learn>=1.6``).

:class:`ALRegressor` fits a ReLU MLP with the augmented-Lagrangian method of DESIGN §3,

.. math::

    \min\ \tfrac{\alpha}{2}\|Z_L - Y\|^2 + \tfrac{\mu}{2}\sum_l \|W_l\|^2
    \quad\text{s.t. } Z_l = W_l X_{l-1} + b_l 1^T,\ X_l = \max(Z_l, 0)\ (l < L)\ \text{(un-rectified)},

behind scikit-learn's interface: samples are ROWS here (``X`` of shape ``(n_samples, n_features)``)
and are transposed at the boundary, since the library's own convention is samples as columns. The
input is checked by scikit-learn's ``validate_data`` (NaN, inf, shapes, dtypes, sample counts), and
the result is a :class:`~formulation.network.ReluNetwork` in original units (``network_``), which
:meth:`~formulation.network.ReluNetwork.to_onnx` or ``.to_torch`` exports.

There is no ``ALClassifier``: the trainer fits the squared loss only (the softmax cross-entropy
block of :mod:`formulation.learning` is not wired into ``ALTrainer``), and a classifier on top of a
squared loss would be a different method under a familiar name.
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # no scikit-learn, or one older than 1.6 (no validate_data)
    raise ImportError("The scikit-learn estimators need scikit-learn >= 1.6: `pip install 'scikit-learn>=1.6'` "
                      "or `pip install 'unrelu[sklearn]'`.") from exc

from solvers.methods.al_trainer import DEFAULT_MU, ALTrainer

__all__ = ["ALRegressor"]


class ALRegressor(RegressorMixin, BaseEstimator):
    """ReLU MLP regressor trained by the augmented-Lagrangian method (:class:`ALTrainer`), samples as rows.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (64,)
        Hidden widths ``(n_1, ..., n_{L-1})``; ``n_0`` and ``n_L`` come from ``X`` and ``y``.
    max_iter : int, default 200
        Outer iterations of the AL method (``ALTrainer(max_iters=...)``).
    time_budget : float or None, default None
        Training seconds (``ALTrainer(time_budget=...)``); whichever of ``max_iter`` and
        ``time_budget`` comes first stops the fit.
    tol : float, default 1e-6
        KKT residual and violation tolerance of the standardised problem.
    mu : float, default 1e-3
        Weight decay relative to the loss scale.
    rho : float or None, default None
        Initial relative penalty (``None``: the trainer's default for ``mode``).
    mode : {"restarted", "exact"}, default "restarted"
        Outer method (:mod:`solvers.methods.al_trainer`).
    batch_size : int, "auto" or None, default "auto"
        Samples per restarted step (``None``: full batch).
    init : {"ridge", "forward"}, default "ridge"
        Output layer of the initialisation fitted by ridge least squares, or the He network as is.
    dtype : {"float32", "float64"} or None, default None
        Floating type of the AL state (``None``: the trainer's choice, float32 in restarted mode).
    threads : int or None, default None
        Cap on BLAS threads during ``fit``.
    random_state : int, RandomState instance or None, default None
        Seed of the He initialisation and of the sample batches. An int is the trainer's ``seed`` as is;
        ``None`` or a ``RandomState`` draws one.
    early_stopping : bool, default False
        As in scikit-learn's ``MLPRegressor``: hold out ``validation_fraction`` of the samples (split by
        ``random_state``), stop after ``n_iter_no_change`` outer iterations without a new least validation
        loss, and keep the iterate of least validation loss, the start included (the trainer's
        ``restore_best`` and ``patience``).
    validation_fraction : float, default 0.1
        Share of the samples held out when ``early_stopping``; in ``(0, 1)``.
    n_iter_no_change : int, default 10
        Patience of ``early_stopping``, in outer iterations.
    trainer_options : dict or None, default None
        Any other keyword of :class:`ALTrainer` (e.g. ``{"sweeps": 3}``). ``progress`` and
        ``checkpoint`` are fixed (off).

    Attributes
    ----------
    network_ : ReluNetwork
        The learned network, original units, samples as columns (``network_.forward(X.T).T`` is
        ``predict(X)`` for 2-D ``y``).
    n_iter_ : int
        Outer iterations run.
    loss_curve_ : list of float
        Training loss of the forward pass after each outer iteration, as a fraction of the target
        variance (``||N(X) − Y||² / ||Y − Ȳ||²``); entry 0 is the initialisation, so it has
        ``n_iter_ + 1`` entries.
    history_ : list of dict
        The trainer's full history (:data:`~solvers.methods.al_trainer.HISTORY_COLUMNS`).
    stop_reason_ : str
        ``"converged"``, ``"max_iters"``, ``"time_budget"``, ``"diverged"``, ``"stalled"`` or (with
        ``early_stopping``) ``"early_stopping"``; ``"max_iters"``, ``"time_budget"``, ``"diverged"`` and
        ``"stalled"`` also raise the trainer's ``ConvergenceWarning``.
    validation_loss_curve_ : list of float or None
        With ``early_stopping``: the held-out loss (fraction of its variance) after each outer iteration,
        entry 0 the initialisation; else ``None``.
    best_iteration_ : int
        The outer iteration whose weights ``network_`` holds (``n_iter_`` without ``early_stopping``).
    n_features_in_, feature_names_in_ : int, ndarray
        Set by scikit-learn's ``validate_data``.
    """

    def __init__(self, hidden_layer_sizes=(64,), *, max_iter=200, time_budget=None, tol=1e-6, mu=DEFAULT_MU,
                 rho=None, mode="restarted", batch_size="auto", init="ridge", dtype=None, threads=None,
                 random_state=None, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 trainer_options=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.time_budget = time_budget
        self.tol = tol
        self.mu = mu
        self.rho = rho
        self.mode = mode
        self.batch_size = batch_size
        self.init = init
        self.dtype = dtype
        self.threads = threads
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.trainer_options = trainer_options

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _trainer(self, seed: int) -> ALTrainer:
        options = dict(self.trainer_options or {})
        own = {"hidden": "hidden_layer_sizes", "seed": "random_state", "max_iters": "max_iter", "progress": None,
               "checkpoint": None, "mode": "mode", "time_budget": "time_budget", "tol": "tol", "mu": "mu",
               "rho": "rho", "batch_size": "batch_size", "init": "init", "dtype": "dtype", "threads": "threads",
               "restore_best": "early_stopping", "patience": "n_iter_no_change"}
        clashes = sorted(set(own) & set(options))
        if clashes:
            instead = ", ".join(f"{key} -> {own[key] or '(fixed off)'}" for key in clashes)
            raise ValueError(f"trainer_options sets {clashes}, which ALRegressor sets through its own parameters "
                             f"({instead}); set those instead.")
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
            hidden = (hidden,)
        stopping = {"restore_best": True, "patience": self.n_iter_no_change} if self.early_stopping else {}
        return ALTrainer(tuple(hidden), mode=self.mode, seed=seed, max_iters=self.max_iter,
                         time_budget=self.time_budget, tol=self.tol, mu=self.mu, rho=self.rho,
                         batch_size=self.batch_size, init=self.init, dtype=self.dtype, threads=self.threads,
                         progress=False, checkpoint=None, **stopping, **options)

    def fit(self, X, y):
        """Fit on ``X`` of shape ``(n_samples, n_features)`` and ``y`` of shape ``(n_samples,)`` or
        ``(n_samples, n_outputs)``; returns ``self``."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64, ensure_min_samples=2)
        seed = self._seed()
        trainer = self._trainer(seed)
        self._y_ndim = y.ndim
        Y = y.reshape(len(y), -1)
        validation = ()
        if self.early_stopping:
            from sklearn.model_selection import train_test_split

            if not 0.0 < self.validation_fraction < 1.0:
                raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}.")
            held = int(np.ceil(self.validation_fraction * len(Y)))
            if held < 1 or len(Y) - held < 2:
                raise ValueError(f"early_stopping with validation_fraction={self.validation_fraction} leaves "
                                 f"{len(Y) - held} training and {held} validation samples of {len(Y)}; it needs at "
                                 "least 2 and 1: pass more samples or early_stopping=False.")
            X, X_val, Y, Y_val = train_test_split(X, Y, test_size=held, random_state=seed)
            validation = (X_val.T, Y_val.T)
        result = trainer.fit(X.T, Y.T, *validation)  # samples as columns inside the library
        self.network_ = result.network
        self.n_iter_ = int(result.iterations)
        self.history_ = result.history
        self.loss_curve_ = [float(row["train_loss"]) for row in result.history]
        self.validation_loss_curve_ = ([float(row["val_loss"]) for row in result.history] if self.early_stopping
                                       else None)
        self.best_iteration_ = int(result.extras["selected"]["iteration"])
        self.stop_reason_ = result.stop_reason
        return self

    def predict(self, X):
        """Predictions of shape ``(n_samples,)`` (1-D ``y`` in ``fit``) or ``(n_samples, n_outputs)``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        output = self.network_.forward(X.T).T
        return output[:, 0] if self._y_ndim == 1 else output
