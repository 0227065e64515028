r"""The Adam baseline: the same MLP trained by ``torch.optim.Adam`` on the same data and start.

Minimises the mean squared error ``(1/(N nL)) ||N(X0) − Y||²`` on the data standardised exactly as
:class:`solvers.methods.scaling.Standardizer` does, from the same initial network
(:meth:`ALTrainer.initial_network`: He with a seeded generator, output layer by ridge), with
mini-batches drawn by a seeded ``torch.Generator`` and a wall-clock budget. Needs PyTorch
(``pip install 'unrelu[torch]'``). :func:`projected_adam` is the Adam of ``unrelu verify``: the same optimiser on
the tiny training instances, with the weights projected on their box.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from formulation.network import ReluNetwork
from formulation.results import ProblemError, SolverNotFound
from solvers.methods.al_trainer import ALTrainer
from solvers.methods.scaling import Standardizer, forward_loss_fraction

__all__ = ["train_adam", "torch_modules", "torch_threads", "full_batch_step_seconds"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise SolverNotFound("The Adam baseline needs PyTorch: `pip install torch` (CPU build) or "
                             "`pip install 'unrelu[torch]'`.") from exc
    return torch


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """PyTorch's intra-op threads capped at ``threads`` meanwhile (``None``: unchanged), restored after.

    Without PyTorch installed it does nothing, so callers need not check.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_modules(network: ReluNetwork, dtype: str = "float64"):
    """A ``torch.nn.Sequential`` (``dtype``: float64 or float32) with the weights of ``network``."""
    torch = _torch()
    layers = []
    for index, (W, b) in enumerate(zip(network.weights, network.biases)):
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=getattr(torch, dtype))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if index < network.depth - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _to_network(model) -> ReluNetwork:
    linears = [m for m in model if hasattr(m, "weight")]
    return ReluNetwork([m.weight.detach().numpy().astype(np.float64) for m in linears],
                       [m.bias.detach().numpy().astype(np.float64) for m in linears])


def train_adam(X0, Y, X_val=None, Y_val=None, *, hidden=(64,), seed: int = 0, time_budget: float = 10.0,
               max_epochs: int | None = None, lr: float = 1e-3, batch_size: int = 128, init: str = "ridge",
               ridge: float = 1e-3, standardize: bool = True, record_every: float = 0.5, dtype: str = "float64",
               threads: int | None = None, weight_decay: float = 0.0, restore_best: bool = False) -> dict:
    """Train with Adam for ``time_budget`` seconds (or ``max_epochs``); samples as columns.

    ``dtype`` is the floating type of the model and data (float64 or float32); ``threads`` caps
    PyTorch's intra-op threads for the run (restored afterwards). ``weight_decay`` is the AL trainer's
    ``mu``: the batch loss is ``mean((N(x) − y)²) + mu Σ||W_l||² / (N n_L)`` on the standardised data,
    an unbiased estimate of ``2 / (α N n_L)`` times the AL trainer's objective
    ``(α/2)(||Z_L − Y||² + mu Σ||W_l||²)``: both methods minimise the same function.

    Returns ``network`` (original units), ``history`` (rows with ``epoch, seconds, train_loss,
    val_loss`` as fractions of target variance, recorded about every ``record_every`` s),
    ``epochs``, ``init_train_loss`` and ``selected`` (the iteration ``epoch`` and ``val_loss`` of the returned
    network). ``init`` and ``ridge`` choose the start as the AL trainer's do
    (:meth:`ALTrainer.initial_network`), so both methods start from the same network. ``restore_best``
    returns the recorded network of least validation loss (the start included; recorded at the end of an
    epoch, about every ``record_every`` s), as the AL trainer's option of that name does; it needs
    ``X_val, Y_val``.
    """
    if restore_best and X_val is None:
        raise ProblemError("restore_best selects by the validation loss: pass X_val and Y_val (held-out samples).")
    torch = _torch()
    trainer = ALTrainer(hidden, seed=seed, init=init, ridge=ridge, standardize=standardize)
    X0, Y, X_val, Y_val = trainer.check_data(X0, Y, X_val, Y_val)
    scaler = Standardizer.fit(X0, Y, standardize)
    Xs, Ys = scaler.x(X0), scaler.y(Y)
    Xv = None if X_val is None else scaler.x(X_val)
    Yv = None if Y_val is None else scaler.y(Y_val)
    start_network = trainer.initial_network(Xs, Ys)
    model = torch_modules(start_network, dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    inputs = torch.from_numpy(np.ascontiguousarray(Xs.T, dtype=dtype))
    targets = torch.from_numpy(np.ascontiguousarray(Ys.T, dtype=dtype))
    decay = float(weight_decay) / Ys.size  # Ys is n_L x N
    with torch_threads(threads):
        return _adam_loop(torch, model, optimizer, inputs, targets, scaler, Xs, Ys, Xv, Yv, seed, time_budget,
                          max_epochs, batch_size, record_every, decay, restore_best)


def batch_loss(torch, model, weights, inputs, targets, decay: float):
    """``mean((N(x) − y)²) + decay Σ||W_l||²`` over the rows of ``inputs``/``targets`` (``train_adam``'s loss)."""
    loss = torch.mean((model(inputs) - targets) ** 2)
    return loss + decay * sum(torch.sum(W * W) for W in weights) if decay else loss


def _adam_loop(torch, model, optimizer, inputs, targets, scaler, Xs, Ys, Xv, Yv, seed, time_budget, max_epochs,
               batch_size, record_every, decay, restore_best=False) -> dict:
    generator = torch.Generator().manual_seed(seed)
    N = inputs.shape[0]
    weights = [layer.weight for layer in model if isinstance(layer, torch.nn.Linear)]
    best = {"epoch": None, "val_loss": np.inf, "network": None}

    def record(epoch, seconds):
        network = _to_network(model)
        row = {"epoch": epoch, "seconds": seconds, "train_loss": forward_loss_fraction(network, Xs, Ys),
               "val_loss": None if Xv is None else forward_loss_fraction(network, Xv, Yv)}
        if restore_best and row["val_loss"] < best["val_loss"]:
            best.update(epoch=epoch, val_loss=row["val_loss"], network=network)
        return row

    history = [record(0, 0.0)]
    start = time.perf_counter()
    last_record = 0.0
    epoch = 0
    done = False
    while not done:
        epoch += 1
        order = torch.randperm(N, generator=generator)
        for first in range(0, N, batch_size):
            batch = order[first:first + batch_size]
            optimizer.zero_grad()
            loss = batch_loss(torch, model, weights, inputs[batch], targets[batch], decay)
            loss.backward()
            optimizer.step()
            elapsed = time.perf_counter() - start
            if elapsed >= time_budget:
                done = True
                break
        elapsed = time.perf_counter() - start
        if max_epochs is not None and epoch >= max_epochs:
            done = True
        if done or elapsed - last_record >= record_every:
            pause = time.perf_counter()
            history.append(record(epoch, elapsed))
            start += time.perf_counter() - pause  # evaluation is not charged to the budget
            last_record = elapsed
    if restore_best:
        network, selected = best["network"], {"epoch": best["epoch"], "val_loss": best["val_loss"],
                                              "rule": "least validation loss"}
    else:
        network, selected = _to_network(model), {"epoch": epoch, "val_loss": history[-1]["val_loss"], "rule": "last"}
    return {"network": scaler.unscale_network(network), "history": history, "epochs": epoch,
            "init_train_loss": history[0]["train_loss"], "init_val_loss": history[0]["val_loss"],
            "selected": selected}


def full_batch_step_seconds(network: ReluNetwork, X0: np.ndarray, Y: np.ndarray, repeats: int = 5,
                            dtype: str = "float64") -> float:
    """Median seconds of one full-batch forward + backward pass in PyTorch (``dtype``), samples as columns.

    Runs with PyTorch's current thread setting (``torch.set_num_threads``).
    """
    torch = _torch()
    model = torch_modules(network, dtype)
    inputs = torch.from_numpy(np.ascontiguousarray(X0.T, dtype=dtype))
    targets = torch.from_numpy(np.ascontiguousarray(Y.T, dtype=dtype))
    times = []
    for _ in range(repeats):
        model.zero_grad()
        start = time.perf_counter()
        loss = torch.mean((model(inputs) - targets) ** 2)
        loss.backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def projected_adam(problem, starts: int, rng: np.random.Generator, steps: int = 1500,
                   lr: float = 0.02) -> list[float] | None:
    """Projected Adam on ``(W_1, b_1)`` of a tiny training instance (``formulation.mixed_integer.TinyTraining``,
    weights in a box), for every split ``p`` and start at once (Adam is elementwise, so summing independent
    losses is the same as independent runs); the best split per start. ``None`` without PyTorch (``verify``
    then reports no Adam row)."""
    try:
        import torch
    except ImportError:
        return None
    m, n0 = problem.hidden, problem.X0.shape[0]
    P, B = m + 1, problem.weight_bound
    torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
    W = torch.tensor(rng.uniform(-B, B, size=(1, starts, m, n0)).repeat(P, axis=0), requires_grad=True)
    b = torch.tensor(rng.uniform(-B, B, size=(1, starts, m, 1)).repeat(P, axis=0), requires_grad=True)
    X = torch.tensor(problem.X0)
    Y = torch.tensor(problem.Y)
    signs = torch.tensor(np.stack([problem.signs(p) for p in range(P)]))[:, None, :, None]
    optimizer = torch.optim.Adam([W, b], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        output = (signs * torch.relu(W @ X + b)).sum(dim=2)  # (P, K, N)
        loss = ((output - Y) ** 2).sum()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            W.clamp_(-B, B)
            b.clamp_(-B, B)
    Wn, bn = W.detach().numpy(), b.detach().numpy()
    return [min(problem.evaluate(Wn[p, k], bn[p, k, :, 0], p) for p in range(P)) for k in range(starts)]
