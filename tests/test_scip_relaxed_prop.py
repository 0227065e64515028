"""SCIP on the relaxed model (ii) with ``relu_split=True`` (a ReLU-split branching rule and a forward-pass
heuristic, ``solvers/scip_.py``): the same optimum as HiGHS's MILP of (i), the rule really branches, and its
bad inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from problems import milp_optimum

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import ProblemError, SolutionStatus
from solvers.methods.bounds import staged_bounds
from validation.cli import main

pytestmark = pytest.mark.skipif(not {"SCIP", "HIGHS"} <= set(solvers.available_backends()),
                                reason="needs SCIP for (ii) and HiGHS for the MILP reference "
                                       "(pip install pyscipopt highspy)")

#: (widths, sense, bound stage, output k) of the small networks; each runs with two seeds.
CASES = [([4, 6, 6, 1], "max", "interval", 0), ([3, 5, 5, 5, 1], "min", "lp", 0), ([5, 8, 6, 2], "max", "lp", 1)]


def _problem(widths, sense, stage, k, seed):
    network = ReluNetwork.random(widths, seed=seed)
    return mi.OutputBound(network, 1.0, k=k, sense=sense, bounds=staged_bounds(network, -1, 1, stage))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("widths,sense,stage,k", CASES)
def test_relu_split_optimum_equals_the_milp_optimum(widths, sense, stage, k, seed):
    problem = _problem(widths, sense, stage, k, seed)
    solution = solvers.solve(mi.RelaxedForm(problem.model), "SCIP", time_limit=60, relu_split=True)
    optimum, tolerance = milp_optimum(problem)
    assert solution.status is SolutionStatus.OPTIMAL
    assert solution.extras["relu_split"] is True
    forward = problem.evaluate(problem.input_of(solution.values["v"]))
    assert abs(forward - optimum) <= tolerance
    assert abs(solution.bound - optimum) <= tolerance  # SCIP's own dual bound closes on the same value


def test_the_rule_branches_and_the_heuristic_finds_points_on_a_harder_network():
    network = ReluNetwork.random([6, 16, 16, 1], seed=0)
    problem = mi.OutputBound(network, 1.0, k=0, sense="max")
    start = problem.start_point(np.zeros(6))
    solution = solvers.solve(mi.RelaxedForm(problem.model), "SCIP", time_limit=60, relu_split=True, start=start)
    optimum, tolerance = milp_optimum(problem)
    assert solution.status is SolutionStatus.OPTIMAL
    assert abs(problem.evaluate(problem.input_of(solution.values["v"])) - optimum) <= tolerance
    assert solution.extras["relu_splits"] > 0 and solution.extras["forward_solutions"] > 0
    assert solution.extras["start_accepted"] is True


def test_a_stopped_solve_keeps_a_sound_interval():
    network = ReluNetwork.random([6, 16, 16, 1], seed=0)
    problem = mi.OutputBound(network, 1.0, k=0, sense="max")
    solution = solvers.solve(mi.RelaxedForm(problem.model), "SCIP", time_limit=60, relu_split=True,
                             scip_params={"limits/nodes": 3})
    optimum, tolerance = milp_optimum(problem)
    assert solution.status is not SolutionStatus.OPTIMAL
    assert solution.bound is None or solution.bound >= optimum - tolerance
    if solution.values:
        assert problem.evaluate(problem.input_of(solution.values["v"])) <= optimum + tolerance


def test_intercept_scores_of_one_hidden_layer():
    # one hidden layer: the score of an unstable unit is max(w, 0)·u(−l)/(u − l), 0 for stable units
    network = ReluNetwork.random([3, 4, 1], seed=2)
    layers = mi.OutputBound(network, 1.0).model.layers
    lower, upper = [np.array([-1.0, -2.0, 0.5, -3.0])], [np.array([1.0, 2.0, 1.0, -0.5])]
    weights = np.array([2.0, -1.0, 4.0, 5.0])
    scores = solvers.scip_.intercept_scores(layers, weights, lower, upper)
    np.testing.assert_allclose(scores[0], [2.0 * 0.5, 0.0, 0.0, 0.0])


def test_the_model_records_its_layers():
    network = ReluNetwork.random([3, 5, 4, 2], seed=1)
    problem = mi.OutputBound(network, 1.0)
    layers = problem.model.layers
    point = problem.start_point(np.array([0.3, -0.2, 0.9]))["v"]
    x = point[layers.inputs]
    for W, b, z, xs in zip(layers.weights, layers.biases, layers.z, layers.x):
        np.testing.assert_allclose(point[z], np.clip(W @ x + b, problem.model.lb[z], problem.model.ub[z]))
        x = point[xs]
    assert len(layers.weights) == network.depth - 1


def test_bad_inputs_are_refused():
    network = ReluNetwork.random([3, 5, 1], seed=0)
    recovery = mi.GenerativeRecovery(network, [[1.0]], [0.5], 1.0, loss="l1")
    with pytest.raises(ProblemError, match="output-bound model"):
        solvers.solve(mi.RelaxedForm(recovery.model), "SCIP", time_limit=5, relu_split=True)
    bound = mi.OutputBound(network, 1.0)
    with pytest.raises(ProblemError, match="relaxed model"):
        solvers.solve(mi.BinaryForm(bound.model), "SCIP", time_limit=5, relu_split=True)
    with pytest.raises(ProblemError, match="True or False"):
        solvers.solve(mi.RelaxedForm(bound.model), "SCIP", time_limit=5, relu_split="yes")


def test_verify_cli_with_relu_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ReluNetwork.random([4, 8, 8, 1], seed=3).save(tmp_path / "net.npz")
    out = tmp_path / "split.json"
    code = main(["verify", "--network", str(tmp_path / "net.npz"), "--problem", "bound", "--backends", "HIGHS",
                 "--relu-split", "--starts", "1", "--time-limit", "30", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "1 instances: relaxation preserved the optimum (proved equal) on 1/1" in text
    row = json.loads(out.read_text())["rows"][0]
    assert row["relaxed"]["options"] == {"relu_split": True} and row["relaxed"]["state"] == "proved"
    assert abs(row["relaxed"]["objective"] - row["mi"]["HIGHS"]["objective"]) <= row["tolerance"]


def test_verify_cli_refuses_relu_split_for_other_problems(tmp_path, capsys):
    ReluNetwork.random([3, 5, 1], seed=0).save(tmp_path / "net.npz")
    np.save(tmp_path / "A.npy", np.ones((3, 1)))
    np.save(tmp_path / "y.npy", np.zeros(3))
    assert main(["verify", "--network", str(tmp_path / "net.npz"), "--problem", "recovery", "--relu-split",
                 "--A", str(tmp_path / "A.npy"), "--y", str(tmp_path / "y.npy")]) == 2
    assert "takes the output-bound problem only (--problem bound)" in capsys.readouterr().err
    # the scaling study has fixed configurations: the flag is refused there rather than silently ignored
    assert main(["verify", "--scaling", "--relu-split", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "--relu-split is not a configuration of --scaling" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()
