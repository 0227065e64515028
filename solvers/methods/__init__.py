"""Methods built on the backend registry: the AL trainer (:mod:`solvers.methods.al_trainer`).

The top level of :mod:`solvers` holds the registry and one module per registered backend; a
method here dispatches its block subproblems through :func:`solvers.solve` (or, for the default
``closed_form`` backend, through the fused sweep of :mod:`formulation.fused`).
"""
