"""Data of the ``train`` command and the ``bench train`` benchmark (samples as COLUMNS here).

* :func:`teacher_student`: a seeded ReLU teacher network and Gaussian inputs (regression);
* :func:`mnist_cs`: compressed sensing of MNIST digits, ``y = A s`` with a Gaussian ``A`` (``m × 784``);
* :func:`digits_classification`: scikit-learn's 8×8 digits with one-hot targets, seeded 70/30 split.
"""

from __future__ import annotations

import numpy as np

from formulation.network import ReluNetwork
from formulation.results import ProblemError
from validation.datasets import load_mnist


def teacher_student(N: int = 2000, N_val: int = 1000, *, n0: int = 10, teacher_hidden=(32,), seed: int = 0,
                    noise: float = 0.0) -> dict:
    """Regression data from a seeded teacher ``(n0, *teacher_hidden, 1)``; samples as columns.

    The teacher is He-initialised with unit-variance biases (so that a fair share of its units are
    inactive and the target is far from linear). Returns ``X, Y, X_val, Y_val`` of shapes
    ``(n0, N)``, ``(1, N)``, ``(n0, N_val)``, ``(1, N_val)``.
    """
    rng = np.random.default_rng(seed)
    teacher = ReluNetwork.random((n0, *teacher_hidden, 1), rng)
    for b in teacher.biases:
        b[:] = rng.normal(0.0, 1.0, size=b.shape)
    X = rng.normal(size=(n0, N + N_val))
    Y = teacher(X) + noise * rng.normal(size=(1, N + N_val))
    return {"X": X[:, :N], "Y": Y[:, :N], "X_val": X[:, N:], "Y_val": Y[:, N:], "name": "teacher-student"}


def mnist_cs_matrix(m: int, n: int, seed: int = 0) -> np.ndarray:
    """The sampling matrix of the MNIST compressed-sensing task of both ``unrelu cs`` and ``bench train``.

    Gaussian ``m × n`` with entries of variance ``1/m`` (DESIGN §6: ``A`` Gaussian), seeded by ``(seed, m)``
    so that every ``m`` of one seed has its own matrix.
    """
    if not 1 <= m <= n:
        raise ProblemError(f"m={m} measurements of a signal of length n={n}: compressed sensing needs 1 <= m <= n.")
    return np.random.default_rng([seed, m]).normal(0.0, 1.0 / np.sqrt(m), size=(m, n))


def csgm_matrix(m: int, n: int, seed: int = 0) -> np.ndarray:
    """The sampling matrix of the CSGM protocol (Bora et al., ICML 2017, as in their code): ``m × n`` with
    i.i.d. ``N(0, 1)`` entries, not normalised, seeded by ``(seed, m, 1)``. CSGM writes ``y = x A`` with
    ``A ∈ R^{n×m}``; this is its transpose, ``y = A x``."""
    if not 1 <= m <= n:
        raise ProblemError(f"m={m} measurements of a signal of length n={n}: compressed sensing needs 1 <= m <= n.")
    return np.random.default_rng([seed, m, 1]).standard_normal((m, n))


def mnist_cs(m: int = 100, n_train: int = 8000, n_val: int = 2000, *, seed: int = 0,
             directory: str | None = None) -> dict:
    """Compressed-sensing pairs ``(y = A s, s)``; ``A`` is :func:`mnist_cs_matrix` (the task of ``unrelu cs`` too).

    The images come from :func:`validation.datasets.load_mnist`: the first ``n_train`` of the
    t10k split train, the last ``n_val`` validate. Without the MNIST folder, scikit-learn's 8×8
    digits (n = 64, m ≤ 32) stand in and ``note`` says so.
    """
    data = load_mnist(directory, n_train=n_train, n_test=n_val)
    train, val = data.train, data.test
    note = ""
    if data.fallback:
        m = min(m, data.n // 2)
        note = f"{data.source}: using sklearn 8x8 digits (n=64, m={m}) instead of MNIST"
    A = mnist_cs_matrix(m, train.shape[1], seed)
    return {"X": A @ train.T, "Y": train.T.copy(), "X_val": A @ val.T, "Y_val": val.T.copy(), "A": A,
            "name": "mnist-cs" if not note else "digits-cs", "note": note}


def digits_classification(seed: int = 0, test_fraction: float = 0.3) -> dict:
    """scikit-learn digits (64 features scaled to [0, 1], 10 classes), one-hot targets, seeded split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.target))
    n_test = int(round(test_fraction * len(order)))
    test, train = order[:n_test], order[n_test:]
    onehot = np.eye(10)[data.target]
    X = data.data / 16.0
    return {"X": X[train].T, "Y": onehot[train].T, "X_val": X[test].T, "Y_val": onehot[test].T,
            "labels": data.target[train], "labels_val": data.target[test], "name": "digits"}


def psnr_images(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean over images (columns) of ``10 log10(1 / MSE)``, predictions clipped to ``[0, 1]``.

    This is the convention behind DESIGN's 19.7 dB ridge figure (measured: 19.71 dB here; the
    PSNR of the pooled MSE without clipping gives 18.65 dB for the same ridge fit).
    """
    from validation.cs import psnr

    clipped = np.clip(prediction, 0.0, 1.0)
    return float(np.mean([psnr(target[:, j], clipped[:, j]) for j in range(target.shape[1])]))
