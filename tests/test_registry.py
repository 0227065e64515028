"""Adding a backend is one module and one registry call: a small fake backend, loaded the way the built-in
ones are (``solvers.load``), is listed, dispatched to, held to its stated accuracy, and gone after the scope."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import solvers
from formulation.instances import random_instance
from formulation.results import SolutionStatus, SolverNotFound

#: The whole backend: a module with a ``Backend`` subclass and a module-level ``backend``.
FAKE_MODULE = '''
    import time

    from formulation.results import Solution, SolutionStatus, TerminationCondition
    from solvers._base import QP, Accuracy, Backend

    INSTALL = "pip install fake-solver"


    class FakeBackend(Backend):
        """Solves any block that has a closed form by calling it (a stand-in for a real solver)."""

        name = "FAKE"
        capabilities = frozenset({QP})
        install = INSTALL
        accuracy = Accuracy(1e-12, 1e-12)  # the closed form itself

        def accepts(self, subproblem):
            return subproblem.has_closed_form

        def solve(self, subproblem, **options):
            start = time.perf_counter()
            values = subproblem.closed_form()
            return Solution(self.name, TerminationCondition.OPTIMAL, SolutionStatus.OPTIMAL, values,
                            subproblem.objective(values), solve_time=time.perf_counter() - start,
                            extras={"options": options})


    backend = FakeBackend()
'''


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    (tmp_path / "fake_backend_.py").write_text(textwrap.dedent(FAKE_MODULE))
    (tmp_path / "absent_backend_.py").write_text(
        'raise ImportError("absent-solver is not installed; install it with `pip install absent-solver`.")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_backend_"


def test_a_registered_fake_backend_solves_and_is_listed(fake_module):
    sub = random_instance("slacks", 5, 3, np.random.default_rng(0))
    reference = solvers.solve(sub, "closed_form")
    with solvers.registry_scope():
        assert solvers.load("FAKE", fake_module)  # the one registry call
        assert "FAKE" in solvers.available_backends()
        assert "FAKE" in solvers.capable_backends(sub) and "FAKE" in solvers.backends_with(solvers.QP)
        solution = solvers.solve(sub, "FAKE", note="passed through")
        assert solution.backend == "FAKE" and solution.status is SolutionStatus.OPTIMAL
        assert solution.extras["options"] == {"note": "passed through"}
        primal, objective = solvers.get_backend("FAKE").accuracy
        for key, value in reference.values.items():
            assert np.max(np.abs(solution.values[key] - value)) <= primal * max(1.0, np.max(np.abs(value)))
        assert abs(solution.objective - reference.objective) <= objective * max(1.0, abs(reference.objective))
        assert solvers.solve(sub, "auto").backend == "closed_form"  # "auto" keeps its order
    assert "FAKE" not in solvers.available_backends()
    with pytest.raises(SolverNotFound, match="Unknown backend 'FAKE'"):
        solvers.get_backend("FAKE")


def test_a_backend_whose_package_is_missing_names_its_install_command(fake_module):
    sub = random_instance("slacks", 5, 3, np.random.default_rng(0))
    with solvers.registry_scope():
        assert not solvers.load("ABSENT", "absent_backend_")
        assert "ABSENT" not in solvers.available_backends()
        with pytest.raises(SolverNotFound, match=r"'ABSENT' is not installed: .*`pip install absent-solver`"):
            solvers.solve(sub, "ABSENT")
    with pytest.raises(SolverNotFound, match="Unknown backend 'ABSENT'"):
        solvers.solve(sub, "ABSENT")
