"""``unrelu train``: train a ReLU MLP with the safeguarded augmented-Lagrangian method.

The data file is an ``.npz`` with ``X`` (N x n0) and ``Y`` (N x nL), samples as ROWS, and
optionally ``X_val``, ``Y_val``. Without ``--data`` a seeded teacher-student regression is used.
The learned network is saved with ``ReluNetwork.save``: as ONNX when ``--out`` ends with ``.onnx``
(Gemm and Relu nodes, float64, samples as rows; needs the ``onnx`` package), else as ``.npz`` (keys
W1, b1, ..., WL, bL; W_l of shape (n_l, n_{l-1})). The history is saved as CSV (one row per outer
iteration) and optionally as a plot.
"""

from __future__ import annotations

import argparse
import csv
import os
import warnings

import numpy as np

from formulation._checks import check_data_scale, check_training_memory, read_npz
from formulation.learning import DTYPES
from formulation.results import ConvergenceWarning, ProblemError
from solvers.methods.al_trainer import ENGINES, HISTORY_COLUMNS, MODES, ALTrainer
from validation import options

#: Keys a data file may hold.
DATA_KEYS = ("X", "Y", "X_val", "Y_val")


def load_data(path: str) -> dict:
    """Read and check a data file; returns arrays with samples as COLUMNS.

    Raises
    ------
    ProblemError
        Missing file or key, unknown key, wrong dtype, NaN/inf, mismatched sample counts or widths.
    """
    arrays = read_npz(path, "Data file", "pass an .npz written with np.savez(path, X=..., Y=...), "
                                         "X of shape (N, n0) and Y of shape (N, nL).")
    for key in ("X", "Y"):
        if key not in arrays:
            raise ProblemError(f"Data file {path!r} has no key {key!r} (found {sorted(arrays)}); it needs X (N x n0) "
                               "and Y (N x nL), samples as rows, and optionally X_val, Y_val.")
    unknown = sorted(set(arrays) - set(DATA_KEYS))
    if unknown:
        raise ProblemError(f"Data file {path!r} has unexpected keys {unknown}; allowed: {', '.join(DATA_KEYS)}.")
    if ("X_val" in arrays) != ("Y_val" in arrays):
        raise ProblemError(f"Data file {path!r} has only one of X_val, Y_val; give both or neither.")
    out = {}
    for key, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
                or array.dtype == bool):
            raise ProblemError(f"`{key}` in {path!r} has dtype {array.dtype}; it must be real numbers (float or int).")
        if array.ndim == 1:
            array = array[:, None]  # one feature per sample
        if array.ndim != 2:
            raise ProblemError(f"`{key}` in {path!r} has shape {array.shape}; it must be 2-D, samples as rows.")
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            bad = int(np.sum(~np.isfinite(array)))
            raise ProblemError(f"`{key}` in {path!r} has {bad} NaN or inf entries; remove or impute them.")
        out[key] = array
    for x, y in (("X", "Y"), ("X_val", "Y_val")):
        if x in out and out[x].shape[0] < 2:
            raise ProblemError(f"`{x}` in {path!r} has {out[x].shape[0]} sample(s); losses are reported as a fraction "
                               f"of the target variance, which needs at least 2 samples (rows).")
        if x in out and out[x].shape[0] != out[y].shape[0]:
            raise ProblemError(f"`{x}` has {out[x].shape[0]} rows but `{y}` has {out[y].shape[0]} in {path!r}: samples "
                               "are rows, so both need one row per sample.")
    if "X_val" in out:
        if out["X_val"].shape[1] != out["X"].shape[1] or out["Y_val"].shape[1] != out["Y"].shape[1]:
            raise ProblemError(f"Validation arrays have {out['X_val'].shape[1]} and {out['Y_val'].shape[1]} columns, "
                               f"training arrays {out['X'].shape[1]} and {out['Y'].shape[1]}; they must agree.")
    for key, value in out.items():
        check_data_scale(key, value.T, source=path)
    return {key: value.T.copy() for key, value in out.items()}


def write_history(path: str, history: list[dict]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with options.atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(HISTORY_COLUMNS))
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})


def plot_history(path: str, history: list[dict], *, problem: str, budget: str, threads: int | None = None,
                 mode: str = "restarted", svg: bool = False) -> list[str]:
    """The two-panel training figure (:func:`validation.figures.training_figure`); returns the paths written."""
    from validation import figures

    figure = figures.training_figure(history, problem=problem, budget=budget, threads=threads, mode=mode)
    return figures.write(figure, path, svg=svg)


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))  # an empty entry ("4,,4") is refused too
    except ValueError as exc:
        raise ProblemError(f"--hidden {text!r} must be comma-separated positive integers, e.g. 64,64.") from exc
    if not widths or min(widths) < 1:
        raise ProblemError(f"--hidden {text!r} must be comma-separated positive integers, e.g. 64,64.")
    return widths


def check_outputs(args) -> None:
    """Check every output path before training (a folder, a file's child, a read-only place are refused),
    with ``.npz`` appended to ``--out`` (unless it ends with ``.onnx``) and ``--checkpoint`` as they are written.
    An ``.onnx`` ``--out`` needs the ``onnx`` package, checked here too."""
    written = {}
    data = os.path.abspath(args.data) if getattr(args, "data", "") else None
    onnx_out = getattr(args, "out", "").lower().endswith(".onnx")
    if onnx_out:
        from formulation.interchange import require_onnx

        require_onnx()  # SolverNotFound with the install hint, before any training
    for option, attribute, suffix in (("--out", "out", "" if onnx_out else ".npz"),
                                      ("--checkpoint", "checkpoint", ".npz"),
                                      ("--history", "history", ""), ("--plot", "plot", "")):
        if getattr(args, attribute, ""):
            setattr(args, attribute, options.output_file(getattr(args, attribute), option, suffix=suffix))
            target = os.path.abspath(getattr(args, attribute))
            if target in written:
                raise ProblemError(f"{option} and {written[target]} name the same file {getattr(args, attribute)!r}; "
                                   "the second would overwrite the first: give each output its own path.")
            if target == data:
                raise ProblemError(f"{option} {getattr(args, attribute)!r} is the training data file (--data); "
                                   "writing it would destroy the data: choose another path.")
            written[target] = option
    if getattr(args, "svg", False):
        if not getattr(args, "plot", ""):
            raise ProblemError("--svg writes an SVG beside the --plot figure; give --plot PATH.png as well.")
        from validation.figures import svg_path

        options.output_file(svg_path(args.plot), "--svg")


def run(args) -> int:
    hidden = parse_hidden(args.hidden)
    check_outputs(args)
    if args.data:
        data = load_data(args.data)
        source = args.data
    else:
        from validation.train_data import teacher_student

        data = teacher_student(N=2000, N_val=1000, seed=args.seed)
        data = {k: data[k] for k in DATA_KEYS}
        source = "embedded teacher-student regression (10 -> 32 -> 1 teacher, N=2000, 1000 validation)"
    trainer = ALTrainer(hidden, mode=args.mode, backend=args.backend, seed=args.seed, max_iters=args.iters,
                        time_budget=args.time_budget, checkpoint=args.checkpoint or None, mu=args.mu,
                        checkpoint_every=args.checkpoint_every, tol=args.tol, rho=args.rho, sweeps=args.sweeps,
                        anderson=args.anderson or None, nonmonotone=args.nonmonotone, dtype=args.dtype,
                        threads=args.threads, engine=args.engine, batch_size=args.batch_size,
                        restore_best=args.restore_best, patience=args.patience,
                        progress=None if not args.quiet else False)
    n0, nL = data["X"].shape[0], data["Y"].shape[0]
    # before any array of the run is allocated: --hidden 100000 asked for a 74.5 GiB array without this
    check_training_memory((n0, *hidden, nL), data["X"].shape[1],
                          data["X_val"].shape[1] if data.get("X_val") is not None else 0,
                          itemsize=np.dtype(trainer.dtype).itemsize, mode=trainer.mode)
    widths = (n0, *hidden, nL)
    batch = trainer.resolved_batch_size(data["X"].shape[1], (n0, *hidden, nL))
    print(f"data: {source}; N={data['X'].shape[1]}, widths {widths}, mode {trainer.mode}"
          + (f" on batches of {batch}" if batch else "") + f", backend "
          f"{args.backend} ({trainer.engine} sweep, {trainer.dtype}"
          + (f", {args.threads} thread(s))" if args.threads else ")"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = trainer.fit(data["X"], data["Y"], data.get("X_val"), data.get("Y_val"))
    final = result.final
    print(f"initialisation ({trainer.init}): train loss {result.init_train_loss:.4g}"
          + (f", val loss {result.init_val_loss:.4g}" if result.init_val_loss is not None else "")
          + "  (forward pass, fraction of target variance)")
    print(f"after {final['iteration']} outer iterations ({final['seconds']:.1f} s): "
          f"train loss {final['train_loss']:.4g}"
          + (f", val loss {final['val_loss']:.4g}" if final["val_loss"] is not None else "")
          + f", violation {final['violation']:.2e}, KKT residual "
          + ("-" if final["kkt"] is None else f"{final['kkt']:.2e}") + f", rho {final['rho']:.3g}")
    print(f"stopped: {result.message}" + (" (resumed from checkpoint)" if result.extras.get("resumed") else ""))
    if args.restore_best:
        selected = result.extras["selected"]
        print(f"returned: the iterate of least validation loss, iteration {selected['iteration']} "
              f"(val loss {selected['val_loss']:.4g})")
    if args.out:
        result.network.save(args.out)
        print(f"wrote network {args.out}")
    if args.history:
        write_history(args.history, result.history)
        print(f"wrote history {args.history}")
    if args.plot:
        budget = f"at most {args.iters} outer iterations" + (f" or {args.time_budget:g} s" if args.time_budget else "")
        problem = (os.path.basename(args.data) if args.data else "embedded teacher-student") + f", widths {widths}"
        for path in plot_history(args.plot, result.history, problem=problem, budget=budget, threads=args.threads,
                                 mode=trainer.mode, svg=args.svg):
            print(f"wrote plot {path}")
    del caught
    return 1 if result.stop_reason == "diverged" else 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a ReLU MLP with the augmented-Lagrangian method",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="npz with X (N x n0), Y (N x nL), optional X_val, Y_val "
                                                   "(samples as rows); default: embedded teacher-student data")
    parser.add_argument("--hidden", default="64", help="hidden widths, comma-separated (default 64)")
    parser.add_argument("--iters", type=options.nonnegative_int, default=200, help="max outer iterations (default 200)")
    parser.add_argument("--time-budget", type=options.positive_float, default=None,
                        help="training seconds for the outer loop (the loss monitoring is not counted)")
    parser.add_argument("--backend", default="closed_form",
                        help="backend of every block: closed_form (default) or a CVXPY solver such as OSQP, CLARABEL")
    parser.add_argument("--seed", type=options.seed, default=0, help="seed of the He initialisation (default 0)")
    parser.add_argument("--mode", choices=MODES, default="restarted",
                        help="outer method: 'restarted' (default; sweeps from the forward pass with first-order "
                             "multipliers, a step on the weights accepted only when the objective does not rise, "
                             "adaptive penalty; on sample batches when N is large, see --batch-size, where the "
                             "objective checked is the batch's) or 'exact' (DESIGN's safeguarded AL, "
                             "whose limit points are critical points)")
    parser.add_argument("--rho", type=options.positive_float, default=None,
                        help="initial penalty relative to the loss scale (default 1 restarted, 10 exact)")
    parser.add_argument("--anderson", type=options.nonnegative_int, default=0,
                        help="memory of Anderson acceleration of the weights, restarted mode (default 0 = off)")
    parser.add_argument("--nonmonotone", type=options.positive_int, default=20, metavar="M",
                        help="restarted mode, full batch: accept a step whose objective is at most the largest of "
                             "the last M accepted iterates (default 20; 1 = never let the objective rise)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="floating type of the data and AL state: float32 needs the fused sweep (default float32 "
                             "in restarted mode with the fused sweep, float64 otherwise)")
    parser.add_argument("--threads", type=options.positive_int, default=None,
                        help="cap on BLAS threads while training (default: the library's own)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="sweep engine: fused closed forms (auto picks it for closed_form, joint, forward) or "
                             "dispatched (every block through the backend registry)")
    parser.add_argument("--mu", type=options.nonnegative_float, default=1e-3,
                        help="weight decay relative to the loss scale (default 1e-3)")
    parser.add_argument("--batch-size", type=options.batch_size, default="auto",
                        help="restarted mode: samples per restarted step, an outer iteration then being one pass "
                             "over the data; 'full' for the full batch; 'auto' (default): B = max(1000, twice the "
                             "widest layer input + 2) when N >= 4B, full batch otherwise")
    parser.add_argument("--sweeps", type=options.positive_int, default=1,
                        help="block sweeps per outer iteration (default 1)")
    parser.add_argument("--restore-best", action="store_true",
                        help="return (and --out) the iterate of least validation loss, the start included, instead of "
                             "the last one; needs X_val, Y_val in --data (the embedded data has them)")
    parser.add_argument("--patience", type=options.positive_int, default=None, metavar="K",
                        help="stop when the validation loss has not gone below its least value for K outer "
                             "iterations (default: never); needs X_val, Y_val")
    parser.add_argument("--tol", type=options.positive_float, default=1e-6,
                        help="KKT residual and violation tolerance (default 1e-6)")
    parser.add_argument("--checkpoint", default="", help="checkpoint .npz, written atomically; resumed if it exists")
    parser.add_argument("--checkpoint-every", type=options.positive_int, default=10,
                        help="iterations between checkpoints (default 10)")
    parser.add_argument("--out", default="", help="write the learned network in original units: ONNX if the path "
                                                  "ends with .onnx (needs the onnx package), else .npz")
    parser.add_argument("--history", default="", help="write the history as CSV")
    parser.add_argument("--plot", default="", help="write a PNG of the train/validation loss against seconds and of "
                                                   "the violation per constraint family and KKT residual against "
                                                   "iterations")
    parser.add_argument("--svg", action="store_true", help="also write the --plot figure as SVG beside the PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
