"""How subproblems are solved: a registry of interchangeable backends behind one ``solve``.

Each backend lives in a module named after its key (``closed_form``, ``ecos_``, ``osqp_``,
``clarabel_``, ``scs_``; mixed-integer: ``highs_``, ``scip_``, ``ecos_bb_``) and is registered
here when it imports; CVXPY backends are installed when ``cvxpy.installed_solvers()`` lists them.
"""

from __future__ import annotations

import contextlib
import importlib

from formulation.results import ProblemError, Solution, SolverNotFound
from formulation.subproblems import Subproblem
from solvers._base import BILINEAR, EXP, LP, MILP, MIQP, QP, Accuracy, Backend

__all__ = ["solve", "available_backends", "backends_with", "capable_backends", "get_backend", "register",
           "unregister", "registry_scope", "load", "Backend", "Accuracy",
           "LP", "QP", "EXP", "MILP", "MIQP", "BILINEAR", "KNOWN_BACKENDS", "SolverNotFound"]

#: Every backend this package knows: registry key -> its module. Adding a backend is one module (a ``Backend``
#: subclass with its capabilities, install command and accuracy, and a module-level ``backend``) and one line
#: here. A module that cannot import raises ``ImportError`` whose message says how to install it.
KNOWN_BACKENDS: dict[str, str] = {
    "closed_form": "solvers.closed_form",
    "ECOS": "solvers.ecos_",
    "OSQP": "solvers.osqp_",
    "CLARABEL": "solvers.clarabel_",
    "SCS": "solvers.scs_",
    # mixed-integer references (DESIGN §5): they take the BinaryForm / RelaxedForm of formulation.mixed_integer
    "HIGHS": "solvers.highs_",
    "SCIP": "solvers.scip_",
    "ECOS_BB": "solvers.ecos_bb_",
}

#: Order in which ``backend="auto"`` tries CVXPY backends when there is no closed form.
AUTO_ORDER = ("closed_form", "CLARABEL", "ECOS", "OSQP", "SCS")

_REGISTRY: dict[str, Backend] = {}
_MISSING: dict[str, str] = {}


def register(backend: Backend) -> None:
    """Add ``backend`` to the registry under ``backend.name``."""
    _REGISTRY[backend.name] = backend
    _MISSING.pop(backend.name, None)


def unregister(name: str, *, reason: str | None = None) -> Backend | None:
    """Remove backend ``name`` and return it (None when absent). With ``reason`` it is then reported as not
    installed, with that reason (say how to install it)."""
    backend = _REGISTRY.pop(name, None)
    if reason is not None:
        _MISSING[name] = reason
    return backend


@contextlib.contextmanager
def registry_scope():
    """Restore the registry as it was on exit, whatever was registered or unregistered inside the block."""
    saved = dict(_REGISTRY), dict(_MISSING)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved[0])
        _MISSING.clear()
        _MISSING.update(saved[1])


def load(key: str, module: str) -> bool:
    """Import ``module`` and register its ``backend`` under ``key``; when the import fails, record ``key``
    as not installed with the module's message (which names the install command). True when registered."""
    try:
        backend = importlib.import_module(module).backend
    except ImportError as exc:
        _MISSING[key] = str(exc)
        return False
    if backend.name != key:
        raise ProblemError(f"{module} registers a backend named {backend.name!r}, not {key!r}.")
    register(backend)
    return True


for _key, _module in KNOWN_BACKENDS.items():
    load(_key, _module)


def available_backends() -> list[str]:
    """Keys of the installed backends."""
    return list(_REGISTRY)


def _not_found(name: str) -> SolverNotFound:
    installed = ", ".join(_REGISTRY) or "none"
    if name in _MISSING:
        return SolverNotFound(
            f"Backend {name!r} is not installed: {_MISSING[name]}. Installed backends: {installed}."
        )
    known = ", ".join(dict.fromkeys([*KNOWN_BACKENDS, *_REGISTRY]))
    missing = "".join(f"; {key} is not installed: {reason}" for key, reason in _MISSING.items())
    return SolverNotFound(f"Unknown backend {name!r}. Known backends: {known}; installed: {installed}{missing}.")


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (case-insensitive for CVXPY solver names)."""
    for key in (name, name.upper()):
        if key in _REGISTRY:
            return _REGISTRY[key]
    raise _not_found(name.upper() if name.upper() in KNOWN_BACKENDS else name)


def backends_with(*capabilities: str) -> list[str]:
    """Keys of the installed backends that have any of ``capabilities`` (in registry order)."""
    return [name for name, backend in _REGISTRY.items() if backend.capabilities & set(capabilities)]


def capable_backends(subproblem: Subproblem) -> list[str]:
    """Installed backends that can take ``subproblem``."""
    return [name for name, backend in _REGISTRY.items() if backend.accepts(subproblem)]


def solve(subproblem: Subproblem, backend: str = "auto", **options) -> Solution:
    """Solve ``subproblem`` (parameters already set) with ``backend``.

    Parameters
    ----------
    subproblem : Subproblem
    backend : str
        A registry key, or ``"auto"``: the closed form where one exists, else the first
        capable backend in ``AUTO_ORDER``.
    **options
        Passed to the backend (solver settings). The CVXPY backends also take ``memory_limit`` (bytes): the
        first solve is refused with ``MemoryLimitError`` when CVXPY's estimated build memory exceeds it (or
        80 % of the available memory); the mixed-integer ones take ``time_limit`` (seconds), enforced from
        outside for a solver without one (ECOS_BB).

    Raises
    ------
    SolverNotFound
        Unknown or uninstalled backend, or one that cannot take this subproblem (raised
        before solving; the message names the backends that can).
    SolverError
        The backend failed (chained from the backend's own exception).
    MemoryLimitError
        A CVXPY backend would need more memory than is available to build the model (refused before building).
    """
    if backend == "auto":
        for name in AUTO_ORDER:
            if name in _REGISTRY and _REGISTRY[name].accepts(subproblem):
                return _REGISTRY[name].solve(subproblem, **options)
        raise SolverNotFound(
            f"No installed backend can take {type(subproblem).__name__} (it needs {subproblem.requires}); "
            f"installed: {', '.join(_REGISTRY) or 'none'}"
            + "".join(f"; {key} is not installed: {_MISSING[key]}" for key in AUTO_ORDER if key in _MISSING) + "."
        )
    chosen = get_backend(backend)
    if not chosen.accepts(subproblem):
        able = capable_backends(subproblem)
        need = "a closed form" if chosen.name == "closed_form" else f"{subproblem.requires} support"
        raise SolverNotFound(
            f"Backend {chosen.name!r} cannot take {type(subproblem).__name__}: it needs {need}. "
            f"Backends that can: {', '.join(able) or 'none installed'}."
        )
    return chosen.solve(subproblem, **options)
