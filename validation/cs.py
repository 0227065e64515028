r"""``unrelu cs``: the compressed-sensing application of DESIGN §6.

Measurements ``y = A s (+ e)`` of signals ``s ∈ R^n`` with an ``m × n`` sampling matrix ``A``:

* **MNIST** (28×28, ``n = 784``), two protocols. ``--protocol normalised``: ``m ∈ {25, 50, 100, 200}``,
  ``A`` Gaussian with variance ``1/m`` (seeded; :func:`validation.train_data.mnist_cs_matrix`, the task of
  ``bench train`` too), noiseless; without the MNIST files, scikit-learn's 8×8 digits at the same ratios
  ``m/n`` (said in the output). ``--protocol csgm`` (:data:`CSGM`; Bora et al., ICML 2017, as in their
  code): ``A`` i.i.d. N(0, 1), noise std 0.1, the first 300 t10k images as the test set, per-pixel MSE.
* **Natural images**, block CS on 33×33 blocks (``n = 1089``) at ratios 1, 4, 10, 25, 40 %, with
  the ISTA-Net matrices ``phi_0_{R}_1089.mat`` when present. Training patches: every patch on a
  stride-14 grid of bundled photographs (``skimage.data`` without ``camera``, which is Set11's
  cameraman, and scikit-learn's two sample images) in 8 orientations, 10 % of the positions held out
  (:func:`validation.datasets.training_patches`); the test set is Set11, each image cut into blocks
  (zero-padded to a multiple of 33), recovered block by block and reassembled. The trained image decoders
  (``--image-net``): ``pixel`` (default) = the ``ridge`` row's per-block decoder, then an MLP at every pixel of
  its image (:mod:`validation.pixel_decoder`), trained on pixels of the same photographs; ``block`` = an MLP
  from a block's measurements to the block.

Methods, on the same data and the same ``A``:

``al``
    MLP ``y ↦ s`` with 1-3 hidden ReLU layers trained by the augmented-Lagrangian method
    (:class:`solvers.methods.al_trainer.ALTrainer`, options :data:`AL_OPTIONS`) within a wall-clock
    budget. With ``--init pairs`` (default) it starts at the ridge decoder written as a ReLU network,
    ``P y = P ReLU(y) − P ReLU(−y)``, beside He units with zero output weights
    (:meth:`ALTrainer.initial_network`).
``al_init``
    The AL method's starting network, so that the AL method's own gain is visible (with ``--init
    pairs`` it equals ``ridge``; for the pixel network it is ``ridge`` followed by the linear filter of its
    image that the pixel network starts as).
``adam``
    The same MLP from the same start trained by ``torch.optim.Adam`` for the wall time the AL
    loop actually used after the common initialisation (:func:`validation.baselines.adam.train_adam`; its
    evaluation pauses are not charged either).
``ridge``
    Linear recovery ``ŝ = W y + b`` fitted on the training pairs, the ridge parameter chosen on the
    validation pairs (:func:`validation.baselines.linear.fit_ridge`); with noise, this is the LMMSE
    decoder fitted on training pairs.
``lasso``
    Sparse recovery ``min ½||A Ψ c − y||² + λ||c||₁``, ``ŝ = Ψ c``, in CVXPY (one DPP model built
    once per ``A``; ``Ψ`` the orthonormal 2-D DCT for image blocks, the identity for MNIST), with
    ``λ = κ ||(AΨ)ᵀy||_∞`` and ``κ`` chosen on a validation split. Slow, so it recovers a subset
    of the test items (reported; :class:`validation.baselines.linear.SparseRecovery`). Under
    ``--protocol csgm``, ``lasso`` and ``lasso_dct`` are CSGM's instead: scikit-learn's ``Lasso(alpha=0.1)``
    in the pixel and the 2-D DCT basis (:func:`validation.baselines.linear.lasso_csgm`).

Optional ``--smooth`` adds ``METHOD+smooth`` rows for images: total-variation denoising
(``skimage.restoration.denoise_tv_chambolle``) of the reassembled image, which removes block
artefacts.

Metrics: ``skimage.metrics.peak_signal_noise_ratio`` and ``structural_similarity`` with
``data_range=1`` on images in ``[0, 1]`` (recoveries clipped to ``[0, 1]``); MNIST PSNR is the mean
over test digits of the per-digit PSNR; image PSNR/SSIM the mean over Set11 images.

Results store
-------------
Each (dataset, ratio, method) cell is a case of the study ``cs_quick`` or ``cs_full`` (one per setting),
run by :func:`validation.runner.run_study` like every other study: in a worker process (``--workers``, or
on Dask with ``--scheduler``) by :func:`cs_case`, its row written to the SQLite store (``--store``,
default ``CHECKPOINT_DIR/cs.sqlite``) as soon as it finishes. A rerun skips the stored cells and reads
their numbers back, so an interrupted run resumes between cells; inside an ``al`` cell, an interrupted
AL training resumes from its own ``.npz`` checkpoint in ``CHECKPOINT_DIR/al`` (removed once the cell is
stored). A cell that raised is stored as failed, as in every study, and is run again only after
``--fresh``. The example recoveries of the plot grid are ``.npz`` files written by each cell to
``CHECKPOINT_DIR/examples``; nothing is pickled.

Every case carries the whole configuration in its settings (setting name and sizes, seed, noise,
budgets, data folders, the MNIST matrix, the AL ``rho`` and ``mu``, the LASSO solver, ``--smooth``),
so other settings give other case ids; and a store whose study already holds cells of another
configuration is **refused** (with the settings that differ) rather than completed, so that one table
never mixes numbers from two configurations: rerun with the stored options, drop the study's rows with
``--fresh``, or write to another ``--store``. ``--datasets``, ``--methods``, ``--mnist-ms`` and
``--image-ratios`` only choose cells: a later run can add cells to a stored study. The absolute
``--checkpoint-dir`` a cell writes to is part of its case too (not of the configuration): cells
stored for another folder are not shown, and are computed again for this one.

The cells run (dataset, ratio) by (dataset, ratio), each in two phases: first ``al``, ``al_init`` (the AL
start, recomputed deterministically without an AL run), ``ridge`` and ``lasso``; then at once ``adam``,
whose case carries the seconds the stored AL loop used (so a rerun of a stored AL cell gives the same Adam
case), so that AL and Adam of one cell see about the same load on the machine. ``--json`` is written from the
store: ``{"config": ..., "records": {"DATASET/RATIO/METHOD": record}}``.
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

from formulation.results import ConvergenceWarning, ProblemError
from solvers.methods.al_trainer import DEFAULT_MU
from validation import datasets as ds
from validation import options
from validation.baselines.linear import SparseRecovery, fit_ridge, lasso_csgm
from validation.runner import Case, Study, drop_study, read_results, run_study
from validation.train_data import csgm_matrix, mnist_cs_matrix

__all__ = ["SETTINGS", "METHODS", "psnr", "ssim", "dct_basis", "cs_case", "plan", "cell_case",
           "run_experiment", "format_tables", "add_parser"]

#: Methods in table order (``lasso_dct`` only in the CSGM protocol, whose ``lasso`` is in the pixel basis).
METHODS = ("al", "al_init", "adam", "ridge", "lasso", "lasso_dct")
#: The MNIST protocols: ``normalised`` (A with variance 1/m, noiseless, first 8000 train / last 2000 test) and
#: ``csgm`` (Bora et al., ICML 2017, as in their code: see :data:`CSGM`).
PROTOCOLS = ("normalised", "csgm")
#: The CSGM protocol: ``A`` i.i.d. N(0, 1) (not normalised), noise std 0.1 per measurement, the first 300 t10k
#: images as the test set, per-pixel MSE, these ``m``, and LASSO with ``alpha = 0.1`` (their scripts).
CSGM = {"ms": (10, 25, 50, 100, 200, 300, 400, 500, 750), "test": 300, "noise": 0.1, "lasso_alpha": 0.1}
#: Starting networks of ``al`` and ``adam`` (:meth:`ALTrainer.initial_network`): ``pairs`` is the ridge decoder
#: written as a ReLU network plus He units; ``ridge`` the He network with a ridge output layer.
INITS = ("pairs", "ridge")
#: The trained image decoders (``--image-net``): ``pixel`` = the per-block ridge decoder (stage 1) followed by an
#: MLP at every pixel of its image (:mod:`validation.pixel_decoder`); ``block`` = an MLP from a block's
#: measurements to the block.
IMAGE_NETS = ("pixel", "block")

#: The two settings. ``budget_*`` is the AL wall-clock training budget in seconds; Adam gets the
#: time the AL run actually used. ``lasso_*`` are the numbers of test / validation items LASSO solves.
SETTINGS = {
    "full": {
        "mnist_ms": (25, 50, 100, 200), "mnist_train": 8000, "mnist_test": 2000, "mnist_hidden": (1000,),
        "budget_mnist": 45.0, "lasso_mnist_test": 30, "lasso_mnist_val": 6,
        "csgm_ms": CSGM["ms"], "csgm_train": 10000 - CSGM["test"], "csgm_hidden": (1000,), "budget_csgm": 60.0,
        "lasso_csgm_test": CSGM["test"],
        "image_ratios": (1, 4, 10, 25, 40), "image_blocks": 60000, "image_val_blocks": 6000, "image_hidden": (512,),
        "pixel_train": 120000, "pixel_val": 12000, "pixel_hidden": (256,),
        "budget_images": 180.0, "set11": None, "lasso_images": ("cameraman",), "lasso_image_val": 6,
        "lasso_kappas": (0.03, 0.01, 0.003), "ridge_grid": 9, "al_max_iters": 100000,
    },
    "quick": {
        "mnist_ms": (100,), "mnist_train": 5000, "mnist_test": 300, "mnist_hidden": (800,),
        "budget_mnist": 30.0, "lasso_mnist_test": 5, "lasso_mnist_val": 3,
        "csgm_ms": (100,), "csgm_train": 3000, "csgm_hidden": (300,), "budget_csgm": 15.0, "lasso_csgm_test": 10,
        "image_ratios": (25,), "image_blocks": 2000, "image_val_blocks": 200, "image_hidden": (64,),
        "pixel_train": 4000, "pixel_val": 400, "pixel_hidden": (32,),
        "budget_images": 30.0, "set11": ("cameraman",), "lasso_images": ("cameraman",),
        "lasso_image_val": 3, "lasso_kappas": (0.03, 0.003), "ridge_grid": 7, "al_max_iters": 3,
    },
}
#: The AL trainer's options in every cell that differ from its defaults: the full batch, and the monotone
#: acceptance rule. Measured (images 10 %, 120 s, He 512 + 218 pair units, 54,000 patches): on sample batches
#: of the automatic size (1,462) the validation loss went from 0.0715 to 0.2315 (17.32 dB on Set11), on batches
#: of 8,000 to 0.0752 (22.50 dB), on the full batch to 0.0720 (22.84 dB). CSGM m = 100, 60 s: with the
#: nonmonotone window of 20 the validation loss oscillated (0.164-0.21) and ended at 0.17 (MSE 0.0085), with
#: the monotone rule it settled at 0.155 (MSE 0.0082).
#: Both trained networks are then *selected* on the validation pairs: the iterate of least validation loss,
#: the start included (``restore_best``; Adam likewise among its recorded epochs), and AL stops after
#: ``patience`` iterations without a new least. Measured (Set11, 180 s per ratio, the last iterate returned):
#: the validation loss of the last iterate was above that of the start at 10-40 %, while the training loss
#: fell (overfitting the 15 training photos), and its Set11 PSNR 0.11-0.30 dB below the start's.
AL_OPTIONS = {"batch_size": None, "nonmonotone": 1, "restore_best": True, "patience": 10}
#: What the ``al_init`` row is, per ``--init``.
START_NOTE = {"pairs": "the ridge decoder as a ReLU network (pairs ReLU(+-y)) plus He units with zero output "
                       "weights (the AL start; equal to ridge)",
              "ridge": "He first layer, ridge output layer (the AL start)",
              "pixel": "stage 1 (the ridge row), then the pixel network's start: its pairs ReLU(+-x) of the inputs "
                       "carrying the ridge fit of the tiles on the windows (a linear filter of the stage-1 image) "
                       "plus He units with zero output weights (the AL start)"}
#: Images saved for the plot grid (Set11 stems) and the ratio they are shown at.
PLOT_IMAGES = ("cameraman", "Monarch")
PLOT_RATIO = 10
#: Total-variation weight of the optional smoothing step (images in [0, 1]).
SMOOTH_WEIGHT = 0.02


# ============================================================================ metrics
def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of ``estimate`` against ``reference``, both in ``[0, 1]`` (``data_range=1``)."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, estimate, data_range=1.0))


def ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM of two 2-D images in ``[0, 1]`` (``data_range=1``, scikit-image defaults otherwise)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(reference, estimate, data_range=1.0))


# ============================================================================ linear and sparse recovery
def dct_basis(side: int) -> np.ndarray:
    """Orthonormal 2-D DCT synthesis matrix ``Ψ`` (``side² × side²``): ``block.ravel() = Ψ c``.

    Column ``k`` is ``scipy.fft.idctn`` (type II, ``norm="ortho"``) of the ``k``-th unit coefficient array.
    """
    from scipy.fft import idctn

    eye = np.eye(side * side).reshape(side * side, side, side)
    return idctn(eye, axes=(1, 2), norm="ortho").reshape(side * side, side * side).T


def write_json(path: str, config: dict, records: dict) -> None:
    """``--json``: the settings and every record as strict JSON (NaN and inf as null), written atomically."""
    with options.atomic_open(path, "w") as handle:
        handle.write(options.json_text({"config": config, "records": records}, indent=1))


# ============================================================================ one cell: a case of the study
#: The case function of the ``cs_quick`` / ``cs_full`` studies.
CASE_FUNCTION = "validation.cs:cs_case"
#: Figures of a cell's row: the scalars as columns; everything else of its record (AL and Adam loss histories,
#: LASSO's choice of kappa, per-image scores, the smoothed scores...) as JSON text in ``details``.
FIGURES = {"m": "INTEGER", "n": "INTEGER", "A": "TEXT", "psnr": "REAL", "psnr_std": "REAL", "ssim": "REAL",
           "items": "INTEGER", "train_seconds": "REAL", "recovery_seconds_per_item": "REAL", "details": "TEXT"}
TIMING = ("train_seconds", "recovery_seconds_per_item")
#: The results store in ``--checkpoint-dir`` when ``--store`` is not given (one table per setting).
STORE_NAME = "cs.sqlite"


@dataclass
class Task:
    """The data and matrix of one (dataset, ratio); with ``--image-net pixel`` also the stage-1 decoder (blocks of
    measurements to blocks) and the stage-2 samples the trained networks learn from."""

    A: np.ndarray
    A_source: str
    S_train: np.ndarray   # rows are signals
    S_val: np.ndarray
    basis: np.ndarray | None
    stage1: object | None = None
    stage2: object | None = None  # validation.pixel_decoder.PixelSamples


def _noise(Y, sigma, rng):
    return Y if sigma <= 0 else Y + sigma * rng.standard_normal(Y.shape)


def _measured(S_train, S_val, A, noise: float, seed: int):
    """The training and validation measurements of a cell's signals (rows), with their seeded noise: one
    definition for the cells and for stage 1 of the pixel network, so that stage 1 is the ``ridge`` row's decoder."""
    return (_noise(S_train @ A.T, noise, np.random.default_rng([seed, 7])),
            _noise(S_val @ A.T, noise, np.random.default_rng([seed, 8])))


@functools.lru_cache(maxsize=2)
def _digits_or_mnist(dataset: str, mnist_dir: str | None, n_train: int, n_test: int) -> ds.Dataset:
    """The data of an MNIST cell, loaded once per process: the bundled digits for a ``digits`` cell (the
    fallback the command announced), else MNIST (no fallback here: a cell never changes its data)."""
    if dataset == "digits":
        return ds.load_digits_fallback()
    return ds.load_mnist(mnist_dir, n_train=n_train, n_test=n_test, allow_fallback=False)


def _set11(set11_dir: str | None, names) -> dict[str, np.ndarray]:
    """The Set11 test images: all of them, or the setting's ``names``."""
    images = ds.load_set11(set11_dir)
    if names is not None:
        missing = [name for name in names if name not in images]
        if missing:
            raise ProblemError(f"Set11 folder lacks {missing}; the quick setting tests on them.")
        images = {name: images[name] for name in names}
    return images


@functools.lru_cache(maxsize=1)
def _image_data(set11_dir: str | None, names: tuple | None, blocks: int, val_blocks: int, seed: int):
    """Set11 and the training / validation patches of the image cells (:func:`validation.datasets.training_patches`:
    the stride grid of the training photos in 8 orientations, 10 % of the positions held out, each side
    subsampled to ``blocks`` / ``val_blocks``), built once per process."""
    patches = ds.training_patches(ds.training_photos(), np.random.default_rng([seed, 33]), train_count=blocks,
                                  val_count=val_blocks)
    return _set11(set11_dir, names), patches


@functools.lru_cache(maxsize=1)
def _csgm_mnist(mnist_dir: str | None, n_train: int, n_test: int) -> ds.Dataset:
    """MNIST of the CSGM protocol: the first ``n_test`` t10k images test, the next ``n_train`` train (no
    fallback: the protocol is MNIST's)."""
    try:
        return ds.load_mnist(mnist_dir, n_train=n_train, n_test=n_test, allow_fallback=False, test_first=True)
    except ProblemError as error:
        raise ProblemError(f"--protocol csgm needs the MNIST files: {error}") from error


def _pixel_net(config: dict, dataset: str) -> bool:
    return dataset == "images" and config.get("image_net", "block") == "pixel"


def hidden_widths(config: dict, dataset: str, m: int) -> tuple[int, ...]:
    """Hidden widths of a cell's MLP: the He units of each layer, plus the ``2 n_0`` pair units of
    ``init="pairs"`` (:meth:`ALTrainer.initial_network`), ``n_0`` the network's inputs: the ``m`` measurements,
    or the window and position features of the pixel network (:func:`validation.pixel_decoder.n_inputs`)."""
    key = {"images": "image_hidden", "mnist-csgm": "csgm_hidden"}.get(dataset, "mnist_hidden")
    if _pixel_net(config, dataset):
        from validation.pixel_decoder import n_inputs

        key, m = "pixel_hidden", n_inputs()
    he = config["hidden"] or config["values"][key]
    return tuple(int(h) + (2 * m if config["init"] == "pairs" else 0) for h in he)


@functools.lru_cache(maxsize=1)
def _pixel_task(key: str, ratio: int):
    """Stage 1 and the stage-2 samples of an image cell of the pixel network, built once per process: the
    per-block decoder is the ``ridge`` row's (:func:`validation.baselines.linear.fit_ridge` on the patch pairs,
    same noise), the samples :func:`validation.pixel_decoder.training_samples` with it."""
    from validation import pixel_decoder

    config = json.loads(key)
    values, seed = config["values"], config["seed"]
    names = None if values["set11"] is None else tuple(values["set11"])
    _, patches = _image_data(config["set11_dir"], names, values["image_blocks"], values["image_val_blocks"], seed)
    A, _ = ds.sampling_matrix(ratio, phi_dir=config["phi_dir"], rng=np.random.default_rng([seed, ratio]))
    Y_train, Y_val = _measured(patches.train, patches.val, A, config["noise"], seed)
    stage1 = fit_ridge(Y_train, patches.train, Y_val, patches.val, values["ridge_grid"])[0]
    samples = pixel_decoder.training_samples(ds.training_photos(), stage1.predict, A,
                                             np.random.default_rng([seed, ratio, 41]),
                                             train_count=values["pixel_train"], val_count=values["pixel_val"],
                                             noise=config["noise"])
    return stage1, samples


def _task(config: dict, dataset: str, ratio: int, trained: bool = True):
    """``(Task, Evaluator, hidden widths, AL budget)`` of one (dataset, ratio); the pixel network's stages only
    for a ``trained`` method (``al``, ``al_init``, ``adam``)."""
    values, seed = config["values"], config["seed"]
    if dataset == "images":
        names = None if values["set11"] is None else tuple(values["set11"])
        set11, patches = _image_data(config["set11_dir"], names, values["image_blocks"], values["image_val_blocks"],
                                     seed)
        A, source = ds.sampling_matrix(ratio, phi_dir=config["phi_dir"], rng=np.random.default_rng([seed, ratio]))
        stage1, stage2 = _pixel_task(json.dumps(config, sort_keys=True), ratio) \
            if trained and _pixel_net(config, dataset) else (None, None)
        return (Task(A, source, patches.train, patches.val, dct_basis(ds.BLOCK), stage1, stage2),
                Evaluator("images", set11, config["noise"], config["smooth"]),
                hidden_widths(config, dataset, A.shape[0]), values["budget_images"])
    if dataset == "mnist-csgm":
        data = _csgm_mnist(config["mnist_dir"], values["csgm_train"], CSGM["test"])
        n_val = data.train.shape[0] // 10
        A = csgm_matrix(ratio, data.n, seed)
        return (Task(A, f"i.i.d. N(0,1), not normalised (CSGM), m={ratio}", data.train[:-n_val], data.train[-n_val:],
                     dct_basis(28)),
                Evaluator("csgm", data, config["noise"], False), hidden_widths(config, dataset, ratio),
                values["budget_csgm"])
    data = _digits_or_mnist(dataset, config["mnist_dir"], values["mnist_train"], values["mnist_test"])
    n_val = max(10, data.train.shape[0] // 10)
    m = ratio if data.n == 784 else max(1, int(round(ratio * data.n / 784)))  # the ratio m/n of MNIST kept
    A = mnist_cs_matrix(m, data.n, seed)
    return (Task(A, f"seeded Gaussian, variance 1/m, m={m}", data.train[:-n_val], data.train[-n_val:], None),
            Evaluator("mnist", data, config["noise"], False), hidden_widths(config, dataset, m),
            values["budget_mnist"])


class Evaluator:
    """Scores a recovery function ``f(Y (N, m)) -> S (N, n)`` on a dataset's test items."""

    def __init__(self, kind: str, data, noise: float, smooth: bool):
        self.kind, self.data, self.noise, self.smooth = kind, data, noise, smooth

    # --- MNIST: the test digits are the items
    def mnist(self, task: Task, recover, limit: int | None = None) -> tuple[dict, dict]:
        S = self.data.test if limit is None else self.data.test[:limit]
        Y = _noise(S @ task.A.T, self.noise, np.random.default_rng(1))
        start = time.perf_counter()
        R = np.clip(recover(Y), 0.0, 1.0)
        seconds = time.perf_counter() - start
        scores = [psnr(s, r) for s, r in zip(S, R)]
        result = {"psnr": float(np.mean(scores)), "psnr_std": float(np.std(scores)), "items": len(S),
                  "recovery_seconds_per_item": seconds / len(S)}
        if self.kind == "csgm":  # CSGM's metric: the per-pixel MSE over all test images, also as a PSNR
            mse = float(np.mean((S - R) ** 2))
            result.update(mse=mse, psnr=float(10 * np.log10(1.0 / mse)), psnr_mean_per_image=result["psnr"])
        return result, {"recovered": R[:8], "original": S[:8]}

    # --- images: Set11 images are the items, blocks are recovered together
    def images(self, task: Task, recover, names=None, post=None) -> dict:
        """``recover`` maps the measurements of an image's blocks to its blocks; ``post``, when given, maps the
        reassembled (unclipped) image to the final one (stage 2 of the pixel network)."""
        names = list(self.data) if names is None else list(names)
        results, examples, smooth = {}, {}, {}
        seconds = 0.0
        for name in names:
            image = self.data[name]
            blocks, padded = ds.image_to_blocks(image)
            Y = _noise(blocks @ task.A.T, self.noise, np.random.default_rng(1))
            start = time.perf_counter()
            recovered = ds.blocks_to_image(recover(Y), padded, image.shape)
            if post is not None:
                recovered = post(recovered)
            seconds += time.perf_counter() - start
            recovered = np.clip(recovered, 0.0, 1.0)
            results[name] = {"psnr": psnr(image, recovered), "ssim": ssim(image, recovered)}
            if self.smooth:
                from skimage.restoration import denoise_tv_chambolle

                smoothed = np.clip(denoise_tv_chambolle(recovered, weight=SMOOTH_WEIGHT), 0.0, 1.0)
                smooth[name] = {"psnr": psnr(image, smoothed), "ssim": ssim(image, smoothed)}
            if name in PLOT_IMAGES:
                examples[name] = recovered
        summary = {"psnr": float(np.mean([r["psnr"] for r in results.values()])),
                   "ssim": float(np.mean([r["ssim"] for r in results.values()])),
                   "items": len(names), "item_names": names, "per_image": results,
                   "recovery_seconds_per_item": seconds / len(names)}
        if self.smooth:
            summary["smooth"] = {"psnr": float(np.mean([r["psnr"] for r in smooth.values()])),
                                 "ssim": float(np.mean([r["ssim"] for r in smooth.values()])),
                                 "per_image": smooth}
        return summary, examples


def _network_recovery(network):
    return lambda Y: network.forward(Y.T).T


def _recovery(task: Task, network, pixel: bool):
    """``(recover, post)`` of a trained network for :class:`Evaluator`: the network on the measurements, or with
    the pixel network, stage 1 on the measurements and the network at every pixel of its image."""
    if not pixel:
        return _network_recovery(network), None
    from validation.pixel_decoder import recover_image

    return task.stage1.predict, lambda image: recover_image(image, _network_recovery(network))


def _al_trainer(config: dict, hidden: tuple[int, ...], ridge: float, budget: float | None = None,
                checkpoint: str | None = None, **overrides):
    """The AL trainer of a cell: ``al`` trains it, ``al_init`` takes its start (the same options);
    ``overrides`` replace options (``--first-steps``: the penalty, the iterations, no selection)."""
    from solvers.methods.al_trainer import ALTrainer

    settings = {"rho": config["al_rho"], "max_iters": config["values"]["al_max_iters"], **AL_OPTIONS, **overrides}
    return ALTrainer(hidden=hidden, seed=config["seed"], init=config["init"], ridge=ridge, mu=config["al_mu"],
                     time_budget=budget, checkpoint=checkpoint, progress=False, **settings)


def _start_ridge(config: dict, X, T, X_val, T_val) -> float:
    """The relative ridge of the start: for ``init="pairs"`` the one :func:`fit_ridge` chooses on the validation
    pair of the network's own inputs and targets (so that the start is that linear decoder: the ``ridge`` row, or
    for the pixel network its linear filter of the stage-1 image), the trainer's default otherwise."""
    if config["init"] != "pairs":
        return 1e-3
    return fit_ridge(X, T, X_val, T_val, config["values"]["ridge_grid"])[2]


def _train_al(trainer, Y, S, Y_val, S_val) -> tuple:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = trainer.fit(Y.T, S.T, Y_val.T, S_val.T)
    wall = time.perf_counter() - start
    info = {"iterations": result.iterations, "stop_reason": result.stop_reason,
            "train_seconds": float(result.final["seconds"]), "wall_seconds": wall,
            "init_train_loss": result.init_train_loss, "final_train_loss": result.final["train_loss"],
            "init_val_loss": result.init_val_loss, "final_val_loss": result.final["val_loss"],
            "final_violation": result.final["violation"], "final_kkt": result.final["kkt"],
            "final_rho": result.final["rho"], "resumed": bool(result.extras.get("resumed")),
            "history": _loss_history(result.history), **_selected(result.extras["selected"], result.history)}
    return result.network, info


def _selected(selected: dict, history: list[dict], key: str = "iteration") -> dict:
    """Which iterate (AL) or recorded epoch (Adam) a cell's network is: its index, validation loss and seconds."""
    row = next(row for row in history if row[key] == selected[key])
    return {"selected": {key: selected[key], "val_loss": selected["val_loss"], "seconds": float(row["seconds"]),
                         "rule": selected["rule"]}}


def _al_start(trainer, Y, S):
    """The AL start in original units, built as :meth:`ALTrainer.fit` builds it on the standardised data
    (deterministic, so ``al_init`` needs no AL run)."""
    from solvers.methods.scaling import Standardizer

    X0, T, _, _ = trainer.check_data(Y.T, S.T)
    scaler = Standardizer.fit(X0, T, trainer.standardize)
    return scaler.unscale_network(trainer.initial_network(scaler.x(X0), scaler.y(T)))


def _loss_history(history) -> list[dict]:
    """``seconds`` and forward-pass ``train_loss`` and ``val_loss`` of each recorded row (AL or Adam), for the
    figures."""
    return [{"seconds": float(row["seconds"]), "train_loss": float(row["train_loss"]),
             "val_loss": None if row.get("val_loss") is None else float(row["val_loss"])} for row in history]


def al_checkpoint(folder: str, setting: str, dataset: str, ratio: int) -> str:
    """The AL training checkpoint of a cell (an interrupted ``al`` case resumes from it)."""
    return os.path.join(folder, "al", f"{setting}_{dataset}_{ratio}.npz")


def example_path(folder: str, setting: str, dataset: str, ratio: int, method: str) -> str:
    """The example recoveries of a cell, for the plot grid."""
    return os.path.join(folder, "examples", f"{setting}_{dataset}_{ratio}_{method}.npz")


def _network_pairs(task: Task, Y_train, Y_val) -> tuple:
    """``(X, T, X_val, T_val)``, rows are samples: what a cell's trained networks learn from, the measurement /
    signal pairs, or the pixel network's samples."""
    if task.stage2 is not None:
        return task.stage2.X_train, task.stage2.T_train, task.stage2.X_val, task.stage2.T_val
    return Y_train, task.S_train, Y_val, task.S_val


def first_steps(config: dict, cells, out=print) -> dict:
    """``--first-steps``: the rows of :func:`validation.first_steps.probe` for each (dataset, ratio) cell."""
    from validation import first_steps as probe

    results = {}
    for dataset, ratio in cells:
        task, _, hidden, _ = _task(config, dataset, ratio)
        X, T, X_val, T_val = _network_pairs(task, *_measured(task.S_train, task.S_val, task.A, config["noise"],
                                                             config["seed"]))
        ridge = _start_ridge(config, X, T, X_val, T_val)
        out(f"\n[{dataset} {ratio}] first steps from the AL start ({X.shape[0]} training, {X_val.shape[0]} "
            f"validation samples; network {X.shape[1]}-{'-'.join(map(str, hidden))}-{T.shape[1]})")

        def trainer_for(rho, iterations, hidden=hidden, ridge=ridge):
            return _al_trainer(config, hidden, ridge, rho=rho, max_iters=iterations, restore_best=False,
                               patience=None)

        results[f"{dataset}/{ratio}"] = probe.probe(trainer_for, X.T, T.T, X_val.T, T_val.T, rho=config["al_rho"],
                                                    hidden=hidden, seed=config["seed"], init=config["init"],
                                                    ridge=ridge, mu=config["al_mu"], out=out)
    return results


def cs_case(case: Case) -> dict:
    """Run one (dataset, ratio, method) cell: fit the method, recover the test items and score them.

    ``case.problem`` is ``{"dataset", "ratio"}`` and ``case.backend`` the method; ``case.settings`` holds
    ``config`` (everything that determines the numbers), ``folder`` (where the example recoveries, an
    ``.npz`` per cell, and the AL checkpoints go) and, for ``adam``, ``al_seconds``. Returns the row's
    :data:`FIGURES`.
    """
    config, folder = case.settings["config"], case.settings["folder"]
    dataset, ratio, method = case.problem["dataset"], int(case.problem["ratio"]), case.backend
    if method not in METHODS:
        raise ProblemError(f"Unknown method {method!r}; choose from {', '.join(METHODS)}.")
    task, evaluator, hidden, budget = _task(config, dataset, ratio, trained=method in ("al", "al_init", "adam"))
    seed = config["seed"]
    Y_train, Y_val = _measured(task.S_train, task.S_val, task.A, config["noise"], seed)
    record = {"m": int(task.A.shape[0]), "n": int(task.A.shape[1]), "A": task.A_source}
    limit, names, post = None, None, None
    pixel = task.stage2 is not None
    X, T, X_val, T_val = _network_pairs(task, Y_train, Y_val)
    if pixel and method in ("al", "al_init", "adam"):
        record.update(image_net="pixel", pixel_samples=task.stage2.info)
    if method == "al":
        ridge = _start_ridge(config, X, T, X_val, T_val)
        trainer = _al_trainer(config, hidden, ridge, budget, al_checkpoint(folder, config["setting"], dataset, ratio))
        network, info = _train_al(trainer, X, T, X_val, T_val)
        record.update(hidden=list(hidden), budget=budget, train_seconds=info["wall_seconds"], al=info,
                      init=config["init"], start_ridge=ridge)
        recover, post = _recovery(task, network, pixel)
    elif method == "al_init":
        ridge = _start_ridge(config, X, T, X_val, T_val)
        record.update(hidden=list(hidden), train_seconds=0.0, start_ridge=ridge,
                      note=START_NOTE["pixel" if pixel and config["init"] == "pairs" else config["init"]])
        recover, post = _recovery(task, _al_start(_al_trainer(config, hidden, ridge), X, T), pixel)
    elif method == "adam":
        from validation.baselines.adam import train_adam

        # equal time after the shared start: the seconds the stored AL loop used (its initialisation, which
        # Adam recomputes identically and is not charged for either, excluded)
        adam_budget = float(case.settings["al_seconds"])
        start = time.perf_counter()
        trained = train_adam(X.T, T.T, X_val.T, T_val.T, hidden=hidden, seed=seed,
                             time_budget=adam_budget, record_every=max(0.5, adam_budget / 100),
                             init=config["init"], ridge=_start_ridge(config, X, T, X_val, T_val),
                             weight_decay=config["al_mu"],  # the AL trainer's start and objective
                             restore_best=AL_OPTIONS["restore_best"])  # and its selection
        record.update(hidden=list(hidden), budget=adam_budget, train_seconds=time.perf_counter() - start,
                      epochs=trained["epochs"], history=_loss_history(trained["history"]),
                      **_selected(trained["selected"], trained["history"], "epoch"))
        recover, post = _recovery(task, trained["network"], pixel)
    elif method == "ridge":
        start = time.perf_counter()
        model, alpha, relative = fit_ridge(Y_train, task.S_train, Y_val, task.S_val, config["values"]["ridge_grid"])
        record.update(train_seconds=time.perf_counter() - start, alpha=alpha, relative_alpha=relative)
        recover = model.predict
    elif evaluator.kind == "csgm":  # lasso, lasso_dct: CSGM's LASSO, no parameter to choose
        basis = task.basis if method == "lasso_dct" else None
        record.update(train_seconds=0.0, alpha=CSGM["lasso_alpha"], basis="DCT" if basis is not None else "pixel",
                      solver="sklearn.linear_model.Lasso")

        def recover(Y, basis=basis):
            return lasso_csgm(task.A, Y, CSGM["lasso_alpha"], basis)

        limit = config["values"]["lasso_csgm_test"]
    else:  # lasso
        values = config["values"]
        solver = SparseRecovery(task.A, task.basis, solver=config["lasso_solver"])
        start = time.perf_counter()
        count = values["lasso_mnist_val"] if evaluator.kind == "mnist" else values["lasso_image_val"]
        errors = {}
        for kappa in values["lasso_kappas"]:
            R = np.array([solver.recover(y, kappa) for y in Y_val[:count]])
            errors[kappa] = float(np.mean((np.clip(R, 0, 1) - task.S_val[:count]) ** 2))
        kappa = min(errors, key=errors.get)
        record.update(train_seconds=time.perf_counter() - start, kappa=kappa, validation_mse=errors,
                      basis="DCT" if task.basis is not None else "pixel", solver=config["lasso_solver"],
                      validation_items=count)

        def recover(Y, kappa=kappa, solver=solver):
            return np.array([solver.recover(y, kappa) for y in Y])

        if evaluator.kind == "mnist":
            limit = values["lasso_mnist_test"]
        else:
            names = [k for k in values["lasso_images"] if k in evaluator.data] or list(evaluator.data)[:1]
    if evaluator.kind in ("mnist", "csgm"):
        scores, examples = evaluator.mnist(task, recover, limit)
    else:
        scores, examples = evaluator.images(task, recover, names, post)
    record.update(scores)
    path = example_path(folder, config["setting"], dataset, ratio, method)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with options.atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **{k: np.asarray(v, dtype=np.float32) for k, v in examples.items()})
    figures = {name: record.pop(name, None) for name in FIGURES if name != "details"}
    figures["details"] = options.json_text(record)
    return figures


def _record(row: dict) -> dict:
    """The record of a stored cell (the ``--json`` layout): dataset, ratio, method, figures and details."""
    problem = json.loads(row["problem"])
    record = {"dataset": problem["dataset"], "ratio": problem["ratio"], "method": row["backend"]}
    record.update((name, row[name]) for name in FIGURES if name != "details" and row[name] is not None)
    record.update(json.loads(row["details"]))
    return record


# ============================================================================ the study
def plan(args, out=print) -> tuple[dict, list[tuple[str, int]], list[str]]:
    """The checked command line as ``(config, cells, methods)``: the configuration every case carries, the
    (dataset, ratio) cells in table order (``digits`` for MNIST's fallback, announced here) and the methods.

    ``--mnist-ms`` and ``--image-ratios`` choose cells, as ``--datasets`` and ``--methods`` do; they are not
    part of the configuration, so that more ratios can be added to a stored study.
    """
    name = "quick" if args.quick else "full"
    setting = dict(SETTINGS[name])
    csgm = args.protocol == "csgm"
    if args.budget is not None:
        setting["budget_mnist"] = setting["budget_images"] = setting["budget_csgm"] = float(args.budget)
    for option, key in ((args.mnist_ms, "csgm_ms" if csgm else "mnist_ms"), (args.image_ratios, "image_ratios")):
        if option:  # parsed by options.positive_ints
            setting[key] = tuple(option)
            if key == "image_ratios" and not set(setting[key]) <= set(ds.PHI_ROWS):
                raise ProblemError(f"--image-ratios must be among {sorted(ds.PHI_ROWS)} (percent), got "
                                   f"{','.join(map(str, option))!r}.")
    datasets = (args.datasets or ("mnist" if csgm else "mnist,images")).split(",")
    for dataset in datasets:
        if dataset not in ("mnist", "images"):
            raise ProblemError(f"Unknown dataset {dataset!r}; choose from mnist, images (comma-separated).")
    if csgm and "images" in datasets:
        raise ProblemError("--protocol csgm is a protocol for MNIST; run the images without it "
                           "(--datasets images), or drop images from --datasets.")
    methods = (args.methods or ",".join(m for m in METHODS if csgm or m != "lasso_dct")).split(",")
    for method in methods:
        if method not in METHODS:
            raise ProblemError(f"Unknown method {method!r}; choose from {', '.join(METHODS)}.")
    if "lasso_dct" in methods and not csgm:
        raise ProblemError("`lasso_dct` belongs to --protocol csgm (its `lasso` is in the pixel basis); the images' "
                           "`lasso` is in the DCT basis already.")
    if "adam" in methods and "al" not in methods:
        raise ProblemError("`adam` is trained for the wall time of the AL run; include `al` in --methods.")

    def folder(path):  # absolute: a case may run in a process with another working folder
        return None if path is None else os.path.abspath(path)

    noise = args.noise if args.noise is not None else (CSGM["noise"] if csgm else 0.0)
    config = {"setting": name, "protocol": args.protocol, "seed": args.seed, "noise": noise,
              "init": args.init, "hidden": list(args.hidden) if args.hidden else None,
              "mnist_dir": folder(args.mnist_dir),
              "set11_dir": folder(args.set11_dir), "phi_dir": folder(args.phi_dir),
              "mnist_matrix": "gaussian 1/m (train_data.mnist_cs_matrix)", "al_rho": args.al_rho,
              "al_options": AL_OPTIONS,
              "al_mu": DEFAULT_MU, "lasso_solver": args.lasso_solver, "smooth": args.smooth,
              "values": {k: v for k, v in setting.items() if k not in ("mnist_ms", "csgm_ms", "image_ratios")}}
    if "images" in datasets:  # only there: MNIST settings (and their stored studies) stay what they were
        config["image_net"] = args.image_net
    else:
        config["values"] = {k: v for k, v in config["values"].items() if not k.startswith("pixel_")}
    config = json.loads(json.dumps(config))  # tuples -> lists, as they come back from the store
    cells = []
    if "mnist" in datasets and csgm:
        data = _csgm_mnist.__wrapped__(config["mnist_dir"], setting["csgm_train"], CSGM["test"])  # not cached
        out(f"[mnist-csgm] {data.source}; 10 % of the training images validate; A i.i.d. N(0,1), noise std "
            f"{noise} per measurement; metric: per-pixel MSE over the {CSGM['test']} test images (and its PSNR)")
        cells += [("mnist-csgm", m) for m in setting["csgm_ms"]]
    elif "mnist" in datasets:
        data = ds.load_mnist(args.mnist_dir, n_train=setting["mnist_train"], n_test=setting["mnist_test"])
        out(f"[mnist] {data.source}")
        cells += [(data.name, m) for m in setting["mnist_ms"]]
    if "images" in datasets:
        set11 = _set11(config["set11_dir"], setting["set11"])
        for ratio in setting["image_ratios"]:  # a missing or corrupt matrix is refused before any cell runs
            ds.sampling_matrix(ratio, phi_dir=config["phi_dir"], rng=np.random.default_rng(0))
        out(f"[images] test: Set11 {sorted(set11)}; train: {setting['image_blocks']} of the 33x33 patches on a "
            f"stride-{ds.PATCH_STRIDE} grid of skimage.data {', '.join(ds.TRAINING_PHOTOS)} (camera excluded) and "
            f"scikit-learn's {', '.join(ds.SAMPLE_IMAGES)}, in 8 orientations; validation: "
            f"{setting['image_val_blocks']} patches of 10 % of the grid positions, held out")
        if args.image_net == "pixel":
            out(f"[images] trained decoders: the ridge decoder per block, then an MLP at every pixel of its image "
                f"(--image-net pixel); {setting['pixel_train']} training and {setting['pixel_val']} validation pixels "
                f"of the same photographs (validation: 10 % of their 33x33 cells, held out)")
        cells += [("images", ratio) for ratio in setting["image_ratios"]]
    return config, cells, methods


def study_name(config: dict) -> str:
    """The study of a configuration in the store: ``cs_quick``, ``cs_full``, and ``cs_*_csgm`` for the CSGM
    protocol (its own table: its MNIST cells are another experiment)."""
    return f"cs_{config['setting']}" + ("_csgm" if config["protocol"] == "csgm" else "")


def cell_case(config: dict, dataset: str, ratio: int, method: str, folder: str, **extra) -> Case:
    """The case of one (dataset, ratio, method) cell (``extra``: ``al_seconds`` for ``adam``)."""
    return Case(problem={"dataset": dataset, "ratio": int(ratio)}, backend=method,
                settings={"config": config, "folder": os.path.abspath(folder), **extra}, seed=config["seed"])


def _refuse_other_settings(store: str, study: str, config: dict) -> None:
    """Refuse a store whose study holds cells computed with another configuration: a table never mixes two."""
    for row in read_results(store, study, missing_ok=True):
        stored = json.loads(row["settings"])["config"]
        if stored == config:
            continue
        changed = [f"{key}: {stored.get(key)!r} -> {config.get(key)!r}" for key in sorted(set(stored) | set(config))
                   if key != "values" and stored.get(key) != config.get(key)]
        old, new = stored.get("values", {}), config["values"]
        changed += [f"values.{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
                    if old.get(key) != new.get(key)]
        raise ProblemError(f"Results store {store!r} holds {study} cells computed with other settings "
                           f"({'; '.join(changed)}); one table never mixes two configurations. Rerun with the "
                           f"stored options, pass --fresh to drop the stored {study} cells, or give another --store "
                           "(or --checkpoint-dir).")


@dataclass
class Outcome:
    """What :func:`run_experiment` leaves: the records of the finished cells and what did not finish."""

    config: dict
    records: dict          # "dataset/ratio/method" -> record, the --json layout
    failed: list[str]      # one line per cell stored as failed, or not run
    ran: int               # cells run now
    stored: int            # cells found in the store
    store: str


def run_experiment(args, out=print) -> Outcome:
    """Run every cell of the command line that is not in the store, as cases of the study ``cs_SETTING``:
    per (dataset, ratio), first ``al``, ``al_init``, ``ridge`` and ``lasso``, then ``adam`` for the seconds its
    stored AL loop used.
    ``args.store`` and ``args.checkpoint_dir`` are the checked paths."""
    config, cells, methods = plan(args, out)
    study, folder, setting = study_name(config), args.checkpoint_dir, config["setting"]
    if args.fresh:
        dropped = drop_study(args.store, study)
        datasets = {dataset for dataset, _ in cells}
        for dataset in datasets:  # only this command's datasets: another store may be training the others
            for path in glob.glob(os.path.join(folder, "al", f"{setting}_{glob.escape(dataset)}_*.npz")):
                os.remove(path)  # AL checkpoints of dropped cells: never resumed by other settings
        out(f"--fresh: dropped {dropped} stored {study} cells")
    _refuse_other_settings(args.store, study, config)

    def run(cases):
        return run_study(Study(study, cases, CASE_FUNCTION, FIGURES, TIMING), store=args.store,
                         workers=args.workers, scheduler=args.scheduler, progress=False if args.no_progress else None)

    # cell by cell, so that a cell's Adam run follows its AL run at once and both see the same load on the
    # machine (measured: with all AL cells first, a heavier load during the later Adam phase left Adam 2-3
    # epochs of its 60 s instead of 18)
    cases, summaries, failed = [], [], []
    for dataset, ratio in cells:
        first = [cell_case(config, dataset, ratio, method, folder) for method in methods if method != "adam"]
        summaries.append(run(first))
        cases += first
        if "al" not in methods:
            continue
        al = next((row for row in read_results(args.store, study)
                   if row["case_id"] == cell_case(config, dataset, ratio, "al", folder).case_id), None)
        if al is None or al["status"] != "ok":
            if "adam" in methods:
                failed.append(f"adam {dataset} {ratio}: not run, its AL cell has no result")
            continue
        checkpoint = al_checkpoint(folder, setting, dataset, ratio)
        if os.path.exists(checkpoint):
            os.remove(checkpoint)  # the AL state (GBs for wide layers) is no longer needed once stored
        if "adam" in methods:
            seconds = json.loads(al["details"])["al"]["train_seconds"]
            adam = cell_case(config, dataset, ratio, "adam", folder, al_seconds=seconds)
            summaries.append(run([adam]))
            cases.append(adam)
    wanted = {case.case_id for case in cases}
    records = {}
    for row in read_results(args.store, study):
        if row["case_id"] not in wanted:
            continue
        problem = json.loads(row["problem"])
        if row["status"] == "ok":
            record = _record(row)
            records[f"{record['dataset']}/{record['ratio']}/{record['method']}"] = record
        else:
            why = ((row["message"] or "").splitlines() or ["no message"])[-1][:200]
            failed.append(f"{row['backend']} {problem['dataset']} {problem['ratio']}: {row['status']}: {why} "
                          "(stored as such; --fresh runs the study again)")
    ran = sum(summary.ran for summary in summaries)
    return Outcome(config, records, failed, ran=ran, stored=len(cases) - ran, store=args.store)


# ============================================================================ tables and plots
def _ordered_methods(records, dataset):
    present = {r["method"] for r in records if r["dataset"] == dataset}
    smooth = any("smooth" in r for r in records if r["dataset"] == dataset)
    out = [m for m in METHODS if m in present]
    return out + ([f"{m}+smooth" for m in out] if smooth else [])


def _cell(records, dataset, ratio, method):
    base, _, suffix = method.partition("+")
    for record in records:
        if record["dataset"] == dataset and record["ratio"] == ratio and record["method"] == base:
            return (record.get("smooth") if suffix else record), record
    return None, None


def format_tables(records: dict) -> str:
    """One table per dataset: methods × ratios of PSNR (dB; "/SSIM" for images), then timings."""
    rows = list(records.values())
    lines = []
    for dataset in sorted({r["dataset"] for r in rows}):
        ratios = sorted({r["ratio"] for r in rows if r["dataset"] == dataset})
        label = "m" if dataset != "images" else "ratio %"
        images, csgm = dataset == "images", dataset == "mnist-csgm"
        header = ["method"] + [f"{label}={ratio}" for ratio in ratios] + ["train s", "recover s/item", "items"]
        table = []
        for method in _ordered_methods(rows, dataset):
            line, trains, recs, items = [method], [], [], []
            for ratio in ratios:
                score, record = _cell(rows, dataset, ratio, method)
                if score is None:
                    line.append("-")
                    continue
                if csgm:
                    line.append(f"{score['mse']:.3g}/{score['psnr']:.2f}")
                else:
                    line.append(f"{score['psnr']:.2f}" + (f"/{score['ssim']:.3f}" if images else ""))
                trains.append(record.get("train_seconds", 0.0))
                recs.append(record["recovery_seconds_per_item"])
                items.append(str(record["items"]))
            line += [f"{np.mean(trains):.1f}" if trains else "-", f"{np.mean(recs):.3g}" if recs else "-",
                     "/".join(sorted(set(items), key=int)) or "-"]
            table.append(line)
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
        metric = ("PSNR dB / SSIM (mean over Set11 images)" if images else
                  "per-pixel MSE / its PSNR dB (over the test digits)" if csgm else "PSNR dB (mean over test digits)")
        lines.append(f"\n== {dataset}: {metric}; train s and recovery s/item averaged over ratios ==")
        lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table]
        notes = sorted({f"{r['method']}: {r['items']} test items" for r in rows
                        if r["dataset"] == dataset and r["method"] == "lasso"})
        if notes:
            lines.append("  (" + "; ".join(notes) + (f": {rows_names(rows, dataset)}" if images else "") + ")")
        al = [r for r in rows if r["dataset"] == dataset and r["method"] == "al"]
        for r in sorted(al, key=lambda r: r["ratio"]):
            info = r["al"]
            val = (f", val loss {info['init_val_loss']:.4f} -> {info['final_val_loss']:.4f}"
                   if info.get("final_val_loss") is not None else "")
            if info.get("selected"):
                val += (f", returned: iteration {info['selected']['iteration']} (val loss "
                        f"{info['selected']['val_loss']:.4f}, {info['selected']['rule']})")
            lines.append(f"  AL {label}={r['ratio']}: {info['iterations']} outer its, stop {info['stop_reason']}, "
                         f"train loss {info['init_train_loss']:.4f} -> {info['final_train_loss']:.4f}{val} "
                         f"(fractions of variance), violation {info['final_violation']:.2e}, "
                         f"rho {info['final_rho']:.3g}")
    return "\n".join(lines)


def rows_names(rows, dataset):
    names = {n for r in rows if r["dataset"] == dataset and r["method"] == "lasso" for n in r.get("item_names", [])}
    return ", ".join(sorted(names))


def training_figures(records: dict, directory: str, svg: bool = False) -> list[str]:
    """Per trained cell, the training loss of AL and Adam against seconds and the test PSNR at the end
    of each run beside ridge, LASSO and the AL start (:func:`validation.figures.comparison_figure`).

    Cells stored before histories were kept have none and are skipped. Returns the paths written.
    """
    from validation import figures

    paths = []
    for al in sorted((r for r in records.values() if r["method"] == "al" and r["al"].get("history")),
                     key=lambda r: (r["dataset"], r["ratio"])):
        dataset, ratio = al["dataset"], al["ratio"]
        cell = {r["method"]: r for r in records.values() if r["dataset"] == dataset and r["ratio"] == ratio}
        runs = [("AL", al["al"]["history"], al)]
        if cell.get("adam", {}).get("history"):
            runs.append(("Adam", cell["adam"]["history"], cell["adam"]))
        validated = all(row.get("val_loss") is not None for _, history, _ in runs for row in history[:1])
        curves = [figures.history_curve(label, history, "val_loss" if validated else "train_loss")
                  for label, history, _ in runs]
        if validated:  # the training loss beside it, thin: overfitting shows as the two curves parting
            curves += [figures.history_curve(f"{label} (train)", history, "train_loss", thin=True)
                       for label, history, _ in runs]
        metric = figures.Metric("test PSNR (dB" + (", mean over Set11 images)" if dataset == "images" else
                                                   ", of the per-pixel MSE)" if dataset == "mnist-csgm" else
                                                   ", mean over test digits)"),
                                xlabel="wall-clock time of the returned network (s)")
        for label, history, record in runs:  # at the returned network (the selected one, where selected)
            seconds = (record.get("selected") or record.get("al", {}).get("selected") or history[-1])["seconds"]
            metric.points.append((label, seconds, record["psnr"]))
        pixel = al.get("image_net") == "pixel"
        start = ("AL start (stage 1 + linear filter)" if pixel else "AL start (= ridge, as a ReLU net)"
                 if al.get("init") == "pairs" else "AL start")
        for method, label in (("al_init", start), ("ridge", "ridge (linear)"), ("lasso", "LASSO"),
                              ("lasso_dct", "LASSO (DCT)")):
            if method in cell:
                items = f", {cell[method]['items']} test items" if method == "lasso" else ""
                metric.references[label + items] = cell[method]["psnr"]
        kind = "m" if dataset != "images" else "ratio (%)"
        if pixel:  # the pixel network: window and position in, tile out, after the per-block ridge decoder
            from validation.pixel_decoder import n_inputs

            sizes, network = (n_inputs(al["pixel_samples"]["window"]), al["pixel_samples"]["tile"] ** 2), \
                "ridge, then pixel MLP "
        else:
            sizes, network = (al["m"], al["n"]), "MLP "
        figure = figures.comparison_figure(
            curves, problem=f"cs {dataset}, {kind} = {ratio}, {network}"
            f"{'->'.join(map(str, [sizes[0], *np.atleast_1d(al['hidden']).tolist(), sizes[1]]))}",
            budget=al["budget"], threads=None, metric=metric, detail="Adam given the seconds the AL loop used",
            references={start: al["al"]["init_val_loss" if validated else "init_train_loss"]},
            ylabel=("loss/variance: validation (thick), train (thin)" if validated else "training loss/variance"))
        paths += figures.write(figure, os.path.join(directory, f"cs_{dataset}_{ratio}_training.png"), svg=svg)
    return paths


def plot(records: dict, config: dict, folder: str, directory: str, svg: bool = False) -> list[str]:
    """Example grids (from the ``.npz`` files of the cells in ``folder``), PSNR-vs-ratio curves and the
    training figures in ``directory`` (PNG, and SVG with ``svg``); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from validation import figures

    os.makedirs(directory, exist_ok=True)
    rows = list(records.values())
    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        methods = [m for m in _ordered_methods(rows, dataset) if "+" not in m]
        ratios = sorted({r["ratio"] for r in rows if r["dataset"] == dataset})
        figure, axis = plt.subplots(figsize=(5, 3.5))
        smoothed = any("smooth" in r for r in rows if r["dataset"] == dataset)
        for method in methods + ([m + "+smooth" for m in methods] if smoothed else []):
            points = [(ratio, _cell(rows, dataset, ratio, method)[0]) for ratio in ratios]
            points = [(x, s["psnr"]) for x, s in points if s is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=method)
        axis.set_xlabel("m" if dataset != "images" else "measurement ratio (%)")
        axis.set_ylabel("PSNR (dB)")
        axis.set_xscale("log")
        axis.set_title(f"{dataset}: PSNR vs measurements")
        axis.legend(fontsize=7)
        figure.tight_layout()
        paths += figures.write(figure, os.path.join(directory, f"cs_{dataset}_psnr.png"), svg=svg, dpi=120)
        plt.close(figure)
        # example grid
        if dataset == "images":
            ratio = PLOT_RATIO if PLOT_RATIO in ratios else ratios[len(ratios) // 2]
        else:
            ratio = 100 if 100 in ratios else ratios[len(ratios) // 2]
        loaded = {}
        for method in methods:
            path = example_path(folder, config["setting"], dataset, ratio, method)
            if os.path.exists(path):
                with np.load(path, allow_pickle=False) as archive:
                    loaded[method] = {k: archive[k] for k in archive.files}
        if not loaded:
            continue
        if dataset == "images":
            names = [n for n in PLOT_IMAGES if any(n in v for v in loaded.values())]
            originals = ds.load_set11(config["set11_dir"])
            size = (2.2 * (len(loaded) + 1), 2.3 * len(names))
            figure, axes = plt.subplots(len(names), len(loaded) + 1, figsize=size, squeeze=False)
            for i, name in enumerate(names):
                axes[i, 0].imshow(originals[name], cmap="gray", vmin=0, vmax=1)
                axes[i, 0].set_title(f"{name}", fontsize=8)
                for j, (method, arrays) in enumerate(loaded.items(), start=1):
                    if name in arrays:
                        axes[i, j].imshow(arrays[name], cmap="gray", vmin=0, vmax=1)
                        score = next(r for r in rows if r["dataset"] == dataset and r["ratio"] == ratio
                                     and r["method"] == method)["per_image"][name]
                        axes[i, j].set_title(f"{method} {score['psnr']:.2f} dB", fontsize=8)
            for axis in axes.ravel():
                axis.axis("off")
        else:
            shape = (8, 8) if dataset == "digits" else (28, 28)
            first = next(iter(loaded.values()))["original"]
            size = (1.1 * len(first), 1.2 * (len(loaded) + 1))
            figure, axes = plt.subplots(len(loaded) + 1, len(first), figsize=size, squeeze=False)
            for j, image in enumerate(first):
                axes[0, j].imshow(image.reshape(shape), cmap="gray", vmin=0, vmax=1)
            axes[0, 0].set_title("original", fontsize=7, loc="left")
            for i, (method, arrays) in enumerate(loaded.items(), start=1):
                for j, image in enumerate(arrays["recovered"]):
                    axes[i, j].imshow(image.reshape(shape), cmap="gray", vmin=0, vmax=1)
                axes[i, 0].set_title(method, fontsize=7, loc="left")
            for axis in axes.ravel():
                axis.axis("off")
        figure.suptitle(f"{dataset}, {'ratio' if dataset == 'images' else 'm'} = {ratio}", fontsize=9)
        figure.tight_layout()
        paths += figures.write(figure, os.path.join(directory, f"cs_{dataset}_examples.png"), svg=svg, dpi=120)
        plt.close(figure)
    return paths + training_figures(records, directory, svg)


# ============================================================================ CLI
def _mnist_ms(text: str) -> tuple[int, ...]:
    """``--mnist-ms``: measurement counts ``1 <= m <= 784`` (more than the pixels is not compressed sensing)."""
    values = options.positive_ints(text)
    if max(values) > 784:
        raise argparse.ArgumentTypeError(f"must be at most the 784 pixels of an MNIST digit (more measurements than "
                                         f"pixels is not compressed sensing): choose m <= 784, got {text!r}")
    return values


def _hidden(text: str) -> tuple[int, ...]:
    """``--hidden``: 1 to 3 positive widths."""
    values = options.positive_ints(text)
    if not 1 <= len(values) <= 3:
        raise argparse.ArgumentTypeError(f"give 1 to 3 hidden layers (comma-separated He units), got {text!r}")
    return values


def run(args) -> int:
    """The command: exit code 0, or 1 when a cell is stored as failed (its line says why)."""
    if args.first_steps and (args.plot or args.fresh):
        raise ProblemError("--first-steps prints its table (and writes --json) without touching the study; run "
                           "--plot or --fresh without it.")
    options.check_plot_options(args)
    # every output is checked before any recovery runs, so that finished work is never lost to a bad path
    if args.json:
        args.json = options.output_file(args.json, "--json")
    start = time.perf_counter()
    if args.first_steps:  # no study: neither the checkpoint folder nor the store is touched
        config, cells, _ = plan(args)
        results = first_steps(config, cells)
        if args.json:
            with options.atomic_open(args.json, "w") as handle:
                handle.write(options.json_text({"config": config, "first_steps": results}, indent=1))
            print(f"results written to {args.json}")
        print(f"first steps of {len(cells)} cells; wall time {time.perf_counter() - start:.1f} s")
        return 0
    args.checkpoint_dir = options.output_directory(args.checkpoint_dir, "--checkpoint-dir")
    args.store = options.output_file(args.store or os.path.join(args.checkpoint_dir, STORE_NAME), "--store")
    outcome = run_experiment(args)
    print(format_tables(outcome.records))
    for line in outcome.failed:
        print(f"  not in the table: {line}")
    if args.json:
        write_json(args.json, outcome.config, outcome.records)
        print(f"results written to {args.json}")
    if args.plot:
        for path in plot(outcome.records, outcome.config, args.checkpoint_dir, args.plot, svg=args.svg):
            print(f"plot written to {path}")
    print(f"{outcome.ran} cells run, {outcome.stored} already stored in {outcome.store}; "
          f"wall time {time.perf_counter() - start:.1f} s")
    return 1 if outcome.failed else 0


def _installed_cvxpy_solver(name: str) -> str:
    import cvxpy as cp

    if name not in cp.installed_solvers():
        raise argparse.ArgumentTypeError(f"{name!r} is not an installed CVXPY solver; installed: "
                                         f"{', '.join(cp.installed_solvers())}")
    return name


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cs", help="compressed-sensing application: MNIST and Set11 block CS, AL vs Adam vs ridge vs LASSO",
        description=__doc__.split("\n\n")[0] + " Learned recovery by the AL method against Adam, ridge and "
                    "LASSO; tables of PSNR (SSIM) per ratio.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="reduced setting: one ratio per dataset, less data (1.5-5 min on 2 cores, "
                             "depending on load); used by the tests")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="normalised",
                        help="MNIST protocol: 'normalised' (A with variance 1/m, noiseless, first 8000 train / last "
                             "2000 test) or 'csgm' (Bora et al., ICML 2017: A i.i.d. N(0,1), noise std 0.1, the first "
                             "300 t10k images as test, m in 10..750, per-pixel MSE, LASSO alpha 0.1 in the pixel and "
                             "DCT bases); csgm is MNIST only and is stored as its own study")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated: mnist, images (default both; mnist with --protocol csgm)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of " + ", ".join(METHODS) + " (default all; lasso_dct only "
                             "with --protocol csgm)")
    parser.add_argument("--init", choices=INITS, default="pairs",
                        help="start of the AL and Adam networks: 'pairs' = the ridge decoder as a ReLU network "
                             "(units ReLU(y), ReLU(-y), output weights [P, -P]) plus the He units with zero output "
                             "weights, so the start equals ridge; 'ridge' = He network with a ridge output layer")
    parser.add_argument("--image-net", choices=IMAGE_NETS, default="pixel",
                        help="trained image decoder: 'pixel' = the per-block ridge decoder, then an MLP at every "
                             "pixel of its image from the 11x11 window around it and its position in the block to "
                             "the 3x3 tile there (overlapping tiles averaged); 'block' = an MLP from a block's "
                             "measurements to the block")
    parser.add_argument("--hidden", type=_hidden, default=None,
                        help="He units per hidden layer, 1 to 3 layers, e.g. 512 or 512,512 (with --init pairs each "
                             "layer also holds the 2m pair units); default per dataset and setting")
    parser.add_argument("--mnist-dir", default=None,
                        help="folder with the MNIST IDX files (default mnist/ of the data folder: $UNRELU_DATA, "
                             "else ../shared/data beside a checkout; without it the bundled 8x8 digits)")
    parser.add_argument("--set11-dir", default=None,
                        help="folder of the Set11 .tif images (default set11/ of the data folder)")
    parser.add_argument("--phi-dir", default=None,
                        help="folder of phi_0_{R}_1089.mat (default cs_phi/ of the data folder; else seeded "
                             "Gaussian)")
    parser.add_argument("--budget", type=options.positive_float, default=None,
                        help="AL training budget in seconds per (dataset, ratio); default from the setting")
    parser.add_argument("--mnist-ms", type=_mnist_ms, default=None,
                        help="comma-separated m values for MNIST (default per setting)")
    parser.add_argument("--image-ratios", type=options.positive_ints, default=None,
                        help="comma-separated ratios in percent for images, among 1,4,10,25,40 (default per setting)")
    parser.add_argument("--al-rho", type=options.positive_float, default=10.0,
                        help="initial relative penalty of the AL method")
    parser.add_argument("--lasso-solver", type=_installed_cvxpy_solver, default="SCS",
                        help="CVXPY solver of the LASSO (an installed one)")
    parser.add_argument("--noise", type=options.nonnegative_float, default=None,
                        help="std of Gaussian measurement noise e (>= 0; default 0, or 0.1 with --protocol csgm)")
    parser.add_argument("--smooth", action="store_true", help="add METHOD+smooth rows (TV denoising) for images")
    parser.add_argument("--seed", type=options.seed, default=0)
    parser.add_argument("--checkpoint-dir", default=os.path.join("results", "cs"),
                        help=f"the results store ({STORE_NAME}, unless --store), the example recoveries and the AL "
                             "checkpoints; stored cells are skipped on rerun")
    parser.add_argument("--store", metavar="PATH", default="",
                        help=f"SQLite results store (default CHECKPOINT_DIR/{STORE_NAME}; one table per setting, "
                             "cs_quick and cs_full)")
    parser.add_argument("--fresh", action="store_true",
                        help="drop the stored cells of this setting (and its AL checkpoints) first")
    parser.add_argument("--workers", type=options.positive_int, default=1,
                        help="methods of one (dataset, ratio) run at once in local processes (AL beside ridge "
                             "and LASSO; Adam always after its AL cell); default 1: the AL and Adam budgets are "
                             "wall-clock seconds, which cells side by side on few cores share")
    parser.add_argument("--scheduler", type=options.scheduler_url, metavar="tcp://HOST:PORT", default=None,
                        help="run the cells on this Dask scheduler instead (its workers must see the data folders "
                             "and --checkpoint-dir at the same paths)")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--plot", default=None, metavar="DIR",
                        help="write example grids, PSNR-vs-ratio plots and, per trained cell, the training loss of "
                             "AL and Adam against seconds (cs_DATASET_RATIO_training.png)")
    parser.add_argument("--svg", action="store_true", help="also write each --plot figure as SVG")
    parser.add_argument("--first-steps", action="store_true",
                        help="instead of the study: for each selected cell, how much of the first step of each "
                             "method (gradient, AL at three penalties, Adam) lowers the validation loss per unit "
                             "of training loss (validation.first_steps); nothing is stored")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser
