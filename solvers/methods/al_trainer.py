r"""``ALTrainer``: the augmented-Lagrangian learning method of DESIGN §3 (exact and restarted), any depth.

The problem is :class:`formulation.learning.ALProblem` on standardised data,

.. math::

    \min\ \tfrac{\alpha}{2}\|Z_L - Y\|^2 + \tfrac{\mu}{2}\sum_l \|W_l\|^2
    \quad\text{s.t. } C1_l = 0\ (l = 1..L),\ C2_l = C3_l = C4_l = 0\ (l < L),
    \ S, T \ge 0,\ 0 \le D \le 1,

with ``α = 1 / ||Y − Ȳ||²`` (so ``2f`` is the fraction of target variance left unexplained and
does not grow with ``N``) and the penalty written relative to it, ``ρ = ρ̂ α``. Every block
subproblem then has parameters that do not depend on ``N`` (``w = α/ρ = 1/ρ̂`` in the output
block, ``r = μ/ρ`` against a Gram matrix that grows like ``N`` but is compared with ``μ/α``, which
grows like ``N`` too), so the same defaults train on ``N = 100`` and ``N = 10,000``.

Two outer methods (``mode``), both on the same sweep (:meth:`ALProblem.sweep`, or the same
closed forms fused by :class:`~formulation.fused.FusedSweep`) and the same diagnostics
(:meth:`ALProblem.diagnostics`).

**Exact mode** (``mode="exact"``): the safeguarded AL of DESIGN §3, whose limit points are
critical points. One outer iteration ``k``:

1. ``sweeps`` block-coordinate sweeps over :meth:`ALProblem.blocks` (default ``scheme="joint"``,
   for each hidden ``l``: ``W_l,b_l → (Z_l,S_l,T_l) → (D_l,S_l,T_l) → X_l``; then
   ``W_L,b_L → Z_L``; ``scheme="split"`` is DESIGN's table with ``Z_l``, ``D_l``, ``S_l,T_l``
   separate), each block an exact minimiser of ``L_ρ``;
2. diagnostics at ``(x_k, Λ_k, ρ_k)``: violation ``V_k = max_k ||C_k||∞`` and the KKT residual
   (projected gradient of ``L_ρ``, which equals the gradient of the ordinary Lagrangian at the
   updated multipliers ``Λ_k + ρ C_k``, maxed with ``V_k``);
3. safeguarded multiplier update ``Λ ← clip(Λ + ρ C, −λ_max, λ_max)``;
4. penalty rule (Birgin & Martínez), tested once every ``penalty_period`` iterations:
   ``ρ ← min(γ ρ, ρ_max)`` when ``V_k > τ V_{k−period}`` AND ``V_k > penalty_balance · G_k``, with
   ``G_k`` the stationarity part of the KKT residual. The second condition keeps ``ρ`` when the
   sweeps, not feasibility, are what lags: BM's rule assumes each primal subproblem is solved to a
   tolerance, and one sweep does not do that; raising ``ρ`` then only freezes block coordinate
   descent (measured on the tiny test net: without the gate ``ρ̂`` climbed to 1,140 with the
   violation at 7e-7 and the KKT residual stuck at 1.6e-3; with it, ``ρ̂`` stopped at 14.4 and the
   run converged to 1e-6).

**Restarted mode** (``mode="restarted"``, the default): every outer iteration starts from the
forward pass of the current weights ``x`` with the first-order multipliers
(:meth:`ALProblem.restart`: every constraint exact, and the gradient of ``L_ρ`` is the
backpropagation gradient in ``W, b`` and zero in every other block), runs ``sweeps`` sweeps, and
takes the resulting weights ``φ(x)`` as a proposal. Candidates, in order: the Anderson point of
the map ``x ↦ φ(x)`` (type II, memory ``anderson``, :class:`~solvers.methods.anderson.Anderson`),
the over-relaxed point ``x + ω(φ(x) − x)`` (``relaxation = ω``), ``φ(x)``; the first whose
objective ``f + (μ/2)Σ||W||²`` (forward pass) does not exceed the reference is taken and
``ρ̂ ← max(ρ̂/penalty_down, rho_min)``; if none is, ``x`` stays, ``ρ̂ ← min(penalty_up·ρ̂, ρ_max)``
and the Anderson history is cleared (``adaptive_penalty=False`` keeps ``ρ̂`` fixed). The reference
is the largest objective of the last ``nonmonotone`` accepted iterates (Grippo, Lampariello &
Lucidi's nonmonotone rule, default 20; ``nonmonotone=1``: the objective of ``x``). What it keeps:
that largest objective over the window never rises (with ``nonmonotone=1``: the objective never
rises), every accepted point evaluated by a forward pass, and a fixed point of the sweep from the
restarted state is a critical point of the training objective (there the W-block stays put only if
the backpropagation gradient vanishes). What it gives up:
the multipliers are not carried between iterations, so DESIGN §3's convergence theorem for the
safeguarded AL does not apply; use ``mode="exact"`` for that claim. The KKT residual at the
restarted state is the ∞-norm of the backpropagation gradient; it is computed every
``kkt_every`` iterations (``None`` in the other rows) and for the last row.

**Sample batches** (restarted mode, ``batch_size``; ``"auto"`` uses batches of ``B = max(1000, 2
(n_max + 1))`` samples, ``n_max`` the widest layer input, when ``N >= 4B`` and Anderson is off): the
per-sample blocks ``Z, D, S, T, X`` and their multipliers are independent across columns, so a
restarted step can be taken on a random batch of ``B`` columns alone: the training problem
restricted to the batch with its loss scaled by ``N/B`` (an unbiased estimate of the full objective;
``ρ = ρ̂ α N/B`` keeps the balance of loss, penalty and weight decay), started from the forward
state of the current weights on the batch, ``sweeps`` sweeps, accepted when the *batch* objective
does not rise. One outer iteration visits ``N // B`` batches of a fresh permutation (seeded by the
seed and the iteration, so a resumed run repeats them). What it keeps: no accepted step raises its
batch's objective. What it gives up: the full objective is no longer monotone, and its fixed points
are no longer claimed to be critical points (the steps are stochastic); the full batch
(``batch_size=None``) keeps both. Measured (README, ``bench train`` and its ablation): on
teacher-student and MNIST CS, at equal time, the batches reach a lower validation loss than the full
batch.

Initialisation: an He-initialised network (seeded), optionally with the output layer replaced by
the ridge least-squares fit to ``Y`` on the hidden features of the forward pass (one linear
solve; ``init="ridge"``, the default), or (``init="pairs"``) a network that *is* the ridge
decoder ``P X_0 + c 1ᵀ`` of ``Y`` on the inputs, written as a ReLU network through
``P x = P ReLU(x) − P ReLU(−x)``: the first ``2 n_0`` units of the first hidden layer are the pairs
``ReLU(±x)``, each later hidden layer passes them on through identity rows (they are nonnegative),
the other units are He units with output weights ``0``, and ``W_L = [P, −P, 0]``, ``b_L = c``. The AL
method then starts exactly at the linear decoder, with the He units ready to add what it cannot
fit. Then every auxiliary variable from the forward pass
(:meth:`ALProblem.initial_state`: violation 0) and the multipliers from the first-order estimate
at that point (:meth:`ALProblem.warm_multipliers`, the backpropagated loss gradient;
``warm_multipliers=False`` starts them at 0).

Measured (``unrelu bench train``; README, section "Benchmark: unrelu bench train"): the restarted
mode against the exact one, Adam and the ablation of each acceleration.

Memory: the trainer keeps the AL state (``9`` arrays of ``n_l × N`` per hidden layer, ``2`` for the
output layer), the data, the fused sweep's buffers (one array per layer plus one of the widest
hidden layer; the restarted mode evaluates its candidates in them), with Anderson on its history
(``2m + 2`` copies of the weights), and at most a few temporaries of one layer;
diagnostics and the multiplier update stream layer by layer and by column chunks, and subproblem
parameters are released after each block.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

import solvers
from formulation._checks import (
    MAX_NPZ_BYTES,
    as_float_array,
    check_checkpoint,
    check_nonnegative,
    check_positive_int,
    read_npz,
)
from formulation.fused import FusedSweep
from formulation.learning import ALProblem, ALState, check_dtype
from formulation.network import ReluNetwork
from formulation.results import ConvergenceWarning, ProblemError, SolverError
from formulation.subproblems import WeightLeastSquares
from solvers.methods.anderson import Anderson
from solvers.methods.scaling import Standardizer, forward_loss_fraction

__all__ = ["ALTrainer", "TrainResult", "HISTORY_COLUMNS", "MODES", "ENGINES", "DEFAULT_MU", "blas_threads"]

#: Columns of the history, one row per outer iteration (iteration 0 is the initialisation).
HISTORY_COLUMNS = ("iteration", "objective", "train_loss", "val_loss", "viol_C1", "viol_C2", "viol_C3", "viol_C4",
                   "viol_bounds", "violation", "kkt", "rho", "seconds")

CHECKPOINT_VERSION = 1

#: Ways of running a sweep: ``fused`` (:class:`~formulation.fused.FusedSweep`, closed forms only) or
#: ``dispatched`` (:meth:`ALProblem.sweep`, every block through :func:`solvers.solve`); ``auto`` picks fused
#: where it applies.
ENGINES = ("auto", "fused", "dispatched")

#: Outer methods (module docstring): ``restarted`` (default) and ``exact`` (DESIGN §3's safeguarded AL).
MODES = ("restarted", "exact")
#: Starting networks (:meth:`ALTrainer.initial_network`).
INITS = ("ridge", "forward", "pairs")

#: Least samples per restarted step with ``batch_size="auto"`` (:meth:`ALTrainer.resolved_batch_size`).
AUTO_BATCH = 1000

#: Default weight decay ``mu`` (relative to ``α``; :class:`ALTrainer`), also given to the Adam baseline.
DEFAULT_MU = 1e-3

#: Initial relative penalty ``ρ̂_0`` when ``rho`` is not given.
DEFAULT_RHO = {"restarted": 1.0, "exact": 10.0}



# ============================================================================ result
@dataclass
class TrainResult:
    """What :meth:`ALTrainer.fit` returns.

    Attributes
    ----------
    network : ReluNetwork
        The learned network (current ``W, b``) in ORIGINAL data units.
    history : list of dict
        One row per outer iteration, keys :data:`HISTORY_COLUMNS`; row 0 is the initialisation.
        ``train_loss``/``val_loss`` are forward-pass losses as fractions of the target variance,
        ``objective`` is ``f + (μ/2)Σ||W||²`` at the AL variables, ``kkt``/``violation`` are in the
        standardised problem.
    stop_reason : str
        ``"converged"``, ``"max_iters"``, ``"time_budget"``, ``"diverged"``, ``"early_stopping"`` (``patience``
        iterations without a new least validation loss), or ``"stalled"`` (restarted mode on
        the full batch: ``penalty_period`` steps in a row rejected with ``ρ̂`` at ``rho_max``, so no step of
        the sweep lowers the objective any more at the precision of the dtype).
    message : str
    init_train_loss, init_val_loss : float
        Forward-pass losses of the initialisation (fractions of variance), so the AL gain is visible.
    state_bytes : int
        Bytes of the per-sample AL arrays (the memory bound refers to this), on sample batches with the
        batch's arrays, buffers and data copy.
    """

    network: ReluNetwork
    history: list[dict]
    stop_reason: str
    message: str
    init_train_loss: float
    init_val_loss: float | None
    state_bytes: int
    standardizer: Standardizer
    iterations: int = 0
    extras: dict = field(default_factory=dict)

    @property
    def final(self) -> dict:
        return self.history[-1]


# ============================================================================ trainer
class ALTrainer:
    r"""Safeguarded augmented-Lagrangian training of a ReLU MLP (module docstring for the maths).

    Parameters
    ----------
    hidden : sequence of int
        Hidden widths ``(n_1, ..., n_{L-1})``; ``n_0`` and ``n_L`` come from the data.
    mode : {"restarted", "exact"}
        Outer method (module docstring). ``"exact"`` is DESIGN §3's safeguarded AL.
    backend : str
        Backend of every block, a key of :func:`solvers.available_backends` (``"closed_form"``
        default; CVXPY backends such as ``"OSQP"`` or ``"CLARABEL"`` build each block's DPP model
        once and re-solve it).
    seed : int
        Seed of the He initialisation.
    init : {"ridge", "forward", "pairs"}
        ``"ridge"``: output layer fitted by ridge least squares on the hidden features;
        ``"pairs"``: the network that equals the ridge decoder of ``Y`` on the inputs (module
        docstring; needs every hidden width ``>= 2 n_0``);
        ``"forward"``: the He network as is.
    ridge : float
        Relative ridge of the initial output fit: ``r = ridge · tr(H Hᵀ) / n`` for features ``H`` with
        ``n`` rows (the hidden features with ``init="ridge"``, the inputs with ``"pairs"``; the
        convention of :func:`validation.baselines.linear.ridge`, so a ridge chosen there carries over).
    rho : float or None
        Initial relative penalty ``ρ̂_0`` (``ρ = ρ̂ α``); default 1 (restarted) or 10 (exact).
    gamma, tau : float
        Penalty growth ``γ > 1`` and required violation decrease ``τ ∈ (0, 1)``.
    rho_max : float
        Cap on ``ρ̂``.
    multiplier_box : float
        ``λ_max / α``: multipliers are clipped to ``[−λ_max, λ_max]``.
    mu : float
        Weight decay ``μ`` relative to ``α`` (``μ_abs = mu · α``). In a weight block it adds
        ``r = μ/ρ`` to the diagonal of the Gram matrix of the layer's input. The default ``1e-3``
        (was ``1e-6``) keeps the rarely active directions of a sample batch's Gram matrix from
        producing huge weights (measured, MNIST CS on batches of 1000, 100 s: validation loss 0.141
        with ``1e-3``, 0.218 with ``1e-4``, 0.525 with ``1e-6`` at 150 s, the latter two from weights
        that fit their batch and extrapolate badly).
    sweeps : int
        Block sweeps per outer iteration.
    tol : float
        Stop when the KKT residual and the violation are both ``≤ tol`` (standardised problem).
    max_iters : int
        Outer iterations.
    time_budget : float or None
        Training seconds for the outer loop (checked after each iteration): wall-clock time minus the
        monitoring (forward-pass train/validation losses, history rows, progress bar), which the Adam
        baseline does not charge either.
    checkpoint : str or None
        Path of a ``.npz`` checkpoint written atomically every ``checkpoint_every`` iterations and
        at the end. When it exists and ``resume`` is true, training resumes from it.
    divergence_patience : int
        Stop as diverged after this many consecutive iterations of growing violation with ``ρ``
        at its cap.
    progress : bool or None
        tqdm bar; ``None`` shows it only on a terminal.
    standardize : bool
        Train on standardised data (:class:`Standardizer`); the returned network is in
        original units either way.
    scheme : {"split", "joint"}
        Blocks of a sweep (:meth:`ALProblem.blocks`): ``"split"`` is DESIGN's table; ``"joint"``
        minimises the slacks together with ``Z_l`` and again with ``D_l`` (exact convex blocks
        :class:`~formulation.subproblems.PreactivationSlacks`, :class:`~formulation.subproblems.ActivationSlacks`).
    order : {"forward", "backward", "alternate"}
        Sweep direction. Forward (default) ends each sweep with the output block ``Z_L``, the smooth
        block whose multiplier is the loss gradient; the others are kept for experiments: with a
        fixed ``ρ`` they oscillated (backward) or diverged (alternate) on the tiny test net.
    penalty_balance : float
        Gate of the penalty rule (module docstring, step 4).
    warm_multipliers : bool
        Exact mode: start from the first-order multiplier estimate (:meth:`ALProblem.warm_multipliers`,
        the backpropagated loss gradient) instead of zero. The restarted mode always uses it.
    engine : {"auto", "fused", "dispatched"}
        ``"fused"``: :class:`~formulation.fused.FusedSweep` (``closed_form`` backend, joint scheme,
        forward order); ``"dispatched"``: every block through :func:`solvers.solve`; ``"auto"``
        picks fused where it applies. Both give the same iterates (tested to 1e-10 in float64).
    dtype : {"float32", "float64"} or None
        Floating type of the data and the state (float32 needs the fused engine). ``None``: float32
        in restarted mode with the fused engine (measured: about half the time per iteration),
        float64 otherwise.
    threads : int or None
        Cap on BLAS/OpenMP threads during :meth:`fit` (``threadpoolctl``); ``None`` leaves them.
    anderson : int or None
        Memory of Anderson acceleration of the weights (restarted mode; default ``0``: off, because
        at equal time it did not pay for its extra forward passes, README ablation).
    relaxation : float or None
        ``ω ∈ (0, 2)`` of the over-relaxed candidate ``x + ω(φ(x) − x)`` (restarted mode; default
        ``1``: off, same reason).
    adaptive_penalty, penalty_up, penalty_down, rho_min : bool, float, float, float
        Restarted mode: after a rejected step ``ρ̂ ← min(penalty_up·ρ̂, rho_max)``, after an accepted
        one ``ρ̂ ← max(ρ̂/penalty_down, rho_min)``; ``adaptive_penalty=False`` keeps ``ρ̂`` fixed.
    kkt_every : int
        Restarted mode: iterations between KKT residuals (each costs about a backward pass).
    nonmonotone : int
        Restarted mode on the full batch: a candidate is accepted when its objective does not exceed the
        largest objective of the last ``nonmonotone`` accepted iterates (Grippo, Lampariello & Lucidi's
        nonmonotone rule); ``1`` accepts only steps that do not raise the objective. Default 20
        (measured, README ablation: on the digits the monotone rule stalls at a kink of the ReLUs with
        every step rejected at ``rho_max``). Steps on sample batches compare their own batch, so stay monotone.
    batch_size : int, "auto" or None
        Restarted mode, fused engine: run each restarted step on a random batch of this many samples
        (module docstring, "Sample batches"); an outer iteration is then one pass over the data.
        ``None`` (or a size ``>= N``): full batch. ``"auto"`` (default): batches of
        ``B = max(1000, 2 (n_max + 1))`` samples (``n_max`` the widest layer input) when ``N >= 4B`` and
        Anderson is off, full batch otherwise (:meth:`resolved_batch_size`; measured, README ablation).
    restore_best : bool
        Return the iterate of least validation loss (the start, row 0, included) instead of the last one
        (early stopping on held-out data, as Keras's ``restore_best_weights``); needs ``X_val, Y_val``. The
        history keeps every row; ``TrainResult.extras["selected"]`` says which iterate was returned.
        Measured (README, ``unrelu cs`` on Set11): the last iterate fitted the training photos better while
        its validation loss rose.
    patience : int or None
        Stop (``stop_reason="early_stopping"``) when the validation loss has not improved on its least value
        for this many outer iterations; needs ``X_val, Y_val``. ``None``: never.
    keep_state : bool
        Keep the final AL state and problem in ``TrainResult.extras["state"]`` / ``["problem"]`` (for
        benchmarks and tests). Off by default: they hold about ten arrays of ``n_l × N`` and a copy of
        the data, which a returned result should not keep alive.
    """

    def __init__(self, hidden: Sequence[int] = (64,), *, mode: str = "restarted", backend: str = "closed_form",
                 seed: int = 0, init: str = "ridge", ridge: float = 1e-3, rho: float | None = None,
                 gamma: float = 1.2, tau: float = 0.9,
                 penalty_period: int = 25, rho_max: float = 1e4, multiplier_box: float = 1e8, mu: float = DEFAULT_MU,
                 sweeps: int = 1,
                 tol: float = 1e-6, max_iters: int = 200, time_budget: float | None = None,
                 checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 10, resume: bool = True,
                 divergence_patience: int = 30, progress: bool | None = None, standardize: bool = True,
                 solver_options: dict | None = None, scheme: str = "joint", order: str = "forward",
                 penalty_balance: float = 1.0, warm_multipliers: bool = True, engine: str = "auto",
                 dtype: str | None = None, threads: int | None = None, anderson: int | None = None,
                 relaxation: float | None = None, adaptive_penalty: bool = True, penalty_up: float = 2.0,
                 penalty_down: float = 1.1, rho_min: float = 1e-3, kkt_every: int = 10, nonmonotone: int = 20,
                 batch_size: int | str | None = "auto", restore_best: bool = False, patience: int | None = None,
                 keep_state: bool = False):
        self.hidden = tuple(check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
        if mode not in MODES:
            raise ProblemError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        self.mode = mode
        self.backend = backend
        solvers.get_backend(backend)  # fail now, with the install hint
        if init not in INITS:
            raise ProblemError(f"Unknown init {init!r}; choose one of {', '.join(INITS)}.")
        self.ridge = check_nonnegative("ridge", ridge)
        self.seed = int(seed)
        self.init = init
        self.rho = check_nonnegative("rho", DEFAULT_RHO[mode] if rho is None else rho)
        self.gamma = check_nonnegative("gamma", gamma)
        self.tau = check_nonnegative("tau", tau)
        self.rho_max = check_nonnegative("rho_max", rho_max)
        if self.rho <= 0 or self.gamma < 1 or not 0 < self.tau < 1 or self.rho_max < self.rho:
            raise ProblemError(
                f"Penalty settings need rho > 0, gamma >= 1, 0 < tau < 1 and rho_max >= rho; got rho={rho}, "
                f"gamma={gamma}, tau={tau}, rho_max={rho_max}."
            )
        if mode == "exact" and (anderson or (relaxation is not None and relaxation != 1.0)):
            raise ProblemError("Anderson acceleration and relaxation act on the weights of the restarted mode; with "
                               f"mode='exact' leave them unset (got anderson={anderson!r}, relaxation={relaxation!r}).")
        # measured (README, `bench train --ablation`): neither paid for its cost per iteration at equal time
        anderson = 0 if anderson is None else anderson
        relaxation = 1.0 if relaxation is None else relaxation
        if isinstance(anderson, bool) or not isinstance(anderson, (int, np.integer)) or anderson < 0:
            raise ProblemError(f"`anderson` (the memory of Anderson acceleration) must be an integer >= 0, got "
                               f"{anderson!r}; 0 turns it off.")
        self.anderson = int(anderson)
        self.relaxation = check_nonnegative("relaxation", relaxation)
        if not 0 < self.relaxation < 2:
            raise ProblemError(f"`relaxation` must be in (0, 2) (1 = plain sweep, 1.5 over-relaxes), got {relaxation}.")
        self.adaptive_penalty = bool(adaptive_penalty)
        self.penalty_up = check_nonnegative("penalty_up", penalty_up)
        self.penalty_down = check_nonnegative("penalty_down", penalty_down)
        self.rho_min = check_nonnegative("rho_min", rho_min)
        if self.penalty_up < 1 or self.penalty_down < 1 or not 0 < self.rho_min <= self.rho:
            raise ProblemError(f"Adaptive penalty settings need penalty_up >= 1, penalty_down >= 1 and "
                               f"0 < rho_min <= rho; got {penalty_up}, {penalty_down}, {rho_min}, rho={self.rho}.")
        self.kkt_every = check_positive_int("kkt_every", kkt_every)
        self.nonmonotone = check_positive_int("nonmonotone", nonmonotone)
        self.penalty_period = check_positive_int("penalty_period", penalty_period)
        self.multiplier_box = check_nonnegative("multiplier_box", multiplier_box)
        self.mu = check_nonnegative("mu", mu)
        self.sweeps = check_positive_int("sweeps", sweeps)
        self.tol = check_nonnegative("tol", tol)
        self.max_iters = int(max_iters)
        if self.max_iters < 0:
            raise ProblemError(f"`max_iters` must be >= 0, got {max_iters}.")
        self.time_budget = None if time_budget is None else check_nonnegative("time_budget", time_budget)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        if self.checkpoint is not None and not self.checkpoint.endswith(".npz"):
            self.checkpoint += ".npz"
        self.checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        self.resume = bool(resume)
        self.divergence_patience = check_positive_int("divergence_patience", divergence_patience)
        self.progress = progress
        self.standardize = bool(standardize)
        self.solver_options = dict(solver_options or {})
        if scheme not in ("split", "joint") or order not in ("forward", "backward", "alternate"):
            raise ProblemError(f"Unknown scheme {scheme!r} or order {order!r}; schemes: 'split', 'joint'; orders: "
                               "'forward', 'backward', 'alternate'.")
        self.scheme = scheme
        self.penalty_balance = check_nonnegative("penalty_balance", penalty_balance)
        self.warm_multipliers = bool(warm_multipliers)
        self.order = order
        self._sweep_count = 0  # index of the current sweep, set by fit (order="alternate" reads it)
        fusable = backend == "closed_form" and scheme == "joint" and order == "forward"
        if engine not in ENGINES:
            raise ProblemError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
        if engine == "fused" and not fusable:
            raise ProblemError(f"engine='fused' needs backend='closed_form', scheme='joint' and order='forward' (got "
                               f"{backend!r}, {scheme!r}, {order!r}); use engine='dispatched' or 'auto'.")
        self.engine = ("fused" if fusable else "dispatched") if engine == "auto" else engine
        if dtype is None:  # measured (README, bench train): float32 nearly halves the time of a restarted iteration
            dtype = "float32" if mode == "restarted" and self.engine == "fused" else "float64"
        self.dtype = check_dtype(dtype).name
        if self.dtype != "float64" and self.engine != "fused":
            raise ProblemError(f"dtype={self.dtype!r} needs the fused engine (backend='closed_form', scheme='joint', "
                               "order='forward'); the dispatched blocks run in float64.")
        self.threads = None if threads is None else check_positive_int("threads", threads)
        if batch_size is not None and not (isinstance(batch_size, str) and batch_size == "auto"):
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
                raise ProblemError(f"`batch_size` must be a positive integer, 'auto' or None (full batch), got "
                                   f"{batch_size!r}.")
            batch_size = int(batch_size)
            if mode != "restarted" or self.engine != "fused" or self.anderson:
                raise ProblemError(f"batch_size={batch_size} needs mode='restarted', the fused engine and anderson=0 "
                                   f"(got mode={mode!r}, engine={self.engine!r}, anderson={self.anderson}); leave "
                                   "batch_size at 'auto' or None (--batch-size auto or full).")
        self.batch_size = batch_size
        self.restore_best = bool(restore_best)
        self.patience = None if patience is None else check_positive_int("patience", patience)
        self.keep_state = bool(keep_state)
        self._fused: FusedSweep | None = None
        self._batch_fused: FusedSweep | None = None
        self._resolved_batch: int | None = None

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict:
        """Everything that determines the iterates (stored in checkpoints and compared on resume)."""
        return {"hidden": list(self.hidden), "backend": self.backend, "seed": self.seed, "init": self.init,
                "ridge": self.ridge,
                "rho": self.rho, "gamma": self.gamma, "tau": self.tau, "rho_max": self.rho_max,
                "penalty_period": self.penalty_period, "multiplier_box": self.multiplier_box, "mu": self.mu,
                "sweeps": self.sweeps,
                "standardize": self.standardize, "scheme": self.scheme, "order": self.order,
                "penalty_balance": self.penalty_balance, "warm_multipliers": self.warm_multipliers,
                "engine": self.engine, "dtype": self.dtype, "mode": self.mode, "anderson": self.anderson,
                "relaxation": self.relaxation, "adaptive_penalty": self.adaptive_penalty,
                "nonmonotone": self.nonmonotone,
                "penalty_up": self.penalty_up, "penalty_down": self.penalty_down, "rho_min": self.rho_min,
                "kkt_every": self.kkt_every, "batch_size": self.batch_size, "restore_best": self.restore_best,
                "patience": self.patience}

    def resolved_batch_size(self, N: int, widths: Sequence[int]) -> int | None:
        """Samples per restarted step for ``N`` training samples and layer widths ``widths``; ``None``: full batch.

        ``"auto"``: ``B = max(AUTO_BATCH, 2 (n_max + 1))`` with ``n_max`` the widest layer input (a weight
        block fits ``n_max + 1`` numbers per unit to the batch: with fewer samples than that it
        interpolates its batch), and the full batch unless ``N >= 4B``.
        """
        if self.mode != "restarted" or self.engine != "fused" or self.batch_size is None:
            return None
        if self.batch_size == "auto":
            size = max(AUTO_BATCH, least_batch(widths))
            return size if N >= 4 * size and not self.anderson else None
        return self.batch_size if self.batch_size < N else None

    # ------------------------------------------------------------------ initialisation
    def initial_network(self, X0: np.ndarray, Y: np.ndarray) -> ReluNetwork:
        """He-initialised network (seeded) on standardised data; output layer by ridge if ``init="ridge"``;
        the ridge decoder as a ReLU network if ``init="pairs"`` (module docstring).

        ``X0, Y`` are already standardised. The ridge fit solves the weight block
        ``min ||W H + b 1ᵀ − Y||² + r||W||²`` with ``r = ridge · tr(HHᵀ)/n`` (``ridge`` default ``10⁻³``, a
        small ridge relative to the feature energy) on the hidden features ``H`` of the forward pass
        (``"ridge"``) or on the inputs ``H = X0`` (``"pairs"``).
        """
        widths = (X0.shape[0],) + self.hidden + (Y.shape[0],)
        network = ReluNetwork.random(widths, np.random.default_rng(self.seed))
        if self.init == "forward":
            return network
        if self.init == "pairs":
            k = X0.shape[0]
            narrow = [width for width in self.hidden if width < 2 * k]
            if narrow:
                raise ProblemError(f"init='pairs' keeps the {2 * k} units ReLU(x), ReLU(-x) of the {k} inputs in every "
                                   f"hidden layer, but the hidden widths are {list(self.hidden)}: make each at least "
                                   f"{2 * k} (the pairs plus the He units), or use init='ridge'.")
            for index in range(len(self.hidden)):
                W, b = network.weights[index], network.biases[index]
                W[:2 * k], b[:2 * k] = 0.0, 0.0
                if index == 0:
                    W[:k], W[k:2 * k] = np.eye(k), -np.eye(k)
                else:
                    W[:2 * k, :2 * k] = np.eye(2 * k)
            P, c = self._ridge_fit(X0, Y)
            W_L = np.zeros((Y.shape[0], self.hidden[-1]))
            W_L[:, :k], W_L[:, k:2 * k] = P, -P
            network.weights[-1], network.biases[-1] = W_L, c
            return network
        H = X0
        for W, b in zip(network.weights[:-1], network.biases[:-1]):
            H = np.maximum(W @ H + b[:, None], 0.0)
        network.weights[-1], network.biases[-1] = self._ridge_fit(H, Y)
        return network

    def _ridge_fit(self, H: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` of the ridge fit of ``Y`` on the features ``H`` (:meth:`initial_network`)."""
        ridge = self.ridge * float(np.sum(H * H)) / H.shape[0]
        block = WeightLeastSquares(H.shape[0], Y.shape[0], H.shape[1], build_model=False)
        block.set_parameters(X=H, P=Y, r=max(ridge, 1e-12))
        values = solvers.solve(block, "closed_form").values
        return values["W"], values["b"]

    # ------------------------------------------------------------------ data
    @staticmethod
    def check_data(X0, Y, X_val=None, Y_val=None):
        X0 = as_float_array("X", X0, ndim=2)
        Y = as_float_array("Y", Y, ndim=2)
        if X0.shape[1] != Y.shape[1]:
            raise ProblemError(f"`X` has {X0.shape[1]} samples (columns) but `Y` has {Y.shape[1]}; samples are "
                               "columns here, so both need one column per sample.")
        if X0.shape[1] < 2:
            raise ProblemError(f"Training needs at least 2 samples, got {X0.shape[1]}.")
        if (X_val is None) != (Y_val is None):
            raise ProblemError("Pass both `X_val` and `Y_val`, or neither.")
        if X_val is not None:
            X_val = as_float_array("X_val", X_val, ndim=2)
            Y_val = as_float_array("Y_val", Y_val, ndim=2)
            if X_val.shape[0] != X0.shape[0] or Y_val.shape[0] != Y.shape[0]:
                raise ProblemError(f"Validation data have {X_val.shape[0]} inputs and {Y_val.shape[0]} outputs, "
                                   f"training data {X0.shape[0]} and {Y.shape[0]}; they must agree.")
            if X_val.shape[1] != Y_val.shape[1]:
                raise ProblemError(f"`X_val` has {X_val.shape[1]} samples but `Y_val` has {Y_val.shape[1]}.")
        return X0, Y, X_val, Y_val

    @staticmethod
    def fingerprint(*arrays) -> str:
        digest = hashlib.sha256()
        for array in arrays:
            if array is None:
                digest.update(b"none")
                continue
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ one outer iteration
    def _solve(self, sub) -> dict:
        options = dict(self.solver_options)
        if self.backend == "closed_form":
            options.setdefault("compute_objective", False)  # never read here; costs a product per block
        solution = solvers.solve(sub, self.backend, **options)
        if not solution.found:
            raise SolverError(f"Backend {self.backend!r} returned no point for block {type(sub).__name__} "
                              f"({solution.termination.value}); try backend='closed_form'.")
        return solution.values

    def sweep(self, problem: ALProblem, state: ALState, index: int | None = None) -> None:
        """One block-coordinate sweep, in place: :class:`~formulation.fused.FusedSweep` (engine ``"fused"``)
        or :meth:`ALProblem.sweep` with every block dispatched to ``backend``.

        ``index`` counts sweeps (default: the count kept by :meth:`fit`); ``order="alternate"`` runs
        even sweeps backward and odd ones forward.
        """
        for fused in (self._fused, self._batch_fused):
            if fused is not None and fused.problem is problem:
                fused(state)
                return
        if self.engine == "fused":  # a problem without a fused sweep yet (after a run on batches: bench train)
            self._fused = FusedSweep(problem)
            self._fused(state)
            return
        index = self._sweep_count if index is None else index
        order = self.order if self.order != "alternate" else ("backward" if index % 2 == 0 else "forward")
        problem.sweep(state, self._solve, build_model=self.backend != "closed_form", scheme=self.scheme,
                      order=order)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, path: str, state: ALState, meta: dict, extra: dict | None = None) -> None:
        arrays = {f"{name}_{index}": array for name, index, array in state.arrays()}
        arrays.update(extra or {})
        meta = dict(meta, version=CHECKPOINT_VERSION, rho_abs=state.rho, depth=len(state.W), dtype=self.dtype)
        arrays["__meta__"] = np.array(json.dumps(meta))
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        temporary = path + ".tmp.npz"
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    @staticmethod
    def load_checkpoint(path: str, max_bytes: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
        """``(metadata, arrays)`` of a checkpoint (never unpickles); ``max_bytes`` caps its loaded size."""
        arrays = read_npz(path, "Checkpoint", "delete it to start afresh.", max_bytes=max_bytes)
        if "__meta__" not in arrays:
            raise ProblemError(f"Checkpoint {path!r} has no `__meta__` entry; it was not written by ALTrainer.")
        try:
            meta = json.loads(str(arrays.pop("__meta__")))
        except ValueError as exc:
            raise ProblemError(f"Checkpoint {path!r} is damaged: its `__meta__` entry is not JSON ({exc}); delete it "
                               "to start afresh.") from None
        if not isinstance(meta, dict):
            raise ProblemError(f"Checkpoint {path!r} is damaged: its `__meta__` entry is a {type(meta).__name__}, "
                               "not a JSON object; delete it to start afresh.")
        if meta.get("version") != CHECKPOINT_VERSION:
            raise ProblemError(f"Checkpoint {path!r} has version {meta.get('version')}, expected "
                               f"{CHECKPOINT_VERSION}; delete it to start afresh.")
        return meta, arrays

    @staticmethod
    def _state_from_arrays(arrays: dict, meta: dict) -> ALState:
        L = int(meta["depth"])
        lists = {}
        for name in ALState.PRIMAL + ALState.MULTIPLIERS:
            count = L if name in ("W", "b", "Z", "lam1") else L - 1
            lists[name] = [np.array(arrays[f"{name}_{index}"], dtype=meta.get("dtype", "float64"))
                           for index in range(count)]
        return ALState(rho=float(meta["rho_abs"]), **lists)

    # ------------------------------------------------------------------ main loop
    def fit(self, X0, Y, X_val=None, Y_val=None) -> TrainResult:
        """Train on ``X0 (n0, N)``, ``Y (nL, N)`` (samples as columns, DESIGN §1).

        With ``threads`` set, the BLAS and OpenMP pools are capped to that many threads meanwhile.

        Raises
        ------
        ProblemError
            Bad data, or a checkpoint written for other data or settings.
        """
        with blas_threads(self.threads):
            return self._fit(X0, Y, X_val, Y_val)

    def _fit(self, X0, Y, X_val, Y_val) -> TrainResult:
        from tqdm import tqdm

        X0, Y, X_val, Y_val = self.check_data(X0, Y, X_val, Y_val)
        if X_val is None and (self.restore_best or self.patience is not None):
            raise ProblemError("restore_best and patience select by the validation loss: pass X_val and Y_val "
                               "(held-out samples), or leave restore_best=False and patience=None.")
        scaler = Standardizer.fit(X0, Y, self.standardize)
        Xs, Ys = scaler.x(X0), scaler.y(Y)
        Xv = None if X_val is None else scaler.x(X_val)
        Yv = None if Y_val is None else scaler.y(Y_val)
        del X0, Y, X_val, Y_val  # keep one copy of the data, the standardised one
        total = float(np.sum((Ys - Ys.mean(axis=1, keepdims=True)) ** 2))
        alpha = 1.0 / total if total > 0 else 1.0
        widths = (Xs.shape[0],) + self.hidden + (Ys.shape[0],)
        problem = ALProblem(Xs, Ys, widths, mu=self.mu * alpha, loss="squared", loss_scale=alpha, dtype=self.dtype)
        batch_size = self._resolved_batch = self.resolved_batch_size(problem.N, widths)  # pinned in checkpoints
        # on batches the full-size fused sweep is never run (bench train builds it on demand: sweep())
        self._fused = FusedSweep(problem) if self.engine == "fused" and batch_size is None else None
        fingerprint = self.fingerprint(Xs, Ys, Xv, Yv)
        accelerator = Anderson(self.anderson) if self.mode == "restarted" else None
        resuming = self.checkpoint is not None and self.resume and os.path.exists(self.checkpoint)
        network = None if resuming else self.initial_network(Xs, Ys)
        Xs, Ys = problem.X0, problem.Y  # in float32 the float64 copies go: one copy of the training data

        def losses(network):
            train = forward_loss_fraction(network, Xs, Ys)
            val = None if Xv is None else forward_loss_fraction(network, Xv, Yv)
            return train, val

        resumed = False
        if resuming:
            meta, arrays = self.load_checkpoint(self.checkpoint, self._checkpoint_limit(widths, problem.N))
            if meta.get("fingerprint") != fingerprint:
                raise ProblemError(f"Checkpoint {self.checkpoint!r} was written for other data; delete it, or pass "
                                   "another --checkpoint path.")
            if meta.get("settings") != self.settings():
                stored, current = meta.get("settings"), self.settings()
                stored = stored if isinstance(stored, dict) else {}
                keys = [key for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]
                changed = "; ".join(f"{key}: {repr(stored[key]) if key in stored else 'not stored'} -> "
                                    f"{repr(current[key]) if key in current else 'none'}" for key in keys)
                raise ProblemError(f"Checkpoint {self.checkpoint!r} was written with other settings ({changed}); use "
                                   "the same settings, or another --checkpoint path to start afresh.")
            if meta.get("batch_size", batch_size) != batch_size:
                raise ProblemError(f"Checkpoint {self.checkpoint!r} was written with batches of "
                                   f"{meta.get('batch_size') or 'all'} samples, this run would use "
                                   f"{batch_size or 'all'}; pass batch_size={meta.get('batch_size')} or another path.")
            check_checkpoint(self.checkpoint, meta, arrays, self._expected_arrays(widths, problem.N, arrays))
            state = self._state_from_arrays(arrays, meta)
            if accelerator is not None:
                accelerator.load(arrays)
            best = self._best_from_checkpoint(meta, arrays, state)
            del arrays
            history = meta["history"]
            loop = dict(meta["loop"])
            init_train, init_val = meta["init_train_loss"], meta["init_val_loss"]
            resumed = True
        else:
            state = problem.initial_state(network, rho=self.rho * alpha)
            if self.warm_multipliers or self.mode == "restarted":
                problem.warm_multipliers(state)
            init_train, init_val = losses(network)
            best = self._best(0, init_val, state)
            first = problem.diagnostics(state)
            history = [self._row(0, problem, state, first, init_train, init_val, alpha, 0.0)]
            loop = {"iteration": 0, "previous_violation": None, "period_violation": None, "growth": 0,
                    "elapsed": 0.0, "accepted": 0, "anderson_steps": 0, "rejected": 0}
        state_bytes = sum(a.nbytes for name, _, a in state.arrays() if name not in ("W", "b"))
        # the Anderson history: 2m + 2 vectors of the weights (independent of N)
        anderson_bytes = (2 * self.anderson + 2) * sum(a.nbytes for a in state.W + state.b) if self.anderson else 0
        batch = self._batch_setup(problem, state, batch_size)
        if batch is not None:
            state_bytes += batch["bytes"]
        run = None
        if self.mode == "restarted" and batch is None:  # a candidate's forward pass, the objective of the weights
            # the fused sweep's products are free between sweeps in this mode: the candidate's forward pass uses them
            buffers = self._fused.products if self._fused is not None else [np.empty_like(z) for z in state.Z]
            run = {"candidate_Z": buffers, "objective": problem.objective_of(state.W, state.Z[-1])}

        stop_reason, message = "max_iters", f"stopped after max_iters={self.max_iters} outer iterations"
        start_iteration = loop["iteration"]
        last_saved = self.checkpoint if resumed else None  # the resumed-from checkpoint is a good iterate
        clock_origin = time.perf_counter() - loop["elapsed"]
        last = history[-1]
        if (start_iteration and last["kkt"] is not None and last["violation"] <= self.tol
                and last["kkt"] <= self.tol):
            stop_reason, message = "converged", "already converged at the checkpoint"
        elif start_iteration and self.patience is not None and start_iteration - best["iteration"] >= self.patience:
            stop_reason, message = "early_stopping", "already stopped early at the checkpoint"
        bar = tqdm(total=self.max_iters, initial=min(start_iteration, self.max_iters), desc=f"AL train ({self.mode})",
                   unit="it", disable=(None if self.progress is None else not self.progress), leave=False)
        try:
            iteration = start_iteration
            while stop_reason not in ("converged", "early_stopping") and iteration < self.max_iters:
                if self.time_budget is not None and loop["elapsed"] >= self.time_budget:
                    stop_reason = "time_budget"
                    message = f"time budget of {self.time_budget:g} s used after {iteration} outer iterations"
                    break
                iteration += 1
                with np.errstate(all="ignore"):
                    try:
                        if self.mode == "exact":
                            diag = self._exact_iteration(problem, state, loop, iteration, alpha)
                        elif batch is not None:
                            diag = self._batch_iteration(problem, state, loop, iteration, alpha, batch)
                        else:
                            diag = self._restarted_iteration(problem, state, loop, iteration, alpha, run,
                                                             accelerator)
                    except (np.linalg.LinAlgError, SolverError) as exc:
                        stop_reason = "diverged"
                        message = (f"diverged at outer iteration {iteration}: a block solve failed ({exc})"
                                   + (f"; the last good checkpoint {last_saved!r} is kept" if last_saved else ""))
                        break
                loop["iteration"] = iteration
                loop["elapsed"] = time.perf_counter() - clock_origin
                violation = diag["violation"]["max"]
                finite = math.isfinite(violation) and (diag["kkt"] is None or math.isfinite(diag["kkt"])) and all(
                    np.all(np.isfinite(W)) for W in state.W)
                if not finite:
                    stop_reason = "diverged"
                    message = (f"diverged at outer iteration {iteration}: NaN or inf in the iterates"
                               + (f"; the last good checkpoint {last_saved!r} is kept" if last_saved else ""))
                    break
                # monitoring, not charged to the time budget (as for the Adam baseline)
                pause = time.perf_counter()
                current = state.network()
                if self.mode == "restarted":
                    # free at the forward state; in float32 recomputed in float64 like every reported loss
                    exact = total > 0 and self.dtype == "float64" and batch is None
                    train = 2.0 * float(problem.loss_value(state.Z[-1])) if exact else None
                    val = None if Xv is None else forward_loss_fraction(current, Xv, Yv)
                    train = losses(current)[0] if train is None else train
                else:
                    train, val = losses(current)
                # on batches the full state's Z lags its weights: the objective from the forward pass instead
                # (f = α/2 ||Z_L − Y||² is half the reported fraction of variance)
                objective = None if batch is None else problem.objective_from_loss(state.W, 0.5 * train)
                row = self._row(iteration, problem, state, diag, train, val, alpha, loop["elapsed"], objective)
                history.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{train:.3g}", viol=f"{violation:.2g}", rho=f"{state.rho / alpha:.3g}",
                                refresh=False)
                clock_origin += time.perf_counter() - pause
                if val is not None and val < best["val_loss"]:
                    best = self._best(iteration, val, state)
                if loop["growth"] >= self.divergence_patience:
                    stop_reason = "diverged"
                    message = (f"diverged: the violation grew for {loop['growth']} consecutive iterations with rho "
                               f"at rho_max={self.rho_max:g}"
                               + (f"; the last good checkpoint {last_saved!r} is kept" if last_saved else ""))
                    break
                if (self.mode == "restarted" and batch is None and self.adaptive_penalty
                        and loop.get("rejected_streak", 0) >= self.penalty_period
                        and state.rho / alpha >= self.rho_max):
                    stop_reason = "stalled"
                    message = (f"stalled at outer iteration {iteration}: no step lowered the objective in the last "
                               f"{loop['rejected_streak']} iterations with rho at rho_max={self.rho_max:g} (the "
                               "weights are where the sweep cannot descend at this precision; see the KKT residual)")
                    break
                if diag["kkt"] is not None and violation <= self.tol and diag["kkt"] <= self.tol:
                    stop_reason = "converged"
                    message = (f"converged at outer iteration {iteration}: KKT residual "
                               f"{diag['kkt']:.2e} and violation {violation:.2e} <= {self.tol:g}")
                elif self.patience is not None and iteration - best["iteration"] >= self.patience:
                    stop_reason = "early_stopping"
                    message = (f"stopped early at outer iteration {iteration}: the validation loss has not gone "
                               f"below {best['val_loss']:.6g} (iteration {best['iteration']}) for "
                               f"patience={self.patience} iterations")
                if stop_reason == "early_stopping":
                    break
                if self.checkpoint is not None and iteration % self.checkpoint_every == 0:
                    self._save(state, history, loop, fingerprint, init_train, init_val, accelerator, best)
                    last_saved = self.checkpoint
        finally:
            bar.close()
        if stop_reason != "diverged" and self.checkpoint is not None:
            self._save(state, history, loop, fingerprint, init_train, init_val, accelerator, best)
        if batch is not None and stop_reason != "diverged":
            problem.restart(state)  # the batches leave the full state's auxiliaries behind its weights
        if history[-1]["kkt"] is None and stop_reason != "diverged":
            # the restarted mode computes the KKT residual every kkt_every iterations; the returned
            # history (not the checkpoint's, so that a resumed run stays identical) ends with it
            history[-1] = dict(history[-1], kkt=problem.diagnostics(state, products=state.Z)["kkt"])
        if stop_reason in ("max_iters", "time_budget", "diverged", "stalled"):
            warnings.warn(f"ALTrainer: {message}.", ConvergenceWarning, stacklevel=3)
        if stop_reason == "diverged" and last_saved:
            meta, arrays = self.load_checkpoint(last_saved, self._checkpoint_limit(widths, problem.N))  # last good
            learned = self._state_from_arrays(arrays, meta).network()
        elif stop_reason == "diverged":
            # nothing good was kept: the initialisation (after a resume, recomputed on the stored data)
            learned = network if network is not None else self.initial_network(Xs, Ys)
        else:
            learned = state.network()
        selected = {"iteration": history[-1]["iteration"], "val_loss": history[-1]["val_loss"], "rule": "last"}
        if self.restore_best and best["W"] is not None:
            # the least validation loss seen (a diverged run's best iterate precedes its failure)
            learned = ReluNetwork(best["W"], best["b"])
            selected = {"iteration": best["iteration"], "val_loss": best["val_loss"], "rule": "least validation loss"}
        network = scaler.unscale_network(learned)
        counts = {key: loop.get(key, 0) for key in ("accepted", "anderson_steps", "rejected")}
        return TrainResult(network=network, history=history, stop_reason=stop_reason, message=message,
                           init_train_loss=init_train, init_val_loss=init_val, state_bytes=state_bytes,
                           standardizer=scaler, iterations=history[-1]["iteration"],
                           extras={"resumed": resumed, "alpha": alpha, "anderson_bytes": anderson_bytes, **counts,
                                   "selected": selected,
                                   **({"state": state, "problem": problem} if self.keep_state else {})})

    # ------------------------------------------------------------------ the two outer iterations
    def _exact_iteration(self, problem: ALProblem, state: ALState, loop: dict, iteration: int, alpha: float) -> dict:
        """DESIGN §3: sweeps, diagnostics with the safeguarded multiplier update, the gated BM penalty rule."""
        for inner in range(self.sweeps):
            self._sweep_count = (iteration - 1) * self.sweeps + inner
            self.sweep(problem, state)
        products = self._fused.products if self._fused is not None and self._fused.valid else None
        diag = problem.diagnostics(state, update=True, bound=self.multiplier_box * alpha, products=products)
        violation = diag["violation"]["max"]
        previous = loop["previous_violation"]
        at_cap = state.rho >= self.rho_max * alpha
        growing = previous is not None and violation > previous and violation > max(self.tol, 1e-8)
        loop["growth"] = loop["growth"] + 1 if (growing and at_cap) else 0
        loop["previous_violation"] = violation
        if iteration % self.penalty_period == 0:  # Birgin–Martínez test, once per period
            reference = loop["period_violation"]
            # gated: raise rho only while feasibility is the bottleneck. When the violation is
            # already below penalty_balance x the stationarity residual, the sweeps have not
            # solved the primal problem, and a larger rho only slows them down further.
            if (reference is not None and violation > self.tau * reference
                    and violation > self.penalty_balance * diag["stationarity"]):
                state.rho = min(self.gamma * state.rho, self.rho_max * alpha)
            loop["period_violation"] = violation
        return diag

    def _restarted_iteration(self, problem: ALProblem, state: ALState, loop: dict, iteration: int, alpha: float,
                             run: dict, accelerator: Anderson) -> dict:
        """Restarted AL on the full batch: one :meth:`_restarted_step`, then restart at the accepted weights.

        On entry ``state`` is the forward state of the weights ``x`` with first-order multipliers
        (:meth:`ALProblem.restart`) and ``run["objective"]`` its objective; the accepted candidate's
        forward pass is reused for the next restart.
        """
        window = loop.setdefault("window", []) if self.nonmonotone > 1 else None
        chosen = self._restarted_step(problem, state, loop, iteration, alpha, run, accelerator, window)
        problem.restart(state, Z=None if chosen is None else run["candidate_Z"])
        if self._fused is not None:
            self._fused.valid = False
        return self._restarted_diagnostics(problem, state, iteration)

    def _restarted_step(self, problem: ALProblem, state: ALState, loop: dict, iteration: int, scale: float,
                        run: dict, accelerator: Anderson | None, window: list | None = None) -> str | None:
        """Sweeps from the restarted ``state``, a safeguarded step on the weights and the penalty update.

        ``state`` is the forward state of the weights ``x`` with first-order multipliers and
        ``run["objective"]`` its objective; ``ρ = ρ̂ · scale``. Candidates, in order: the Anderson point
        (``anderson > 0``), the relaxed point ``x + ω(φ(x) − x)`` (``relaxation = ω ≠ 1``), the sweep's own
        weights ``φ(x)``; the first whose objective (forward pass into ``run["candidate_Z"]``) does not
        exceed that of ``x`` is accepted (and ``ρ̂ ← max(ρ̂/down, ρ̂_min)``); if none is, ``x`` stays,
        ``ρ̂ ← min(up·ρ̂, ρ̂_max)`` and the Anderson history is cleared. Returns the accepted kind or ``None``.
        With ``window`` (the nonmonotone rule, full batch), the reference is the largest objective of the
        last ``nonmonotone`` accepted iterates, kept in ``window`` (stored with the loop state).
        """
        if window is not None and not window:
            window.append(run["objective"])
        reference = run["objective"] if window is None else max(window)
        weights = [w.copy() for w in state.W], [b.copy() for b in state.b]
        x = _flatten(*weights)
        for inner in range(self.sweeps):
            self._sweep_count = (iteration - 1) * self.sweeps + inner
            self.sweep(problem, state)
        phi = _flatten(state.W, state.b)
        candidates = []
        anderson_point = None if accelerator is None else accelerator.propose(x, phi)
        if anderson_point is not None:
            candidates.append(("anderson", anderson_point))
        if self.relaxation != 1.0:
            candidates.append(("relaxed", x + self.relaxation * (phi - x)))
        candidates.append(("sweep", phi))
        chosen = None
        for kind, point in candidates:
            W, b = _unflatten(point, state.W, state.b)
            Z = problem.forward_preactivations(W, b, out=run["candidate_Z"])
            objective = problem.objective_of(W, Z[-1])
            if math.isfinite(objective) and objective <= reference:
                chosen = kind
                state.W, state.b = W, b
                run["objective"] = objective
                if window is not None:
                    window.append(objective)
                    del window[:-self.nonmonotone]
                break
        rho_hat = state.rho / scale
        if chosen is None:
            loop["rejected"] = loop.get("rejected", 0) + 1
            loop["rejected_streak"] = loop.get("rejected_streak", 0) + 1
            state.W, state.b = weights
            if accelerator is not None:
                accelerator.reset()
            if self.adaptive_penalty:
                rho_hat = min(self.penalty_up * rho_hat, self.rho_max)
        else:
            loop["accepted"] = loop.get("accepted", 0) + 1
            loop["rejected_streak"] = 0
            loop["anderson_steps"] = loop.get("anderson_steps", 0) + (chosen == "anderson")
            if self.adaptive_penalty:
                rho_hat = max(rho_hat / self.penalty_down, self.rho_min)
        if rho_hat * scale != state.rho:
            state.rho = rho_hat * scale
        return chosen

    def _restarted_diagnostics(self, problem: ALProblem, state: ALState, iteration: int) -> dict:
        """Diagnostics at the restarted ``state``: the KKT residual every ``kkt_every`` iterations (violation 0)."""
        if iteration % self.kkt_every == 0:
            return problem.diagnostics(state, products=state.Z)
        zero = {"C1": 0.0, "C2": 0.0, "C3": 0.0, "C4": 0.0, "bounds": 0.0, "max": 0.0}
        return {"violation": zero, "kkt": None, "stationarity": None}

    # ------------------------------------------------------------------ sample batches
    def _batch_setup(self, problem: ALProblem, state: ALState, size: int | None) -> dict | None:
        """The batch-sized problem, state and fused sweep reused by every batch (``None``: full batch)."""
        self._batch_fused = None
        if size is None:
            return None
        least = least_batch(problem.widths)
        if size < least:
            warnings.warn(f"batch_size={size} is less than twice the {least // 2} numbers a weight "
                          "block fits per unit: the batch steps may interpolate their batches and extrapolate badly "
                          "(README, 'restarted on sample batches'); 'auto' picks a size that avoids it.",
                          UserWarning, stacklevel=4)
        # copies (not views): each batch's columns are written into them
        sub = ALProblem(problem.X0[:, :size].copy(), problem.Y[:, :size].copy(), problem.widths, mu=problem.mu,
                        loss=problem.loss, loss_scale=problem.loss_scale * problem.N / size, dtype=problem.dtype)
        sub_state = sub.initial_state(state.network(), rho=state.rho)
        self._batch_fused = FusedSweep(sub)
        nbytes = sum(a.nbytes for name, _, a in sub_state.arrays() if name not in ("W", "b"))
        nbytes += sum(a.nbytes for a in self._batch_fused.products) + sub.X0.nbytes + sub.Y.nbytes
        return {"problem": sub, "state": sub_state, "size": size, "bytes": nbytes}

    def _batch_iteration(self, problem: ALProblem, state: ALState, loop: dict, iteration: int, alpha: float,
                         batch: dict) -> dict:
        """One pass over the data: a :meth:`_restarted_step` on each of ``N // B`` random batches of ``B`` samples.

        The batches are a permutation of the samples seeded by ``(seed, iteration)`` (so a resumed run
        repeats them), the last ``N mod B`` samples of each pass left out. Each batch's problem is the
        training problem restricted to its columns with the loss scaled by ``N / B`` (an unbiased
        estimate of the full objective, and the same balance of loss, weight decay and penalty as on
        the full batch: ``ρ = ρ̂ α N / B``). Each step starts from the forward state of the current
        weights on its batch and is accepted when it does not raise the batch objective.
        """
        sub, sub_state, size = batch["problem"], batch["state"], batch["size"]
        scale = alpha * problem.N / size
        sub_state.rho = state.rho / alpha * scale
        order = np.random.default_rng([self.seed, iteration]).permutation(problem.N)
        for first in range(0, problem.N - size + 1, size):
            columns = np.sort(order[first:first + size])
            np.take(problem.X0, columns, axis=1, out=sub.X0)
            np.take(problem.Y, columns, axis=1, out=sub.Y)
            self._batch_fused.data_changed()
            sub_state.W, sub_state.b = list(state.W), list(state.b)
            sub.restart(sub_state)
            run = {"candidate_Z": self._batch_fused.products, "objective": sub.objective_of(sub_state.W,
                                                                                            sub_state.Z[-1])}
            self._restarted_step(sub, sub_state, loop, iteration, scale, run, None)
            state.W, state.b = list(sub_state.W), list(sub_state.b)
        state.rho = sub_state.rho / scale * alpha
        if iteration % self.kkt_every == 0:
            problem.restart(state)
        return self._restarted_diagnostics(problem, state, iteration)

    # ------------------------------------------------------------------ checkpoints and rows
    def _expected_arrays(self, widths, N: int, arrays: dict) -> dict:
        """Shapes a checkpoint of this run must hold (the Anderson history: as many pairs as it lists)."""
        L = len(widths) - 1
        shapes = {}
        for l in range(L):
            shapes[f"W_{l}"], shapes[f"b_{l}"] = (widths[l + 1], widths[l]), (widths[l + 1],)
            shapes[f"Z_{l}"] = shapes[f"lam1_{l}"] = (widths[l + 1], N)
            if l < L - 1:
                for name in ("X", "D", "S", "T", "lam2", "lam3", "lam4"):
                    shapes[f"{name}_{l}"] = (widths[l + 1], N)
        if self.restore_best and "best_W_0" in arrays:
            for l in range(L):
                shapes[f"best_W_{l}"], shapes[f"best_b_{l}"] = (widths[l + 1], widths[l]), (widths[l + 1],)
        if self.mode == "restarted":
            size = sum(widths[l + 1] * (widths[l] + 1) for l in range(L))
            count = min(sum(1 for key in arrays if key.startswith("aa_dx_")), self.anderson)
            for i in range(count):
                shapes[f"aa_dx_{i}"] = shapes[f"aa_dg_{i}"] = (size,)
            if "aa_x_prev" in arrays or count:
                shapes["aa_x_prev"] = shapes["aa_g_prev"] = (size,)
        return shapes

    def _checkpoint_limit(self, widths, N: int) -> int:
        """The largest a checkpoint of this run can load to: its arrays in float64, a quarter more, and
        64 MiB for the metadata; never below :data:`formulation._checks.MAX_NPZ_BYTES`."""
        history = {f"aa_dx_{i}": None for i in range(self.anderson)}
        if self.anderson:
            history["aa_x_prev"] = None
        if self.restore_best:
            history["best_W_0"] = None
        shapes = self._expected_arrays(widths, N, history)
        arrays = 8 * sum(int(np.prod(shape)) for shape in shapes.values())
        return max(MAX_NPZ_BYTES, int(1.25 * arrays) + 2**26)

    def _save(self, state, history, loop, fingerprint, init_train, init_val, accelerator=None, best=None):
        meta = {"settings": self.settings(), "fingerprint": fingerprint, "history": history, "loop": loop,
                "init_train_loss": init_train, "init_val_loss": init_val, "batch_size": self._resolved_batch}
        extra = accelerator.arrays() if accelerator is not None else {}
        if best is not None and math.isfinite(best["val_loss"]):
            meta["best"] = {"iteration": best["iteration"], "val_loss": best["val_loss"]}
        if best is not None and best["W"] is not None:
            for index, (W, b) in enumerate(zip(best["W"], best["b"])):
                extra[f"best_W_{index}"], extra[f"best_b_{index}"] = W, b
        self._save_checkpoint(self.checkpoint, state, meta, extra)

    def _best(self, iteration: int, val_loss: float | None, state: ALState) -> dict:
        """The iterate of least validation loss so far; its weights are copied only when ``restore_best`` needs
        them (``patience`` needs the loss and iteration alone)."""
        keep = self.restore_best and val_loss is not None
        return {"iteration": iteration, "val_loss": math.inf if val_loss is None else float(val_loss),
                "W": [W.copy() for W in state.W] if keep else None, "b": [b.copy() for b in state.b] if keep else None}

    def _best_from_checkpoint(self, meta: dict, arrays: dict, state: ALState) -> dict:
        """The least-validation-loss record of a resumed run (``meta["best"]`` and its ``best_W_l``/``best_b_l``)."""
        stored = meta.get("best")
        if not isinstance(stored, dict):
            if self.restore_best or self.patience is not None:
                raise ProblemError(f"Checkpoint {self.checkpoint!r} has no record of its best iterate; delete it to "
                                   "start afresh.")
            return self._best(0, None, state)
        try:
            iteration, val_loss = int(stored["iteration"]), float(stored["val_loss"])
        except (KeyError, TypeError, ValueError):
            raise ProblemError(f"Checkpoint {self.checkpoint!r} is damaged: its best-iterate record {stored!r} is not "
                               "an iteration and a validation loss; delete it to start afresh.") from None
        L = len(state.W)
        keep = self.restore_best and all(f"best_W_{l}" in arrays and f"best_b_{l}" in arrays for l in range(L))
        if self.restore_best and not keep:
            raise ProblemError(f"Checkpoint {self.checkpoint!r} lacks the weights of its best iterate; delete it to "
                               "start afresh.")
        return {"iteration": iteration, "val_loss": val_loss,
                "W": [np.array(arrays[f"best_W_{l}"], dtype=state.W[l].dtype) for l in range(L)] if keep else None,
                "b": [np.array(arrays[f"best_b_{l}"], dtype=state.b[l].dtype) for l in range(L)] if keep else None}

    @staticmethod
    def _row(iteration, problem, state, diag, train, val, alpha, seconds, objective=None) -> dict:
        v = diag["violation"]
        objective = problem.objective(state) if objective is None else objective
        return {"iteration": iteration, "objective": objective, "train_loss": train,
                "val_loss": val, "viol_C1": v["C1"], "viol_C2": v["C2"], "viol_C3": v["C3"], "viol_C4": v["C4"],
                "viol_bounds": v["bounds"], "violation": v["max"], "kkt": diag["kkt"], "rho": state.rho / alpha,
                "seconds": seconds}


def least_batch(widths: Sequence[int]) -> int:
    """``2 (n_max + 1)``: a weight block fits ``n_max + 1`` numbers per unit (``n_max`` the widest layer input), and
    a batch not well above that is interpolated (``resolved_batch_size``; smaller explicit batches warn)."""
    return 2 * (max(widths[:-1]) + 1)


def blas_threads(threads: int | None):
    """BLAS/OpenMP pools capped at ``threads`` meanwhile (``threadpoolctl``); ``None``: unchanged."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _flatten(W, b) -> np.ndarray:
    """The weights ``(W_1, b_1, ..., W_L, b_L)`` as one vector of their dtype (Anderson works on it)."""
    return np.concatenate([a.ravel() for pair in zip(W, b) for a in pair])


def _unflatten(vector: np.ndarray, like_W, like_b):
    """Inverse of :func:`_flatten`, shapes and dtype from ``like_W``, ``like_b``."""
    W, b, offset = [], [], 0
    for w, c in zip(like_W, like_b):
        W.append(vector[offset: offset + w.size].reshape(w.shape).astype(w.dtype))
        offset += w.size
        b.append(vector[offset: offset + c.size].astype(c.dtype))
        offset += c.size
    return W, b
