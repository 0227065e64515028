"""The ReLU-split branch and bound (``solvers.methods.relu_bab``) against HiGHS's MILP optimum, its time limit,
its bad inputs, and ``unrelu verify --backends BAB``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from problems import milp_optimum

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import ProblemError
from solvers.methods.bounds import staged_bounds
from solvers.methods.relu_bab import relu_bab
from validation import verify
from validation.cli import main

pytestmark = pytest.mark.skipif("HIGHS" not in solvers.available_backends(),
                                reason="the branch and bound solves its node LPs with HiGHS (pip install highspy)")

#: (widths, sense, bound stage) of the small networks compared with HiGHS's MILP; every seed below runs each.
CASES = [([4, 6, 6, 1], "max", "interval"), ([3, 5, 5, 5, 1], "min", "lp"), ([5, 8, 6, 2], "max", "lp")]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("widths,sense,stage", CASES)
def test_bab_optimum_equals_the_milp_optimum(widths, sense, stage, seed):
    network = ReluNetwork.random(widths, seed=seed)
    problem = mi.OutputBound(network, 1.0, k=widths[-1] - 1, sense=sense,
                             bounds=staged_bounds(network, -1, 1, stage))
    result = relu_bab(problem, time_limit=30)
    optimum, tolerance = milp_optimum(problem)
    assert result.proved and result.status == "optimal"
    assert result.incumbent == pytest.approx(problem.evaluate(result.point), abs=1e-12)  # a forward value
    assert abs(result.incumbent - optimum) <= tolerance
    lo, hi = sorted([result.incumbent, result.bound])
    assert lo - tolerance <= optimum <= hi + tolerance
    assert hi - lo <= result.gap_tolerance + 1e-12


def test_bab_on_a_direction_of_the_outputs():
    network = ReluNetwork.random([4, 7, 7, 3], seed=5)
    problem = mi.OutputBound(network, 1.0, direction=[1.0, -1.0, 0.5], sense="max")
    result = relu_bab(problem, time_limit=30)
    optimum, tolerance = milp_optimum(problem)
    assert result.proved and abs(result.incumbent - optimum) <= tolerance


def test_a_tiny_time_limit_is_not_proved_and_its_interval_holds_the_optimum():
    network = ReluNetwork.random([6, 16, 16, 1], seed=0)
    problem = mi.OutputBound(network, 1.0, k=0, sense="max")
    result = relu_bab(problem, time_limit=1e-6, start_points=[np.zeros(6)])
    optimum, tolerance = milp_optimum(problem)
    assert result.status == "time_limit" and not result.proved
    assert result.incumbent - tolerance <= optimum <= result.bound + tolerance
    assert result.bound > result.incumbent  # a real gap is left: nothing pretends to be proved
    assert result.open_nodes >= 1


def test_node_limit_and_start_points():
    network = ReluNetwork.random([6, 16, 16, 1], seed=0)
    problem = mi.OutputBound(network, 1.0, k=0, sense="max")
    start = np.ones(6)
    result = relu_bab(problem, time_limit=30, max_nodes=3, start_points=[start])
    assert result.status == "node_limit" and result.nodes <= 3 + 2
    assert result.incumbent >= problem.evaluate(start)


@pytest.mark.parametrize("limit", [0, -1.0, float("nan"), float("inf"), "soon", None])
def test_bad_time_limit(limit):
    problem = mi.OutputBound(ReluNetwork.random([3, 4, 1], seed=0), 1.0)
    with pytest.raises(ProblemError, match="positive time limit"):
        relu_bab(problem, time_limit=limit)


def test_an_empty_root_from_wrong_unit_bounds_is_not_a_proof():
    """A box is never empty, so unit bounds that make the root empty are wrong: never reported as proved."""
    network = ReluNetwork.random([3, 5, 5, 1], seed=0)
    sound = mi.interval_bounds(network, -np.ones(3), np.ones(3))
    lower, upper = [x.copy() for x in sound.lower], [x.copy() for x in sound.upper]
    lower[0][0], upper[0][0] = upper[0][0] + 1, upper[0][0] + 2  # unit 0 bounded away from all it can reach
    problem = mi.OutputBound(network, 1.0, bounds=mi.Bounds(lower, upper, "interval", 0.0, 0, 0, []))
    result = relu_bab(problem, time_limit=5)
    assert result.status == "inconsistent_bounds" and not result.proved and result.bound == np.inf
    reported = verify.solve_bab(problem, 5)
    assert reported["state"] == "stopped: inconsistent_bounds" and not reported["optimal"]


def test_other_problems_are_refused_with_what_is_supported():
    network = ReluNetwork.random([3, 4, 2], seed=0)
    recovery = mi.GenerativeRecovery(network, np.eye(2), np.zeros(2), 1.0)
    with pytest.raises(ProblemError, match="output-bound problem"):
        relu_bab(recovery, time_limit=1)
    with pytest.raises(ProblemError, match="output-bound problem"):
        verify.solve_bab(recovery, 1.0)
    with pytest.raises(ProblemError, match="max_nodes"):
        relu_bab(mi.OutputBound(network, 1.0), time_limit=1, max_nodes=0)


@pytest.fixture
def network_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "net.npz"
    ReluNetwork.random([5, 10, 10, 1], seed=3).save(path)
    return path


@pytest.mark.skipif("SCIP" not in solvers.available_backends(), reason="verify needs SCIP for the relaxed model")
def test_verify_cli_with_bab(network_file, tmp_path, capsys):
    out = tmp_path / "bab.json"
    code = main(["verify", "--network", str(network_file), "--problem", "bound", "--backends", "HIGHS,BAB",
                 "--starts", "1", "--time-limit", "30", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "1 instances: relaxation preserved the optimum (proved equal) on 1/1" in text
    assert "BAB on instance 0: proved" in text and "not an independent check" in text
    row = json.loads(out.read_text())["rows"][0]
    bab, highs = row["mi"]["BAB"], row["mi"]["HIGHS"]
    assert bab["state"] == "proved" and bab["verdict"] == "proved equal" and bab["nodes"] >= 1
    assert set(highs) - {"start_accepted"} <= set(bab) | {"parts"}  # the same result shape as a MILP backend
    assert abs(bab["objective"] - highs["objective"]) <= row["tolerance"]


@pytest.mark.skipif("SCIP" not in solvers.available_backends(), reason="verify needs SCIP for the relaxed model")
def test_verify_cli_refuses_bab_for_other_problems(network_file, tmp_path, capsys):
    np.save(tmp_path / "A.npy", np.ones((3, 1)))
    np.save(tmp_path / "y.npy", np.zeros(3))
    assert main(["verify", "--network", str(network_file), "--problem", "recovery", "--backends", "BAB",
                 "--A", str(tmp_path / "A.npy"), "--y", str(tmp_path / "y.npy")]) == 2
    err = capsys.readouterr().err
    assert "output-bound problem only (--problem bound)" in err


@pytest.mark.skipif("SCIP" not in solvers.available_backends(), reason="verify needs SCIP for the relaxed model")
def test_verify_cli_bab_stopped_is_not_proved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ReluNetwork.random([6, 16, 16, 1], seed=0).save(tmp_path / "net.npz")
    out = tmp_path / "limit.json"
    code = main(["verify", "--network", str(tmp_path / "net.npz"), "--problem", "bound", "--backends", "BAB",
                 "--starts", "0", "--time-limit", "0.001", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    bab = json.loads(out.read_text())["rows"][0]["mi"]["BAB"]
    assert bab["state"].startswith("stopped") and not bab["optimal"] and bab["termination"] != "optimal"
    assert "proved equal) on 0/1" in text


@pytest.mark.skipif("SCIP" not in solvers.available_backends(), reason="the scaling study needs SCIP")
def test_scaling_study_with_bab(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert ("lp", verify.BAB) in verify.SCALING_CONFIGS
    monkeypatch.setattr(verify, "_scaling_configs", lambda: [("lp", verify.BAB)])
    store, out = tmp_path / "scaling.sqlite", tmp_path / "scaling.json"
    assert main(["verify", "--scaling", "--quick", "--time-limit", "20", "--store", str(store), "--json", str(out),
                 "--plot", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    assert "BAB (lp): depth 2: 16" in text
    rows = json.loads(out.read_text())["rows"]
    assert [row["closed"] for row in rows] == [1, 1] and all(row["result"]["nodes"] >= 1 for row in rows)


def test_the_safe_bound_holds_for_any_multipliers():
    """Weak duality over the node's box: any row multipliers give an upper bound of the node LP, and HiGHS's
    own duals give its optimum (so the bound never rests on the solver's claimed value)."""
    import highspy

    from solvers.methods.relu_bab import _NodeLP

    network = ReluNetwork.random([4, 6, 6, 1], seed=2)
    problem = mi.OutputBound(network, 1.0)
    lp = _NodeLP(highspy, network, problem.box_lower, problem.box_upper, network.weights[-1][0],
                 float(network.biases[-1][0]))
    lower = np.concatenate(problem.bounds.lower[:-1])
    upper = np.concatenate(problem.bounds.upper[:-1])
    lp.set_bounds(lower, upper)
    status, bound, values, duals = lp.solve(lp.objective, lp.offset)
    optimum = lp.highs.getInfo().objective_function_value
    assert status == "optimal" and optimum <= bound <= optimum + 1e-7 * (1 + abs(optimum))
    assert lp.objective @ values + lp.offset == pytest.approx(optimum, abs=1e-8)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert lp.safe_bound(duals + rng.normal(scale=0.3, size=duals.size), lp.objective, lp.offset) >= optimum


@pytest.mark.parametrize("seed", range(3))
def test_root_tightening_by_the_branch_and_bound_keeps_the_optimum(seed):
    """Without the probe the root bounds of the later layers are tightened by the branch and bound itself (what
    closes 8-32-32-1); the tightened bounds must still hold every network point and give the MILP optimum."""
    network = ReluNetwork.random([4, 8, 8, 6, 1], seed=seed)
    problem = mi.OutputBound(network, 1.0, k=0, sense="max", bounds=staged_bounds(network, -1, 1, "lp"))
    result = relu_bab(problem, time_limit=30, probe_time=None)
    assert result.extras["root_tightening"]["solves"] > 0 and result.extras["probe"] is None
    optimum, tolerance = milp_optimum(problem)
    assert result.proved and abs(result.incumbent - optimum) <= tolerance


def test_root_bounds_of_the_branch_and_bound_hold_sampled_points():
    import time

    from solvers.methods.relu_bab import _bab_bounds

    network = ReluNetwork.random([5, 10, 10, 8, 1], seed=4)
    bounds = staged_bounds(network, -1, 1, "lp")
    problem = mi.OutputBound(network, 1.0, bounds=bounds)
    lowers = [lo.copy() for lo in bounds.lower[:-1]]
    uppers = [up.copy() for up in bounds.upper[:-1]]
    record = _bab_bounds(problem, lowers, uppers, 0.5, time.perf_counter() + 30)
    assert record["solves"] > 0
    widths = [np.mean(up - lo) for lo, up in zip(lowers, uppers)]
    assert widths[1] < np.mean(bounds.upper[1] - bounds.lower[1])  # tighter than the LP's
    Z = network.unrectify(np.random.default_rng(0).uniform(-1, 1, size=(5, 20000))).Z
    for z, lo, up in zip(Z, lowers, uppers):
        assert np.all(z >= lo[:, None] - 1e-9) and np.all(z <= up[:, None] + 1e-9)
