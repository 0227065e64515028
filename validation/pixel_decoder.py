r"""The second stage of the image decoder of ``unrelu cs`` (``--image-net pixel``): a ReLU MLP at every pixel.

Stage 1 is the per-block linear decoder (the ``ridge`` row): every 33×33 block is recovered from its own
measurements, ``ŝ = P y + c``, and the blocks are reassembled into the stage-1 image ``R``. Stage 2 maps, at
every pixel ``(r, c)`` of ``R``, the ``K × K`` window of ``R`` centred there (reflected at the image border)
and the pixel's position inside its block (``cos(π k (r mod 33)/32)``, ``cos(π k (c mod 33)/32)``,
``k = 1..4``: the block artefacts depend on it) to the ``q × q`` tile of the image centred there; the image is
the average of the overlapping tiles (:func:`assemble`). So the MLP is applied as a convolutional network,
and it sees across block borders, which a per-block decoder cannot. Stage 2 is linear in ``R`` at its start
(``init="pairs"``: the ridge fit of the tiles on the windows), so the start is at least the stage-1 image
plus the best linear filter on the training photos.

Training samples come from the training photographs: each in its 8 orientations, the block grid shifted by an
offset per orientation (:data:`GRID_OFFSETS`) so that content meets every position in a block, stage 1 run
on it exactly as on a test image (zero-padded to whole blocks, measured, recovered, reassembled), then
pixels drawn at random. Validation pixels are those whose position *in the original photograph* falls in a
held-out 10 % of its 33×33 cells, in every orientation, so that no validation target is a training target
seen in another orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from formulation.results import ProblemError
from validation import datasets as ds

__all__ = ["WINDOW", "TILE", "pixel_inputs", "tile_targets", "assemble", "recover_image", "PixelSamples",
           "training_samples"]

#: Side ``K`` of the window of the stage-1 image a pixel's network sees.
WINDOW = 11
#: Side ``q`` of the tile of pixels the network recovers around that pixel (overlapping tiles are averaged).
TILE = 3
#: Frequencies of the position features (per axis).
FREQUENCIES = 4
#: Shift of the block grid against the photograph, per orientation index mod 4 (pixels down, right).
GRID_OFFSETS = ((0, 0), (16, 16), (8, 25), (25, 8))


def _check_odd(name: str, value: int) -> int:
    if int(value) != value or value < 1 or value % 2 == 0:
        raise ProblemError(f"`{name}` = {value!r}; pass an odd positive integer (the window is centred on a pixel).")
    return int(value)


def n_inputs(window: int = WINDOW) -> int:
    """Inputs of the pixel network: the window and ``2 · FREQUENCIES`` position features."""
    return window * window + 2 * FREQUENCIES


def _position(rows: np.ndarray, cols: np.ndarray, block: int) -> np.ndarray:
    pos = np.column_stack([rows % block, cols % block]) / (block - 1)
    return np.column_stack([np.cos(np.pi * k * pos[:, axis]) for k in range(1, FREQUENCIES + 1) for axis in (0, 1)])


def pixel_inputs(stage1: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int = WINDOW,
                 block: int = ds.BLOCK) -> np.ndarray:
    """Network inputs at the pixels ``(rows[i], cols[i])`` of the stage-1 image: the ``window × window``
    neighbourhood (reflected at the border), row-major, then the position features; shape ``(N, n_inputs)``."""
    window = _check_odd("window", window)
    stage1 = np.asarray(stage1, dtype=np.float64)
    if stage1.ndim != 2 or min(stage1.shape) <= window // 2:
        raise ProblemError(f"The stage-1 image has shape {stage1.shape}; the pixel network needs a 2-D image "
                           f"larger than half its {window}x{window} window on each side.")
    half = window // 2
    views = sliding_window_view(np.pad(stage1, half, mode="reflect"), (window, window))
    return np.column_stack([views[rows, cols].reshape(len(rows), -1), _position(rows, cols, block)])


def tile_targets(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int = TILE) -> np.ndarray:
    """The ``tile × tile`` patches of ``image`` centred at ``(rows[i], cols[i])`` (reflected at the border)."""
    half = _check_odd("tile", tile) // 2
    views = sliding_window_view(np.pad(np.asarray(image, dtype=np.float64), half, mode="reflect"), (tile, tile))
    return views[rows, cols].reshape(len(rows), -1)


def assemble(tiles: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int],
             tile: int = TILE) -> np.ndarray:
    """The image of shape ``shape`` whose every pixel is the mean of the predicted tiles covering it."""
    half = _check_odd("tile", tile) // 2
    total = np.zeros((shape[0] + 2 * half, shape[1] + 2 * half))
    count = np.zeros_like(total)
    tiles = np.asarray(tiles).reshape(-1, tile, tile)
    for i in range(tile):
        for j in range(tile):
            np.add.at(total, (rows + i, cols + j), tiles[:, i, j])
            np.add.at(count, (rows + i, cols + j), 1.0)
    inner = (slice(half, half + shape[0]), slice(half, half + shape[1]))
    if np.any(count[inner] == 0):
        raise ProblemError("Some pixels are covered by no tile; predict a tile at every pixel.")
    return total[inner] / count[inner]


def _every_pixel(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return rows.ravel(), cols.ravel()


#: Pixels per call of the network in :func:`recover_image` (its inputs and hidden layer stay a few hundred MB).
CHUNK = 65536


def recover_image(stage1: np.ndarray, predict, window: int = WINDOW, tile: int = TILE) -> np.ndarray:
    """Stage 2 on a whole stage-1 image: ``predict`` (inputs ``(N, n_inputs)`` to tiles ``(N, tile²)``) at
    every pixel, :data:`CHUNK` pixels at a time, the overlapping tiles averaged."""
    rows, cols = _every_pixel(stage1.shape)
    tiles = np.concatenate([predict(pixel_inputs(stage1, rows[i:i + CHUNK], cols[i:i + CHUNK], window))
                            for i in range(0, len(rows), CHUNK)])
    return assemble(tiles, rows, cols, stage1.shape, tile)


def stage1_image(image: np.ndarray, decode, A: np.ndarray, noise: float = 0.0,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Stage 1 on a whole image, as the test images get it: zero-padded to whole blocks, each block measured
    by ``A`` (plus Gaussian noise of std ``noise``), decoded by ``decode`` (``(B, m) → (B, n)``), reassembled
    and cropped back (not clipped)."""
    blocks, padded = ds.image_to_blocks(image)
    Y = blocks @ A.T
    if noise > 0:
        Y = Y + noise * (rng or np.random.default_rng(1)).standard_normal(Y.shape)
    return ds.blocks_to_image(decode(Y), padded, image.shape)


@dataclass
class PixelSamples:
    """Stage-2 training and validation samples: inputs (rows of :func:`pixel_inputs`) and target tiles."""

    X_train: np.ndarray
    T_train: np.ndarray
    X_val: np.ndarray
    T_val: np.ndarray
    info: dict


def _orient(array: np.ndarray, transform: int) -> np.ndarray:
    array = np.rot90(array, transform % 4)
    return array[:, ::-1] if transform >= 4 else array


def training_samples(photos: dict[str, np.ndarray], decode, A: np.ndarray, rng: np.random.Generator, *,
                     train_count: int, val_count: int, noise: float = 0.0, window: int = WINDOW,
                     tile: int = TILE, block: int = ds.BLOCK, val_fraction: float = 0.1) -> PixelSamples:
    """Stage-2 samples from the training photographs (module docstring): ``train_count`` / ``val_count``
    pixels drawn evenly from every photograph and orientation, each side without replacement."""
    names = sorted(photos)
    if not names:
        raise ProblemError("No training photographs: pass at least one photograph (name: 2-D array) to learn the "
                           "pixel network from.")
    groups = len(names) * 8
    per = {"train": -(-train_count // groups), "val": -(-val_count // groups)}
    parts = {"train": ([], []), "val": ([], [])}
    available = {"train": 0, "val": 0}
    for name in names:
        photo = photos[name]
        cells = (-(-photo.shape[0] // block), -(-photo.shape[1] // block))
        held = rng.random(cells) < val_fraction
        held_pixels = np.kron(held, np.ones((block, block), dtype=bool))[:photo.shape[0], :photo.shape[1]]
        for transform in range(8):
            down, right = GRID_OFFSETS[transform % 4]
            image = np.ascontiguousarray(_orient(photo, transform)[down:, right:])
            side_mask = _orient(held_pixels, transform)[down:, right:]
            stage1 = stage1_image(image, decode, A, noise, rng)
            for side, mask in (("train", ~side_mask), ("val", side_mask)):
                rows, cols = np.nonzero(mask)
                available[side] += len(rows)
                if len(rows) == 0:
                    continue
                pick = rng.choice(len(rows), size=min(len(rows), per[side]), replace=False)
                parts[side][0].append(pixel_inputs(stage1, rows[pick], cols[pick], window, block))
                parts[side][1].append(tile_targets(image, rows[pick], cols[pick], tile))
    out = {}
    for side, count in (("train", train_count), ("val", val_count)):
        if not parts[side][0]:
            raise ProblemError(f"The training photographs gave no {side} pixels; use larger photographs.")
        X, T = np.concatenate(parts[side][0]), np.concatenate(parts[side][1])
        keep = np.sort(rng.permutation(len(X))[:count])
        out[side] = (X[keep], T[keep])
    info = {"photos": names, "orientations": 8, "grid_offsets": [list(o) for o in GRID_OFFSETS],
            "window": window, "tile": tile, "train_available": available["train"],
            "val_available": available["val"], "train_used": len(out["train"][0]), "val_used": len(out["val"][0])}
    return PixelSamples(out["train"][0], out["train"][1], out["val"][0], out["val"][1], info)
