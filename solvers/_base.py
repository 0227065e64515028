"""The backend description shared by every module in ``solvers``."""

from __future__ import annotations

import abc
from typing import ClassVar

from formulation.results import Solution
from formulation.subproblems import Subproblem

#: Capability names. A subproblem's ``requires`` must be among a backend's capabilities. ``LP`` is the
#: bound LPs of ``formulation.mixed_integer.BoundLP`` (continuous, linear).
LP, QP, EXP, MILP, MIQP, BILINEAR = "LP", "QP", "EXP", "MILP", "MIQP", "BILINEAR"


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
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    install: ClassVar[str]

    def accepts(self, subproblem: Subproblem) -> bool:
        """Whether this backend can take ``subproblem`` (decided before any solve)."""
        return subproblem.requires in self.capabilities

    @abc.abstractmethod
    def solve(self, subproblem: Subproblem, **options) -> Solution:
        """Solve ``subproblem`` (parameters already set)."""

    def __repr__(self) -> str:
        return f"<backend {self.name}: {', '.join(sorted(self.capabilities))}>"
