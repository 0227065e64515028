r"""``unrelu verify``: the numerical proof that relaxing the activations preserves the optimum (DESIGN §2, §5).

For every instance (a seeded random network with fixed weights, or the user's ``--network``):

1. build a reference problem: generative-prior recovery ``min_c ||A G(c) − y||`` (l1: MILP, l2: MIQP),
   an output bound ``max e_kᵀ G(c)`` (MILP), or tiny training of ``Σ_j s_j ReLU(w_jᵀx + b_j)`` with
   ``s_j = ±1`` and ``|W_1|, |b_1| ≤ B`` (MIQP, one per number ``p`` of ``+1`` output weights);
2. solve version (i), binary ``d`` with big-M, with every installed mixed-integer backend that takes it;
3. solve version (ii), ``d ∈ [0,1]``, ``x = d z``, ``d z ≥ 0``, ``(1 − d) z ≤ 0``, globally with SCIP;
4. round the relaxed solution, ``d̂ = 1[z > 0]``, and check it is feasible for (i) with the same
   objective (re-checked by a float64 forward pass);
5. run the local AL method on the relaxed problem from K random starts (and Adam for training), and
   report their gaps to the certified optimum.

The relaxation preserved the optimum on an instance when SCIP proved (ii) optimal and every MI backend
that proved (i) optimal agrees with it: ``|a − b| ≤ 1e-6 max(|a|, |b|) + 1e-8`` (the absolute floor is for
optima at 0, an exact fit); when a solve stopped early, when the certified intervals ``[bound, incumbent]``
overlap. The table's "rel diff" is ``|a − b| / max(|a|, |b|, 1e-9)``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import warnings
import zipfile

import numpy as np

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import ProblemError, SolutionStatus, TerminationCondition
from solvers.relaxed_al import RelaxedAL

MI_BACKENDS = ("HIGHS", "SCIP", "ECOS_BB")
REL_TOL = 1e-6
#: Absolute floor of the agreement test, for optima at 0 (an exact fit): 10x SCIP's feasibility tolerance
#: 1e-9, which is how far below 0 a relaxed l1 objective can go (-8.7e-10 measured).
ABS_TOL = 1e-8
DEFAULT_INSTANCES = 24
KINDS = ("recovery", "bound", "training")


# ====================================================================== instances
def default_specs(count: int, seed: int) -> list[dict]:
    """The embedded verification set: ``count`` seeded instances cycling recovery, bound, training.

    Networks have 1-3 hidden layers of width 2-12 and 2-6 inputs, with at most 14 hidden units in all
    (the global bilinear solve grows much faster than the MILP, DESIGN §5). Training instances have
    2-6 inputs, 4-6 samples and 2 hidden units (2 x N binaries per sign split).
    """
    rng = np.random.default_rng(seed)
    specs = []
    for index in range(count):
        kind = KINDS[index % 3]
        instance_seed = int(rng.integers(0, 2**31 - 1))
        n0 = int(rng.integers(2, 7))
        if kind == "training":
            specs.append({"id": index, "kind": kind, "seed": instance_seed, "n0": n0,
                          "samples": int(rng.integers(4, 7)), "hidden": 2, "weight_bound": 1.0})
            continue
        depth = int(rng.integers(1, 4))
        budget = 14
        widths = []
        for layer in range(depth):
            remaining_layers = depth - layer - 1
            high = min(12, budget - 2 * remaining_layers)
            width = int(rng.integers(2, high + 1))
            widths.append(width)
            budget -= width
        n_out = int(rng.integers(1, 4))
        # more measurements than inputs, so that the noisy y is off the range of A G and the optimum is > 0
        specs.append({"id": index, "kind": kind, "seed": instance_seed, "widths": [n0, *widths, n_out],
                      "measurements": int(rng.integers(n0 + 1, n0 + 4)), "box": 1.0})
    return specs


def build_instance(spec: dict, *, loss: str, tighten: bool):
    """The reference problem of ``spec`` (networks and data drawn from ``spec['seed']``)."""
    rng = np.random.default_rng(spec["seed"])
    if spec["kind"] == "training":
        X0 = rng.uniform(-1, 1, size=(spec["n0"], spec["samples"]))
        Y = rng.normal(size=spec["samples"])
        return mi.TinyTraining(X0, Y, spec["hidden"], weight_bound=spec["weight_bound"])
    network = ReluNetwork.random(spec["widths"], seed=rng)
    box = spec["box"]
    if spec["kind"] == "recovery":
        A = rng.normal(size=(spec["measurements"], spec["widths"][-1]))
        c_true = rng.uniform(-box, box, size=spec["widths"][0])
        y = A @ network.forward(c_true[:, None])[:, 0] + 0.1 * rng.normal(size=A.shape[0])
        return mi.GenerativeRecovery(network, A, y, box, loss=loss, tighten=tighten)
    return mi.OutputBound(network, box, k=int(rng.integers(0, spec["widths"][-1])), sense="max", tighten=tighten)


# ====================================================================== solving
def forms(problem):
    """[(p, MixedIntegerModel)]: one per sign split for training, one otherwise."""
    if isinstance(problem, mi.TinyTraining):
        return list(enumerate(problem.models))
    return [(None, problem.model)]


def _forward_objective(problem, p, v):
    if isinstance(problem, mi.TinyTraining):
        return problem.evaluate(*problem.weights_of(p, v), p)
    return problem.evaluate(problem.input_of(v))


def _better(problem, a: float, b: float) -> bool:
    return a > b if getattr(problem, "sense", "min") == "max" else a < b


def solve_version(problem, backend: str, relaxed: bool, time_limit: float) -> dict:
    """Solve (i) or (ii) of every sign split; combine into the optimum over splits."""
    parts, total = [], 0.0
    best = None
    for p, model in forms(problem):
        form = mi.RelaxedForm(model) if relaxed else mi.BinaryForm(model)
        solution = solvers.solve(form, backend, time_limit=time_limit)
        total += solution.solve_time + solution.build_time
        part = {"p": p, "termination": solution.termination.value, "status": solution.status.value,
                "objective": solution.objective, "bound": solution.bound, "seconds": solution.solve_time}
        if solution.found:
            part["forward_objective"] = _forward_objective(problem, p, solution.values["v"])
            if relaxed:
                check = mi.rounding_check(model, solution.values["v"], part["forward_objective"])
                part["rounding_ok"] = check.feasible
                part["rounding_violation"] = check.violation
            if best is None or _better(problem, solution.objective, best[1]):
                best = (p, solution.objective)
        parts.append(part)
    optimal = all(part["status"] == SolutionStatus.OPTIMAL.value for part in parts)
    # the certified interval over splits: min over p of incumbents and of bounds (max problems: max)
    maximise = getattr(problem, "sense", "min") == "max"
    pick = max if maximise else min
    incumbents = [part["objective"] for part in parts if part["status"] != SolutionStatus.NO_SOLUTION.value]
    bounds = [part["bound"] for part in parts]
    bound = pick(bounds) if bounds and all(b is not None for b in bounds) else None
    terminations = {part["termination"] for part in parts}
    return {
        "backend": backend, "optimal": optimal,
        "termination": "optimal" if optimal else "/".join(sorted(terminations)),
        "objective": pick(incumbents) if len(incumbents) == len(parts) else float("nan"),
        "bound": bound, "best_p": None if best is None else best[0], "seconds": total, "parts": parts,
        "rounding_ok": all(part.get("rounding_ok", False) for part in parts) if relaxed else None,
    }


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-9)


def _overlap(problem, x: dict, y: dict) -> bool:
    """Whether the certified intervals [bound, incumbent] of two results overlap."""
    if x["bound"] is None or y["bound"] is None or not np.isfinite(x["objective"]) or not np.isfinite(y["objective"]):
        return False
    lo_x, hi_x = sorted((x["bound"], x["objective"]))
    lo_y, hi_y = sorted((y["bound"], y["objective"]))
    slack = 1e-9 * max(1.0, abs(x["objective"]))
    return lo_x <= hi_y + slack and lo_y <= hi_x + slack


def run_local(problem, starts: int, rng: np.random.Generator) -> list[float]:
    """Forward objective of the AL method from each of ``starts`` random ``θ_0`` (best split for training)."""
    method = RelaxedAL()
    results = []
    for _ in range(starts):
        if isinstance(problem, mi.TinyTraining):
            method._setup(problem, 0)
            theta = method.random_theta(rng)
            values = [method.run(problem, theta, p=p).objective for p in range(problem.hidden + 1)]
            results.append(min(values))
        else:
            method._setup(problem, None)
            results.append(method.run(problem, method.random_theta(rng)).objective)
    return results


def run_adam(problem: mi.TinyTraining, starts: int, rng: np.random.Generator, steps: int = 1500,
             lr: float = 0.02) -> list[float] | None:
    """Projected Adam on ``(W_1, b_1)`` for every split ``p`` and start at once (Adam is elementwise, so
    summing independent losses is the same as independent runs); best split per start."""
    try:
        import torch
    except ImportError:
        return None
    m, n0 = problem.hidden, problem.X0.shape[0]
    P, B = m + 1, problem.weight_bound
    torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
    W = torch.tensor(rng.uniform(-B, B, size=(1, starts, m, n0)).repeat(P, axis=0), requires_grad=True)
    b = torch.tensor(rng.uniform(-B, B, size=(1, starts, m, 1)).repeat(P, axis=0), requires_grad=True)
    X = torch.tensor(problem.X0)
    Y = torch.tensor(problem.Y)
    signs = torch.tensor(np.stack([problem.signs(p) for p in range(P)]))[:, None, :, None]
    optimizer = torch.optim.Adam([W, b], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        output = (signs * torch.relu(W @ X + b)).sum(dim=2)  # (P, K, N)
        loss = ((output - Y) ** 2).sum()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            W.clamp_(-B, B)
            b.clamp_(-B, B)
    Wn, bn = W.detach().numpy(), b.detach().numpy()
    return [min(problem.evaluate(Wn[p, k], bn[p, k, :, 0], p) for p in range(P)) for k in range(starts)]


def _gap(problem, value: float, optimum: float) -> float:
    """Local value minus the certified optimum in the problem's sense (≥ 0 up to tolerance)."""
    return (optimum - value) if getattr(problem, "sense", "min") == "max" else (value - optimum)


def verify_instance(spec: dict, problem, *, backends, time_limit: float, starts: int, rng, adam: bool) -> dict:
    row = {"spec": spec, "kind": problem.kind}
    if isinstance(problem, mi.TinyTraining):
        row["size"] = f"{problem.X0.shape[0]}-{problem.hidden}-1 N={problem.X0.shape[1]}"
        row["binaries"] = sum(model.n_binary for model in problem.models)
    else:
        row["size"] = "-".join(map(str, problem.network.widths))
        row["binaries"] = problem.model.n_binary
        row["bounds"] = {"method": problem.bounds.method, "seconds": problem.bounds.seconds,
                         "lp_solves": problem.bounds.lp_solves, "mean_width": problem.bounds.mean_width(),
                         **problem.bounds.hidden_counts()}
        if problem.bounds.method == "lp":
            interval = mi.interval_bounds(problem.network, problem.box_lower, problem.box_upper)
            row["bounds"]["interval_mean_width"] = interval.mean_width()
            row["bounds"]["interval_unstable"] = interval.hidden_counts()["unstable"]
    requires = forms(problem)[0][1].requires
    row["mi"] = {}
    for name in backends:
        backend = solvers.get_backend(name)
        if requires not in backend.capabilities:
            continue
        row["mi"][name] = solve_version(problem, name, relaxed=False, time_limit=time_limit)
    row["relaxed"] = solve_version(problem, "SCIP", relaxed=True, time_limit=time_limit)
    relaxed = row["relaxed"]
    optimal_mi = [r for r in row["mi"].values() if r["optimal"]]
    differences = [abs(r["objective"] - relaxed["objective"]) for r in optimal_mi]
    relatives = [relative_difference(r["objective"], relaxed["objective"]) for r in optimal_mi]
    row["abs_diff"] = max(differences) if differences else float("nan")
    row["rel_diff"] = max(relatives) if relatives else float("nan")
    # MI results that neither proved optimality nor carry a bound (e.g. ECOS_BB flagged inaccurate) are
    # shown in the table but cannot certify anything, so they do not enter the verdict
    stopped = [r for r in row["mi"].values() if not r["optimal"] and r["bound"] is not None]
    agree = all(abs(r["objective"] - relaxed["objective"])
                <= REL_TOL * max(abs(r["objective"]), abs(relaxed["objective"])) + ABS_TOL for r in optimal_mi)
    if relaxed["optimal"] and optimal_mi and not stopped:
        row["preserved"] = agree
        row["verdict"] = "yes" if agree else "NO"
    else:
        overlaps = [_overlap(problem, r, relaxed) for r in stopped + optimal_mi]
        row["preserved"] = bool(overlaps) and all(overlaps) and agree
        row["verdict"] = "gap" if row["preserved"] else "NO"
    # the certified optimum: the relaxed global optimum when proven, else the best proven MI one
    certified = relaxed["objective"] if relaxed["optimal"] else (optimal_mi[0]["objective"] if optimal_mi else None)
    row["certified"] = certified
    start = time.perf_counter()
    row["al"] = run_local(problem, starts, rng) if starts else []
    row["al_seconds"] = time.perf_counter() - start
    if certified is not None and row["al"]:
        gaps = [_gap(problem, value, certified) for value in row["al"]]
        row["al_gaps"] = gaps
        row["al_best_gap"], row["al_median_gap"] = min(gaps), statistics.median(gaps)
    if adam and isinstance(problem, mi.TinyTraining) and starts:
        start = time.perf_counter()
        values = run_adam(problem, starts, rng)
        row["adam_seconds"] = time.perf_counter() - start
        if values is not None:
            row["adam"] = values
            if certified is not None:
                row["adam_gaps"] = [_gap(problem, value, certified) for value in values]
                row["adam_best_gap"] = min(row["adam_gaps"])
    return row


# ====================================================================== output
def _number(value, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _result_cell(result: dict | None) -> str:
    if result is None:
        return "n/a"
    text = _number(result["objective"], 7)
    return text if result["optimal"] else f"{text} ({result['termination']}, bd {_number(result['bound'], 5)})"


def format_table(rows: list[dict], backends) -> str:
    header = ["#", "problem", "size", "bin", *backends, "relaxed (SCIP)", "abs diff", "rel diff", "same", "round",
              "AL best", "AL med", "AL gap", "Adam gap", *[f"t {b}" for b in backends], "t rel", "t AL"]
    lines = []
    for row in rows:
        lines.append([
            str(row["spec"]["id"]), row["kind"], row["size"], str(row["binaries"]),
            *[_result_cell(row["mi"].get(b)) for b in backends],
            _result_cell(row["relaxed"]), _number(row["abs_diff"], 2), _number(row["rel_diff"], 2), row["verdict"],
            "ok" if row["relaxed"]["rounding_ok"] else "FAIL",
            _number(max(row["al"]) if row["kind"] == "bound" and row["al"] else
                    (min(row["al"]) if row["al"] else None), 6),
            _number(statistics.median(row["al"]) if row["al"] else None, 6),
            _number(row.get("al_best_gap"), 2), _number(row.get("adam_best_gap"), 2),
            *[_number(row["mi"][b]["seconds"], 2) if b in row["mi"] else "-" for b in backends],
            _number(row["relaxed"]["seconds"], 2), _number(row["al_seconds"], 2),
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def summary_line(rows: list[dict]) -> str:
    n = len(rows)
    preserved = sum(row["preserved"] for row in rows)
    # relative differences are meaningless at an optimum of 0 (an exact fit): report those as absolute
    zero = [row for row in rows if row["certified"] is not None and abs(row["certified"]) < 1e-6]
    relatives = [row["rel_diff"] for row in rows if np.isfinite(row["rel_diff"]) and row not in zero]
    absolutes = [row["abs_diff"] for row in zero if np.isfinite(row["abs_diff"])]
    rounding = sum(bool(row["relaxed"]["rounding_ok"]) for row in rows)
    max_rel = f"{max(relatives):.1e}" if relatives else "n/a"
    at_zero = f"; {len(zero)} optima at 0: max abs diff {max(absolutes):.1e}" if absolutes else ""
    return (f"{n} instances: relaxation preserved the optimum on {preserved}/{n} "
            f"(max rel diff {max_rel}{at_zero}); rounding d=1[z>0] feasible with the same objective on {rounding}/{n}")


def extra_summary(rows: list[dict]) -> list[str]:
    lines = []
    al = [g for row in rows for g in row.get("al_gaps", [])]
    if al:
        found = sum(g <= 1e-6 * max(1.0, abs(row["certified"])) for row in rows for g in row.get("al_gaps", []))
        lines.append(f"AL local method: {len(al)} runs, median gap {statistics.median(al):.3g}, "
                     f"reached the certified optimum (gap <= 1e-6) on {found}/{len(al)} runs")
    adam = [g for row in rows for g in row.get("adam_gaps", [])]
    if adam:
        found = sum(g <= 1e-6 * max(1.0, abs(row["certified"])) for row in rows for g in row.get("adam_gaps", []))
        lines.append(f"Adam (training): {len(adam)} runs, median gap {statistics.median(adam):.3g}, "
                     f"reached the certified optimum on {found}/{len(adam)} runs")
    timing = {}
    for row in rows:
        for name, result in row["mi"].items():
            timing.setdefault(name, []).append(result["seconds"])
        timing.setdefault("SCIP relaxed", []).append(row["relaxed"]["seconds"])
    lines.append("solve time total: " + ", ".join(f"{k} {sum(v):.1f} s" for k, v in timing.items()))
    tightened = [row["bounds"] for row in rows if row.get("bounds", {}).get("method") == "lp"]
    if tightened:
        ratio = statistics.mean(b["mean_width"] / b["interval_mean_width"] for b in tightened
                                if b["interval_mean_width"] > 0)
        removed = sum(b["interval_unstable"] - b["unstable"] for b in tightened)
        lines.append(f"LP bound tightening: mean hidden width {ratio:.2f}x of interval, {removed} binaries removed, "
                     f"{sum(b['seconds'] for b in tightened):.1f} s in {sum(b['lp_solves'] for b in tightened)} LPs")
    return lines


def write_plots(rows: list[dict], directory: str, backends) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name in backends:
        pts = [(r["mi"][name]["objective"], r["relaxed"]["objective"]) for r in rows if name in r["mi"]]
        if pts:
            ax.scatter(*zip(*pts), label=name, s=18, alpha=0.7)
    values = [r["relaxed"]["objective"] for r in rows if np.isfinite(r["relaxed"]["objective"])]
    if values:
        lo, hi = min(values), max(values)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("MI optimum, binary d (i)")
    ax.set_ylabel("relaxed global optimum, d in [0,1] (ii)")
    ax.set_title("relaxation preserves the optimum")
    ax.legend()
    paths.append(os.path.join(directory, "mi_vs_relaxed.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    floor = 1e-10
    for key, label in (("al_gaps", "AL (relaxed, local)"), ("adam_gaps", "Adam (training)")):
        gaps = [max(g / max(1.0, abs(r["certified"])), floor) for r in rows for g in r.get(key, [])]
        if gaps:
            ax.hist(np.log10(gaps), bins=30, alpha=0.6, label=label)
    ax.set_xlabel("log10 relative gap to the certified optimum (floored at 1e-10)")
    ax.set_ylabel("runs")
    ax.legend()
    paths.append(os.path.join(directory, "local_gaps.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in [*backends, "SCIP relaxed"]:
        pts = [(r["binaries"], (r["relaxed"] if name == "SCIP relaxed" else r["mi"][name])["seconds"])
               for r in rows if name == "SCIP relaxed" or name in r["mi"]]
        if pts:
            ax.scatter(*zip(*pts), label=name, s=18, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("binaries (unstable units, all sign splits)")
    ax.set_ylabel("solve time [s]")
    ax.legend()
    paths.append(os.path.join(directory, "solve_times.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


# ====================================================================== user files
def load_array(path: str, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    """A ``.npy`` file as a float array, with a ProblemError naming ``name`` and the fix."""
    if not os.path.exists(path):
        raise ProblemError(f"{name} file {path!r} does not exist; save it with `np.save({path!r}, {name})`.")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ProblemError(
            f"{name} file {path!r} is not a readable .npy array ({exc}); save a numeric array with `np.save`."
        ) from exc
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise ProblemError(f"{name} file {path!r} is an .npz archive; save the single array with `np.save`.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ProblemError(f"{name} file {path!r} holds dtype {array.dtype}; it must be a real numeric array.")
    if array.ndim not in ndim:
        allowed = " or ".join(map(str, ndim))
        raise ProblemError(f"{name} file {path!r} has shape {array.shape}; {name} must have {allowed} dimension(s).")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ProblemError(f"{name} file {path!r} has NaN or inf entries; remove them.")
    return array


def user_problem(args, rng: np.random.Generator):
    network = ReluNetwork.load(args.network)
    box = float(args.box)
    if not np.isfinite(box) or box <= 0:
        raise ProblemError(f"--box must be positive and finite, got {args.box}.")
    if args.problem == "recovery":
        if not args.A or not args.y:
            raise ProblemError("--problem recovery needs --A A.npy (shape (m, n_L)) and --y y.npy (shape (m,)).")
        A = load_array(args.A, "A", (1, 2))
        y = load_array(args.y, "y", (1, 2))
        if A.ndim == 1:
            A = A[None, :]
        if A.shape[1] != network.widths[-1]:
            raise ProblemError(f"A from {args.A!r} has shape {A.shape} but the network {args.network!r} has "
                               f"{network.widths[-1]} outputs: A needs {network.widths[-1]} columns.")
        if y.size != A.shape[0] or (y.ndim == 2 and 1 not in y.shape):
            raise ProblemError(f"y from {args.y!r} has shape {y.shape} but A from {args.A!r} has {A.shape[0]} rows: "
                               f"y needs {A.shape[0]} entries.")
        return mi.GenerativeRecovery(network, A, y.ravel(), box, loss=args.loss, tighten=args.tighten)
    if args.problem == "bound":
        return mi.OutputBound(network, box, k=args.k, sense=args.sense, tighten=args.tighten)
    # training: the user's network is the teacher of a tiny student with its first hidden width
    if network.depth != 2 or network.widths[-1] != 1:
        raise ProblemError(f"--problem training takes a two-layer scalar-output teacher network (n0-m-1); "
                           f"{args.network!r} has widths {network.widths}.")
    X0 = rng.uniform(-box, box, size=(network.widths[0], args.samples))
    Y = network.forward(X0)[0]
    bound = args.weight_bound or float(max(np.max(np.abs(network.weights[0])), np.max(np.abs(network.biases[0]))))
    return mi.TinyTraining(X0, Y, network.widths[1], weight_bound=bound)


# ====================================================================== command
def installed_mi_backends(requested: str = "") -> list[str]:
    names = requested.split(",") if requested else [b for b in MI_BACKENDS if b in solvers.available_backends()]
    for name in names:
        solvers.get_backend(name)  # SolverNotFound with the install command
    if "SCIP" not in solvers.available_backends():
        solvers.get_backend("SCIP")  # the relaxed model needs SCIP: raise with the install hint
    return names


def single_threaded():
    """One BLAS and one torch thread: the arrays here are tiny, and on a busy 2-core machine threaded
    BLAS made the AL 50x slower (measured: 19 s against 0.34 s CPU for 5 runs)."""
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - it comes with scipy's usual stack
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(1)


def run(args) -> int:
    with single_threaded():
        try:
            import torch
        except ImportError:
            torch = None
        threads = torch.get_num_threads() if torch is not None else None
        if torch is not None:
            torch.set_num_threads(1)
        try:
            return _run(args)
        finally:
            if torch is not None:
                torch.set_num_threads(threads)


#: Figures stored per case by the study runner: the whole row as JSON, and two scalars to query.
CASE_FIGURES = {"row": "TEXT", "preserved": "INTEGER", "rel_diff": "REAL"}


def run_case(case) -> dict:
    """Runner entry point: one embedded instance (``case.problem`` is its spec).

    ``case.settings`` holds ``loss``, ``tighten``, ``time_limit``, ``starts``, ``adam`` and the
    MI ``backends``; the row is the one :func:`verify_instance` returns, stored as JSON.
    """
    settings = case.settings
    spec = case.problem
    with single_threaded():
        problem = build_instance(spec, loss=settings["loss"], tighten=settings["tighten"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            row = verify_instance(spec, problem, backends=settings["backends"], time_limit=settings["time_limit"],
                                  starts=settings["starts"], rng=np.random.default_rng([case.seed, spec["id"]]),
                                  adam=settings["adam"])
    return {"row": json.dumps(row, default=_json_default), "preserved": int(bool(row["preserved"])),
            "rel_diff": row["rel_diff"]}


def _run_default_set(args, backends) -> tuple[list[dict], list[str]]:
    """The embedded instances through the study runner: stored as they finish, resumable."""
    from validation.runner import Case, Study, default_store, read_results, run_study

    settings = {"loss": args.loss, "tighten": args.tighten, "time_limit": args.time_limit, "starts": args.starts,
                "adam": not args.no_adam, "backends": backends}
    cases = [Case(problem=spec, backend="+".join(backends), settings=settings, seed=args.seed)
             for spec in default_specs(args.instances, args.seed)]
    study = Study("verify", cases, run="validation.verify:run_case", figures=CASE_FIGURES)
    store = args.store or default_store(study.name)
    summary = run_study(study, store=store, workers=args.workers, scheduler=args.scheduler,
                        case_timeout=args.case_timeout)
    if summary.skipped:
        print(f"{summary.skipped} of {summary.total} instances were already in {store}; "
              "delete it or pass --store to run them again")
    wanted = {case.case_id: index for index, case in enumerate(cases)}
    rows, failures = [None] * len(cases), []
    for stored in read_results(store, study.name):
        index = wanted.get(stored["case_id"])
        if index is None:
            continue
        if stored["status"] == "ok":
            rows[index] = json.loads(stored["row"])
        else:
            failures.append(f"instance {cases[index].problem['id']}: {stored['status']}: {stored['message']}")
    return [row for row in rows if row is not None], failures


def _run(args) -> int:
    backends = installed_mi_backends(args.backends)
    if args.instances < 1:
        raise ProblemError(f"--instances must be at least 1, got {args.instances}.")
    started = time.perf_counter()
    failures = []
    if args.network:
        spec = {"id": 0, "kind": args.problem, "seed": args.seed, "file": args.network}
        problem = user_problem(args, np.random.default_rng(args.seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            rows = [verify_instance(spec, problem, backends=backends, time_limit=args.time_limit, starts=args.starts,
                                    rng=np.random.default_rng([args.seed, spec["id"]]), adam=not args.no_adam)]
    else:
        rows, failures = _run_default_set(args, backends)
    elapsed = time.perf_counter() - started
    print(format_table(rows, backends))
    print()
    for line in extra_summary(rows):
        print(line)
    print(f"wall time {elapsed:.1f} s")
    print(summary_line(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k != "func"}, "backends": backends,
                       "wall_seconds": elapsed, "summary": summary_line(rows), "rows": rows},
                      handle, indent=1, default=_json_default)
        print(f"wrote {args.json}")
    if args.plot:
        for path in write_plots(rows, args.plot, backends):
            print(f"wrote {path}")
    for line in failures:
        print(f"FAILED {line}")
    return 0 if not failures and all(row["preserved"] and row["relaxed"]["rounding_ok"] for row in rows) else 1


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (TerminationCondition, SolutionStatus)):
        return value.value
    raise TypeError(f"cannot serialise {type(value).__name__}")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="prove numerically that relaxing d to [0,1] preserves the optimum (MI vs bilinear)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=DEFAULT_INSTANCES,
                        help=f"number of embedded random instances (default {DEFAULT_INSTANCES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the instance set and the local starts")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per MI / global solve (default 30)")
    parser.add_argument("--tighten", action="store_true", help="LP-based bound tightening (HiGHS) instead of interval")
    parser.add_argument("--loss", choices=("l1", "l2"), default="l1", help="recovery loss: l1 (MILP) or l2 (MIQP)")
    parser.add_argument("--starts", type=int, default=5, help="random starts of the AL method and Adam (default 5)")
    parser.add_argument("--backends", default="",
                        help=f"comma-separated MI backends (default: the installed ones of {MI_BACKENDS})")
    parser.add_argument("--no-adam", action="store_true", help="skip the Adam baseline of the training problems")
    parser.add_argument("--json", default="", help="write every result to this JSON file")
    parser.add_argument("--plot", default="", help="write plots (PNG) to this directory")
    study = parser.add_argument_group("running the embedded set as a resumable study")
    study.add_argument("--store", default="",
                       help="SQLite results store; finished instances are kept and skipped on a rerun "
                            "(default results/verify.sqlite)")
    study.add_argument("--workers", type=int, default=1, help="instances at once in local processes (default 1)")
    study.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT", help="run the instances on Dask")
    study.add_argument("--case-timeout", type=float, default=None, metavar="SECONDS",
                       help="stop an instance after this long and record it as timeout")
    user = parser.add_argument_group("your own network")
    user.add_argument("--network", default="", help="network .npz (W1, b1, ..., WL, bL) instead of the random set")
    user.add_argument("--problem", choices=KINDS, default="recovery", help="reference problem for --network")
    user.add_argument("--A", default="", help="measurement matrix A.npy, shape (m, n_L) (recovery)")
    user.add_argument("--y", default="", help="measurements y.npy, shape (m,) (recovery)")
    user.add_argument("--box", type=float, default=1.0, help="input box [-B, B] (default 1)")
    user.add_argument("--k", type=int, default=0, help="output index of the bound problem (default 0)")
    user.add_argument("--sense", choices=("max", "min"), default="max", help="bound problem: max or min")
    user.add_argument("--samples", type=int, default=6, help="training: samples drawn in the box (default 6)")
    user.add_argument("--weight-bound", type=float, default=0.0,
                      help="training: |W1|,|b1| bound (default: the teacher's largest first-layer entry)")
    parser.set_defaults(func=run)
