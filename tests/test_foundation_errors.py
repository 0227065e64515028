"""Error paths: bad shapes, NaN/inf, bad dtypes, missing keys and files, missing or incapable backends."""

from __future__ import annotations

import numpy as np
import pytest

import solvers
from formulation import ALProblem, MemoryLimitError, ProblemError, ReluNetwork, SolverError, SolverNotFound
from formulation.instances import make_subproblem, random_instance, random_parameters


def test_network_shape_mismatch_names_the_array_and_fix():
    with pytest.raises(ProblemError, match=r"`W2` has shape \(1, 4\) but layer 1 has 3 units"):
        ReluNetwork([np.ones((3, 2)), np.ones((1, 4))], [np.zeros(3), np.zeros(1)])
    with pytest.raises(ProblemError, match="`b1` has shape"):
        ReluNetwork([np.ones((3, 2))], [np.zeros(2)])
    with pytest.raises(ProblemError, match="one bias per layer"):
        ReluNetwork([np.ones((3, 2))], [])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_network_rejects_nonfinite(bad):
    W = np.ones((2, 2))
    W[1, 0] = bad
    with pytest.raises(ProblemError, match=r"`W1` has 1 NaN or inf entries \(first at index \(1, 0\)\)"):
        ReluNetwork([W], [np.zeros(2)])


def test_network_rejects_non_numeric_dtype():
    with pytest.raises(ProblemError, match="`W1` has dtype <U1"):
        ReluNetwork([np.array([["a", "b"]])], [np.zeros(1)])
    with pytest.raises(ProblemError, match="dtype complex"):
        ReluNetwork([np.ones((1, 2)) * 1j], [np.zeros(1)])


def test_forward_rejects_wrong_input_shape_and_says_samples_are_columns():
    network = ReluNetwork.random((3, 4, 1), seed=0)
    with pytest.raises(ProblemError, match=r"samples are columns; transpose"):
        network.forward(np.ones((5, 3)))
    with pytest.raises(ProblemError, match="NaN or inf"):
        network.forward(np.full((3, 2), np.nan))


def test_load_missing_corrupt_and_incomplete_files(tmp_path):
    with pytest.raises(ProblemError, match="does not exist"):
        ReluNetwork.load(tmp_path / "nope.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ProblemError, match="not a readable .npz"):
        ReluNetwork.load(corrupt)
    truncated = tmp_path / "truncated.npz"
    ReluNetwork.random((2, 3, 1), seed=0).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ProblemError, match="not a readable .npz"):
        ReluNetwork.load(truncated)
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, W1=np.ones((2, 2)), b1=np.zeros(2), W2=np.ones((1, 2)))
    with pytest.raises(ProblemError, match="missing key `b2`"):
        ReluNetwork.load(incomplete)
    empty = tmp_path / "empty.npz"
    np.savez(empty, weights=np.ones(2))
    with pytest.raises(ProblemError, match="no `W1`"):
        ReluNetwork.load(empty)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, W1=np.array([object()], dtype=object), b1=np.zeros(1))
    with pytest.raises(ProblemError):  # never unpickled
        ReluNetwork.load(pickled)
    # nothing was changed on disk by the failed loads
    assert corrupt.read_bytes() == b"PK\x03\x04 not really a zip"


def test_problem_rejects_mismatched_samples_and_widths():
    with pytest.raises(ProblemError, match="`X0` has 5 columns but `Y` has 4: samples are columns"):
        ALProblem(np.ones((2, 5)), np.ones((1, 4)), (2, 3, 1))
    with pytest.raises(ProblemError, match="do not match the data"):
        ALProblem(np.ones((2, 5)), np.ones((1, 5)), (3, 3, 1))
    with pytest.raises(ProblemError, match="Unknown loss"):
        ALProblem(np.ones((2, 5)), np.ones((1, 5)), (2, 3, 1), loss="hinge")
    with pytest.raises(ProblemError, match="one-hot"):
        ALProblem(np.ones((2, 5)), np.ones((2, 5)), (2, 3, 2), loss="softmax")


def test_subproblem_parameters_are_validated():
    sub = make_subproblem("weights", 4, 3, n_other=2)
    with pytest.raises(ProblemError, match=r"`X` has shape \(3, 4\), expected \(2, 4\)"):
        sub.set_parameters(X=np.ones((3, 4)), P=np.ones((3, 4)), r=0.1)
    with pytest.raises(ProblemError, match="`P` has 1 NaN or inf"):
        P = np.ones((3, 4))
        P[0, 0] = np.nan
        sub.set_parameters(X=np.ones((2, 4)), P=P, r=0.1)
    with pytest.raises(ProblemError, match="`r` must be nonnegative"):
        sub.set_parameters(X=np.ones((2, 4)), P=np.ones((3, 4)), r=-1.0)
    with pytest.raises(ProblemError, match="needs parameter"):
        sub.set_parameters(X=np.ones((2, 4)))
    with pytest.raises(ProblemError, match="has no parameter"):
        sub.set_parameters(Y=np.ones((2, 4)))


def test_unknown_backend_lists_known_installed_and_missing_with_install_command():
    sub = random_instance("slacks", 3, 2, np.random.default_rng(0))
    with pytest.raises(SolverNotFound, match=r"Unknown backend 'GUROBI_X'\. Known backends: closed_form, ECOS.*"
                                             r"installed: closed_form, ") as info:
        solvers.solve(sub, "GUROBI_X")
    assert "unrelu[backends]" not in str(info.value)  # no such extra
    with solvers.registry_scope():
        solvers.unregister("SCS", reason="CVXPY cannot find SCS; install it with `pip install scs`.")
        with pytest.raises(SolverNotFound, match=r"Unknown backend 'GUROBI_X'.*SCS is not installed: .*pip install scs"
                           ):
            solvers.solve(sub, "GUROBI_X")


def test_uninstalled_backend_gives_install_command():
    sub = random_instance("slacks", 3, 2, np.random.default_rng(0))
    expected = r"'SCS' is not installed.*pip install scs.*Installed backends: closed_form"
    with solvers.registry_scope():
        solvers.unregister("SCS", reason="CVXPY cannot find SCS (pip install scs)")
        with pytest.raises(SolverNotFound, match=expected):
            solvers.solve(sub, "SCS")
    assert "SCS" in solvers.available_backends()  # the scope restored it


def test_incapable_backend_is_refused_before_solving_and_names_the_capable_ones():
    sub = random_instance("output_softmax", 4, 3, np.random.default_rng(0))
    with pytest.raises(SolverNotFound, match=r"'OSQP' cannot take OutputSoftmaxCrossEntropy.*EXP.*Backends that can: "
                                             r"ECOS, CLARABEL, SCS"):
        solvers.solve(sub, "OSQP")
    with pytest.raises(SolverNotFound, match="needs a closed form"):
        solvers.solve(sub, "closed_form")
    assert sub.model.status is None  # never reached a solver
    assert solvers.solve(sub, "auto").backend == "CLARABEL"


def test_backend_failure_is_chained_from_the_original(monkeypatch):
    import cvxpy as cp

    sub = random_instance("slacks", 3, 2, np.random.default_rng(0))

    def fail(*args, **kwargs):
        raise cp.error.SolverError("the solver broke down")

    monkeypatch.setattr(sub.model, "solve", fail)
    with pytest.raises(SolverError, match="SCS failed on SlackProjection: the solver broke down") as info:
        solvers.solve(sub, "SCS")
    assert isinstance(info.value.__cause__, cp.error.SolverError)


def test_an_option_the_solver_does_not_know_is_a_problem_error():
    sub = random_instance("slacks", 3, 2, np.random.default_rng(0))
    with pytest.raises(ProblemError, match="SCS rejected the call.*no_such_option") as info:
        solvers.solve(sub, "SCS", no_such_option=3)  # an option the solver does not know
    assert isinstance(info.value.__cause__, TypeError)


def test_solving_without_a_model_or_parameters_is_a_clear_error():
    sub = make_subproblem("slacks", 3, 2, build_model=False)
    sub.set_parameters(**random_parameters(sub, np.random.default_rng(0)))
    with pytest.raises(ProblemError, match="build_model=True"):  # caller mistakes: ProblemError
        solvers.solve(sub, "OSQP")
    empty = make_subproblem("slacks", 3, 2)
    for backend in ("OSQP", "closed_form"):
        with pytest.raises(ProblemError, match="set every parameter"):
            solvers.solve(empty, backend)


def test_ecos_refuses_models_it_cannot_build_in_memory(monkeypatch):
    import formulation._checks as checks

    sub = random_instance("slacks", 200, 16, np.random.default_rng(0))
    # 2 cones, x = 6,402 unknowns, p = 6,400 parameter entries: 1.15 * 8 * 6,403 * 6,401 * 3 = 1.13 GB by the
    # measured fit of solvers._cvxpy.estimated_memory (measured peak at 200 x 4: 60 MiB against 74 MiB estimated)
    needed = solvers.get_backend("ECOS").estimated_memory(sub)
    assert 0.9e9 < needed < 1.4e9
    # OSQP takes the squares as a quadratic objective: no cone restructuring, a few MiB per thousand entries
    assert solvers.get_backend("OSQP").estimated_memory(sub) < 0.05 * needed
    monkeypatch.setattr(checks, "available_memory", lambda: int(needed))  # 80 % of it may be used: refused
    with pytest.raises(MemoryLimitError, match=r"ECOS through CVXPY on SlackProjection .* would need about 1.\d+ GiB "
                                               r".*use a smaller instance"):
        solvers.solve(sub, "ECOS")
    assert sub.model.status is None  # refused before CVXPY built anything
    with pytest.raises(MemoryLimitError, match="above the memory budget"):  # a caller's budget is honoured too
        solvers.solve(sub, "OSQP", memory_limit=1e3)
    monkeypatch.setattr(checks, "available_memory", lambda: int(2 * needed))
    assert solvers.solve(sub, "OSQP").found


def test_memory_estimate_covers_the_cone_restructuring_of_the_activation_block():
    from solvers._cvxpy import estimated_memory

    # the worker of `bench subproblems --quick` that grew to 19.9 GiB: ECOS, activation block with slacks, 400 x 16
    sub = make_subproblem("activation_slacks", 400, 16)
    assert estimated_memory(sub.model, quadratic_objective=False) > 19.9 * 2**30
    # the separable block written in U = Z*D stays small on a QP path; multiply(D, Z) grows like 8 e^2
    assert estimated_memory(sub.model) < 0.3 * 2**30
    preactivation = make_subproblem("preactivation", 400, 16)
    assert 8 * 6400**2 < estimated_memory(preactivation.model) < 2 * 8 * 6400**2


def test_closed_form_objective_can_be_skipped_and_other_options_are_refused():
    sub = make_subproblem("weights", 40, 5, n_other=7, build_model=False)
    sub.set_parameters(**random_parameters(sub, np.random.default_rng(3)))
    full = solvers.solve(sub, "closed_form")
    lean = solvers.solve(sub, "closed_form", compute_objective=False)
    assert np.isfinite(full.objective) and np.isnan(lean.objective)
    for name in full.values:
        np.testing.assert_array_equal(full.values[name], lean.values[name])
    with pytest.raises(ProblemError, match="compute_objective"):
        solvers.solve(sub, "closed_form", max_iter=3)
