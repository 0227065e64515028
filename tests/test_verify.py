"""``unrelu verify`` end to end, and its error paths for user files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from validation import verify
from validation.cli import main

pytestmark = pytest.mark.skipif("SCIP" not in solvers.available_backends(),
                                reason="unrelu verify needs SCIP for the relaxed model (pip install pyscipopt)")


@pytest.fixture(autouse=True)
def _fresh_results_folder(tmp_path, monkeypatch):
    # the default store is ./results/verify.sqlite: each test starts without one
    monkeypatch.chdir(tmp_path)


def test_default_specs_cover_all_kinds_and_sizes():
    specs = verify.default_specs(30, 0)
    assert {s["kind"] for s in specs} == set(verify.KINDS)
    for spec in specs:
        if spec["kind"] == "training":
            assert 2 <= spec["n0"] <= 6
            continue
        widths = spec["widths"]
        assert 2 <= widths[0] <= 6 and 1 <= len(widths) - 2 <= 3
        assert all(2 <= w <= 12 for w in widths[1:-1]) and sum(widths[1:-1]) <= 14
    assert verify.default_specs(5, 1) == verify.default_specs(5, 1)


def test_verify_end_to_end(tmp_path, capsys):
    out = tmp_path / "verify.json"
    code = main(["verify", "--instances", "3", "--starts", "1", "--seed", "1", "--json", str(out),
                 "--plot", str(tmp_path / "plots")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "3 instances: relaxation preserved the optimum (proved equal) on 3/3" in text
    assert "not proved on 0/3; contradicted on 0/3" in text
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 3 and {row["kind"] for row in data["rows"]} == set(verify.KINDS)
    for row in data["rows"]:
        assert row["verdict"] == "proved equal" and row["preserved"] and row["relaxed"]["rounding_ok"]
        assert row["al_best_gap"] >= -1e-7
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "local_gaps.png", "mi_vs_relaxed.png", "solve_times.png"]


@pytest.fixture
def without_backend():
    """Unregister backends for one test, each reported as not installed with the given reason."""
    with solvers.registry_scope():
        yield lambda name, reason: solvers.unregister(name, reason=reason)


def test_verify_without_highs_skips_only_highs(without_backend, capsys):
    without_backend("HIGHS", "highspy is not installed (pip install highspy)")
    code = main(["verify", "--instances", "2", "--starts", "0"])
    text = capsys.readouterr().out
    assert code == 0
    header = text.splitlines()[0]
    assert "HIGHS" not in header and "SCIP" in header
    # asking for it explicitly names the install command
    assert main(["verify", "--instances", "1", "--backends", "HIGHS"]) == 2
    assert "pip install highspy" in capsys.readouterr().err


def test_verify_without_scip_says_what_to_install(without_backend, capsys):
    without_backend("SCIP", "pyscipopt is not installed (pip install pyscipopt)")
    assert main(["verify", "--instances", "1"]) == 2
    assert "pip install pyscipopt" in capsys.readouterr().err


@pytest.fixture
def user_files(tmp_path):
    network = ReluNetwork.random([2, 4, 3], seed=0)
    network.save(tmp_path / "net.npz")
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 3))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "y.npy", A @ network.forward(np.array([[0.3], [-0.2]]))[:, 0] + 0.05)
    return tmp_path


@pytest.mark.parametrize("problem", ["recovery", "bound"])
def test_verify_user_network(user_files, capsys, problem):
    args = ["verify", "--network", str(user_files / "net.npz"), "--problem", problem, "--starts", "1",
            "--A", str(user_files / "A.npy"), "--y", str(user_files / "y.npy"), "--box", "1"]
    assert main(args) == 0
    assert "1 instances: relaxation preserved the optimum (proved equal) on 1/1" in capsys.readouterr().out


def test_verify_reports_warnings_instead_of_hiding_them(user_files, capsys, monkeypatch):
    import warnings

    from formulation.results import ConvergenceWarning

    def local_runs_that_warn(problem, starts, rng, points=None):
        warnings.warn("L-BFGS-B stopped early", ConvergenceWarning, stacklevel=1)
        return []

    monkeypatch.setattr(verify, "run_local", local_runs_that_warn)
    out = user_files / "verify.json"
    args = ["verify", "--network", str(user_files / "net.npz"), "--problem", "bound", "--starts", "1",
            "--json", str(out)]
    assert main(args) == 0
    assert "warning on instance 0: ConvergenceWarning: L-BFGS-B stopped early" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"][0]["warnings"] == ["ConvergenceWarning: L-BFGS-B stopped early"]


def test_verify_user_training_needs_a_two_layer_scalar_network(user_files, capsys):
    assert main(["verify", "--network", str(user_files / "net.npz"), "--problem", "training"]) == 2
    assert "two-layer scalar-output" in capsys.readouterr().err


def _run_error(args, capsys) -> str:
    assert main(["verify", *args]) == 2
    return capsys.readouterr().err


def test_bad_files(user_files, capsys):
    d = user_files
    net = ["--network", str(d / "net.npz"), "--problem", "recovery"]
    err = _run_error(["--network", str(d / "missing.npz")], capsys)
    assert "does not exist" in err
    err = _run_error(net + ["--y", str(d / "y.npy")], capsys)
    assert "needs --A A.npy" in err
    err = _run_error(net + ["--A", str(d / "nope.npy"), "--y", str(d / "y.npy")], capsys)
    assert "A file" in err and "does not exist" in err
    (d / "corrupt.npy").write_bytes(b"not an array at all")
    err = _run_error(net + ["--A", str(d / "corrupt.npy"), "--y", str(d / "y.npy")], capsys)
    assert "not a readable .npy" in err
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    err = _run_error(net + ["--A", str(d / "objects.npy"), "--y", str(d / "y.npy")], capsys)
    assert "not a readable .npy" in err  # never unpickled
    np.save(d / "A_wrong.npy", np.ones((4, 5)))
    err = _run_error(net + ["--A", str(d / "A_wrong.npy"), "--y", str(d / "y.npy")], capsys)
    assert "needs 3 columns" in err
    np.save(d / "y_wrong.npy", np.ones(7))
    err = _run_error(net + ["--A", str(d / "A.npy"), "--y", str(d / "y_wrong.npy")], capsys)
    assert "y needs 4 entries" in err
    np.save(d / "y_nan.npy", np.array([1.0, np.nan, 0.0, 0.0]))
    err = _run_error(net + ["--A", str(d / "A.npy"), "--y", str(d / "y_nan.npy")], capsys)
    assert "NaN" in err
    np.save(d / "A_text.npy", np.array([["a", "b", "c"]]))
    err = _run_error(net + ["--A", str(d / "A_text.npy"), "--y", str(d / "y.npy")], capsys)
    assert "real numeric" in err
    (d / "bad.npz").write_bytes(b"garbage")
    err = _run_error(["--network", str(d / "bad.npz")], capsys)
    assert "not a readable .npz" in err


def test_verify_user_training_teacher(tmp_path, capsys):
    teacher = ReluNetwork.random([2, 2, 1], seed=4)
    teacher.save(tmp_path / "teacher.npz")
    args = ["verify", "--network", str(tmp_path / "teacher.npz"), "--problem", "training", "--samples", "4",
            "--starts", "1", "--no-adam"]
    assert main(args) == 0
    assert "1 instances: relaxation preserved the optimum (proved equal) on 1/1" in capsys.readouterr().out


def test_verify_runs_as_a_resumable_study(tmp_path, capsys):
    store = tmp_path / "verify.sqlite"
    arguments = ["verify", "--instances", "2", "--starts", "0", "--no-adam", "--store", str(store)]
    assert main(arguments) == 0
    first = capsys.readouterr().out
    assert store.exists() and "already in" not in first
    assert main(arguments) == 0  # every instance is read back from the store, none is solved again
    second = capsys.readouterr().out
    assert f"2 of 2 instances were already in {store}" in second
    summary = [line for line in first.splitlines() if line.startswith("2 instances:")]
    assert summary and summary[0] in second.splitlines()


# ---------------------------------------------------------------- verdicts from checked numbers
def _result(lo, hi, *, optimal=True, allowance=0.0, claimed=None):
    objective = lo
    return {"interval": [lo, hi], "optimal": optimal, "claimed_optimal": optimal, "allowance": allowance,
            "state": "proved" if optimal else "stopped: time_limit", "objective": objective,
            "claimed": objective if claimed is None else claimed, "effective_tolerance": 1e-9,
            "rounding_ok": True}


@pytest.mark.parametrize("mi_interval, relaxed_interval, optimal, verdict", [
    ((1.0, 1.0), (1.0, 1.0 + 5e-7), (True, True), "proved equal"),        # within 1e-6 rel + 1e-8
    ((1.0, 1.0), (1.0, 1.0 + 5e-6), (True, True), "not proved"),          # overlap, too wide: not proved
    ((0.5, 2.0), (1.0, 1.5), (False, True), "not proved"),                # a solve stopped, intervals overlap
    ((0.5, 2.0), (1.0, 1.5), (False, False), "not proved"),               # both stopped: never "preserved"
    ((1.0, 1.0), (1.1, 1.1), (True, True), "contradicted"),               # disjoint beyond the tolerance
    ((0.5, 0.9), (1.0, 1.5), (False, False), "contradicted"),             # disjoint certified intervals
])
def test_compare_has_three_verdicts(mi_interval, relaxed_interval, optimal, verdict):
    judged = verify.compare(_result(*mi_interval, optimal=optimal[0]), _result(*relaxed_interval, optimal=optimal[1]))
    assert judged["verdict"] == verdict
    assert judged["tolerance"] == pytest.approx(verify.REL_TOL * max(map(abs, (*mi_interval, *relaxed_interval)))
                                                + verify.ABS_TOL)


def test_tolerance_grows_with_the_allowance():
    # a difference of 5e-6 is within tolerance when the solvers' tolerance carried through the bounds is 1e-5
    judged = verify.compare(_result(1.0, 1.0, allowance=1e-5), _result(1.0, 1.0 + 5e-6))
    assert judged["verdict"] == "proved equal" and judged["tolerance"] > 1e-5


def test_allowance_scales_with_the_box():
    network = ReluNetwork.random([3, 6, 4, 2], seed=1)
    small = mi.OutputBound(network, 1.0, k=0).allowance(1e-9)
    large = mi.OutputBound(network, 100.0, k=0).allowance(1e-9)
    assert 0 < small < large and large / small > 30  # grows about linearly with the bound magnitudes


@pytest.fixture
def box_network(tmp_path):
    # the seeded 3-6-4-2 network of issue 13: its output 0 has max 0.005410227877154389 on every box >= 5
    ReluNetwork.random([3, 6, 4, 2], seed=1).save(tmp_path / "net.npz")
    return tmp_path / "net.npz"


@pytest.mark.skipif("HIGHS" not in solvers.available_backends(), reason="needs HiGHS (pip install highspy)")
def test_box_10_is_proved_equal(box_network, tmp_path, capsys):
    """Before: the relaxed claim 0.005410257 against 0.005410228 failed a 1e-6 relative test ("NO", exit 1),
    although the forward passes of all returned points agree to 1e-15."""
    out = tmp_path / "box10.json"
    code = main(["verify", "--network", str(box_network), "--problem", "bound", "--box", "10", "--starts", "0",
                 "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "1 instances: relaxation preserved the optimum (proved equal) on 1/1" in text
    row = json.loads(out.read_text())["rows"][0]
    assert row["verdict"] == "proved equal" and row["tolerance"] > 0
    assert row["relaxed"]["objective"] == pytest.approx(0.005410227877154389, abs=1e-12)


@pytest.mark.skipif("HIGHS" not in solvers.available_backends(), reason="needs HiGHS (pip install highspy)")
def test_huge_box_is_not_proved_and_not_an_error(box_network, tmp_path, capsys):
    """At box 1e8 the solvers' tolerances times the bounds swamp the objective: not proved, exit 0, and the
    claims that the points contradict are shown next to what the points give; JSON has no NaN."""
    out = tmp_path / "box1e8.json"
    code = main(["verify", "--network", str(box_network), "--problem", "bound", "--box", "1e8", "--starts", "0",
                 "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "not proved on 1/1; contradicted on 0/1" in text and "numerics unreliable" in text
    raw = out.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    row = json.loads(raw)["rows"][0]
    assert row["verdict"] == "not proved" and not row["preserved"]
    # every forward value is a point of the problem: none exceeds the true maximum
    for result in [*row["mi"].values(), row["relaxed"]]:
        assert result["objective"] <= 0.005410227877154389 + 1e-12


def test_stopped_solves_are_never_preserved(tmp_path, capsys):
    """A tiny time limit: unfinished solves give "not proved" (never "NO", never "preserved"), exit 0."""
    out = tmp_path / "limit.json"
    # without starting solutions: with one, a solver can prove a tiny instance optimal within 1 ms
    code = main(["verify", "--instances", "3", "--time-limit", "0.001", "--starts", "0", "--no-adam", "--no-start",
                 "--json", str(out)])
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert any(not row["relaxed"]["claimed_optimal"] for row in data["rows"])  # the limit did stop solves
    for row in data["rows"]:
        stopped = [r for r in [*row["mi"].values(), row["relaxed"]] if not r["claimed_optimal"]]
        if stopped:
            assert row["verdict"] in ("not proved", "contradicted") and not row["preserved"]
    assert code == (1 if data["verdicts"]["contradicted"] else 0), text
    assert data["verdicts"]["contradicted"] == 0


def _solve_result(state, interval, objective, bound, allowance=0.0, **extra):
    return {"state": state, "interval": list(interval), "objective": objective, "bound": bound,
            "allowance": allowance, "optimal": state == "proved", **extra}


def test_a_bound_beaten_by_another_solvers_point_is_demoted_and_contradicts_nothing():
    """Box 1e8 (measured): ECOS_BB claimed an optimum with upper bound 1.198e8 while SCIP's point reached
    1.580e8; that bound certifies nothing, and the instance is not called contradicted because of it."""
    from validation.verify import compare, demote_beaten_bounds

    ecos = _solve_result("proved", (1.19797e8, 1.19797e8), 1.19797e8, 1.19797e8)
    scip = _solve_result("proved", (1.580109e8, 1.580109e8), 1.580109e8, 1.580109e8)
    relaxed = _solve_result("proved", (1.580109e8, 1.580109e8), 1.580109e8, 1.580109e8, rounding_ok=True)
    assert compare(ecos, relaxed)["verdict"] == "contradicted"  # before the demotion
    demote_beaten_bounds([ecos, scip, relaxed], maximise=True)
    assert ecos["state"] == "inaccurate" and ecos["bound"] is None and ecos["beaten_by"] == 1.580109e8
    assert ecos["interval"] == [1.19797e8, float("inf")]
    assert scip["state"] == "proved" and relaxed["state"] == "proved"  # not beaten
    assert compare(ecos, relaxed)["verdict"] == "not proved"
    assert compare(scip, relaxed)["verdict"] == "proved equal"
    # minimisation: a lower bound above a known point is beaten the same way
    low = _solve_result("proved", (-1.2e8, -1.2e8), -1.2e8, -1.2e8)
    other = _solve_result("stopped: time_limit", (-2e8, -1.69e8), -1.69e8, -2e8)
    demote_beaten_bounds([low, other], maximise=False)
    assert low["state"] == "inaccurate" and other["bound"] == -2e8


def test_an_unreliable_solve_contradicts_nothing():
    from validation.verify import compare

    highs = _solve_result("numerics unreliable", (1.697, 1.697), 1.697, 1.697)
    relaxed = _solve_result("proved", (1.5e8, 1.5e8), 1.5e8, 1.5e8)
    assert compare(highs, relaxed)["verdict"] == "not proved"


# ---------------------------------------------------------------- staged bounds and starting solutions
def test_verify_obbt_reports_each_stage_and_its_time(tmp_path, capsys):
    ReluNetwork.random([3, 10, 10, 10, 1], seed=0).save(tmp_path / "deep.npz")
    out = tmp_path / "obbt.json"
    code = main(["verify", "--network", str(tmp_path / "deep.npz"), "--problem", "bound", "--bounds", "obbt",
                 "--obbt-time", "0.5", "--starts", "1", "--backends", "HIGHS", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "bound stages of instance 0: interval" in text and ", lp " in text and ", obbt " in text
    assert "starting solutions (best of the local AL points and 1002 sampled forward passes)" in text
    row = json.loads(out.read_text())["rows"][0]
    stages = row["bounds"]["stages"]
    assert [stage["stage"] for stage in stages] == ["interval", "lp", "obbt"]
    assert all(stage["seconds"] >= 0 and "unstable" in stage for stage in stages)
    assert stages[-1]["unstable"] == row["binaries"] < stages[0]["unstable"]  # measured: 30 -> 24
    assert row["verdict"] == "proved equal"
    assert row["mi"]["HIGHS"]["start_accepted"] is True and row["start"]["objective"] <= row["certified"] + 1e-9


def test_verify_bound_options_are_checked_before_any_work(user_files, capsys):
    net = ["--network", str(user_files / "net.npz"), "--problem", "bound"]
    err = _run_error(net + ["--tighten", "--bounds", "obbt"], capsys)
    assert "--tighten is an alias of --bounds lp" in err
    for budget in ("0", "-1", "nan"):
        with pytest.raises(SystemExit):
            main(["verify", *net, "--bounds", "obbt", "--obbt-time", budget])
        assert "--obbt-time" in capsys.readouterr().err


def test_tighten_is_an_alias_of_bounds_lp(user_files, tmp_path, capsys):
    rows = []
    for flags in (["--tighten"], ["--bounds", "lp"]):
        out = tmp_path / f"{flags[-1]}.json"
        assert main(["verify", "--network", str(user_files / "net.npz"), "--problem", "bound", "--starts", "0",
                     *flags, "--json", str(out)]) == 0
        rows.append(json.loads(out.read_text())["rows"][0]["bounds"])
    assert rows[0]["method"] == rows[1]["method"] == "lp"
    assert [s["stage"] for s in rows[0]["stages"]] == [s["stage"] for s in rows[1]["stages"]] == ["interval", "lp"]
