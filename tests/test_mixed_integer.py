"""Mixed-integer reference problems (DESIGN §5): hand-computed optima, (i) = (ii), bounds, limits, backends."""

from __future__ import annotations

import importlib
import sys
import warnings

import numpy as np
import pytest

import solvers
from formulation import mixed_integer as mi
from formulation.network import ReluNetwork
from formulation.results import ProblemError, SolutionStatus, SolverNotFound, TerminationCondition
from solvers.methods.relaxed_al import RelaxedAL

HAVE = set(solvers.available_backends())
needs_scip = pytest.mark.skipif("SCIP" not in HAVE, reason="pyscipopt not installed (pip install pyscipopt)")
MILP_BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(b not in HAVE, reason=f"{b} not installed"))
                 for b in ("HIGHS", "SCIP", "ECOS_BB")]

# agreement of (i) and (ii): 1e-6 relative, 1e-8 absolute floor for optima at 0 (see validation/verify.py)
REL, ABS = 1e-6, 1e-8


def agree(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b)) + ABS


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def absolute_value_network() -> ReluNetwork:
    """G(c) = ReLU(c) + ReLU(−c) = |c| on one input: both units unstable on [−1, 1]."""
    return ReluNetwork([np.array([[1.0], [-1.0]]), np.array([[1.0, 1.0]])], [np.zeros(2), np.zeros(1)])


def hand_cases():
    net = absolute_value_network()
    return [
        # (problem, known optimum)
        ("bound max |c|", mi.OutputBound(net, 1.0, sense="max"), 1.0),
        ("bound min |c|", mi.OutputBound(net, 1.0, sense="min"), 0.0),
        # min_c | |c| + 0.5 | = 0.5 at c = 0
        ("recovery l1", mi.GenerativeRecovery(net, [[1.0]], [-0.5], 1.0, loss="l1"), 0.5),
        # min_c (|c| - 2)^2 over |c| <= 1 = 1
        ("recovery l2", mi.GenerativeRecovery(net, [[1.0]], [2.0], 1.0, loss="l2"), 1.0),
        # two measurements: min |(|c| - 0.3)| + |2|c| - 1.6| over |c| <= 1 -> at |c| = 0.8: 0.5
        ("recovery l1 two rows", mi.GenerativeRecovery(net, [[1.0], [2.0]], [0.3, 1.6], 1.0, loss="l1"), 0.5),
    ]


@pytest.mark.parametrize("backend", MILP_BACKENDS)
@pytest.mark.parametrize("index", range(5))
def test_hand_computed_binary(index, backend):
    name, problem, optimum = hand_cases()[index]
    form = problem.binary()
    if not solvers.get_backend(backend).accepts(form):
        pytest.skip(f"{backend} does not take {form.requires}")
    solution = solvers.solve(form, backend)
    assert solution.status is SolutionStatus.OPTIMAL, name
    assert solution.objective == pytest.approx(optimum, abs=1e-7), name
    assert problem.evaluate(problem.input_of(solution.values["v"])) == pytest.approx(optimum, abs=1e-7)


@needs_scip
@pytest.mark.parametrize("index", range(5))
def test_hand_computed_relaxed_and_rounding(index):
    name, problem, optimum = hand_cases()[index]
    solution = solvers.solve(problem.relaxed(), "SCIP")
    assert solution.status is SolutionStatus.OPTIMAL, name
    assert solution.objective == pytest.approx(optimum, abs=1e-7), name
    v = solution.values["v"]
    check = mi.rounding_check(problem.model, v, problem.evaluate(problem.input_of(v)))
    assert check.feasible, (name, check)


@needs_scip
@pytest.mark.parametrize("relaxed", [False, True])
def test_hand_computed_training(relaxed):
    # x = (-1, 0, 1), y = (1, 0, 1): with both output weights +1, |x| = ReLU(x) + ReLU(-x) fits exactly;
    # with both -1 the output is <= 0 and the best is 0 everywhere: loss 1 + 0 + 1 = 2.
    training = mi.TinyTraining([[-1.0, 0.0, 1.0]], [1.0, 0.0, 1.0], 2, weight_bound=1.0)
    for p, optimum in ((0, 2.0), (2, 0.0)):
        form = training.relaxed(p) if relaxed else training.binary(p)
        solution = solvers.solve(form, "SCIP")
        assert solution.status is SolutionStatus.OPTIMAL
        assert solution.objective == pytest.approx(optimum, abs=1e-7)
        W1, b1 = training.weights_of(p, solution.values["v"])
        assert training.evaluate(W1, b1, p) == pytest.approx(optimum, abs=1e-6)
        if relaxed:
            check = mi.rounding_check(training.models[p], solution.values["v"], training.evaluate(W1, b1, p))
            assert check.feasible, check


def test_stable_units_need_no_binary():
    # a bias of +5 makes unit 1 stably active and -5 makes unit 2 stably inactive on the box [-1, 1]
    net = ReluNetwork([np.array([[1.0], [1.0], [1.0]]), np.ones((1, 3))], [np.array([5.0, -5.0, 0.0]), np.zeros(1)])
    problem = mi.OutputBound(net, 1.0)
    assert problem.bounds.hidden_counts() == {"active": 1, "inactive": 1, "unstable": 1}
    assert problem.model.n_binary == 1


def random_recovery(seed: int, loss: str = "l1"):
    rng = np.random.default_rng(seed)
    net = ReluNetwork.random([3, 6, 5, 2], seed=rng)
    A = rng.normal(size=(4, 2))
    y = A @ net.forward(rng.uniform(-1, 1, size=(3, 1)))[:, 0] + 0.1 * rng.normal(size=4)
    return mi.GenerativeRecovery(net, A, y, 1.0, loss=loss)


@needs_scip
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["recovery-l1", "recovery-l2", "bound"])
def test_random_binary_and_relaxed_agree(seed, kind):
    if kind == "bound":
        problem = mi.OutputBound(ReluNetwork.random([3, 6, 5, 2], seed=seed), 1.0, k=1, sense="max")
    else:
        problem = random_recovery(seed, kind.split("-")[1])
    relaxed = solvers.solve(problem.relaxed(), "SCIP")
    assert relaxed.status is SolutionStatus.OPTIMAL
    v = relaxed.values["v"]
    assert mi.rounding_check(problem.model, v, problem.evaluate(problem.input_of(v))).feasible
    names = [b for b in ("HIGHS", "SCIP", "ECOS_BB") if b in HAVE]
    for name in names:
        form = problem.binary()
        if not solvers.get_backend(name).accepts(form):
            continue
        solution = solvers.solve(form, name)
        assert solution.status is SolutionStatus.OPTIMAL, name
        assert agree(solution.objective, relaxed.objective), (name, solution.objective, relaxed.objective)


@needs_scip
def test_random_training_agrees_over_sign_splits():
    rng = np.random.default_rng(3)
    training = mi.TinyTraining(rng.uniform(-1, 1, size=(2, 4)), rng.normal(size=4), 2, weight_bound=1.0)
    binary, relaxed = [], []
    for p in range(3):
        a = solvers.solve(training.binary(p), "SCIP")
        b = solvers.solve(training.relaxed(p), "SCIP")
        assert a.status is SolutionStatus.OPTIMAL and b.status is SolutionStatus.OPTIMAL
        assert agree(a.objective, b.objective), (p, a.objective, b.objective)
        W1, b1 = training.weights_of(p, b.values["v"])
        assert mi.rounding_check(training.models[p], b.values["v"], training.evaluate(W1, b1, p)).feasible
        binary.append(a.objective)
        relaxed.append(b.objective)
    assert agree(min(binary), min(relaxed))


def test_bad_inputs_name_the_fix():
    net = absolute_value_network()
    with pytest.raises(ProblemError, match="A needs 1 columns|needs 1 columns"):
        mi.GenerativeRecovery(net, np.ones((2, 3)), np.ones(2))
    with pytest.raises(ProblemError, match="y needs 2 entries"):
        mi.GenerativeRecovery(net, np.ones((2, 1)), np.ones(3))
    with pytest.raises(ProblemError, match="box is empty"):
        mi.OutputBound(net, (1.0, -1.0))
    with pytest.raises(ProblemError, match="out of range"):
        mi.OutputBound(net, 1.0, k=3)
    with pytest.raises(ProblemError, match="no hidden layer"):
        mi.OutputBound(ReluNetwork([np.ones((1, 2))], [np.zeros(1)]), 1.0)
    with pytest.raises(ProblemError, match="Y needs 3"):
        mi.TinyTraining(np.ones((1, 3)), np.ones(2), 2)


def hard_bound_problem():
    """60 unstable units: neither HiGHS nor SCIP closes it in under a second."""
    return mi.OutputBound(ReluNetwork.random([6, 30, 30, 1], seed=3), 1.0, k=0, sense="max")


@pytest.mark.parametrize("backend", [b for b in MILP_BACKENDS if b.values[0] != "ECOS_BB"])
def test_time_limit_is_never_optimal(backend):
    problem = hard_bound_problem()
    solution = solvers.solve(problem.binary(), backend, time_limit=0.5)
    assert solution.termination is TerminationCondition.TIME_LIMIT
    assert solution.status is not SolutionStatus.OPTIMAL
    assert solution.bound is not None  # dual bound read from the solver, in the max sense
    if backend == "SCIP":  # SCIP's heuristics find an incumbent at once on this instance
        assert solution.status is SolutionStatus.FEASIBLE
    if solution.found:
        c = problem.input_of(solution.values["v"])
        assert problem.evaluate(c) == pytest.approx(solution.objective, abs=1e-6)
        assert solution.bound >= solution.objective - 1e-9
    # the bound is a true upper bound: no sampled input exceeds it
    samples = np.random.default_rng(0).uniform(-1, 1, size=(6, 20000))
    assert np.max(problem.network.forward(samples)[0]) <= solution.bound + 1e-9


@pytest.mark.parametrize("backend", [b for b in MILP_BACKENDS if b.values[0] != "ECOS_BB"])
def test_time_limit_covers_the_model_compilation(backend):
    """The limit counts CVXPY's compilation too: the whole solve stays near it, and a limit the
    compilation alone uses up stops before the solver is called."""
    problem = hard_bound_problem()
    solution = solvers.solve(problem.binary(), backend, time_limit=0.5)
    assert solution.solve_time < 0.5 + 0.4  # compilation + solver, the solver's own overrun tolerated
    settings = solution.extras["settings"]
    given = settings["time_limit"] if backend == "HIGHS" else settings["scip_params"]["limits/time"]
    assert 0 < given < 0.5  # what was left after the compilation
    stopped = solvers.solve(problem.binary(), backend, time_limit=1e-9)
    assert stopped.termination is TerminationCondition.TIME_LIMIT and not stopped.found
    assert "compilation" in stopped.extras["status"]


@needs_scip
def test_time_limit_relaxed():
    solution = solvers.solve(hard_bound_problem().relaxed(), "SCIP", time_limit=0.5)
    assert solution.termination is TerminationCondition.TIME_LIMIT
    assert solution.status is not SolutionStatus.OPTIMAL
    assert solution.bound is not None and (not solution.found or solution.bound >= solution.objective - 1e-9)


def test_highs_refuses_miqp_before_solving():
    problem = random_recovery(0, "l2")
    if "HIGHS" not in HAVE:
        pytest.skip("highspy not installed")
    with pytest.raises(SolverNotFound, match="cannot take"):
        solvers.solve(problem.binary(), "HIGHS")
    assert not solvers.get_backend("ECOS_BB").accepts(problem.binary())  # wrong MIQP optima (DESIGN §5)


@pytest.mark.parametrize("key, module, package", [("HIGHS", "solvers.highs_", "highspy"),
                                                  ("SCIP", "solvers.scip_", "pyscipopt")])
def test_missing_backend_gives_install_hint(monkeypatch, key, module, package):
    # the import of the backend module fails as it would without the package ...
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=f"pip install {package}"):
        importlib.import_module(module)
    # ... and the registry then names the command to run
    with solvers.registry_scope():
        solvers.unregister(key, reason=f"{package} is not installed (pip install {package})")
        with pytest.raises(SolverNotFound, match=f"pip install {package}"):
            solvers.solve(mi.OutputBound(absolute_value_network(), 1.0).binary(), key)


@pytest.mark.parametrize("kind", ["recovery-l1", "recovery-l2", "bound", "training"])
def test_relaxed_al_gradient(kind):
    rng = np.random.default_rng(0)
    if kind == "training":
        problem, p = mi.TinyTraining(rng.normal(size=(2, 3)), rng.normal(size=3), 2), 1
    elif kind == "bound":
        problem, p = mi.OutputBound(ReluNetwork.random([2, 3, 3, 2], seed=1), 1.0, k=1), None
    else:
        problem, p = random_recovery(0, kind.split("-")[1]), None
    assert RelaxedAL().check_gradient(problem, rng, p=p) < 1e-6


@needs_scip
def test_relaxed_al_is_feasible_and_never_below_the_certified_optimum():
    problem = random_recovery(1, "l1")
    optimum = solvers.solve(problem.relaxed(), "SCIP").objective
    method = RelaxedAL()
    rng = np.random.default_rng(0)
    method.setup(problem)
    values = [method.run(problem, method.random_theta(rng)) for _ in range(3)]
    for result in values:
        assert result.violation < 1e-5
        assert result.objective >= optimum - 1e-7
        assert np.all(np.abs(result.theta["c"]) <= 1 + 1e-12)


def _no_optimum_model(unbounded_only: bool) -> mi.MixedIntegerModel:
    """``min −v₁`` with ``v₁`` free: unbounded; with ``0 ≤ v₀ ≤ −1`` as well: infeasible and unbounded."""
    model = mi.MixedIntegerModel("no-optimum")
    model.add_block("v", 2)
    model.add_ub([0], [1.0], 1.0 if unbounded_only else -1.0)
    if not unbounded_only:
        model.add_ub([0], [-1.0], 0.0)
    return model.finish(np.array([0.0, -1.0]))


@needs_scip
def test_infeasible_or_unbounded_is_not_reported_as_infeasible():
    # SCIP's presolve finds the relaxed model infeasible-or-unbounded ("inforunbd"): no proof of either
    solution = solvers.solve(mi.RelaxedForm(_no_optimum_model(False)), "SCIP")
    assert solution.extras["raw_status"] == "inforunbd"
    assert solution.termination is TerminationCondition.INFEASIBLE_OR_UNBOUNDED
    assert solution.status is SolutionStatus.NO_SOLUTION and solution.bound is None
    unbounded = solvers.solve(mi.RelaxedForm(_no_optimum_model(True)), "SCIP")
    assert unbounded.termination is TerminationCondition.UNBOUNDED


@pytest.mark.parametrize("backend", MILP_BACKENDS)
def test_unbounded_and_infeasible_milps_are_statuses(backend):
    unbounded = solvers.solve(mi.BinaryForm(_no_optimum_model(True)), backend)
    assert unbounded.termination is TerminationCondition.UNBOUNDED and not unbounded.found
    infeasible = solvers.solve(mi.BinaryForm(_no_optimum_model(False)), backend)
    assert infeasible.termination in (TerminationCondition.INFEASIBLE, TerminationCondition.INFEASIBLE_OR_UNBOUNDED)
    assert not infeasible.found
    # HiGHS's kUnboundedOrInfeasible (CVXPY: infeasible_or_unbounded) is mapped as such, never to INFEASIBLE
    raw = solvers.get_backend(backend).RAW_STATUS
    for key in ("inforunbd", "infeasible_or_unbounded"):
        if key in raw:
            assert raw[key] is TerminationCondition.INFEASIBLE_OR_UNBOUNDED


def test_long_highs_solves_report_progress(monkeypatch, caplog):
    """A HiGHS solve logs a progress line every PROGRESS_EVERY seconds (here 0.2 s) while it runs."""
    pytest.importorskip("highspy")
    import logging

    import solvers._mip as mip_module

    monkeypatch.setattr(mip_module, "PROGRESS_EVERY", 0.2)
    with caplog.at_level(logging.INFO, logger="unrelu.progress"):
        solution = solvers.solve(hard_bound_problem().binary(), "HIGHS", time_limit=1.0)
    assert solution.termination is TerminationCondition.TIME_LIMIT
    lines = [record.getMessage() for record in caplog.records if "still solving" in record.getMessage()]
    assert len(lines) >= 2 and "time limit 1 s" in lines[0]


# ---------------------------------------------------------------- starting solutions
def _start_instance():
    net = ReluNetwork.random([6, 16, 16, 1], seed=0)
    problem = mi.OutputBound(net, 1.0)
    inputs = np.random.default_rng(0).uniform(-1, 1, size=(6, 50))
    best = inputs[:, int(np.argmax(net.forward(inputs)[0]))]
    return problem, problem.start_point(best), problem.evaluate(best)


def test_start_point_is_a_point_of_version_i():
    problem, start, value = _start_instance()
    violation = problem.model.violation(start["v"], start["d"], binary=True)
    assert max(violation.values()) <= 1e-12
    assert problem.model.objective(start["v"]) == pytest.approx(value, abs=1e-12)
    net = ReluNetwork.random([3, 5, 2], seed=1)
    recovery = mi.GenerativeRecovery(net, np.ones((4, 2)), np.zeros(4), 1.0, loss="l1")
    point = recovery.start_point(np.array([0.2, -0.5, 0.9]))
    assert max(recovery.model.violation(point["v"], point["d"]).values()) <= 1e-12
    assert recovery.model.objective(point["v"]) == pytest.approx(recovery.evaluate(np.array([0.2, -0.5, 0.9])))


@pytest.mark.skipif("HIGHS" not in solvers.available_backends(), reason="needs HiGHS (pip install highspy)")
def test_highs_takes_the_start_as_its_first_incumbent():
    """With no nodes and no heuristics HiGHS finds nothing by itself; given the start, its incumbent is the start."""
    problem, start, value = _start_instance()
    limits = {"mip_max_nodes": 0, "mip_heuristic_effort": 0.0}
    without = solvers.solve(mi.BinaryForm(problem.model), "HIGHS", direct=True, **limits)
    assert not without.found
    given = solvers.solve(mi.BinaryForm(problem.model), "HIGHS", start=start, **limits)
    assert given.found and given.extras["start_accepted"] is True
    assert given.objective >= value - 1e-9 and given.extras["start_objective"] == pytest.approx(value)


@pytest.mark.skipif("SCIP" not in solvers.available_backends(), reason="needs SCIP (pip install pyscipopt)")
@pytest.mark.parametrize("relaxed", [False, True])
def test_scip_accepts_the_start_and_never_reports_worse(relaxed):
    problem, start, value = _start_instance()
    form = mi.RelaxedForm(problem.model) if relaxed else mi.BinaryForm(problem.model)
    solution = solvers.solve(form, "SCIP", start=start, scip_params={"limits/nodes": 1})
    assert solution.extras["start_accepted"] is True and solution.extras["start_objective"] == pytest.approx(value)
    assert solution.found and solution.objective >= value - 1e-9


@pytest.mark.parametrize("backend", ["HIGHS", "SCIP"])
def test_direct_path_agrees_with_cvxpy(backend):
    if backend not in solvers.available_backends():
        pytest.skip(f"needs {backend}")
    problem, start, _ = _start_instance()
    through_cvxpy = solvers.solve(mi.BinaryForm(problem.model), backend)
    with_start = solvers.solve(mi.BinaryForm(problem.model), backend, start=start)
    assert with_start.status is SolutionStatus.OPTIMAL
    assert with_start.objective == pytest.approx(through_cvxpy.objective, rel=1e-7, abs=1e-9)
    assert with_start.bound == pytest.approx(through_cvxpy.bound, rel=1e-6, abs=1e-8)


@pytest.mark.skipif("HIGHS" not in solvers.available_backends(), reason="needs HiGHS (pip install highspy)")
def test_ideal_cuts_are_valid_and_keep_the_optimum():
    net = ReluNetwork.random([4, 8, 8, 1], seed=2)
    problem = mi.OutputBound(net, 1.0)
    plain = solvers.solve(mi.BinaryForm(problem.model), "HIGHS", direct=True)
    cut = solvers.solve(mi.BinaryForm(problem.model), "HIGHS", direct=True, cuts=10)
    assert cut.extras["ideal_cuts"] > 0
    assert cut.objective == pytest.approx(plain.objective, rel=1e-7, abs=1e-9)
    # every forward pass satisfies every row the separation can produce: the rows are valid, not just unviolated
    inputs = np.random.default_rng(5).uniform(-1, 1, size=(4, 300))
    for column in inputs.T:
        point = problem.start_point(column)
        assert problem.model.ideal_cuts(point["v"], point["d"], tolerance=1e-9) == []


@pytest.mark.skipif("HIGHS" not in solvers.available_backends(), reason="needs HiGHS (pip install highspy)")
def test_output_bound_of_a_direction_is_a_logit_gap():
    net = ReluNetwork.random([4, 6, 6, 3], seed=7)
    direction = np.array([-1.0, 0.0, 1.0])
    problem = mi.OutputBound(net, (np.zeros(4), np.ones(4)), direction=direction)
    inputs = np.random.default_rng(1).uniform(0, 1, size=(4, 500))
    gaps = direction @ net.forward(inputs)
    assert problem.evaluate(inputs[:, 0]) == pytest.approx(gaps[0])
    solution = solvers.solve(mi.BinaryForm(problem.model), "HIGHS")
    assert solution.status is SolutionStatus.OPTIMAL and solution.objective >= gaps.max() - 1e-9
    assert problem.evaluate(problem.input_of(solution.values["v"])) == pytest.approx(solution.objective, abs=1e-7)
    with pytest.raises(ProblemError, match="direction"):
        mi.OutputBound(net, 1.0, direction=np.ones(2))
