"""What is solved: ReLU networks, their un-rectified form, the AL problem and its blocks."""

from formulation.learning import ALProblem, ALState
from formulation.network import ReluNetwork, UnrectifiedBatch
from formulation.results import (
    ConvergenceWarning,
    InaccurateSolutionWarning,
    MemoryLimitError,
    ProblemError,
    Solution,
    SolutionStatus,
    SolverError,
    SolverNotFound,
    TerminationCondition,
    UnreluError,
)
from formulation.subproblems import (
    SUBPROBLEM_TYPES,
    ActivationBoxQP,
    HiddenPostactivation,
    HiddenPreactivation,
    OutputSoftmaxCrossEntropy,
    OutputSquaredLoss,
    SlackProjection,
    Subproblem,
    WeightLeastSquares,
)

__all__ = [
    "ALProblem",
    "ALState",
    "ReluNetwork",
    "UnrectifiedBatch",
    "ConvergenceWarning",
    "InaccurateSolutionWarning",
    "MemoryLimitError",
    "ProblemError",
    "Solution",
    "SolutionStatus",
    "SolverError",
    "SolverNotFound",
    "TerminationCondition",
    "UnreluError",
    "SUBPROBLEM_TYPES",
    "ActivationBoxQP",
    "HiddenPostactivation",
    "HiddenPreactivation",
    "OutputSoftmaxCrossEntropy",
    "OutputSquaredLoss",
    "SlackProjection",
    "Subproblem",
    "WeightLeastSquares",
]
