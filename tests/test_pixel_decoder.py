"""The pixel network of ``unrelu cs --image-net pixel`` (validation/pixel_decoder.py): its inputs, tiles and
assembly, its training samples, and its start (the linear filter of the stage-1 image)."""

import numpy as np
import pytest

from formulation.results import ProblemError
from validation import datasets as ds
from validation import pixel_decoder as pd
from validation.baselines.linear import fit_ridge


def _image(shape=(40, 47), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape)


def _every(shape):
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return rows.ravel(), cols.ravel()


def test_inputs_hold_the_window_and_the_position():
    image = _image()
    rows, cols = _every(image.shape)
    X = pd.pixel_inputs(image, rows, cols)
    assert X.shape == (image.size, pd.n_inputs())
    centre = pd.WINDOW * pd.WINDOW // 2
    np.testing.assert_array_equal(X[:, centre], image.ravel())
    # the window of an inner pixel is the image around it, row-major
    r, c, half = 20, 30, pd.WINDOW // 2
    row = X[r * image.shape[1] + c, :pd.WINDOW * pd.WINDOW].reshape(pd.WINDOW, pd.WINDOW)
    np.testing.assert_array_equal(row, image[r - half:r + half + 1, c - half:c + half + 1])
    # the position features repeat with the block: pixel (r, c) and (r + 33, c) have the same ones
    assert np.array_equal(X[5 * image.shape[1] + 7, -8:], pd.pixel_inputs(np.pad(image, ((0, 40), (0, 0))),
                                                                          np.array([38]), np.array([7]))[0, -8:])


def test_assembling_the_true_tiles_gives_the_image_back():
    image = _image()
    rows, cols = _every(image.shape)
    tiles = pd.tile_targets(image, rows, cols)
    assert tiles.shape == (image.size, pd.TILE * pd.TILE)
    np.testing.assert_allclose(pd.assemble(tiles, rows, cols, image.shape), image, atol=1e-14)


def test_recover_image_with_the_centre_of_the_window_is_the_stage1_image():
    image = _image()
    k, t = pd.WINDOW, pd.TILE
    index = [(k // 2 - t // 2 + i) * k + (k // 2 - t // 2 + j) for i in range(t) for j in range(t)]
    np.testing.assert_allclose(pd.recover_image(image, lambda X: X[:, index]), image, atol=1e-14)


def test_bad_windows_and_images_are_refused():
    image = _image()
    rows, cols = _every(image.shape)
    with pytest.raises(ProblemError, match="odd positive"):
        pd.pixel_inputs(image, rows, cols, window=10)
    with pytest.raises(ProblemError, match="odd positive"):
        pd.tile_targets(image, rows, cols, tile=0)
    with pytest.raises(ProblemError, match="2-D image"):
        pd.pixel_inputs(image[:3, :3], rows[:1], cols[:1])
    with pytest.raises(ProblemError, match="no tile"):
        pd.assemble(np.zeros((1, pd.TILE ** 2)), np.array([0]), np.array([0]), image.shape)
    with pytest.raises(ProblemError, match="No training photographs"):
        pd.training_samples({}, lambda Y: Y, np.eye(4), np.random.default_rng(0), train_count=1, val_count=1)


def _samples(seed=0, unique=False):
    rng = np.random.default_rng(seed)
    photos = {"a": rng.random((70, 80)), "b": rng.random((66, 90))}
    if unique:
        photos = {"a": np.arange(5600).reshape(70, 80) / 5600, "b": 1 + np.arange(5940).reshape(66, 90) / 5940}
    A = ds.gaussian_orthonormal(100, ds.BLOCK * ds.BLOCK, rng)
    decode = lambda Y: Y @ A  # noqa: E731 -- the transpose: a linear stage 1
    return photos, A, decode, pd.training_samples(photos, decode, A, np.random.default_rng(seed),
                                                   train_count=3000 if unique else 600, val_count=400 if unique else 80)


def test_training_samples_sizes_and_held_out_cells():
    photos, A, decode, samples = _samples()
    assert samples.X_train.shape == (600, pd.n_inputs()) and samples.T_train.shape == (600, pd.TILE ** 2)
    assert samples.X_val.shape == (80, pd.n_inputs()) and samples.T_val.shape == (80, pd.TILE ** 2)
    info = samples.info
    assert info["train_used"] == 600 and info["val_used"] == 80
    every = sum(pd._orient(p, t)[pd.GRID_OFFSETS[t % 4][0]:, pd.GRID_OFFSETS[t % 4][1]:].size
                for p in photos.values() for t in range(8))
    assert info["train_available"] + info["val_available"] == every  # every oriented, shifted pixel, on one side
    assert 0 < info["val_available"] < info["train_available"]
    # validation pixels are held out in every orientation: no pixel of a photograph is a target on both sides
    # (the photographs of _samples(unique=True) have a distinct value at every pixel)
    _, _, _, unique = _samples(unique=True)
    centre = pd.TILE ** 2 // 2
    assert not set(unique.T_train[:, centre]) & set(unique.T_val[:, centre])
    # the centre input of a sample is stage 1 at that pixel (decode is linear, so it is not the target itself)
    assert not np.allclose(samples.X_train[:, pd.WINDOW ** 2 // 2], samples.T_train[:, pd.TILE ** 2 // 2])


def test_the_pairs_start_of_the_pixel_network_is_its_linear_filter():
    from solvers.methods.al_trainer import ALTrainer
    from validation.cs import _al_start

    _, _, _, samples = _samples(1)
    model, _, relative = fit_ridge(samples.X_train, samples.T_train, samples.X_val, samples.T_val, 5)
    trainer = ALTrainer(hidden=(8 + 2 * pd.n_inputs(),), init="pairs", ridge=relative)
    start = _al_start(trainer, samples.X_train, samples.T_train)
    np.testing.assert_allclose(start.forward(samples.X_val.T).T, model.predict(samples.X_val), atol=1e-10)


def test_fit_ridge_with_one_output_does_not_broadcast():
    rng = np.random.default_rng(2)
    X, w = rng.standard_normal((300, 5)), rng.standard_normal(5)
    y = (X @ w)[:, None] * 0.01 + 0.5 + 0.001 * rng.standard_normal((300, 1))
    one = fit_ridge(X[:200], y[:200], X[200:], y[200:], 9)
    two = fit_ridge(X[:200], np.hstack([y[:200], y[:200]]), X[200:], np.hstack([y[200:], y[200:]]), 9)
    assert one[2] == two[2] and one[2] < 1.0  # scaled targets: a small penalty wins, as with two outputs


def test_cs_image_net_option_and_hidden_widths():
    from validation import cs
    from validation.cli import build_parser

    assert build_parser().parse_args(["cs"]).image_net == "pixel"
    assert build_parser().parse_args(["cs", "--image-net", "block"]).image_net == "block"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cs", "--image-net", "patch"])
    config = {"init": "pairs", "hidden": None, "image_net": "pixel", "values": cs.SETTINGS["full"]}
    # the pixel network's pairs are those of its inputs (window and position), not of the m measurements
    assert cs.hidden_widths(config, "images", 109) == (256 + 2 * pd.n_inputs(),)
    assert cs.hidden_widths({**config, "image_net": "block"}, "images", 109) == (512 + 2 * 109,)
    assert cs.hidden_widths(config, "mnist", 100) == (1000 + 200,)  # MNIST has no pixel network


def test_recover_image_in_chunks_is_the_same(monkeypatch):
    image = _image((30, 50))
    weights = np.random.default_rng(3).standard_normal((pd.n_inputs(), pd.TILE ** 2))
    whole = pd.recover_image(image, lambda X: X @ weights)
    monkeypatch.setattr(pd, "CHUNK", 7)  # 1,500 pixels in chunks of 7, the last one short
    np.testing.assert_allclose(pd.recover_image(image, lambda X: X @ weights), whole, rtol=0, atol=1e-12)


def test_mnist_settings_do_not_carry_the_pixel_network():
    """A run without images keeps the configuration (and so the stored studies) it had before the pixel network."""
    from validation import cs
    from validation.cli import build_parser

    args = build_parser().parse_args(["cs", "--quick", "--datasets", "mnist", "--methods", "ridge"])
    config, _, _ = cs.plan(args, out=lambda line: None)
    assert "image_net" not in config and not any(key.startswith("pixel_") for key in config["values"])
