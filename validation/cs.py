r"""``unrelu cs``: the compressed-sensing application of DESIGN §6.

Measurements ``y = A s (+ e)`` of signals ``s ∈ R^n`` with an ``m × n`` sampling matrix ``A``:

* **MNIST** (28×28, ``n = 784``), ``m ∈ {25, 50, 100, 200}``, ``A`` Gaussian with variance ``1/m``
  (seeded; :func:`validation.train_data.mnist_cs_matrix`, the task of ``bench train`` too); without
  the MNIST files, scikit-learn's 8×8 digits at the same ratios ``m/n`` (said in the output).
* **Natural images**, block CS on 33×33 blocks (``n = 1089``) at ratios 1, 4, 10, 25, 40 %, with
  the ISTA-Net matrices ``phi_0_{R}_1089.mat`` when present. Training blocks come from
  ``skimage.data`` photographs (not ``camera``, which is Set11's cameraman); the test set is Set11,
  each image cut into blocks (zero-padded to a multiple of 33), recovered block by block and
  reassembled.

Methods, on the same data and the same ``A``:

``al``
    MLP ``y ↦ s`` with one hidden ReLU layer trained by the augmented-Lagrangian method
    (:class:`solvers.methods.al_trainer.ALTrainer`) within a wall-clock budget.
``al_init``
    The AL method's starting network (He first layer, ridge output layer), so that the AL
    method's own gain is visible.
``adam``
    The same MLP from the same start trained by ``torch.optim.Adam`` for the wall time the AL
    loop actually used after the common initialisation (:func:`validation.baselines.adam.train_adam`; its
    evaluation pauses are not charged either).
``ridge``
    Linear recovery ``ŝ = W y + b``, the ridge parameter chosen on a validation split
    (:func:`validation.baselines.linear.fit_ridge`).
``lasso``
    Sparse recovery ``min ½||A Ψ c − y||² + λ||c||₁``, ``ŝ = Ψ c``, in CVXPY (one DPP model built
    once per ``A``; ``Ψ`` the orthonormal 2-D DCT for image blocks, the identity for MNIST), with
    ``λ = κ ||(AΨ)ᵀy||_∞`` and ``κ`` chosen on a validation split. Slow, so it recovers a subset
    of the test items (reported; :class:`validation.baselines.linear.SparseRecovery`).

Optional ``--smooth`` adds ``METHOD+smooth`` rows for images: total-variation denoising
(``skimage.restoration.denoise_tv_chambolle``) of the reassembled image, which removes block
artefacts.

Metrics: ``skimage.metrics.peak_signal_noise_ratio`` and ``structural_similarity`` with
``data_range=1`` on images in ``[0, 1]`` (recoveries clipped to ``[0, 1]``); MNIST PSNR is the mean
over test digits of the per-digit PSNR; image PSNR/SSIM the mean over Set11 images.

Every finished (dataset, ratio, method) is written at once to ``CHECKPOINT_DIR/cs_SETTING.json``
(and example recoveries for the plots to ``.npz`` files next to it); a rerun skips finished work,
and an interrupted AL training resumes from its own ``.npz`` checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from formulation.results import ConvergenceWarning, ProblemError
from solvers.methods.al_trainer import DEFAULT_MU
from validation import datasets as ds
from validation import options
from validation.baselines.linear import SparseRecovery, fit_ridge
from validation.train_data import mnist_cs_matrix

__all__ = ["SETTINGS", "METHODS", "psnr", "ssim", "dct_basis",
           "run_experiment", "format_tables", "add_parser"]

#: Methods in table order.
METHODS = ("al", "al_init", "adam", "ridge", "lasso")

#: The two settings. ``budget_*`` is the AL wall-clock training budget in seconds; Adam gets the
#: time the AL run actually used. ``lasso_*`` are the numbers of test / validation items LASSO solves.
SETTINGS = {
    "full": {
        "mnist_ms": (25, 50, 100, 200), "mnist_train": 8000, "mnist_test": 2000, "mnist_hidden": 2000,
        "budget_mnist": 45.0, "lasso_mnist_test": 30, "lasso_mnist_val": 6,
        "image_ratios": (1, 4, 10, 25, 40), "image_blocks": 5000, "image_val_blocks": 500, "image_hidden": 1000,
        "budget_images": 30.0, "set11": None, "lasso_images": ("cameraman",), "lasso_image_val": 6,
        "lasso_kappas": (0.03, 0.01, 0.003), "ridge_grid": 9, "al_max_iters": 100000,
    },
    "quick": {
        "mnist_ms": (100,), "mnist_train": 5000, "mnist_test": 300, "mnist_hidden": 1000,
        "budget_mnist": 30.0, "lasso_mnist_test": 5, "lasso_mnist_val": 3,
        "image_ratios": (25,), "image_blocks": 1000, "image_val_blocks": 100, "image_hidden": 128,
        "budget_images": 30.0, "set11": ("cameraman",), "lasso_images": ("cameraman",),
        "lasso_image_val": 3, "lasso_kappas": (0.03, 0.003), "ridge_grid": 7, "al_max_iters": 3,
    },
}
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


def write_json(path: str, store) -> None:
    """``--json``: the settings and every record as strict JSON (NaN and inf as null), written atomically."""
    from validation import options

    with options.atomic_open(path, "w") as handle:
        handle.write(options.json_text({"config": store.config, "records": store.records}, indent=1))


# ============================================================================ the experiment
@dataclass
class Task:
    """One (dataset, ratio) cell: data, matrix and how to score recoveries."""

    dataset: str          # "mnist" (or "digits") / "images"
    ratio: int            # m for MNIST, percent for images
    A: np.ndarray
    A_source: str
    S_train: np.ndarray   # rows are signals
    S_val: np.ndarray
    basis: np.ndarray | None


def _noise(Y, sigma, rng):
    return Y if sigma <= 0 else Y + sigma * rng.standard_normal(Y.shape)


class Store:
    """The JSON results file of one setting, rewritten atomically after every finished cell."""

    def __init__(self, directory: str, setting: str, config: dict):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"cs_{setting}.json")
        self.config = config
        self.records: dict[str, dict] = {}
        if os.path.exists(self.path):
            try:
                with open(self.path) as handle:
                    content = json.load(handle)
            except (OSError, json.JSONDecodeError) as exc:
                raise ProblemError(f"Results file {self.path!r} is unreadable ({exc}); delete it or use another "
                                   "--checkpoint-dir.") from exc
            if content.get("config") != config:
                raise ProblemError(f"Results file {self.path!r} was written with other settings "
                                   f"({content.get('config')}); use another --checkpoint-dir, or --fresh to "
                                   "discard it.")
            self.records = content.get("records", {})

    @staticmethod
    def key(dataset, ratio, method):
        return f"{dataset}/{ratio}/{method}"

    def get(self, dataset, ratio, method):
        return self.records.get(self.key(dataset, ratio, method))

    def put(self, record: dict) -> None:
        self.records[self.key(record["dataset"], record["ratio"], record["method"])] = record
        temporary = self.path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump({"config": self.config, "records": self.records}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def example_path(self, dataset, ratio, method) -> str:
        return os.path.join(self.directory, "examples", f"{dataset}_{ratio}_{method.replace('+', '_')}.npz")

    def save_examples(self, dataset, ratio, method, arrays: dict) -> None:
        path = self.example_path(dataset, ratio, method)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = path + ".tmp.npz"
        np.savez_compressed(temporary, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
        os.replace(temporary, path)


class Evaluator:
    """Scores a recovery function ``f(Y (N, m)) -> S (N, n)`` on a dataset's test items."""

    def __init__(self, kind: str, data, rng, noise: float, smooth: bool):
        self.kind, self.data, self.rng, self.noise, self.smooth = kind, data, rng, noise, smooth

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
        return result, {"recovered": R[:8], "original": S[:8]}

    # --- images: Set11 images are the items, blocks are recovered together
    def images(self, task: Task, recover, names=None) -> dict:
        names = list(self.data) if names is None else list(names)
        results, examples, smooth = {}, {}, {}
        seconds = 0.0
        for name in names:
            image = self.data[name]
            blocks, padded = ds.image_to_blocks(image)
            Y = _noise(blocks @ task.A.T, self.noise, np.random.default_rng(1))
            start = time.perf_counter()
            R = recover(Y)
            seconds += time.perf_counter() - start
            recovered = np.clip(ds.blocks_to_image(R, padded, image.shape), 0.0, 1.0)
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


def _train_al(task: Task, Y, hidden, budget, max_iters, seed, checkpoint, progress, al_options):
    from solvers.methods.al_trainer import ALTrainer

    trainer = ALTrainer(hidden=(hidden,), seed=seed, time_budget=budget, max_iters=max_iters,
                        checkpoint=checkpoint, progress=progress, **al_options)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = trainer.fit(Y.T, task.S_train.T)
    wall = time.perf_counter() - start
    scaler = result.standardizer
    init = scaler.unscale_network(trainer.initial_network(scaler.x(Y.T), scaler.y(task.S_train.T)))
    info = {"iterations": result.iterations, "stop_reason": result.stop_reason,
            "train_seconds": float(result.final["seconds"]), "wall_seconds": wall,
            "init_train_loss": result.init_train_loss, "final_train_loss": result.final["train_loss"],
            "final_violation": result.final["violation"], "final_kkt": result.final["kkt"],
            "final_rho": result.final["rho"], "resumed": bool(result.extras.get("resumed")),
            "history": _loss_history(result.history)}
    return result.network, init, info


def _loss_history(history) -> list[dict]:
    """``seconds`` and forward-pass ``train_loss`` of each recorded row (AL or Adam), for the figures."""
    return [{"seconds": float(row["seconds"]), "train_loss": float(row["train_loss"])} for row in history]


def run_experiment(args, out=print) -> Store:
    """Run every (dataset, ratio, method) not yet in the results file; return the store of records."""
    setting = dict(SETTINGS["quick" if args.quick else "full"])
    if args.budget is not None:
        setting["budget_mnist"] = setting["budget_images"] = float(args.budget)
    for option, key in ((args.mnist_ms, "mnist_ms"), (args.image_ratios, "image_ratios")):
        if option:  # parsed by options.positive_ints
            setting[key] = tuple(option)
            if key == "image_ratios" and not set(setting[key]) <= set(ds.PHI_ROWS):
                raise ProblemError(f"--image-ratios must be among {sorted(ds.PHI_ROWS)} (percent), got "
                                   f"{','.join(map(str, option))!r}.")
    datasets = args.datasets.split(",")
    for name in datasets:
        if name not in ("mnist", "images"):
            raise ProblemError(f"Unknown dataset {name!r}; choose from mnist, images (comma-separated).")
    methods = args.methods.split(",")
    for name in methods:
        if name not in METHODS:
            raise ProblemError(f"Unknown method {name!r}; choose from {', '.join(METHODS)}.")
    if "adam" in methods and "al" not in methods:
        raise ProblemError("`adam` is trained for the wall time of the AL run; include `al` in --methods.")
    config = {"setting": "quick" if args.quick else "full", "seed": args.seed, "noise": args.noise,
              "budget_mnist": setting["budget_mnist"], "budget_images": setting["budget_images"],
              "mnist_dir": args.mnist_dir, "set11_dir": args.set11_dir, "phi_dir": args.phi_dir,
              "mnist_matrix": "gaussian 1/m (train_data.mnist_cs_matrix)",
              "al_rho": args.al_rho, "al_mu": DEFAULT_MU, "lasso_solver": args.lasso_solver, "smooth": args.smooth,
              "values": setting}
    config = json.loads(json.dumps(config))  # tuples -> lists, as they come back from the file
    checkpoint_dir = args.checkpoint_dir
    if args.fresh:
        stale = os.path.join(checkpoint_dir, f"cs_{config['setting']}.json")
        if os.path.exists(stale):
            os.remove(stale)
    store = Store(checkpoint_dir, config["setting"], config)
    rng = np.random.default_rng(args.seed)
    al_options = {"rho": args.al_rho}
    progress = None if not args.no_progress else False

    tasks = []
    if "mnist" in datasets:
        data = ds.load_mnist(args.mnist_dir, n_train=setting["mnist_train"], n_test=setting["mnist_test"])
        out(f"[mnist] {data.source}")
        n_val = max(10, data.train.shape[0] // 10)
        train, val = data.train[:-n_val], data.train[-n_val:]
        for m in setting["mnist_ms"]:
            m_eff = m if data.n == 784 else max(1, int(round(m * data.n / 784)))
            A = mnist_cs_matrix(m_eff, data.n, args.seed)
            tasks.append((Task(data.name, m, A, f"seeded Gaussian, variance 1/m, m={m_eff}", train, val, None),
                          Evaluator("mnist", data, rng, args.noise, False), setting["mnist_hidden"],
                          setting["budget_mnist"]))
    if "images" in datasets:
        set11 = ds.load_set11(args.set11_dir)
        if setting["set11"] is not None:
            missing = [k for k in setting["set11"] if k not in set11]
            if missing:
                raise ProblemError(f"Set11 folder lacks {missing}; the quick setting tests on them.")
            set11 = {k: set11[k] for k in setting["set11"]}
        out(f"[images] test: Set11 {sorted(set11)}; train: {setting['image_blocks']} random 33x33 blocks of "
            f"skimage.data {', '.join(ds.TRAINING_PHOTOS)} (camera excluded)")
        photos = ds.training_photos()
        block_rng = np.random.default_rng([args.seed, 33])
        train = ds.sample_blocks(photos, setting["image_blocks"], block_rng)
        val = ds.sample_blocks(photos, setting["image_val_blocks"], block_rng)
        basis = dct_basis(ds.BLOCK)
        for ratio in setting["image_ratios"]:
            A, source = ds.sampling_matrix(ratio, phi_dir=args.phi_dir, rng=np.random.default_rng([args.seed, ratio]))
            tasks.append((Task("images", ratio, A, source, train, val, basis),
                          Evaluator("images", set11, rng, args.noise, args.smooth), setting["image_hidden"],
                          setting["budget_images"]))

    cells = [(task, evaluator, hidden, budget, method) for task, evaluator, hidden, budget in tasks
             for method in METHODS if method in methods]
    bar = tqdm(cells, desc="cs", unit="cell", disable=None if progress is None else True)
    for task, evaluator, hidden, budget, method in bar:
        bar.set_postfix_str(f"{task.dataset} {task.ratio} {method}")
        if store.get(task.dataset, task.ratio, method) is not None:
            continue
        record = {"dataset": task.dataset, "ratio": task.ratio, "method": method, "m": int(task.A.shape[0]),
                  "n": int(task.A.shape[1]), "A": task.A_source}
        Y_train = _noise(task.S_train @ task.A.T, args.noise, np.random.default_rng([args.seed, 7]))
        Y_val = _noise(task.S_val @ task.A.T, args.noise, np.random.default_rng([args.seed, 8]))
        limit, names, recover = None, None, None
        if method in ("al", "al_init"):
            checkpoint = os.path.join(checkpoint_dir, "al", f"{config['setting']}_{task.dataset}_{task.ratio}.npz")
            network, init, info = _train_al(task, Y_train, hidden, budget, setting["al_max_iters"], args.seed,
                                            checkpoint, progress,
                                            al_options)
            init_record = dict(record, method="al_init", hidden=hidden, train_seconds=0.0,
                               note="He first layer, ridge output layer (the AL start)")
            record.update(hidden=hidden, budget=budget, train_seconds=info["wall_seconds"], al=info)
            # score both networks now; al_init is stored too so that al need not retrain for it
            for rec, net in ((record, network), (init_record, init)):
                if rec["method"] not in methods or store.get(task.dataset, task.ratio, rec["method"]) is not None:
                    continue
                _score_and_store(store, evaluator, task, rec, _network_recovery(net), None, None)
            if os.path.exists(checkpoint) and store.get(task.dataset, task.ratio, "al") is not None:
                os.remove(checkpoint)  # the AL state (GBs for wide layers) is no longer needed once scored
            continue
        if method == "adam":
            from validation.baselines.adam import train_adam

            al_record = store.get(task.dataset, task.ratio, "al")
            # equal time after the shared start: the AL loop's seconds (its initialisation, which Adam
            # recomputes identically and is not charged for either, excluded)
            adam_budget = al_record["al"]["train_seconds"] if al_record else budget
            start = time.perf_counter()
            result = train_adam(Y_train.T, task.S_train.T, hidden=(hidden,), seed=args.seed,
                                time_budget=adam_budget, record_every=min(0.5, adam_budget / 100),
                                weight_decay=DEFAULT_MU)  # the AL trainer's objective
            record.update(hidden=hidden, budget=adam_budget, train_seconds=time.perf_counter() - start,
                          epochs=result["epochs"], history=_loss_history(result["history"]))
            recover = _network_recovery(result["network"])
        elif method == "ridge":
            start = time.perf_counter()
            model, alpha = fit_ridge(Y_train, task.S_train, Y_val, task.S_val, setting["ridge_grid"])
            record.update(train_seconds=time.perf_counter() - start, alpha=alpha)
            recover = model.predict
        elif method == "lasso":
            solver = SparseRecovery(task.A, task.basis, solver=args.lasso_solver)
            start = time.perf_counter()
            count = setting["lasso_mnist_val"] if evaluator.kind == "mnist" else setting["lasso_image_val"]
            errors = {}
            for kappa in setting["lasso_kappas"]:
                R = np.array([solver.recover(y, kappa) for y in Y_val[:count]])
                errors[kappa] = float(np.mean((np.clip(R, 0, 1) - task.S_val[:count]) ** 2))
            kappa = min(errors, key=errors.get)
            record.update(train_seconds=time.perf_counter() - start, kappa=kappa, validation_mse=errors,
                          basis="DCT" if task.basis is not None else "pixel", solver=args.lasso_solver,
                          validation_items=count)

            def recover(Y, kappa=kappa, solver=solver):
                return np.array([solver.recover(y, kappa) for y in Y])

            if evaluator.kind == "mnist":
                limit = setting["lasso_mnist_test"]
            else:
                names = [k for k in setting["lasso_images"] if k in evaluator.data] or list(evaluator.data)[:1]
        _score_and_store(store, evaluator, task, record, recover, limit, names)
    bar.close()
    return store


def _score_and_store(store, evaluator, task, record, recover, limit, names):
    if evaluator.kind == "mnist":
        result, examples = evaluator.mnist(task, recover, limit)
    else:
        result, examples = evaluator.images(task, recover, names)
    record.update(result)
    store.save_examples(task.dataset, task.ratio, record["method"], examples)
    store.put(record)


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
        images = dataset == "images"
        header = ["method"] + [f"{label}={ratio}" for ratio in ratios] + ["train s", "recover s/item", "items"]
        table = []
        for method in _ordered_methods(rows, dataset):
            line, trains, recs, items = [method], [], [], []
            for ratio in ratios:
                score, record = _cell(rows, dataset, ratio, method)
                if score is None:
                    line.append("-")
                    continue
                line.append(f"{score['psnr']:.2f}" + (f"/{score['ssim']:.3f}" if images else ""))
                trains.append(record.get("train_seconds", 0.0))
                recs.append(record["recovery_seconds_per_item"])
                items.append(str(record["items"]))
            line += [f"{np.mean(trains):.1f}" if trains else "-", f"{np.mean(recs):.3g}" if recs else "-",
                     "/".join(sorted(set(items), key=int)) or "-"]
            table.append(line)
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
        metric = "PSNR dB / SSIM (mean over Set11 images)" if images else "PSNR dB (mean over test digits)"
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
            lines.append(f"  AL {label}={r['ratio']}: {info['iterations']} outer its, stop {info['stop_reason']}, "
                         f"train loss {info['init_train_loss']:.4f} -> {info['final_train_loss']:.4f} "
                         f"(fraction of variance), violation {info['final_violation']:.2e}, "
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
        curves = [figures.history_curve("AL", al["al"]["history"], "train_loss")]
        metric = figures.Metric("test PSNR (dB" + (", mean over Set11 images)" if dataset == "images" else
                                                   ", mean over test digits)"))
        metric.points.append(("AL", al["al"]["history"][-1]["seconds"], al["psnr"]))
        if cell.get("adam", {}).get("history"):
            curves.append(figures.history_curve("Adam", cell["adam"]["history"], "train_loss"))
            metric.points.append(("Adam", cell["adam"]["history"][-1]["seconds"], cell["adam"]["psnr"]))
        for method, label in (("al_init", "AL start (He + ridge output)"), ("ridge", "ridge (linear)"),
                              ("lasso", "LASSO")):
            if method in cell:
                items = f", {cell[method]['items']} test items" if method == "lasso" else ""
                metric.references[label + items] = cell[method]["psnr"]
        kind = "m" if dataset != "images" else "ratio (%)"
        figure = figures.comparison_figure(
            curves, problem=f"cs {dataset}, {kind} = {ratio}, MLP {al['m']}->{al['hidden']}->{al['n']}",
            budget=al["budget"], threads=None, metric=metric, detail="Adam given the seconds the AL loop used",
            references={"AL start (He + ridge output)": al["al"]["init_train_loss"]},
            ylabel="training loss (fraction of target variance)")
        paths += figures.write(figure, os.path.join(directory, f"cs_{dataset}_{ratio}_training.png"), svg=svg)
    return paths


def plot(records: dict, store: Store, directory: str, svg: bool = False) -> list[str]:
    """Example grids, PSNR-vs-ratio curves and the training figures in ``directory`` (PNG, and SVG with
    ``svg``); returns the paths."""
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
            path = store.example_path(dataset, ratio, method)
            if os.path.exists(path):
                with np.load(path, allow_pickle=False) as archive:
                    loaded[method] = {k: archive[k] for k in archive.files}
        if not loaded:
            continue
        if dataset == "images":
            names = [n for n in PLOT_IMAGES if any(n in v for v in loaded.values())]
            originals = ds.load_set11(store.config["set11_dir"])
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
            shape = (28, 28) if dataset == "mnist" else (8, 8)
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
def run(args) -> int:
    from validation import options

    options.check_plot_options(args)
    # every output is checked before any recovery runs, so that finished work is never lost to a bad path
    if args.json:
        args.json = options.output_file(args.json, "--json")
    args.checkpoint_dir = options.output_directory(args.checkpoint_dir, "--checkpoint-dir")
    start = time.perf_counter()
    store = run_experiment(args)
    records = store.records
    print(format_tables(records))
    if args.json:
        write_json(args.json, store)
        print(f"results written to {args.json}")
    if args.plot:
        for path in plot(records, store, args.plot, svg=args.svg):
            print(f"plot written to {path}")
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0


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
    parser.add_argument("--datasets", default="mnist,images", help="comma-separated: mnist, images")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
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
    parser.add_argument("--mnist-ms", type=options.positive_ints, default=None,
                        help="comma-separated m values for MNIST (default per setting)")
    parser.add_argument("--image-ratios", type=options.positive_ints, default=None,
                        help="comma-separated ratios in percent for images, among 1,4,10,25,40 (default per setting)")
    parser.add_argument("--al-rho", type=options.positive_float, default=10.0,
                        help="initial relative penalty of the AL method")
    parser.add_argument("--lasso-solver", type=_installed_cvxpy_solver, default="SCS",
                        help="CVXPY solver of the LASSO (an installed one)")
    parser.add_argument("--noise", type=options.nonnegative_float, default=0.0,
                        help="std of Gaussian measurement noise e (>= 0)")
    parser.add_argument("--smooth", action="store_true", help="add METHOD+smooth rows (TV denoising) for images")
    parser.add_argument("--seed", type=options.seed, default=0)
    parser.add_argument("--checkpoint-dir", default=os.path.join("results", "cs"),
                        help="results JSON, examples and AL checkpoints; finished cells are skipped on rerun")
    parser.add_argument("--fresh", action="store_true", help="discard the results file of this setting first")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--plot", default=None, metavar="DIR",
                        help="write example grids, PSNR-vs-ratio plots and, per trained cell, the training loss of "
                             "AL and Adam against seconds (cs_DATASET_RATIO_training.png)")
    parser.add_argument("--svg", action="store_true", help="also write each --plot figure as SVG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser
