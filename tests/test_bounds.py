"""Staged bound tightening (solvers.methods.bounds): interval -> LP -> OBBT, sound, each stage inside the one
before, failures and stopped solves reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import (
    ProblemError,
    Solution,
    SolutionStatus,
    SolverError,
    SolverNotFound,
    TerminationCondition,
)
from solvers.methods.bounds import TighteningWarning, obbt_bounds, staged_bounds, tighten_bounds

needs_highs = pytest.mark.skipif("HIGHS" not in solvers.available_backends(),
                                 reason="needs HiGHS (pip install highspy)")


def _box_net(seed: int):
    rng = np.random.default_rng(seed)
    return rng, ReluNetwork.random([3, 8, 8, 6, 2], seed=rng), -np.ones(3), np.array([1.0, 0.5, 2.0])


@needs_highs
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_are_sound_and_tightening_never_looser(seed):
    rng, net, lower, upper = _box_net(seed)
    interval = mi.interval_bounds(net, lower, upper)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TighteningWarning)
        tightened = tighten_bounds(net, lower, upper)
    samples = rng.uniform(lower[:, None], upper[:, None], size=(3, 5000))
    corners = np.array(np.meshgrid(*zip(lower, upper))).reshape(3, -1)
    batch = net.unrectify(np.hstack([samples, corners]))
    for bounds in (interval, tightened):
        for Z, lo, up in zip(batch.Z, bounds.lower, bounds.upper):
            assert np.all(Z >= lo[:, None] - 1e-12) and np.all(Z <= up[:, None] + 1e-12)
    for lo_i, up_i, lo_t, up_t in zip(interval.lower, interval.upper, tightened.lower, tightened.upper):
        assert np.all(lo_t >= lo_i) and np.all(up_t <= up_i)
    assert tightened.mean_width() < interval.mean_width()
    assert tightened.method == "lp" and tightened.lp_solves == 2 * (8 + 6 + 2) and tightened.failures == []


@needs_highs
def test_tightened_bounds_feed_the_reference_problems():
    _, net, lower, upper = _box_net(0)
    tightened = tighten_bounds(net, lower, upper)
    problem = mi.OutputBound(net, (lower, upper), bounds=tightened)
    assert problem.bounds is tightened
    assert problem.model.n_binary <= mi.OutputBound(net, (lower, upper)).model.n_binary
    with pytest.raises(mi.ProblemError, match="do not fit the network"):
        mi.OutputBound(ReluNetwork.random([3, 4, 2], seed=0), 1.0, bounds=tightened)


def test_a_failing_lp_keeps_the_interval_bound_and_is_reported():
    class FailingLP(solvers.Backend):
        """Solves nothing: every second LP raises, the others stop at an iteration limit."""

        name, capabilities, install = "FAILING_LP", frozenset({solvers.LP}), "(test)"
        calls = 0

        def solve(self, subproblem, **options):
            FailingLP.calls += 1
            if FailingLP.calls % 2:
                raise SolverError("numerical trouble")
            return Solution(self.name, TerminationCondition.ITERATION_LIMIT, SolutionStatus.NO_SOLUTION)

    _, net, lower, upper = _box_net(0)
    interval = mi.interval_bounds(net, lower, upper)
    with solvers.registry_scope():
        solvers.register(FailingLP())
        with pytest.warns(TighteningWarning, match="kept their interval value"):
            bounds = tighten_bounds(net, lower, upper, backend="FAILING_LP")
    assert "FAILING_LP" not in solvers.available_backends()
    assert bounds.method == "lp" and len(bounds.failures) == 2 * (8 + 6 + 2)
    assert any("numerical trouble" in f for f in bounds.failures)
    assert any("iteration_limit" in f for f in bounds.failures)
    for lo_i, up_i, lo_t, up_t in zip(interval.lower, interval.upper, bounds.lower, bounds.upper):
        np.testing.assert_array_equal(lo_t, lo_i)
        np.testing.assert_array_equal(up_t, up_i)


def test_without_highs_tightening_says_so():
    _, net, lower, upper = _box_net(0)
    with solvers.registry_scope():
        solvers.unregister("HIGHS", reason="highspy is not installed; install it with `pip install highspy`.")
        with pytest.raises(SolverNotFound, match="'HIGHS' is not installed.*pip install highspy"):
            tighten_bounds(net, lower, upper)
    with pytest.raises(SolverNotFound, match="takes LPs; closed_form does not.*OSQP"):
        tighten_bounds(net, lower, upper, backend="closed_form")


@pytest.mark.skipif("SCIP" not in solvers.available_backends(), reason="needs SCIP (pip install pyscipopt)")
def test_verify_tighten_without_highs_stops_with_the_install_command(capsys):
    from validation.cli import main

    with solvers.registry_scope():
        solvers.unregister("HIGHS", reason="highspy is not installed; install it with `pip install highspy`.")
        assert main(["verify", "--instances", "1", "--starts", "0", "--tighten"]) == 2
    assert "--bounds lp solves its bound problems with HiGHS" in capsys.readouterr().err


# ---------------------------------------------------------------- staged bounds: interval -> LP -> OBBT
@needs_highs
@pytest.mark.parametrize("seed", [0, 1])
def test_obbt_is_sound_and_inside_lp_inside_interval(seed):
    rng, net, lower, upper = _box_net(seed)
    interval = staged_bounds(net, lower, upper, "interval")
    lp = staged_bounds(net, lower, upper, "lp")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TighteningWarning)
        obbt = staged_bounds(net, lower, upper, "obbt", per_neuron_time=2.0)
    samples = rng.uniform(lower[:, None], upper[:, None], size=(3, 5000))
    corners = np.array(np.meshgrid(*zip(lower, upper))).reshape(3, -1)
    Z = net.unrectify(np.hstack([samples, corners])).Z
    for bounds in (interval, lp, obbt):
        assert bounds.contains(Z, slack=1e-12)
    for inner, outer in ((obbt, lp), (lp, interval)):
        for lo_i, up_i, lo_o, up_o in zip(inner.lower, inner.upper, outer.lower, outer.upper):
            assert np.all(lo_i >= lo_o) and np.all(up_i <= up_o)
    assert obbt.mean_width() < lp.mean_width()
    assert [stage["stage"] for stage in obbt.stages] == ["interval", "lp", "obbt"]
    assert all(stage["seconds"] >= 0 for stage in obbt.stages) and obbt.stages[-1]["solves"] > 0
    assert obbt.stages[-1]["unstable"] == obbt.hidden_counts()["unstable"] <= lp.hidden_counts()["unstable"]
    # the first hidden layer is exact already and the output layer keeps the LP bound
    np.testing.assert_array_equal(obbt.lower[0], lp.lower[0])
    np.testing.assert_array_equal(obbt.upper[-1], lp.upper[-1])


@needs_highs
def test_obbt_fixes_stable_units_and_the_problem_loses_their_binaries():
    net = ReluNetwork.random([3, 10, 10, 10, 1], seed=0)  # measured: LP leaves 30 unstable, OBBT 24
    lp = staged_bounds(net, -1, 1, "lp")
    obbt = staged_bounds(net, -1, 1, "obbt", per_neuron_time=0.5)
    Z = net.unrectify(np.random.default_rng(3).uniform(-1, 1, size=(3, 20000))).Z
    assert obbt.contains(Z, slack=1e-12)
    counts = obbt.hidden_counts()
    assert counts["active"] + counts["inactive"] + counts["unstable"] == 30
    assert counts["unstable"] < lp.hidden_counts()["unstable"] and counts["active"] + counts["inactive"] > 0
    problem = mi.OutputBound(net, 1.0, bounds=obbt)
    assert problem.model.n_binary == counts["unstable"]
    assert obbt.mean_width() < 0.9 * lp.mean_width()


@needs_highs
def test_a_stopped_obbt_stage_says_so_and_keeps_sound_dual_bounds():
    net = ReluNetwork.random([8, 32, 32, 1], seed=0)
    obbt = staged_bounds(net, -1, 1, "obbt", per_neuron_time=0.01)
    record = obbt.stages[-1]
    assert record["stage"] == "obbt" and record["per_neuron_time"] == 0.01
    assert record["hit_limit"] == len(record["limits"]) > 0
    for limit in record["limits"]:
        assert limit["termination"] == "time_limit" and "bound" in limit and limit["where"].startswith("layer 2")
    reached = [limit["bound"] for limit in record["limits"] if limit["bound"] is not None]
    assert reached  # stopped solves still gave their dual bounds
    Z = net.unrectify(np.random.default_rng(4).uniform(-1, 1, size=(8, 20000))).Z
    assert obbt.contains(Z, slack=1e-12)


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), "soon"])
def test_obbt_budget_must_be_positive(budget):
    _, net, lower, upper = _box_net(0)
    with pytest.raises(ProblemError, match="per-neuron time budget must be a positive"):
        staged_bounds(net, lower, upper, "obbt", per_neuron_time=budget)
    with pytest.raises(ProblemError, match="per-neuron time budget must be a positive"):
        obbt_bounds(net, lower, upper, per_neuron_time=budget)


def test_unknown_stage_and_empty_box_are_refused():
    _, net, lower, upper = _box_net(0)
    with pytest.raises(ProblemError, match="Unknown bound stage 'milp'"):
        staged_bounds(net, lower, upper, "milp")
    with pytest.raises(ProblemError, match="Input box is empty at coordinate 0"):
        staged_bounds(net, upper + 1, upper, "obbt")


@needs_highs
def test_lp_stage_from_the_relaxed_milp_equals_the_triangle_lp(monkeypatch):
    """HiGHS solves the LP stage as the LP relaxation (d in [0, 1]) of the big-M model, which projects onto the
    triangle of BoundLP: the two paths give the same bounds."""
    _, net, lower, upper = _box_net(1)
    direct = tighten_bounds(net, lower, upper)
    monkeypatch.setattr(type(solvers.get_backend("HIGHS")), "takes_relax", False)
    through_boundlp = tighten_bounds(net, lower, upper)
    assert direct.lp_solves == through_boundlp.lp_solves == 2 * (8 + 6 + 2)
    for a, b in zip([*direct.lower, *direct.upper], [*through_boundlp.lower, *through_boundlp.upper]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
