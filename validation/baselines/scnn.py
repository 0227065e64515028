"""Optional peer comparison for the digits problem of ``unrelu bench train``: pyscnn's convex solvers.

`pyscnn <https://github.com/pilancilab/scnn>`_ (Mishkin, Sahiner and Pilanci, "Fast Convex Optimization
for Two-Layer ReLU Networks", 2022) trains a two-layer ReLU network globally by solving its convex
reformulation over a *sampled* set of activation patterns ``D_i = diag(1(X g_i > 0))`` (one pattern per
random Gaussian gate vector ``g_i``). Like our AL method it is an augmented-Lagrangian approach to ReLU
training, which is why it is the natural published peer:

* ``pyscnn AL (ConvexReLU)``: their augmented-Lagrangian solver (``scnn.solvers.AL``) for the ReLU
  reformulation, whose cone constraints ``(2 D_i - I) X v_i >= 0`` keep each pattern consistent with
  its weights; the primal subproblems are solved by R-FISTA;
* ``pyscnn R-FISTA (gated ReLU)``: the gated-ReLU relaxation (fixed gates, no cone constraints) solved
  by restarted FISTA (``scnn.solvers.RFISTA``), an unconstrained group-lasso, hence much faster.

Same problem as the benchmark: the seeded 70/30 split of :func:`validation.train_data.digits_classification`,
squared loss on the one-hot targets, features standardised on the training split (per-feature mean and
standard deviation, as scikit-learn's ``StandardScaler``; pyscnn additionally rescales every column to
unit norm, its default ``unitize_data``), accuracy by argmax of the 10 outputs. Differences to keep in
mind when reading the table: pyscnn uses ``hidden`` gates per output (one-vs-all for ``c = 10``, so the
trained network can have up to ``10 * hidden`` units for gated ReLU and ``2 * 10 * hidden`` for ReLU,
fewer after the group-L1 penalty prunes neurons), no biases, and its own neuron-wise group-L1
regularisation (``NeuronGL1``, ``lam * sum_i ||U_i||_2``).

Defaults and measured cost (2 cores, shared with another job; hidden = 100, seed 0):

* ``lam = 1e-5``. pyscnn's quick start uses ``NeuronGL1(1e-3)`` for +-1 targets; with one-hot targets
  and unit-norm columns that prunes every neuron here (AL: 10 % accuracy), and ``1e-4`` still costs
  accuracy (R-FISTA 95.4 %, AL 78.5 % validation) against ``1e-5`` (R-FISTA 97.2 %, AL 91.5 %). These
  three values were the only ones tried, on this split; nothing else was tuned.
* R-FISTA with pyscnn's default limit (10,000 iterations, tolerance 1e-6) takes about 1 s.
* AL with ``max_primal_iters = 10,000`` (pyscnn's default; it also caps the *total* number of inner
  iterations) took 61 s with the cores to itself and 3 to 4 minutes while sharing them with two other
  processes (numpy uses both cores): 91.5 % validation accuracy. Its early iterations are the costly
  ones: 100 iterations take 14 s and reach 92.4 %. The limit can be lowered with ``al_iters`` or
  derived from ``max_seconds`` (see :func:`run_scnn`).

pyscnn is *not* part of the test install (its requirements pull torchvision and a CUDA build of torch;
on the CPU it only needs numpy): ``make scnn`` installs it with ``--no-deps``. Without it,
:func:`run_scnn` returns a single row that says so.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

INSTALL_HINT = "pyscnn is not installed: run `make scnn` (pip install --no-deps pyscnn linalg_backends opt_einsum)"
SOLVERS = ("al", "rfista")


def _standardise(X_train: np.ndarray, X_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples-as-rows copies scaled like ``StandardScaler().fit(X_train)``: zero-variance features keep scale 1."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0.0] = 1.0
    return (X_train - mean) / std, (X_val - mean) / std


def _labels(data: dict, key_labels: str, key_onehot: str) -> np.ndarray:
    labels = data.get(key_labels)
    return np.asarray(labels) if labels is not None else np.argmax(data[key_onehot], axis=0)


def _within_seconds(seconds: float, cap: int, solve, first: int = 100):
    """Largest run of ``first * 2**k`` (at most ``cap``) iterations that fits in ``seconds`` of wall time.

    pyscnn cannot be stopped on a clock, so runs restart from scratch with doubled limits while the
    next one, predicted at the cost per iteration of the last (conservative: the early iterations are
    the expensive ones), still fits. The first run always happens. Returns ``(network, seconds, iters)``.
    """
    deadline = time.perf_counter() + seconds
    iters = min(first, cap)
    network, spent = solve(iters)
    while iters < cap:
        following = min(2 * iters, cap)
        if time.perf_counter() + spent * following / iters > deadline:
            break
        iters = following
        network, spent = solve(iters)
    return network, spent, iters


def run_scnn(data: dict, hidden: int = 100, seed: int = 0, max_seconds: float | None = None, *,
             lam: float = 1e-5, al_iters: int = 10_000, fista_iters: int = 10_000,
             solvers: tuple[str, ...] = SOLVERS) -> list[dict]:
    """pyscnn's AL (ReLU) and R-FISTA (gated ReLU) on ``data``; one row per solver.

    ``data`` is a dict as returned by :func:`validation.train_data.digits_classification` (samples as
    columns; ``labels``/``labels_val`` optional, else the argmax of the one-hot targets). ``hidden``
    gate vectors are sampled with ``seed`` (at most ``hidden`` distinct patterns after pyscnn drops
    duplicates). ``solvers`` selects among ``"al"`` and ``"rfista"``.

    pyscnn has no wall-clock limit, only iteration limits: ``al_iters`` bounds the total number of inner
    (R-FISTA) iterations of the AL method and ``fista_iters`` those of the gated-ReLU solver. With
    ``max_seconds``, the AL limit becomes the largest number of iterations, at most ``al_iters``, that
    fit in ``max_seconds``: runs of 100, 200, 400, ... iterations restart from scratch while the next
    one is predicted to fit (see :func:`_within_seconds`; the first run of 100 iterations always
    happens, about 14 s here), and the row is the last run, its ``seconds`` that run's alone.

    Rows: ``problem, method, seconds, train_acc, val_acc, note``; ``seconds`` is the wall time of
    pyscnn's ``optimize_model`` (pattern computation included). If pyscnn cannot be imported, the
    single row ``method = "pyscnn"`` carries the install hint in ``note`` and NaN numbers.
    """
    unknown = set(solvers) - set(SOLVERS)
    if unknown:
        raise ValueError(f"unknown pyscnn solver(s) {sorted(unknown)}; choose among {SOLVERS}")
    problem = data.get("name", "digits")
    try:
        import scnn  # noqa: F401  (a failing import of the package itself must land here)
        from scnn.activations import sample_gate_vectors
        from scnn.metrics import Metrics
        from scnn.models import ConvexGatedReLU, ConvexReLU
        from scnn.optimize import optimize_model
        from scnn.regularizers import NeuronGL1
        from scnn.solvers import AL, RFISTA
    except ImportError as exc:
        return [{"problem": problem, "method": "pyscnn", "seconds": float("nan"), "train_acc": float("nan"),
                 "val_acc": float("nan"), "note": f"{INSTALL_HINT} ({exc})"}]

    X, X_val = _standardise(np.asarray(data["X"], dtype=float).T, np.asarray(data["X_val"], dtype=float).T)
    Y, Y_val = np.asarray(data["Y"], dtype=float).T, np.asarray(data["Y_val"], dtype=float).T
    labels, labels_val = _labels(data, "labels", "Y"), _labels(data, "labels_val", "Y_val")
    d, c = X.shape[1], Y.shape[1]
    G = sample_gate_vectors(seed, d, hidden)

    def solve(kind: str, iters: int):
        if kind == "al":
            model = ConvexReLU(G, c=c)
            solver = AL(model, max_primal_iters=iters, max_dual_iters=iters)
        else:
            model = ConvexGatedReLU(G, c=c)
            solver = RFISTA(model, max_iters=iters)
        with warnings.catch_warnings():
            # pyscnn's group-L1 code divides by zero gradient norms of pruned neurons (harmless)
            warnings.simplefilter("ignore", RuntimeWarning)
            start = time.perf_counter()
            network, _ = optimize_model(model, solver, Metrics(), X, Y, X_val, Y_val,
                                        regularizer=NeuronGL1(lam), verbose=False, seed=seed)
            return network, time.perf_counter() - start

    rows = []
    for kind in solvers:
        iters = al_iters if kind == "al" else fista_iters
        budget_note = ""
        if kind == "al" and max_seconds is not None:
            network, seconds, iters = _within_seconds(max_seconds, al_iters, lambda n: solve("al", n))
            budget_note = f" (largest of 100*2^k, <= {al_iters}, within max_seconds={max_seconds:g})"
        else:
            network, seconds = solve(kind, iters)
        neurons = network.parameters[0].shape[0]
        if kind == "al":
            method = "pyscnn AL (ConvexReLU)"
            limit = f"AL max_primal_iters=max_dual_iters={iters} (total inner-iteration cap){budget_note}, tol=1e-6"
        else:
            method = "pyscnn R-FISTA (gated ReLU)"
            limit = f"R-FISTA max_iters={iters}, tol=1e-6"
        rows.append({
            "problem": problem, "method": method, "seconds": seconds,
            "train_acc": float(np.mean(np.argmax(network(X), axis=1) == labels)),
            "val_acc": float(np.mean(np.argmax(network(X_val), axis=1) == labels_val)),
            "note": (f"{hidden} sampled gates (seed {seed}), one-vs-all over {c} outputs, NeuronGL1 lam={lam:g}, "
                     f"{limit}, float32, no bias; {neurons} neurons after pruning"),
        })
    return rows
