"""The backend description shared by every module in ``solvers``."""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

from formulation.results import Solution
from formulation.subproblems import Subproblem

#: Capability names. A subproblem's ``requires`` must be among a backend's capabilities. ``LP`` is the
#: bound LPs of ``formulation.mixed_integer.BoundLP`` (continuous, linear).
LP, QP, EXP, MILP, MIQP, BILINEAR = "LP", "QP", "EXP", "MILP", "MIQP", "BILINEAR"


class Accuracy(NamedTuple):
    """How close a backend comes to the exact minimiser of an AL block (DESIGN §3), relative:
    ``max |x − x*| / max(1, max |x*|)`` on the canonical primal solution and ``|f − f*| / max(1, |f*|)`` on the
    objective. The contract test and ``unrelu compare-solvers`` hold the backend to these figures."""

    primal: float
    objective: float


#: The figures of a backend that states none: the strictest conic entry, so that a newcomer must earn a
#: looser one with a measured comment in its own module.
DEFAULT_ACCURACY = Accuracy(2e-6, 1e-9)


class Backend(abc.ABC):
    """One way of solving subproblems.

    Attributes
    ----------
    name : str
        Registry key.
    capabilities : frozenset of str
        Problem classes it takes (``LP``, ``QP``, ``EXP``, ``MILP``, ``MIQP``, ``BILINEAR``).
    install : str
        The command that installs it.
    accuracy : Accuracy
        Its accuracy on the continuous blocks (each backend module states and comments its own).
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    install: ClassVar[str]
    accuracy: ClassVar[Accuracy] = DEFAULT_ACCURACY

    def accepts(self, subproblem: Subproblem) -> bool:
        """Whether this backend can take ``subproblem`` (decided before any solve)."""
        return subproblem.requires in self.capabilities

    @abc.abstractmethod
    def solve(self, subproblem: Subproblem, **options) -> Solution:
        """Solve ``subproblem`` (parameters already set)."""

    def __repr__(self) -> str:
        return f"<backend {self.name}: {', '.join(sorted(self.capabilities))}>"
