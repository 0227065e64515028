"""``unrelu compare-solvers``: every capable backend on every AL block, judged by our own checks.

For every subproblem family (DESIGN §3) over seeded random instances of growing size, each
installed backend that can take the family is run and judged by OUR residual checks, not by
the status it claims:

* the canonical primal solution against the closed form (for ``output_softmax``, which has
  none, against a damped-Newton reference converged to a gradient below 1e-11), relative to
  ``max(1, max |x_ref|)``;
* the objective, computed by us from the returned point, against the reference objective,
  relative to ``max(1, |f_ref|)``;
* ``sub.infeasibility`` (violation of the block's bounds) at most 1e-9.

The tolerances are those of the contract test (``tests/test_foundation_contract.py``): each backend
states its own ``accuracy`` in its module (``solvers.Accuracy``). A case succeeds when all three
checks pass. A CVXPY case that the memory guard refuses before building anything (its estimated
build memory above ``--memory-budget`` or the available memory) is skipped, with its estimate: it
is neither a success nor a failure.

Each case (``validation.solver_study.solve_case``, the same engine as ``unrelu bench subproblems``)
builds the model, solves one warm-up instance (this is the build cost, CVXPY's canonicalisation
included), sets the parameters of the evaluated instance and times that re-solve. Cases run through
``validation.runner``: in local worker processes or on a Dask cluster, written one row at a time to
SQLite, so an interrupted study resumes where it stopped.

Output: a table per (block, backend) with success rate over the cases run, cases skipped, median
re-solve time, median ratio to the fastest successful backend on the same instance and the worst
errors; the fitted growth exponent of time against the number of unknowns (slope of a least-squares
line on the logs); with ``--plot DIR``, a Dolan–Moré performance profile and time-vs-size plots.

The mixed-integer references of DESIGN §5 (HiGHS, SCIP) solve a different kind of problem
(fixed-weight networks, not AL blocks) and are not part of this comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections import defaultdict

import numpy as np

import solvers
from formulation.instances import KINDS, make_subproblem
from formulation.results import ProblemError
from validation import options
from validation.runner import SKIPPED, Case, Study, read_results, run_study
from validation.solver_study import FIGURES, MI_KINDS, RUN, TIMING, add_study_arguments, memory_budget_bytes

#: (N, n) sizes by size group, growing; ``n_other`` (weights' input / next layer's width) is n.
SIZES = {
    "quick": {"big": [(50, 4), (200, 8), (800, 16)],
              "param": [(20, 4), (60, 8), (120, 10)],
              "exp": [(10, 3), (30, 4), (60, 5)]},
    "full": {"big": [(100, 8), (300, 12), (800, 16), (1200, 20)],
             "param": [(40, 8), (100, 12), (200, 16), (400, 20)],
             "exp": [(20, 4), (60, 6), (150, 8), (300, 10)]},
}
#: Largest sizes are set by memory, which CVXPY's canonicalisation makes grow faster than the
#: unknowns (measured peak RSS of one OSQP case of output_l2: 4.6 GB at 1200 x 20, 11.7 GB at
#: 1600 x 24; two of the latter at once were killed by the OOM killer on a 23 GB machine).
#: Size group per ``Subproblem.build_growth``: where a parameter multiplies a variable (weights,
#: pre- and post-activation) CVXPY's DPP canonicalisation grows faster than the unknowns; softmax
#: has one exponential cone per entry.
GROUP = {"linear": "big", "elementwise": "param", "matrix": "param", "exp": "exp"}
SEEDS = {"quick": 3, "full": 3}

# --------------------------------------------------------------------------- mixed-integer references
#: Embedded instances per mode (``verify.default_specs``: recovery, bound, training in turn).
MI_INSTANCES = {"quick": 6, "full": 24}
ALL_KINDS = tuple(KINDS) + MI_KINDS


def _mi_cases(mode: str, backends: list[str], kinds: list[str]) -> list[Case]:
    from validation import verify

    cases = []
    for spec in verify.default_specs(MI_INSTANCES[mode], seed=0):
        kind = "mi_" + spec["kind"]
        if kind not in kinds:
            continue
        needs = solvers.MIQP if spec["kind"] == "training" else solvers.MILP
        for backend in backends:
            if needs in solvers.get_backend(backend).capabilities:
                cases.append(Case(problem={"kind": kind, "spec": spec}, backend=backend,
                                  settings={"time_limit": 30.0}, seed=spec["seed"]))
    return cases


# --------------------------------------------------------------------------- the study
def build_study(mode: str = "quick", backends: list[str] | None = None, kinds: list[str] | None = None,
                seeds: int | None = None, memory_budget: float | None = None) -> Study:
    """The cases of the comparison: kinds x growing sizes x seeds x capable backends (``memory_budget`` in
    bytes: a CVXPY case whose estimated build memory exceeds it is skipped before building)."""
    backends = backends or solvers.available_backends()
    kinds = kinds or list(ALL_KINDS)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise ProblemError(f"Unknown subproblem(s) {unknown}; choose from {', '.join(ALL_KINDS)}.")
    cases = []
    for kind in kinds:
        if kind in MI_KINDS:
            continue
        probe = make_subproblem(kind, 1, 1, build_model=False)
        able = [b for b in backends if solvers.get_backend(b).accepts(probe)]
        for N, n in SIZES[mode][GROUP[KINDS[kind].build_growth]]:
            for seed in range(seeds or SEEDS[mode]):
                for backend in able:
                    problem = {"kind": kind, "N": N, "n": n, "n_other": n}
                    settings = {} if memory_budget is None else {"memory_budget": float(memory_budget)}
                    cases.append(Case(problem=problem, backend=backend, settings=settings, seed=1000 * N + seed))
    if "SCIP" in solvers.available_backends():  # the certified reference of the MI problems
        cases += _mi_cases(mode, backends, kinds)
    name = "compare_solvers" if mode == "full" else "compare_solvers_quick"
    return Study(name, cases, run=RUN, figures=FIGURES, timing=TIMING)


# --------------------------------------------------------------------------- tables and plots
def outcome(row: dict) -> str:
    """Status of a stored row: ``skipped`` for a case the memory guard refused (stored by the runner as ``ok``
    with its note in the ``skipped`` figure; not a failure), else the runner's ``ok``, ``error`` or ``timeout``."""
    return SKIPPED if row["status"] == "ok" and row.get("skipped") else row["status"]


def _instance_key(row: dict) -> tuple:
    return (row["problem"], row["seed"])


def best_times(rows: list[dict], backends=None) -> dict:
    """Fastest successful re-solve time per instance (problem, seed), over ``backends`` (default all)."""
    best: dict = {}
    for row in rows:
        if outcome(row) == "ok" and row["success"] and (backends is None or row["backend"] in backends):
            key = _instance_key(row)
            best[key] = min(best.get(key, math.inf), row["solve_s"])
    return best


def summary_table(rows: list[dict]) -> list[dict]:
    """One row per (block, backend): successes among the cases run, cases skipped by the memory guard, runs
    that raised or timed out, median time, median ratio to fastest, worst errors."""
    best = best_times(rows)
    groups: dict = defaultdict(list)
    for row in rows:
        kind = row["problem"].split('"kind":"')[1].split('"')[0]
        groups[(kind, row["backend"])].append(row)
    out = []
    for (kind, backend), members in sorted(groups.items(), key=lambda item: (ALL_KINDS.index(item[0][0]),
                                                                               item[0][1])):
        ok = [r for r in members if outcome(r) == "ok"]
        skipped = [r for r in members if outcome(r) == SKIPPED]
        succeeded = [r for r in ok if r["success"]]
        ratios = [r["solve_s"] / best[_instance_key(r)] for r in succeeded if best.get(_instance_key(r))]
        primal = [r["primal_error"] for r in ok if r["primal_error"] is not None]
        objective = [abs(r["objective_error"]) for r in ok if r["objective_error"] is not None]
        out.append({
            "subproblem": kind, "backend": backend, "cases": len(members), "skipped": len(skipped),
            "success": len(succeeded), "failed_runs": len(members) - len(ok) - len(skipped),
            "median_s": statistics.median([r["solve_s"] for r in ok]) if ok else math.nan,
            "ratio_to_fastest": statistics.median(ratios) if ratios else math.nan,
            "max_primal_error": max(primal) if primal else math.nan,
            "max_objective_error": max(objective) if objective else math.nan,
        })
    return out


def growth_exponents(rows: list[dict]) -> dict:
    """Slope of log(median re-solve time) against log(unknowns) per (block, backend)."""
    times: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if outcome(row) == "ok" and row["solve_s"]:
            kind = row["problem"].split('"kind":"')[1].split('"')[0]
            times[(kind, row["backend"])][row["unknowns"]].append(row["solve_s"])
    exponents = {}
    for key, by_size in times.items():
        sizes = sorted(by_size)
        if len(sizes) >= 2:
            medians = [statistics.median(by_size[s]) for s in sizes]
            exponents[key] = (float(np.polyfit(np.log(sizes), np.log(medians), 1)[0]), sizes, medians)
    return exponents


def format_table(summary: list[dict], exponents: dict) -> str:
    header = ["subproblem", "backend", "success", "skipped", "median s", "x fastest", "growth", "max primal err",
              "max obj err"]
    lines = []
    for row in summary:
        exponent = exponents.get((row["subproblem"], row["backend"]))
        lines.append([
            row["subproblem"], row["backend"], f"{row['success']}/{row['cases'] - row['skipped']}",
            str(row["skipped"]), f"{row['median_s']:.3g}",
            f"{row['ratio_to_fastest']:.3g}", "-" if exponent is None else f"{exponent[0]:.2f}",
            f"{row['max_primal_error']:.1e}", f"{row['max_objective_error']:.1e}",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def performance_profile(rows: list[dict], backends=None) -> tuple[np.ndarray, dict]:
    """Dolan–Moré profile: for each backend, the fraction of instances solved within τ × best time.

    An instance is every (block, size, seed) drawn; a backend that failed our checks on it, cannot
    take it, or was skipped on it by the memory guard, counts as not solved at any τ. ``backends``
    restricts the comparison (the best time is then the best among them).
    """
    backends = sorted(backends or {r["backend"] for r in rows})
    best = best_times(rows, backends)
    instances = sorted({_instance_key(r) for r in rows})
    ratios: dict = {}
    for backend in backends:
        by_instance = {_instance_key(r): r for r in rows if r["backend"] == backend}
        values = []
        for key in instances:
            row = by_instance.get(key)
            solved = row is not None and outcome(row) == "ok" and row["success"] and key in best
            values.append(row["solve_s"] / best[key] if solved else math.inf)
        ratios[backend] = np.array(values)
    finite = [v for values in ratios.values() for v in values if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    taus = np.logspace(0, math.log10(max(top, 1.0) * 1.5), 200)
    return taus, {b: np.array([(v <= tau).mean() for tau in taus]) for b, v in ratios.items()}


def plot(rows: list[dict], directory: str) -> list[str]:
    """Write the performance profile and the time-vs-size plots to ``directory``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)  # checked by the command before any case ran
    paths = []
    everyone = sorted({r["backend"] for r in rows})
    colour = {b: f"C{i}" for i, b in enumerate(everyone)}
    iterative = [b for b in everyone if b != "closed_form"]
    panels = [("all backends", everyone)] + ([("CVXPY backends only", iterative)] if iterative != everyone else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, members) in zip(axes.flat, panels):
        taus, profile = performance_profile(rows, members)
        for backend, fraction in profile.items():
            ax.step(taus, fraction, where="post", label=backend, color=colour[backend])
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("τ (re-solve time within τ × fastest on the instance)")
        ax.set_ylabel("fraction of instances solved (our checks)")
        ax.set_title(f"Performance profile, {title}")
        ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(directory, "performance_profile.png"))
    options.save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)

    exponents = growth_exponents(rows)
    kinds = [k for k in ALL_KINDS if any(key[0] == k for key in exponents)]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(kinds) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(kinds) / cols)),
                             squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        for (k, backend), (slope, sizes, medians) in sorted(exponents.items()):
            if k == kind:
                ax.loglog(sizes, medians, marker="o", label=f"{backend} (p={slope:.2f})", color=colour[backend])
        ax.set_title(kind)
        ax.set_xlabel("unknowns")
        ax.set_ylabel("median re-solve s")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    fig.tight_layout()
    paths.append(os.path.join(directory, "time_vs_size.png"))
    options.save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- command
def run(args) -> int:
    mode = "quick" if args.quick else "full"
    backends = args.backends.split(",") if args.backends else None
    for name in backends or []:
        solvers.get_backend(name)  # fail early with the install hint
    kinds = args.subproblems.split(",") if args.subproblems else None
    if kinds:
        unknown = [k for k in kinds if k not in ALL_KINDS]
        if unknown:
            raise ProblemError(f"Unknown subproblem(s) {unknown}; choose from {', '.join(ALL_KINDS)}.")
    study = build_study(mode, [solvers.get_backend(b).name for b in backends] if backends else None, kinds,
                        args.seeds, memory_budget=memory_budget_bytes(args))
    # every output is checked before any case runs, so that a finished comparison is never lost to a bad path
    store = options.output_file(args.store or os.path.join("results", f"{study.name}.sqlite"), "--store")
    if args.plot:
        args.plot = options.output_directory(args.plot, "--plot")
    start = time.perf_counter()
    summary = run_study(study, store=store, workers=args.workers, scheduler=args.scheduler,
                        case_timeout=args.case_timeout)
    rows = read_results(store, study.name)
    rows = [r for r in rows if r["case_id"] in {c.case_id for c in study.cases}]
    print(format_table(summary_table(rows), growth_exponents(rows)))
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed[:10]:
        print(f"  {row['status']}: {row['backend']} {row['problem']} seed {row['seed']}: "
              f"{(row['message'] or '').splitlines()[-1][:120]}")
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more runs that raised or timed out")
    guarded = [r for r in rows if outcome(r) == SKIPPED]
    for row in guarded[:10]:
        print(f"  {SKIPPED}: {row['backend']} {row['problem']} seed {row['seed']}: {row['skipped']}")
    if len(guarded) > 10:
        print(f"  ... and {len(guarded) - 10} more skipped by the memory guard")
    print("\ngrowth = slope of log(median re-solve time) on log(unknowns) (np.polyfit); "
          "success = our residual checks at each backend's stated accuracy, not the solver's status, over the cases "
          "run; skipped = refused by the memory guard before building (not failures).")
    print("mi_*: the §5 references, version (i) against SCIP's global optimum of the relaxed model; "
          "unknowns = binaries; 'max primal err' there is not defined (nan).")
    if args.plot:
        for path in plot(rows, args.plot):
            print(f"wrote {path}")
    print(f"\n{summary.ran} cases run, {summary.skipped} already stored, {summary.error} raised, "
          f"{summary.timeout} timed out; {len(guarded)} of the {len(rows)} cases skipped by the memory guard; "
          f"{time.perf_counter() - start:.1f} s; results in {store}")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare-solvers",
        help="success rate (our checks), speed and scaling of every backend on every AL block",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("Examples:\n"
                "  unrelu compare-solvers --quick --plot results/plots\n"
                "  unrelu compare-solvers --workers 2 --case-timeout 300\n"
                "  unrelu compare-solvers --scheduler tcp://127.0.0.1:8786\n"
                "Re-running the same command skips cases already in the store; delete the store "
                "(or pass --store NEW) to measure again."),
    )
    parser.add_argument("--quick", action="store_true",
                        help="3 small sizes x 3 seeds per block (about 2 minutes); default: 4 sizes x 3 seeds")
    parser.add_argument("--backends", default="", help="comma-separated backend keys (default: all installed)")
    parser.add_argument("--subproblems", default="",
                        help=f"comma-separated blocks from: {', '.join(ALL_KINDS)}")
    parser.add_argument("--seeds", type=options.positive_int, default=None,
                        help="instances per block and size (default 3)")
    parser.add_argument("--plot", metavar="DIR", default="",
                        help="write performance_profile.png and time_vs_size.png to DIR")
    add_study_arguments(parser, store_help="SQLite results file (default results/compare_solvers[_quick].sqlite)",
                        workers_help="cases run at once in local processes (default 1: timings undisturbed)",
                        case_timeout=300.0)
    parser.set_defaults(func=run)
