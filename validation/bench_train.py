"""``unrelu bench train``: the AL method against Adam (PyTorch) with the same wall-clock budget.

Problems (same data, same initial network for both methods, in one process):

1. teacher-student regression, 2 x 64 hidden units, N = 4,000;
2. MNIST compressed sensing, y = A s with a Gaussian A (m = 100), MLP 100 -> 500 -> 784, the first
   8,000 images of t10k for training and the last 2,000 for validation (sklearn 8x8 digits when
   MNIST is absent; the table says so); PSNR is the mean over images with predictions clipped to
   [0, 1]; linear ridge is the reference;
3. sklearn digits classification, 64 -> 100 -> 10, squared loss on one-hot targets, 70/30 split,
   with pyscnn's AL (convex ReLU) and R-FISTA (gated ReLU) solvers as the maintained peer when it is
   installed (`make scnn`; run to its own stopping rule, or within the budget with --quick).

Both methods run in the same dtype (``--dtype``, default float32) and with the same number of
threads (``--threads``, default 1); the AL trainer runs in its default (restarted) mode, untraced,
and Adam minimises the same objective (the trainer's weight decay in its loss). The weight decay
``μ`` is the trainer's default except on the digits (:data:`PROBLEM_MU`, chosen by cross-validation
on the training split); ``--mu`` sets it everywhere and ``--select-mu`` chooses it per problem by
5-fold cross-validation on the training split (:mod:`validation.model_selection`).
Losses are forward-pass losses as fractions of the target variance; loss monitoring is charged to
neither method. Also printed: one AL sweep alone and one AL outer iteration against one full-batch
forward+backward pass in PyTorch, and the peak traced memory of a separate 25-iteration AL run
against its state size. ``--ablation`` runs the variants of the outer method (:data:`ABLATION`)
instead of Adam. With ``--plot DIR``, one figure per problem
(:func:`validation.figures.bench_figure`): validation loss against seconds for both methods.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
import tracemalloc
import warnings

import numpy as np

from formulation.learning import DTYPES
from formulation.results import ConvergenceWarning, ProblemError
from solvers.methods.al_trainer import DEFAULT_MU, ALTrainer, blas_threads
from validation import options
from validation.baselines.linear import ridge
from validation.train_data import digits_classification, mnist_cs, psnr_images, teacher_student

BUDGETS = {"full": {"teacher": 60.0, "mnist": 150.0, "digits": 20.0},
           "quick": {"teacher": 10.0, "mnist": 25.0, "digits": 5.0}}
#: Weight decay ``μ`` per problem where it is not the trainer's default (both methods use it). The digits
#: value is the choice of ``unrelu bench train --select-mu --problems digits`` (5-fold cross-validated
#: accuracy on the training split over :data:`validation.model_selection.MU_GRID`; README).
PROBLEM_MU = {"digits": 10.0}


def _problems(mode: str):
    quick = mode == "quick"
    yield "teacher-student", (64, 64), teacher_student(N=1000 if quick else 4000, N_val=1000, n0=10, seed=0)
    yield "mnist-cs", (500,), mnist_cs(n_train=2000 if quick else 8000, n_val=500 if quick else 2000)
    yield "digits", (100,), digits_classification(seed=0)


def _metrics(name, data, network):
    out = {}
    if name == "mnist-cs":
        out["train_psnr"] = psnr_images(network(data["X"]), data["Y"])
        out["val_psnr"] = psnr_images(network(data["X_val"]), data["Y_val"])
    if name == "digits":
        out["train_acc"] = float(np.mean(np.argmax(network(data["X"]), axis=0) == data["labels"]))
        out["val_acc"] = float(np.mean(np.argmax(network(data["X_val"]), axis=0) == data["labels_val"]))
    return out


#: ``--ablation`` variants: name -> ALTrainer settings (measured at each problem's budget; README table).
ABLATION = {
    "exact (DESIGN §3: ρ̂0 = 10, gated BM rule)": dict(mode="exact"),
    "exact, 3 sweeps per multiplier update": dict(mode="exact", sweeps=3),
    "restarted, full batch, fixed ρ̂ = 1": dict(adaptive_penalty=False, batch_size=None),
    "restarted, full batch, adaptive ρ̂, monotone": dict(batch_size=None, nonmonotone=1),
    "restarted, full batch, adaptive ρ̂ (nonmonotone, last 20)": dict(batch_size=None),
    "restarted, full batch, over-relaxed ω = 1.5": dict(relaxation=1.5, batch_size=None),
    "restarted, full batch, Anderson m = 5": dict(anderson=5, batch_size=None),
    "restarted, batches of 1000, adaptive ρ̂": dict(batch_size=1000),
    "restarted, batch_size auto (default)": dict(),
}


def _sweep_seconds(trainer, result, repeats: int = 5) -> float:
    """Median seconds of one sweep alone (no diagnostics, no restart) at the final state of a run."""
    problem, state = result.extras["problem"], result.extras["state"]
    with np.errstate(all="ignore"):
        trainer.sweep(problem, state.copy())  # untimed: builds the full-size fused sweep after a run on batches
    times = []
    for _ in range(repeats):
        work = state.copy()
        start = time.perf_counter()
        with np.errstate(all="ignore"):
            trainer.sweep(problem, work)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _run_al(name, hidden, data, budget, seed, dtype, threads, *, trace_iterations=0, **settings):
    """The timed AL run (no memory tracing: tracing slows NumPy allocations about 2x and Adam runs
    without it); with ``trace_iterations``, also a separate short run of that many outer iterations
    under ``tracemalloc`` for the peak memory (``None`` otherwise)."""
    trainer = ALTrainer(hidden, seed=seed, max_iters=10**6, time_budget=budget, tol=0.0, progress=None,
                        dtype=dtype, threads=threads, keep_state=True, **settings)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = trainer.fit(data["X"], data["Y"], data["X_val"], data["Y_val"])
        wall = time.perf_counter() - start
        peak = None
        if trace_iterations:
            short = ALTrainer(hidden, seed=seed, max_iters=trace_iterations, tol=0.0, progress=False, dtype=dtype,
                              threads=threads, **settings)
            tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            short.fit(data["X"], data["Y"], data["X_val"], data["Y_val"])
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
    return trainer, result, wall, peak


def bench_one(name, hidden, data, budget, seed, quick=False, dtype="float64", threads=None, mu=DEFAULT_MU):
    """AL, Adam and the references on one problem.

    Returns the table rows, the timing row and the traces the figure needs
    (:func:`validation.figures.bench_figure`): ``histories`` (the AL and Adam histories, both with
    ``seconds`` and ``val_loss``) and ``references`` (validation losses of methods without a history).
    """
    from validation.baselines.adam import full_batch_step_seconds, torch_threads, train_adam

    rows = []
    trainer, result, wall, peak = _run_al(name, hidden, data, budget, seed, dtype, threads, trace_iterations=25,
                                          mu=mu)
    data_bytes = sum(data[k].nbytes for k in ("X", "Y", "X_val", "Y_val"))
    history = result.history
    final = history[-1]
    iteration_s = final["seconds"] / max(final["iteration"], 1)
    scaler = result.standardizer
    start_net = scaler.unscale_network(trainer.initial_network(scaler.x(data["X"]), scaler.y(data["Y"])))
    rows.append({"problem": name, "method": "init (He + ridge output)", "seconds": 0.0, "iterations": 0,
                 "train_loss": result.init_train_loss, "val_loss": result.init_val_loss,
                 **_metrics(name, data, start_net)})
    rows.append({"problem": name, "method": f"AL ({trainer.mode})", "mu": trainer.mu, "seconds": final["seconds"],
                 "wall_seconds": wall, "iterations": final["iteration"],
                 "train_loss": final["train_loss"], "val_loss": final["val_loss"],
                 "violation": final["violation"], "kkt": final["kkt"], "rho": final["rho"],
                 "peak_mb": peak / 2**20, "state_mb": result.state_bytes / 2**20, "data_mb": data_bytes / 2**20,
                 "anderson_mb": result.extras["anderson_bytes"] / 2**20,
                 **_metrics(name, data, result.network)})
    # about 100 recorded points per run for the figure (evaluations are not charged to Adam's budget)
    # the same objective: the AL trainer's weight decay in Adam's loss
    adam = train_adam(data["X"], data["Y"], data["X_val"], data["Y_val"], hidden=hidden, seed=seed,
                      weight_decay=trainer.mu,
                      time_budget=budget, dtype=dtype, threads=threads, record_every=min(0.5, budget / 100))
    traces = {"histories": {f"AL ({trainer.mode})": history, "Adam": adam["history"]}, "references": {}}
    rows.append({"problem": name, "method": "Adam", "mu": trainer.mu, "seconds": adam["history"][-1]["seconds"],
                 "iterations": adam["epochs"], "train_loss": adam["history"][-1]["train_loss"],
                 "val_loss": adam["history"][-1]["val_loss"], **_metrics(name, data, adam["network"])})
    if name == "mnist-cs":
        model, _ = ridge(data["X"].T, data["Y"].T, 1e-3)
        train_pred, val_pred = model.predict(data["X"].T).T, model.predict(data["X_val"].T).T
        centred = data["Y_val"] - data["Y_val"].mean(axis=1, keepdims=True)
        traces["references"]["ridge (linear)"] = float(np.sum((val_pred - data["Y_val"]) ** 2) / np.sum(centred**2))
        rows.append({"problem": name, "method": "ridge (linear)", "seconds": 0.0, "iterations": 0,
                     "train_psnr": psnr_images(train_pred, data["Y"]),
                     "val_psnr": psnr_images(val_pred, data["Y_val"])})
    if name == "digits":  # the maintained peer, when installed (`make scnn`); a hint row otherwise
        from validation.baselines.scnn import run_scnn

        rows += run_scnn(data, hidden=hidden[0], seed=seed, max_seconds=budget if quick else None)
    with torch_threads(threads):
        torch_s = full_batch_step_seconds(scaler.scale_network(result.network), scaler.x(data["X"]),
                                          scaler.y(data["Y"]), dtype=dtype)
    with blas_threads(threads):
        sweep_s = _sweep_seconds(trainer, result)
    timing = {"problem": name, "sweep_s": sweep_s, "iteration_s": iteration_s, "torch_fwd_bwd_s": torch_s,
              "ratio": sweep_s / torch_s, "iteration_ratio": iteration_s / torch_s}
    return rows, timing, traces


def ablation_one(name, hidden, data, budget, seed, dtype="float64", threads=None, mu=DEFAULT_MU):
    """One row per :data:`ABLATION` variant: the problem's metric at the same budget, iterations, s per iteration.

    Also returns the traces of :func:`validation.figures.bench_figure`: every variant's history, all
    but the default drawn thin, and the initial network's validation loss as the reference.
    """
    rows = []
    traces = {"histories": {}, "thin": [variant for variant, settings in ABLATION.items() if settings],
              "references": {}}
    for variant, settings in ABLATION.items():
        trainer, result, _, _ = _run_al(name, hidden, data, budget, seed, dtype, threads, mu=mu, **settings)
        final = result.final
        rows.append({"problem": name, "variant": variant, "mu": mu, "iterations": final["iteration"],
                     "s_per_iteration": final["seconds"] / max(final["iteration"], 1),
                     "train_loss": final["train_loss"], "val_loss": final["val_loss"], "stop": result.stop_reason,
                     **_metrics(name, data, result.network)})
        traces["histories"][variant] = result.history
        traces["references"]["init (He + ridge output)"] = result.init_val_loss
        print(f"  [{name}] {variant}: val loss {final['val_loss']:.4g} after {final['iteration']} iterations",
              flush=True)
    return rows, traces


def _fmt(value, spec):
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def _table(header, lines) -> list[str]:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    return out + [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]


def format_tables(rows, timings, settings: str = "") -> str:
    header = ["problem", "method", "s", "iters", "train loss", "val loss", "val/AL", "PSNR tr", "PSNR val",
              "acc tr", "acc val"]
    lines = []
    al_val = {r["problem"]: r.get("val_loss") for r in rows if r["method"].startswith("AL")}
    for r in rows:
        reference = al_val.get(r["problem"])
        ratio = None if r.get("val_loss") is None or not reference else r["val_loss"] / reference
        lines.append([r["problem"], r["method"], _fmt(r.get("seconds"), ".1f"), str(r.get("iterations", "-")),
                      _fmt(r.get("train_loss"), ".4g"), _fmt(r.get("val_loss"), ".4g"), _fmt(ratio, ".3g"),
                      _fmt(r.get("train_psnr"), ".2f"), _fmt(r.get("val_psnr"), ".2f"),
                      _fmt(r.get("train_acc"), ".4f"), _fmt(r.get("val_acc"), ".4f")])
    out = ([settings] if settings else []) + _table(header, lines) + [""]
    header = ["problem", "AL sweep s", "AL iteration s", "torch fwd+bwd s", "sweep/fwd+bwd", "iteration/fwd+bwd",
              "AL peak MB (25 it.)", "state MB", "Anderson MB", "2x state + data + Anderson MB"]
    lines = []
    for t in timings:
        al = next(r for r in rows if r["problem"] == t["problem"] and r["method"].startswith("AL"))
        bound = 2 * al["state_mb"] + al["data_mb"] + al["anderson_mb"]
        lines.append([t["problem"], _fmt(t["sweep_s"], ".3g"), _fmt(t["iteration_s"], ".3g"),
                      _fmt(t["torch_fwd_bwd_s"], ".3g"), _fmt(t["ratio"], ".3g"), _fmt(t["iteration_ratio"], ".3g"),
                      _fmt(al["peak_mb"], ".1f"), _fmt(al["state_mb"], ".1f"), _fmt(al["anderson_mb"], ".1f"),
                      f"{bound:.1f}" + (" (within)" if al["peak_mb"] <= bound else " (EXCEEDED)")])
    return "\n".join(out + _table(header, lines))


def format_ablation(rows) -> str:
    header = ["problem", "variant", "iters", "s/iter", "train loss", "val loss", "PSNR val", "acc val", "stop"]
    lines = [[r["problem"], r["variant"], str(r["iterations"]), _fmt(r["s_per_iteration"], ".3g"),
              _fmt(r.get("train_loss"), ".4g"), _fmt(r.get("val_loss"), ".4g"), _fmt(r.get("val_psnr"), ".2f"),
              _fmt(r.get("val_acc"), ".4f"), r["stop"]] for r in rows]
    return "\n".join(_table(header, lines))


def _write_csv(path, rows):
    keys = sorted({k for r in rows for k in r})
    with options.atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def _plot(args, name, rows, traces, budget, suffix=""):
    """With ``--plot DIR``: the problem's figure, written as soon as its runs end."""
    if not args.plot:
        return
    from validation import figures

    figure = figures.bench_figure(name, rows, traces, budget=budget, threads=args.threads,
                                  detail=f"{args.dtype}" + (", AL variants" if suffix else ""))
    for path in figures.write(figure, os.path.join(args.plot, f"bench_train_{name}{suffix}.png"), svg=args.svg):
        print(f"wrote {path}", flush=True)


def _choose_mu(args, name, hidden, data, budget) -> float:
    """``μ`` of both methods on one problem: ``--mu``, else the cross-validated one (``--select-mu``), else
    :data:`PROBLEM_MU` or the trainer's default. Printed either way."""
    if args.mu is not None:
        mu, source = args.mu, "--mu"
    elif args.select_mu:
        from validation.model_selection import MU_GRID, cross_validate_mu, format_cv

        fit_budget = budget / 4
        print(f"[{name}] choosing mu by 5-fold cross-validation on the training split: {len(MU_GRID)} values x 5 "
              f"fits of {fit_budget:g} s (about {len(MU_GRID) * 5 * fit_budget / 60:.0f} min)", flush=True)
        labels = data.get("labels")
        result = cross_validate_mu(data["X"], data["Y"], hidden, budget=fit_budget, labels=labels, seed=args.seed,
                                   dtype=args.dtype, threads=args.threads,
                                   progress=lambda row: print(f"  mu={row['mu']:g}: mean {row['mean']:.4f}",
                                                              flush=True))
        print(format_cv(result, f"[{name}] cross-validation of mu (training split only)"), flush=True)
        mu, source = result["mu"], "5-fold cross-validation"
    else:
        mu = PROBLEM_MU.get(name, DEFAULT_MU)
        source = "PROBLEM_MU (chosen by --select-mu)" if name in PROBLEM_MU else "the trainer's default"
    print(f"[{name}] weight decay mu = {mu:g} for both methods ({source})", flush=True)
    return mu


def run(args) -> int:
    mode = "quick" if args.quick else "full"
    rows, timings, notes, ablation = [], [], [], []
    wanted = set(args.problems.split(",")) if args.problems else None
    known = {"teacher-student", "mnist-cs", "digits"}
    if wanted and not wanted <= known:
        raise ProblemError(f"Unknown problem(s) {sorted(wanted - known)} in --problems; choose from "
                           f"{', '.join(sorted(known))}.")
    options.check_plot_options(args)
    if args.csv:
        args.csv = options.output_file(args.csv, "--csv")
    threads = args.threads
    settings = (f"settings: dtype {args.dtype} for both methods; threads "
                f"{threads if threads else f'library default ({os.cpu_count()} cores)'} for both (BLAS for AL, "
                "torch intra-op for Adam); monitoring (validation losses) not charged to either budget")
    print(settings, flush=True)
    for name, hidden, data in _problems(mode):
        if wanted and name not in wanted:
            continue
        if data.get("note"):
            notes.append(data["note"])
        budget = args.budget if args.budget else BUDGETS[mode][name.split("-")[0]]
        print(f"[{name}] widths {(data['X'].shape[0], *hidden, data['Y'].shape[0])}, N={data['X'].shape[1]}, "
              f"budget {budget:g} s per method", flush=True)
        mu = _choose_mu(args, name, hidden, data, budget)
        if args.ablation:
            variant_rows, traces = ablation_one(name, hidden, data, budget, args.seed, args.dtype, threads, mu=mu)
            ablation += variant_rows
            _plot(args, name, [], traces, budget, "_ablation")
            continue
        problem_rows, timing, traces = bench_one(name, hidden, data, budget, args.seed, quick=args.quick,
                                                 dtype=args.dtype, threads=threads, mu=mu)
        rows += problem_rows
        timings.append(timing)
        _plot(args, name, problem_rows, traces, budget)
    if args.ablation:
        print(format_ablation(ablation))
        if args.csv:
            _write_csv(args.csv, ablation)
        return 0
    print(format_tables(rows, timings, settings))
    for note in notes:
        print("note:", note)
    for r in rows:
        if r.get("note"):
            print(f"note ({r['problem']}, {r['method']}): {r['note']}")
    if args.csv:
        _write_csv(args.csv, rows)
    return 0


def add_parser(inner) -> None:
    """Register ``train`` under ``unrelu bench``."""
    sub = inner.add_parser("train", help="AL training against Adam at equal wall-clock budget",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--quick", action="store_true", help="smaller data and budgets (about 1.5 minutes)")
    sub.add_argument("--budget", type=options.positive_float, default=None,
                     help="seconds per method and problem (default per problem)")
    sub.add_argument("--problems", default="", help="comma-separated subset of teacher-student,mnist-cs,digits")
    sub.add_argument("--seed", type=options.seed, default=0)
    sub.add_argument("--dtype", choices=DTYPES, default="float32",
                     help="floating type of both methods (default float32, the AL trainer's measured default)")
    sub.add_argument("--threads", type=options.positive_int, default=1,
                     help="BLAS threads for AL and torch intra-op threads for Adam (default 1: reproducible when "
                          "anything else runs on the machine; 2 uses both cores of a 2-core machine)")
    choice = sub.add_mutually_exclusive_group()
    choice.add_argument("--mu", type=options.nonnegative_float, default=None,
                        help="weight decay of both methods on every problem (default: "
                             + ", ".join(f"{mu:g} on {name}" for name, mu in PROBLEM_MU.items())
                             + f", chosen by --select-mu; the trainer's {DEFAULT_MU:g} elsewhere)")
    choice.add_argument("--select-mu", action="store_true",
                        help="choose mu per problem by 5-fold cross-validation on the training split (the "
                             "validation split is never seen), each fit a quarter of the problem's budget, then run")
    sub.add_argument("--ablation", action="store_true",
                     help="instead of AL vs Adam: every variant of the outer method (restarted/exact, penalty rule, "
                          "sweeps, over-relaxation, Anderson) at each problem's budget, one table")
    sub.add_argument("--plot", default="", metavar="DIR",
                     help="per problem, a figure of the validation loss of AL and Adam against seconds (with "
                          "--ablation: of every variant) with the initial network and ridge as references, and "
                          "PSNR / accuracy at the end of each run with the pyscnn points: DIR/bench_train_PROBLEM.png")
    sub.add_argument("--svg", action="store_true", help="also write each --plot figure as SVG")
    sub.add_argument("--csv", default=os.path.join("results", "bench_train.csv"),
                     help="CSV of the rows (default results/bench_train.csv)")
    sub.set_defaults(func=run)
