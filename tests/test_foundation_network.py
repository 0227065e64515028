"""ReluNetwork: forward pass, activation pattern, (U), save/load."""

from __future__ import annotations

import numpy as np

from formulation import ReluNetwork


def test_forward_matches_a_hand_computed_network():
    network = ReluNetwork([[[1.0, -1.0], [2.0, 0.0]], [[1.0, 1.0]]], [[0.0, -1.0], [0.5]])
    X0 = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])  # samples are columns
    # hidden: z = [x1 - x2, 2 x1 - 1] -> relu; output: sum + 0.5
    Z1 = np.array([[1.0, -1.0, -1.0], [1.0, -1.0, 3.0]])
    expected = np.maximum(Z1, 0).sum(axis=0, keepdims=True) + 0.5
    np.testing.assert_allclose(network.forward(X0), expected)
    np.testing.assert_array_equal(network.activation_pattern(X0)[0], (Z1 > 0).astype(float))


def test_unrectified_representation_holds_and_detects_violations():
    rng = np.random.default_rng(0)
    network = ReluNetwork.random((4, 6, 5, 3), seed=rng)
    X0 = rng.normal(size=(4, 50))
    X0[:, 0] = 0.0
    batch = network.unrectify(X0)
    for Z, X, D in zip(batch.Z, batch.X, batch.D):
        np.testing.assert_array_equal(X, D * Z)
        assert ReluNetwork.check_unrectified(Z, X, D, binary=True)["holds"] == 1.0
    Z, X, D = batch.Z[0], batch.X[0], batch.D[0]
    flipped = D.copy()
    flipped[Z > 0] = 0.0  # a wrong pattern breaks X = D⊙Z
    assert ReluNetwork.check_unrectified(Z, X, flipped)["holds"] == 0.0
    # a fractional d is allowed only at z = 0 (the relaxation lemma)
    relaxed = D.copy()
    relaxed[Z > 0] = 0.5
    result = ReluNetwork.check_unrectified(Z, relaxed * Z, relaxed)
    assert result["(1-D)*Z<=0"] > 0 and result["holds"] == 0.0
    zero = np.zeros((2, 2))
    assert ReluNetwork.check_unrectified(zero, zero, np.full((2, 2), 0.3))["holds"] == 1.0


def test_save_load_roundtrip(tmp_path):
    network = ReluNetwork.random((3, 7, 1), seed=1)
    path = tmp_path / "net.npz"
    network.save(path)
    with np.load(path) as archive:
        assert sorted(archive.files) == ["W1", "W2", "b1", "b2"]
        assert archive["W1"].shape == (7, 3)
    loaded = ReluNetwork.load(path)
    X0 = np.random.default_rng(2).normal(size=(3, 10))
    np.testing.assert_array_equal(loaded.forward(X0), network.forward(X0))
    assert not list(tmp_path.glob("*.tmp*"))


def test_widths_one_and_a_single_sample():
    network = ReluNetwork.random((1, 1, 1), seed=3)
    assert network.forward(np.array([[2.0]])).shape == (1, 1)
    assert network.forward(np.array([2.0])).shape == (1, 1)  # a 1-D input is one sample
