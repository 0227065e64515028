"""``unrelu bench subproblems``: build and re-solve cost of every backend on every block.

For each backend x subproblem x size it measures

* build: constructing the CVXPY model and the first solve (canonicalisation included);
* re-solve: the median wall time of solves after new parameter values are set;
* the ratio of re-solve to build, the ratio of re-solve to the closed form on the same
  instances, and the max abs error of the canonical solution against the closed form (for the
  softmax block, which has none, against a damped-Newton reference: both ratio and error).

Each case is ``validation.solver_study.solve_case``, the engine of ``unrelu compare-solvers`` too
(this table is another report over its figures). Cases run through ``validation.runner``: each is
stored in SQLite as it finishes (an interrupted run resumes), then the CSV is written from the store.
"""

from __future__ import annotations

import argparse
import csv
import json
import os

import solvers
from formulation.instances import KINDS
from formulation.results import ProblemError
from validation import options
from validation.runner import SKIPPED
from validation.solver_study import FIGURES, RUN, TIMING, add_study_arguments, memory_budget_bytes

#: (N, n) sizes per ``Subproblem.build_growth``. Blocks whose CVXPY model has no parameter
#: multiplying a variable (activation in its U = Z*D form, slacks, squared-loss output) go up to
#: N = 10,000 x 256 units. Where a parameter multiplies the variable entry by entry
#: (pre-activation: D*Z), CVXPY's DPP canonicalisation grows faster than the number of unknowns
#: (measured: 3,200 -> 32,000 unknowns took the build from 0.1 s to 7 s, and 64,000 needed a
#: 30 GiB array); a parameter matrix times the variable (weights, post-activation) grows like
#: N n^2. The softmax block has one exponential cone per entry.
SIZES = {
    "full": {"linear": [(100, 16), (1000, 64), (10000, 256)],
             "elementwise": [(100, 16), (500, 32), (1000, 32)],
             "matrix": [(100, 16), (1000, 32), (2000, 64)],
             "exp": [(100, 4), (500, 10), (2000, 10)]},
    "quick": {"linear": [(20, 4), (100, 8), (400, 16)],
              "elementwise": [(20, 4), (100, 8), (400, 16)],
              "matrix": [(20, 4), (100, 8), (400, 16)],
              "exp": [(10, 3), (30, 4), (60, 5)]},
}


COLUMNS = ["backend", "subproblem", "N", "n", "unknowns", "status", "build_s", "resolve_median_s",
           "resolve_over_build", "over_closed_form", "max_abs_err", "note"]


def _sizes(kind: str, mode: str):
    return SIZES[mode][KINDS[kind].build_growth]


def format_table(rows: list[dict]) -> str:
    header = ["backend", "subproblem", "N", "n", "status", "build s", "re-solve s", "re/build",
              "x closed", "max|err|"]
    lines = []
    for row in rows:
        if row.get("resolve_median_s") is None:  # skipped, error or timeout: no figures, say why
            lines.append([row["backend"], row["subproblem"], str(row["N"]), str(row["n"]), row["status"],
                          "-", "-", "-", "-", row.get("note", "")[:60]])
            continue
        lines.append([
            row["backend"], row["subproblem"], str(row["N"]), str(row["n"]), row["status"],
            f"{row['build_s']:.3g}", f"{row['resolve_median_s']:.3g}", f"{row['resolve_over_build']:.3g}",
            f"{row['over_closed_form']:.3g}", f"{row['max_abs_err']:.1e}",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def report_row(stored: dict) -> dict:
    """The table's row of one stored case of :func:`validation.solver_study.solve_case`: ``status`` is the
    termination the backend claimed, ``skipped`` (with the reason in ``note``), or the runner's ``error`` or
    ``timeout`` (with the last line of its message)."""
    problem = json.loads(stored["problem"])
    row = {"backend": stored["backend"], "subproblem": problem["kind"], "N": problem["N"], "n": problem["n"],
           "unknowns": stored["unknowns"], "build_s": stored["build_s"], "resolve_median_s": stored["solve_s"],
           "max_abs_err": stored["max_abs_err"], "note": stored["note"] or ""}
    if stored["status"] != "ok":
        row.update(status=stored["status"], note=(stored["message"] or "").splitlines()[-1])
    elif stored["skipped"]:
        row.update(status=SKIPPED, note=stored["skipped"])
    else:
        row["status"] = stored["claimed"]
    if row["resolve_median_s"] is not None and row["build_s"]:
        if row["max_abs_err"] is None:  # it ran, but no point was returned
            row["max_abs_err"] = float("nan")
        row["resolve_over_build"] = row["resolve_median_s"] / row["build_s"]
        row["over_closed_form"] = row["resolve_median_s"] / max(stored["reference_s"], 1e-9)
    return row


def run(args) -> int:
    from validation.runner import Case, Study, read_results, run_study

    mode = "quick" if args.quick else "full"
    continuous = solvers.backends_with(solvers.QP, solvers.EXP)
    backends = args.backends.split(",") if args.backends else continuous
    for name in backends:
        solvers.get_backend(name)  # fail early, with the install hint, on a missing backend
    kinds = args.subproblems.split(",") if args.subproblems else list(KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise ProblemError(f"Unknown subproblem {kind!r}; choose from {', '.join(KINDS)}.")
    # every output is checked before any case runs, so that a finished benchmark is never lost to a bad path
    args.csv = options.output_file(args.csv, "--csv")
    store = options.output_file(args.store or os.path.splitext(args.csv)[0] + ".sqlite", "--store")
    budget = memory_budget_bytes(args)
    settings = {"repeats": args.repeats}
    if budget is not None:  # part of the case: a case skipped under one budget is run again under another
        settings["memory_budget"] = budget
    specs = [(kind, N, n, backend) for kind in kinds for (N, n) in _sizes(kind, mode) for backend in backends]
    cases = [Case({"kind": kind, "N": N, "n": n}, backend, settings, args.seed + index)
             for index, (kind, N, n, backend) in enumerate(specs)]
    study = Study("bench_subproblems", cases, run=RUN, figures=FIGURES, timing=TIMING)
    summary = run_study(study, store=store, workers=args.workers, scheduler=args.scheduler,
                        case_timeout=args.case_timeout)
    wanted = {case.case_id for case in cases}
    rows = [report_row(stored) for stored in read_results(store, study.name) if stored["case_id"] in wanted]
    with options.atomic_open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    print(format_table(rows))
    print(f"\nwrote {args.csv}; {summary.skipped} cases were already in {store} (delete it to measure again)")
    return 0


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (subproblem backends, ...)",
                                  description="Benchmarks. They print a table and write it to CSV.")
    inner = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    inner.required = True
    sub = inner.add_parser(
        "subproblems",
        help="build and re-solve time of every backend on every AL block",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--quick", action="store_true", help="small sizes (about a minute); default: up to N=10,000 x 256")
    sub.add_argument("--backends", default="",
                     help="comma-separated backend keys (default: every installed backend for continuous blocks)")
    sub.add_argument("--subproblems", default="", help=f"comma-separated kinds from: {', '.join(KINDS)}")
    sub.add_argument("--repeats", type=options.positive_int, default=3,
                     help="re-solves per case; the median is reported (default 3)")
    sub.add_argument("--seed", type=options.seed, default=0, help="base seed of the random instances")
    sub.add_argument("--csv", default=os.path.join("results", "bench_subproblems.csv"),
                     help="CSV of the table, written atomically at the end; each case is stored in --store as it "
                          "finishes (default results/bench_subproblems.csv)")
    add_study_arguments(sub, store_help="SQLite results store (default: the CSV path with .sqlite)",
                        workers_help="cases run at once in local processes (default 1)", case_timeout=None)
    sub.set_defaults(func=run)
    from validation import bench_train

    bench_train.add_parser(inner)
