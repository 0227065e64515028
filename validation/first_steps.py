"""How much of a training method's first step generalises: ``unrelu cs --first-steps``.

From the common start ``θ0`` of a ``cs`` cell (the AL trainer's, which Adam shares), each method takes its
first step to ``θ1``. Along the displacement ``d = θ1 − θ0`` the relative training and validation losses
``L_S(θ0 + t d) / L_S(θ0)`` (``L_S`` the fraction of target variance left, as every ``cs`` history reports it)
have the slopes

    s_S = (L_S(θ0 + h d) − L_S(θ0 − h d)) / (2 h L_S(θ0))        (central difference, h = 10⁻³)

at ``t = 0``. Their ratio ``s_val / s_train`` is the share of the step's first-order training decrease that
is also a validation decrease: 1 when every bit of it generalises, 0 when none does. The slopes do not
depend on how the weights are parametrised (standardised or not), only on the direction of the step
in function space; the row also gives the step's own change ``L_S(θ1)/L_S(θ0) − 1``.

The directions: the AL method's first outer iteration at three penalties ``ρ̂`` (the cell's, 10× and 0.1×),
the cell's AL step restricted to each layer's weights, the negative gradient of the training loss (PyTorch
autograd, in the network's own units) scaled to the first-order training decrease of the cell's AL step,
and Adam after one and after three epochs. A rejected AL step (the restarted mode keeps the start) has no ratio.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from formulation.network import ReluNetwork
from formulation.results import ConvergenceWarning
from solvers.methods.scaling import forward_loss_fraction

#: Step of the central difference, as a fraction of the displacement.
H = 1e-3
#: Adam's epochs for its two rows.
ADAM_EPOCHS = (1, 3)


def _flat(network: ReluNetwork) -> np.ndarray:
    return np.concatenate([w.ravel() for w in network.weights] + [b.ravel() for b in network.biases])


def _network(vector: np.ndarray, like: ReluNetwork) -> ReluNetwork:
    weights, biases, k = [], [], 0
    for w in like.weights:
        weights.append(vector[k:k + w.size].reshape(w.shape))
        k += w.size
    for b in like.biases:
        biases.append(vector[k:k + b.size].reshape(b.shape))
        k += b.size
    return ReluNetwork(weights, biases)


def slopes(start: ReluNetwork, direction: np.ndarray, data: dict, h: float = H) -> dict:
    """Relative slopes of the training and validation losses at ``start`` along ``direction`` (flat weights
    then biases, :func:`_flat`'s order), their ratio, and the step's own relative changes.

    ``data`` holds ``train`` and (for the ratio) ``val`` as ``(X, T)`` pairs, samples as columns.
    """
    x0 = _flat(start)
    row = {"step_norm": float(np.linalg.norm(direction))}
    for side in data:
        X, T = data[side]
        base = forward_loss_fraction(start, X, T)
        plus = forward_loss_fraction(_network(x0 + h * direction, start), X, T)
        minus = forward_loss_fraction(_network(x0 - h * direction, start), X, T)
        row[f"{side}_slope"] = (plus - minus) / (2.0 * h * base)
        row[f"{side}_step"] = forward_loss_fraction(_network(x0 + direction, start), X, T) / base - 1.0
    if "val" in data:
        row["ratio"] = row["val_slope"] / row["train_slope"] if row["train_slope"] != 0 else None
    return row


def gradient_direction(start: ReluNetwork, X: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``−∇`` of the mean squared training error at ``start`` (autograd in float64), in :func:`_flat`'s order."""
    import torch

    model = start.to_torch("float64")
    inputs, targets = torch.from_numpy(np.ascontiguousarray(X.T)), torch.from_numpy(np.ascontiguousarray(T.T))
    ((model(inputs) - targets) ** 2).mean().backward()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    grad = np.concatenate([m.weight.grad.numpy().ravel() for m in layers] + [m.bias.grad.numpy().ravel()
                                                                             for m in layers])
    return -grad


def _layer_parts(start: ReluNetwork, direction: np.ndarray) -> list[np.ndarray]:
    """``direction`` restricted to each layer's ``(W_l, b_l)``, the rest zero."""
    sizes = [w.size for w in start.weights] + [b.size for b in start.biases]
    edges = np.cumsum([0] + sizes)
    L = start.depth
    parts = []
    for l in range(L):
        part = np.zeros_like(direction)
        for k in (l, L + l):
            part[edges[k]:edges[k + 1]] = direction[edges[k]:edges[k + 1]]
        parts.append(part)
    return parts


def probe(trainer_for, X, T, X_val, T_val, *, rho: float, hidden, seed: int, init: str, ridge: float, mu: float,
          out=print) -> list[dict]:
    """The rows of one cell (module docstring). ``trainer_for(rho, max_iters)`` is the cell's AL trainer with that
    penalty and outer iterations (``max_iters=0``: its start); the other arguments are the cell's data and the
    settings Adam shares with it."""
    from validation.baselines.adam import train_adam

    data = {"train": (X, T), "val": (X_val, T_val)}

    def al(iterations, penalty):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return trainer_for(penalty, iterations).fit(X, T, X_val, T_val).network

    # the start as fit returns it (in the trainer's dtype), so that an AL step's displacement holds no rounding
    # of the start (cs._al_start builds it in float64)
    start = al(0, rho)
    x0 = _flat(start)
    rows = []

    def add(name, direction, seconds):
        row = {"direction": name, "seconds": seconds, **slopes(start, direction, data)}
        rows.append(row)
        out(format_rows([row], header=not rows[:-1]))

    own = None
    for penalty in (10.0 * rho, rho, 0.1 * rho):
        clock = time.perf_counter()
        direction = _flat(al(1, penalty)) - x0
        add(f"AL, 1 iteration, rho^={penalty:g}", direction, time.perf_counter() - clock)
        if penalty == rho:
            own = direction
    for l, part in enumerate(_layer_parts(start, own), start=1):
        add(f"  its layer {l} only", part, None)
    clock = time.perf_counter()
    gradient = gradient_direction(start, X, T)
    # scaled to the first-order training decrease of the cell's AL step (the slopes do not depend on the
    # length, the step's own change does)
    target = slopes(start, own, {"train": data["train"]})["train_slope"] if np.any(own) else -0.01
    unit = slopes(start, gradient, {"train": data["train"]})["train_slope"]
    add("-gradient, same first-order decrease", gradient * (target / unit) if unit < 0 else gradient,
        time.perf_counter() - clock)
    for epochs in ADAM_EPOCHS:
        clock = time.perf_counter()
        trained = train_adam(X, T, X_val, T_val, hidden=hidden, seed=seed, time_budget=float("inf"),
                             max_epochs=epochs, init=init, ridge=ridge, weight_decay=mu)
        add(f"Adam, {epochs} epoch{'s' if epochs > 1 else ''}", _flat(trained["network"]) - x0,
            time.perf_counter() - clock)
    return rows


def format_rows(rows: list[dict], header: bool = True) -> str:
    """Markdown rows (with the header line when ``header``): slopes and step changes in percent."""
    lines = ["| direction | wall s | train slope % | val slope % | val / train | step: train % | step: val % |",
             "|---|---|---|---|---|---|---|"] if header else []
    for row in rows:
        seconds = "–" if row["seconds"] is None else f"{row['seconds']:.1f}"
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(f"| {row['direction']} | {seconds} | {100 * row['train_slope']:+.3f} | "
                     f"{100 * row['val_slope']:+.3f} | {ratio} | {100 * row['train_step']:+.3f} | "
                     f"{100 * row['val_step']:+.3f} |")
    return "\n".join(lines)
