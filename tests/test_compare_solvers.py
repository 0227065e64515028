"""``unrelu compare-solvers``: our checks decide success; profile and growth exponents are right."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import solvers
from formulation.instances import make_subproblem, random_parameters
from formulation.results import InaccurateSolutionWarning
from validation.cli import main
from validation.compare_solvers import (
    format_table,
    growth_exponents,
    outcome,
    performance_profile,
    summary_table,
)
from validation.runner import Case, read_results, recorded_warnings
from validation.solver_study import softmax_reference, solve_case


def test_softmax_reference_reaches_a_zero_gradient():
    rng = np.random.default_rng(3)
    sub = make_subproblem("output_softmax", 40, 5, build_model=False)
    sub.set_parameters(**random_parameters(sub, rng))
    assert np.max(np.abs(sub.gradient(softmax_reference(sub)["Z"]))) < 1e-11


@pytest.mark.parametrize("backend,kind", [("closed_form", "weights"), ("OSQP", "activation"),
                                          ("CLARABEL", "output_softmax")])
def test_a_case_checks_against_the_reference(backend, kind):
    row = solve_case(Case({"kind": kind, "N": 8, "n": 3, "n_other": 3}, backend, {}, seed=1))
    assert row["success"] == 1 and row["claimed"] == "optimal"
    assert row["primal_error"] <= 2e-6 and abs(row["objective_error"]) <= 1e-9
    assert row["unknowns"] > 0 and row["solve_s"] > 0


def test_inaccurate_solves_reach_the_row_not_the_void():
    # SCS stopped after 5 iterations: CVXPY says optimal_inaccurate, the backend warns, the row records it;
    # CVXPY's own note is passed on to the user
    with pytest.warns(UserWarning, match="may be inaccurate"):
        row = solve_case(Case({"kind": "slacks", "N": 8, "n": 3}, "SCS", {"max_iters": 5}, seed=1))
    assert row["claimed"] == "inaccurate" and row["inaccurate_warning"] == 1
    clean = solve_case(Case({"kind": "slacks", "N": 8, "n": 3}, "SCS", {}, seed=1))
    assert clean["claimed"] == "optimal" and clean["inaccurate_warning"] == 0


def test_a_case_writes_its_warnings_into_its_note(monkeypatch):
    import validation.solver_study as engine

    solve = solvers.solve

    def solve_with_warnings(*args, **kwargs):
        warnings.warn("stopped early", InaccurateSolutionWarning, stacklevel=1)
        warnings.warn("stopped early", InaccurateSolutionWarning, stacklevel=1)  # recorded once
        warnings.warn("a solver note", UserWarning, stacklevel=1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(engine.solvers, "solve", solve_with_warnings)
    with pytest.warns(UserWarning, match="a solver note"):  # passed on as well
        row = solve_case(Case({"kind": "slacks", "N": 8, "n": 3}, "OSQP", {"repeats": 2}, seed=1))
    assert row["claimed"] == "optimal" and row["inaccurate_warning"] == 1
    assert row["note"] == "InaccurateSolutionWarning: stopped early; UserWarning: a solver note"


def test_both_commands_report_the_rows_of_one_engine(tmp_path):
    """bench subproblems and compare-solvers run the same case function with the same figures; one stored case
    of (backend, block, size, seed) gives the row of both reports, with the same figures."""
    from validation import bench, compare_solvers
    from validation.runner import Study, run_study
    from validation.solver_study import FIGURES, RUN, TIMING

    compare = compare_solvers.build_study("quick", ["closed_form", "OSQP"], ["slacks"], seeds=1)
    assert (compare.run, compare.figures, compare.timing) == (RUN, FIGURES, TIMING)
    source = {name: open(module.__file__).read() for name, module in (("bench", bench), ("compare", compare_solvers))}
    assert all("run=RUN, figures=FIGURES, timing=TIMING" in text for text in source.values())

    problem = {"kind": "slacks", "N": 20, "n": 4, "n_other": 4}
    cases = [Case(problem, backend, {"repeats": 2}, seed=5) for backend in ("closed_form", "OSQP")]
    store = str(tmp_path / "one.sqlite")
    run_study(Study("one", cases, run=RUN, figures=FIGURES, timing=TIMING), store=store)
    stored = read_results(store, "one")
    table = {row["backend"]: row for row in summary_table(stored)}
    for row in stored:
        bench_row = bench.report_row(row)
        assert bench_row["status"] == row["claimed"] == "optimal" and row["success"] == 1
        assert bench_row["resolve_median_s"] == row["solve_s"] == table[row["backend"]]["median_s"]
        assert bench_row["max_abs_err"] == row["max_abs_err"] <= 1e-6
        assert bench_row["resolve_over_build"] == row["solve_s"] / row["build_s"]
    assert "x closed" in bench.format_table([bench.report_row(row) for row in stored])
    assert "OSQP" in format_table(summary_table(stored), growth_exponents(stored))


def test_recorded_warnings_keep_user_warnings_and_pass_the_others_on():
    with pytest.warns(DeprecationWarning, match="old"):
        with recorded_warnings() as caught:
            warnings.warn("inaccurate", InaccurateSolutionWarning, stacklevel=1)
            warnings.warn("old", DeprecationWarning, stacklevel=1)
    assert caught == [(InaccurateSolutionWarning, "inaccurate")]


def _row(backend, kind, seed, unknowns, seconds, success=1):
    problem = json.dumps({"kind": kind, "N": unknowns, "n": 1}, sort_keys=True, separators=(",", ":"))
    return {"backend": backend, "problem": problem, "seed": seed, "status": "ok", "success": success,
            "solve_s": seconds, "unknowns": unknowns}


def test_profile_and_growth_on_known_rows():
    rows = []
    for seed, size in enumerate([10, 100, 1000]):
        rows.append(_row("A", "weights", seed, size, 1e-3 * size))  # linear growth
        rows.append(_row("B", "weights", seed, size, 1e-5 * size**2, success=int(size < 1000)))  # quadratic
    taus, profile = performance_profile(rows)
    # A is fastest on sizes 100 (0.1 vs 0.1: tie) and 1000 (B failed); B on size 10
    assert profile["A"][0] == pytest.approx(2 / 3) and profile["B"][0] == pytest.approx(2 / 3)
    assert profile["A"][-1] == 1.0 and profile["B"][-1] == pytest.approx(2 / 3)  # a failure never counts
    assert taus[0] == 1.0
    exponents = growth_exponents(rows)
    assert exponents[("weights", "A")][0] == pytest.approx(1.0)
    assert exponents[("weights", "B")][0] == pytest.approx(2.0)


@pytest.mark.slow
def test_command_runs_resumes_and_plots(tmp_path, capsys):
    store, plots = str(tmp_path / "c.sqlite"), str(tmp_path / "plots")
    argv = ["compare-solvers", "--quick", "--subproblems", "output_l2,output_softmax", "--seeds", "1",
            "--backends", "closed_form,OSQP,CLARABEL", "--store", store, "--plot", plots, "--workers", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "output_softmax | CLARABEL" in out and "output_l2      | closed_form" in out
    assert "performance_profile.png" in out and "time_vs_size.png" in out
    assert main(argv) == 0
    assert "0 cases run, 12 already stored" in capsys.readouterr().out


def test_a_case_refused_by_the_memory_guard_is_skipped_not_failed(monkeypatch):
    """The guard of the available memory refuses OSQP before CVXPY builds anything: the row says skipped, with
    the estimate, and the summary counts it apart from the runs that failed; the closed form still runs."""
    import formulation._checks as checks

    monkeypatch.setattr(checks, "available_memory", lambda: 2**16)  # 64 KiB, of which 80 % may be used
    problem = {"kind": "slacks", "N": 8, "n": 3, "n_other": 3}
    needed = solvers.get_backend("OSQP").estimated_memory(make_subproblem("slacks", 8, 3, n_other=3))
    assert needed > 0.8 * 2**16
    rows = []
    for backend in ("OSQP", "closed_form"):
        figures = solve_case(Case(problem, backend, {}, seed=1))
        rows.append({**figures, "backend": backend, "seed": 1, "status": "ok", "message": None,
                     "problem": json.dumps(problem, sort_keys=True, separators=(",", ":"))})
    guarded, solved = rows
    assert outcome(guarded) == "skipped" and outcome(solved) == "ok" and solved["success"] == 1
    assert guarded["skipped"] == (f"memory guard: needs about {needed / 2**30:.3g} GiB by the estimate, above 80% "
                                  "of the 6.1e-05 GiB available (4.88e-05 GiB)")
    assert guarded["success"] is None and guarded["unknowns"] == 48
    summary = summary_table(rows)
    counts = {row["backend"]: {k: row[k] for k in ("cases", "skipped", "success", "failed_runs")} for row in summary}
    assert counts == {"OSQP": {"cases": 1, "skipped": 1, "success": 0, "failed_runs": 0},
                      "closed_form": {"cases": 1, "skipped": 0, "success": 1, "failed_runs": 0}}
    cells = [[cell.strip() for cell in line.split(" | ")] for line in format_table(summary, {}).splitlines()[2:]]
    assert {cell[1]: cell[2:4] for cell in cells} == {"OSQP": ["0/0", "1"], "closed_form": ["1/1", "0"]}


def test_command_reports_memory_guarded_cases_as_skipped(tmp_path, capsys):
    """``--memory-budget`` below every ECOS model: stored rows, table, summary line and exit code say skipped,
    never raised or failed."""
    store = str(tmp_path / "guarded.sqlite")
    argv = ["compare-solvers", "--quick", "--subproblems", "slacks", "--seeds", "1", "--backends", "closed_form,ECOS",
            "--memory-budget", "1e-6", "--store", store]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = read_results(store, "compare_solvers_quick")
    ecos = [row for row in rows if row["backend"] == "ECOS"]
    assert len(ecos) == 3 and {row["status"] for row in rows} == {"ok"}
    assert {outcome(row) for row in ecos} == {"skipped"}
    for row in ecos:
        assert row["skipped"].startswith("memory guard: needs about ")
        assert row["skipped"].endswith(" GiB by the estimate, above the memory budget (1e-06 GiB)")
        assert row["success"] is None and row["solve_s"] is None
    assert all(row["success"] == 1 for row in rows if row["backend"] == "closed_form")
    summary = {row["backend"]: row for row in summary_table(rows)}
    assert summary["ECOS"]["skipped"] == 3 and summary["ECOS"]["failed_runs"] == 0
    assert "slacks     | ECOS        | 0/0     | 3       |" in out
    assert "6 cases run, 0 already stored, 0 raised, 0 timed out; 3 of the 6 cases skipped by the memory guard" in out
    assert "  skipped: ECOS " in out and "raised or timed out" not in out


def test_command_refuses_an_unknown_block(capsys):
    assert main(["compare-solvers", "--subproblems", "nope"]) == 2
    assert "Unknown subproblem" in capsys.readouterr().err


@pytest.mark.skipif(not {"SCIP", "HIGHS"} <= set(solvers.available_backends()),
                    reason="the MI comparison needs SCIP (reference) and HiGHS (pip install '.[mip]')")
def test_mixed_integer_cases_are_judged_by_our_checks(monkeypatch):
    from validation import solver_study, verify
    from validation.runner import Case

    spec = verify.default_specs(2, seed=0)[1]  # an output-bound instance (MILP)
    case = Case(problem={"kind": "mi_bound", "spec": spec}, backend="HIGHS", settings={"time_limit": 30.0},
                seed=spec["seed"])
    row = solver_study.solve_case(case)
    assert row["success"] == 1 and abs(row["objective_error"]) < 1e-8 and row["unknowns"] >= 1
    solve_version = verify.solve_version

    def claims_optimal_but_is_off(problem, backend, relaxed, time_limit):
        result = solve_version(problem, backend, relaxed, time_limit)
        if not relaxed:  # the backend's answer is shifted; its claimed status stays "optimal"
            result = dict(result, objective=result["objective"] + 1e-3)
        return result

    monkeypatch.setattr(verify, "solve_version", claims_optimal_but_is_off)
    row = solver_study.solve_case(case)
    assert row["claimed"] == "optimal" and row["success"] == 0
