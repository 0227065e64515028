"""LP bound tightening (solvers.methods.bounds): sound, never looser than intervals, failures reported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import Solution, SolutionStatus, SolverError, SolverNotFound, TerminationCondition
from solvers.methods.bounds import TighteningWarning, tighten_bounds

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
    assert "--tighten solves its bound LPs with HiGHS" in capsys.readouterr().err
