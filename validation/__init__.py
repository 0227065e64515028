"""Uses of ``formulation`` and ``solvers``: studies, benchmarks, experiments and the CLI."""
