"""``unrelu bench train``: the AL method against Adam (PyTorch) with the same wall-clock budget.

Problems (same data, same initial network for both methods, in one process):

1. teacher-student regression, 2 x 64 hidden units, N = 4,000;
2. MNIST compressed sensing, y = A s with a Gaussian A (m = 100), MLP 100 -> 500 -> 784, the first
   8,000 images of t10k for training and the last 2,000 for validation (sklearn 8x8 digits when
   MNIST is absent; the table says so); PSNR is the mean over images with predictions clipped to
   [0, 1]; linear ridge is the reference (bar: AL >= ridge + 1 dB);
3. sklearn digits classification, 64 -> 100 -> 10, squared loss on one-hot targets, 70/30 split,
   with pyscnn's AL (convex ReLU) and R-FISTA (gated ReLU) solvers as the maintained peer when it is
   installed (`make scnn`; run to its own stopping rule, or within the budget with --quick).

Losses are forward-pass losses as fractions of the target variance. Also printed: the time of one
AL sweep against one full-batch forward+backward pass in PyTorch, and the peak traced memory of
the AL run against its state size.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
import tracemalloc
import warnings

import numpy as np

from formulation.results import ConvergenceWarning
from solvers.methods.al_trainer import ALTrainer
from validation.train_data import digits_classification, mnist_cs, psnr_images, ridge_fit, teacher_student

BUDGETS = {"full": {"teacher": 60.0, "mnist": 150.0, "digits": 20.0},
           "quick": {"teacher": 10.0, "mnist": 25.0, "digits": 5.0}}


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


def bench_one(name, hidden, data, budget, seed, quick=False):
    from validation.baselines.adam import full_batch_step_seconds, train_adam

    rows = []
    trainer = ALTrainer(hidden, seed=seed, max_iters=10**6, time_budget=budget, tol=0.0, progress=None)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = trainer.fit(data["X"], data["Y"], data["X_val"], data["Y_val"])
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    data_bytes = sum(data[k].nbytes for k in ("X", "Y", "X_val", "Y_val"))
    history = result.history
    sweep_s = (history[-1]["seconds"] - history[0]["seconds"]) / max(len(history) - 1, 1)
    scaler = result.standardizer
    start_net = scaler.unscale_network(trainer.initial_network(scaler.x(data["X"]), scaler.y(data["Y"])))
    rows.append({"problem": name, "method": "init (He + ridge output)", "seconds": 0.0, "iterations": 0,
                 "train_loss": result.init_train_loss, "val_loss": result.init_val_loss,
                 **_metrics(name, data, start_net)})
    rows.append({"problem": name, "method": "AL", "seconds": wall, "iterations": history[-1]["iteration"],
                 "train_loss": history[-1]["train_loss"], "val_loss": history[-1]["val_loss"],
                 "violation": history[-1]["violation"], "kkt": history[-1]["kkt"], "rho": history[-1]["rho"],
                 "peak_mb": peak / 2**20, "state_mb": result.state_bytes / 2**20, "data_mb": data_bytes / 2**20,
                 **_metrics(name, data, result.network)})
    adam = train_adam(data["X"], data["Y"], data["X_val"], data["Y_val"], hidden=hidden, seed=seed,
                      time_budget=budget)
    rows.append({"problem": name, "method": "Adam", "seconds": adam["history"][-1]["seconds"],
                 "iterations": adam["epochs"], "train_loss": adam["history"][-1]["train_loss"],
                 "val_loss": adam["history"][-1]["val_loss"], **_metrics(name, data, adam["network"])})
    if name == "mnist-cs":
        train_pred, val_pred = ridge_fit(data["X"], data["Y"], data["X_val"])
        rows.append({"problem": name, "method": "ridge (linear)", "seconds": 0.0, "iterations": 0,
                     "train_psnr": psnr_images(train_pred, data["Y"]),
                     "val_psnr": psnr_images(val_pred, data["Y_val"])})
    if name == "digits":  # the maintained peer, when installed (`make scnn`); a hint row otherwise
        from validation.bench_scnn import run_scnn

        rows += run_scnn(data, hidden=hidden[0], seed=seed, max_seconds=budget if quick else None)
    scaled_x, scaled_y = scaler.x(data["X"]), scaler.y(data["Y"])
    torch_s = full_batch_step_seconds(scaler.scale_network(result.network), scaled_x, scaled_y)
    timing = {"problem": name, "al_sweep_s": sweep_s, "torch_fwd_bwd_s": torch_s, "ratio": sweep_s / torch_s}
    return rows, timing


def _fmt(value, spec):
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def format_tables(rows, timings) -> str:
    header = ["problem", "method", "s", "iters", "train loss", "val loss", "val/AL", "PSNR tr", "PSNR val",
              "acc tr", "acc val"]
    lines = []
    al_val = {r["problem"]: r.get("val_loss") for r in rows if r["method"] == "AL"}
    for r in rows:
        reference = al_val.get(r["problem"])
        ratio = None if r.get("val_loss") is None or not reference else r["val_loss"] / reference
        lines.append([r["problem"], r["method"], _fmt(r.get("seconds"), ".1f"), str(r.get("iterations", "-")),
                      _fmt(r.get("train_loss"), ".4g"), _fmt(r.get("val_loss"), ".4g"), _fmt(ratio, ".3g"),
                      _fmt(r.get("train_psnr"), ".2f"), _fmt(r.get("val_psnr"), ".2f"),
                      _fmt(r.get("train_acc"), ".3f"), _fmt(r.get("val_acc"), ".3f")])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    out.append("")
    out.append("problem         | AL sweep s | torch fwd+bwd s (full batch) | ratio | AL peak MB | state MB | "
               "2x state + data MB")
    for t in timings:
        al = next(r for r in rows if r["problem"] == t["problem"] and r["method"] == "AL")
        bound = 2 * al["state_mb"] + al["data_mb"]
        out.append(f"{t['problem']:<15} | {t['al_sweep_s']:<10.3g} | {t['torch_fwd_bwd_s']:<28.3g} | "
                   f"{t['ratio']:<5.3g} | {al['peak_mb']:<10.1f} | {al['state_mb']:<8.1f} | {bound:.1f}"
                   + ("  (within)" if al["peak_mb"] <= bound else "  (EXCEEDED)"))
    return "\n".join(out)


def run(args) -> int:
    mode = "quick" if args.quick else "full"
    rows, timings, notes = [], [], []
    wanted = set(args.problems.split(",")) if args.problems else None
    for name, hidden, data in _problems(mode):
        if wanted and name not in wanted:
            continue
        if data.get("note"):
            notes.append(data["note"])
        budget = args.budget if args.budget else BUDGETS[mode][name.split("-")[0]]
        print(f"[{name}] widths {(data['X'].shape[0], *hidden, data['Y'].shape[0])}, N={data['X'].shape[1]}, "
              f"budget {budget:g} s per method", flush=True)
        problem_rows, timing = bench_one(name, hidden, data, budget, args.seed, quick=args.quick)
        rows += problem_rows
        timings.append(timing)
    print(format_tables(rows, timings))
    for note in notes:
        print("note:", note)
    for r in rows:
        if r.get("note"):
            print(f"note ({r['problem']}, {r['method']}): {r['note']}")
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        keys = sorted({k for r in rows for k in r})
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


def add_parser(inner) -> None:
    """Register ``train`` under ``unrelu bench``."""
    sub = inner.add_parser("train", help="AL training against Adam at equal wall-clock budget",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--quick", action="store_true", help="smaller data and budgets (about 1.5 minutes)")
    sub.add_argument("--budget", type=float, default=0.0, help="seconds per method and problem (default per problem)")
    sub.add_argument("--problems", default="", help="comma-separated subset of teacher-student,mnist-cs,digits")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--csv", default=os.path.join("results", "bench_train.csv"))
    sub.set_defaults(func=run)
