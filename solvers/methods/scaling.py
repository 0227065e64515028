"""Scaling of the training data (folded exactly into the network) and the loss as a fraction of variance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from formulation.network import ReluNetwork

__all__ = ["Standardizer", "forward_loss_fraction"]


@dataclass
class Standardizer:
    r"""Affine scaling of inputs and targets, folded exactly into the first and last layers.

    ``X̃ = (X − m_x 1ᵀ) / s_x`` and ``Ỹ = (Y − m_y 1ᵀ) / s_y`` with per-row means and one
    scalar scale each (the root mean square of the centred data; a per-row scale would blow up
    constant rows such as the border pixels of MNIST). A network ``Ñ`` trained on ``(X̃, Ỹ)``
    equals ``N(X) = s_y Ñ((X − m_x)/s_x) + m_y``, i.e. ``W_1 = W̃_1/s_x``,
    ``b_1 = b̃_1 − W̃_1 m_x / s_x``, ``W_L = s_y W̃_L``, ``b_L = s_y b̃_L + m_y``.
    """

    mean_x: np.ndarray
    scale_x: float
    mean_y: np.ndarray
    scale_y: float

    @classmethod
    def fit(cls, X0: np.ndarray, Y: np.ndarray, enabled: bool = True) -> Standardizer:
        if not enabled:
            return cls(np.zeros(X0.shape[0]), 1.0, np.zeros(Y.shape[0]), 1.0)
        mean_x, mean_y = X0.mean(axis=1), Y.mean(axis=1)
        scale_x = float(np.sqrt(np.mean((X0 - mean_x[:, None]) ** 2)))
        scale_y = float(np.sqrt(np.mean((Y - mean_y[:, None]) ** 2)))
        return cls(mean_x, scale_x if scale_x > 0 else 1.0, mean_y, scale_y if scale_y > 0 else 1.0)

    def x(self, X0: np.ndarray) -> np.ndarray:
        return (X0 - self.mean_x[:, None]) / self.scale_x

    def y(self, Y: np.ndarray) -> np.ndarray:
        return (Y - self.mean_y[:, None]) / self.scale_y

    def y_inverse(self, Y_scaled: np.ndarray) -> np.ndarray:
        return Y_scaled * self.scale_y + self.mean_y[:, None]

    def unscale_network(self, network: ReluNetwork) -> ReluNetwork:
        """The network in original units (see the class docstring)."""
        weights = [W.copy() for W in network.weights]
        biases = [b.copy() for b in network.biases]
        biases[0] = biases[0] - weights[0] @ self.mean_x / self.scale_x
        weights[0] = weights[0] / self.scale_x
        weights[-1] = weights[-1] * self.scale_y
        biases[-1] = biases[-1] * self.scale_y + self.mean_y
        return ReluNetwork(weights, biases)

    def scale_network(self, network: ReluNetwork) -> ReluNetwork:
        """Inverse of :meth:`unscale_network`."""
        weights = [W.copy() for W in network.weights]
        biases = [b.copy() for b in network.biases]
        weights[-1] = weights[-1] / self.scale_y
        biases[-1] = (biases[-1] - self.mean_y) / self.scale_y
        biases[0] = biases[0] + weights[0] @ self.mean_x
        weights[0] = weights[0] * self.scale_x
        return ReluNetwork(weights, biases)


def forward_loss_fraction(network: ReluNetwork, X0: np.ndarray, Y: np.ndarray, chunk: int = 1024) -> float:
    r"""``||N(X0) − Y||² / ||Y − Ȳ||²``: the fraction of target variance a network leaves unexplained.

    Computed in float64 whatever the dtype of the data (float32 data are promoted chunk by chunk), in
    chunks of samples, keeping one layer's activations at a time.
    """
    mean = Y.mean(axis=1, dtype=np.float64)[:, None]
    total = error = 0.0
    for start in range(0, X0.shape[1], chunk):
        H = X0[:, start:start + chunk].astype(np.float64)
        for index, (W, b) in enumerate(zip(network.weights, network.biases)):
            H = W @ H + b[:, None]
            if index < network.depth - 1:
                np.maximum(H, 0.0, out=H)
        target = Y[:, start:start + chunk].astype(np.float64)
        error += float(np.sum((H - target) ** 2))
        total += float(np.sum((target - mean) ** 2))
    return error / total if total > 0 else error
