"""Optional peer for ``unrelu verify``: the same fixed-weight problems through OMLT (Pyomo) and HiGHS.

`OMLT <https://github.com/cog-imperial/OMLT>`_ (Ceccon et al., "OMLT: Optimization & Machine Learning
Toolkit", JMLR 2022) writes a trained network into a Pyomo block. Here the network is given to it layer by
layer (``NetworkDefinition`` with ``InputLayer`` and ``DenseLayer``, ReLU on the hidden layers, linear
output), with the input box as its ``scaled_input_bounds``, and formulated with ``ReluBigMFormulation``:
one binary per hidden neuron, big-M from OMLT's own interval bounds (OMLT does no LP or MILP tightening).
The problem is then solved by HiGHS through Pyomo's ``appsi_highs`` interface, in this process, so its
time is measured the same way as ours (wall clock of build and of solve, separately).

Install with ``make omlt`` (``pip install omlt pyomo``); nothing in the tests needs it.

Differences to keep in mind: OMLT keeps a binary for every hidden neuron that is not stable under its
interval bounds (ours may remove more after tightening), and ``appsi_highs`` runs HiGHS with its own
defaults (``mip_rel_gap = 1e-4``; we pass the same relative gap as our runs use when given).
"""

from __future__ import annotations

import time

import numpy as np

from formulation.network import ReluNetwork
from formulation.results import SolverNotFound

INSTALL = "make omlt  (pip install omlt pyomo)"


def available() -> bool:
    """Whether OMLT, Pyomo and Pyomo's HiGHS interface can be imported and HiGHS is found."""
    try:
        _imports()
    except SolverNotFound:
        return False
    return True


def _imports():
    try:
        import pyomo.environ as pyo
        from omlt import OmltBlock
        from omlt.neuralnet import NetworkDefinition, ReluBigMFormulation
        from omlt.neuralnet.layer import DenseLayer, InputLayer
        from pyomo.contrib.appsi.solvers.highs import Highs
    except ImportError as exc:
        raise SolverNotFound(f"The OMLT peer needs omlt and pyomo ({exc}); install them with `{INSTALL}`.") from exc
    if not Highs().available():
        raise SolverNotFound("Pyomo's appsi_highs cannot find HiGHS; install highspy.")
    return pyo, OmltBlock, NetworkDefinition, ReluBigMFormulation, DenseLayer, InputLayer, Highs


def network_definition(network: ReluNetwork, lower, upper):
    """OMLT's ``NetworkDefinition`` of ``network`` with the input box ``[lower, upper]``."""
    _, _, NetworkDefinition, _, DenseLayer, InputLayer, _ = _imports()
    lower, upper = np.broadcast_to(lower, network.widths[0]), np.broadcast_to(upper, network.widths[0])
    definition = NetworkDefinition(scaled_input_bounds={i: (float(lo), float(up))
                                                        for i, (lo, up) in enumerate(zip(lower, upper))})
    previous = InputLayer([network.widths[0]])
    definition.add_layer(previous)
    for index, (W, b) in enumerate(zip(network.weights, network.biases)):
        hidden = index < network.depth - 1
        layer = DenseLayer(previous.output_size, [W.shape[0]], W.T.copy(), b.copy(),
                           activation="relu" if hidden else "linear")
        definition.add_layer(layer)
        definition.add_edge(previous, layer)
        previous = layer
    return definition


def _solve(build_objective, network: ReluNetwork, lower, upper, *, sense: str, time_limit: float | None,
           gap: float | None) -> dict:
    pyo, OmltBlock, _, ReluBigMFormulation, _, _, Highs = _imports()
    clock = time.perf_counter()
    model = pyo.ConcreteModel()
    model.nn = OmltBlock()
    model.nn.build_formulation(ReluBigMFormulation(network_definition(network, lower, upper)))
    build_objective(pyo, model)
    binaries = sum(1 for variable in model.component_data_objects(pyo.Var) if variable.is_binary())
    build = time.perf_counter() - clock
    solver = Highs()
    solver.config.load_solution = False
    if time_limit is not None:
        solver.config.time_limit = float(time_limit)
    if gap is not None:
        solver.config.mip_gap = float(gap)
    clock = time.perf_counter()
    results = solver.solve(model)
    elapsed = time.perf_counter() - clock
    termination = str(results.termination_condition).rsplit(".", 1)[-1]
    point = None
    if results.best_feasible_objective is not None:
        results.solution_loader.load_vars()
        point = np.array([pyo.value(model.nn.inputs[i]) for i in range(network.widths[0])], dtype=float)
    bound = results.best_objective_bound
    bound = float(bound) if bound is not None and np.isfinite(bound) else None
    return {"termination": termination, "proved": termination == "optimal", "build_s": build, "solve_s": elapsed,
            "objective": None if results.best_feasible_objective is None else float(results.best_feasible_objective),
            "bound": bound, "point": point, "binaries": binaries, "sense": sense}


def output_bound(network: ReluNetwork, lower, upper, *, k: int = 0, sense: str = "max",
                 time_limit: float | None = None, gap: float | None = None) -> dict:
    """``max`` (or ``min``) of output ``k`` over the box through OMLT + HiGHS.

    Returns a dict: ``termination`` (Pyomo's name), ``proved``, ``build_s``, ``solve_s``, ``objective`` (HiGHS's
    incumbent value), ``bound`` (its dual bound), ``point`` (the input it returned, for a forward-pass check),
    ``binaries`` (OMLT's binary variables).
    """
    def objective(pyo, model):
        model.objective = pyo.Objective(expr=model.nn.outputs[k],
                                        sense=pyo.maximize if sense == "max" else pyo.minimize)

    return _solve(objective, network, lower, upper, sense=sense, time_limit=time_limit, gap=gap)


def logit_gap(network: ReluNetwork, lower, upper, *, target: int, label: int, time_limit: float | None = None,
              gap: float | None = None) -> dict:
    """``max logit(target) − logit(label)`` over the box (OMLT's MNIST notebook problem), as :func:`output_bound`."""
    def objective(pyo, model):
        model.objective = pyo.Objective(expr=model.nn.outputs[target] - model.nn.outputs[label], sense=pyo.maximize)

    return _solve(objective, network, lower, upper, sense="max", time_limit=time_limit, gap=gap)
