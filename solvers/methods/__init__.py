"""Methods built on the backend registry, kept apart from the backend modules.

* :mod:`solvers.methods.al_trainer`: the AL trainer of DESIGN §3;
* :mod:`solvers.methods.relaxed_al`: a local AL method on the relaxed reference problems of DESIGN §5;
* :mod:`solvers.methods.bounds`: LP bound tightening of pre-activations (the bound LPs of DESIGN §5);
* :mod:`solvers.methods.relu_bab`: a ReLU-split branch and bound for the output bound, on HiGHS's node LPs.

The top level of :mod:`solvers` holds the registry and one module per registered backend; a
method here dispatches its subproblems through :func:`solvers.solve` (or, for the trainer's default
``closed_form`` backend, through the fused sweep of :mod:`formulation.fused`).
"""
