"""Datasets of the compressed-sensing application (DESIGN §6): MNIST, natural-image blocks, Set11.

Images are returned as float64 in ``[0, 1]``; a collection of signals is an array with one
signal per ROW here (``(N, n)``, the natural layout of image files); the learning code wants
samples as columns and transposes at its boundary.

The data folder (subfolders ``mnist/``, ``set11/``, ``cs_phi/``) is found by :func:`data_root`: the
environment variable ``UNRELU_DATA`` when set, else ``../shared/data`` beside a source checkout (the
layout the project is developed in, which the tests use). Nothing here copies the data; every loader
also takes a directory (``--mnist-dir``, ``--set11-dir``, ``--phi-dir``) and, where the task allows,
falls back to data bundled with scikit-learn / scikit-image and says so in :attr:`Dataset.source`.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field

import numpy as np

from formulation.results import ProblemError

__all__ = [
    "DATA_ENV", "data_root", "Dataset", "read_idx", "load_mnist", "load_digits_fallback",
    "TRAINING_PHOTOS", "training_photos", "load_set11", "sampling_matrix", "image_to_blocks",
    "blocks_to_image", "training_patches", "Patches", "SAMPLE_IMAGES", "PATCH_STRIDE", "BLOCK", "IMAGE_RATIOS",
    "PHI_ROWS",
]

#: Environment variable that names the data folder (with ``mnist/``, ``set11/``, ``cs_phi/``).
DATA_ENV = "UNRELU_DATA"

#: Side of the image blocks of block compressed sensing (``n = 33² = 1089``).
BLOCK = 33
#: Measurement ratios of the image experiments, in percent.
IMAGE_RATIOS = (1, 4, 10, 25, 40)
#: Rows ``m`` of the published ISTA-Net sampling matrices per ratio (``ceil``-free, as distributed).
PHI_ROWS = {1: 10, 4: 43, 10: 109, 25: 272, 40: 436}

#: ``skimage.data`` photographs used for training blocks. ``camera`` is Set11's cameraman and is
#: excluded on purpose; all of these ship inside scikit-image (no download).
TRAINING_PHOTOS = ("astronaut", "brick", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket",
                   "clock", "page", "text", "hubble_deep_field")

# IDX type codes (third magic byte) -> numpy big-endian dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass
class Dataset:
    """Signals split into train and test, one signal per row, values in ``[0, 1]``.

    Attributes
    ----------
    name : str
        ``"mnist"``, ``"digits"`` (the fallback) or ``"images"``.
    train, test : ndarray of shape (N, n)
    image_shape : tuple of int
        Shape of one signal as an image (``(28, 28)``, ``(8, 8)``, ``(33, 33)``).
    source : str
        Where the data came from, printed with every table (says when a fallback was used).
    fallback : bool
        True when bundled data replaced the requested files.
    test_labels : ndarray or None
    extras : dict
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, ...]
    source: str
    fallback: bool = False
    test_labels: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Signal length."""
        return int(self.train.shape[1])


# ============================================================================ IDX / MNIST
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or plain), checking its header against its size.

    Parameters
    ----------
    path : path-like
        A file such as ``t10k-images-idx3-ubyte.gz``.

    Returns
    -------
    ndarray
        With the shape and dtype the header declares (native byte order).

    Raises
    ------
    ProblemError
        Missing file, bad magic number, unknown type code, or a payload whose size does not match
        the dimensions in the header (a truncated or padded download).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ProblemError(f"IDX file {path!r} does not exist; pass the folder that holds the MNIST files.")
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:  # a truncated gzip stream ends here
        raise ProblemError(f"IDX file {path!r} could not be read ({exc}); it is corrupt or truncated: "
                           "download it again.") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ProblemError(f"IDX file {path!r} has a bad magic number {raw[:4].hex() or '(empty)'}: an IDX file "
                           "starts with 00 00, a type code (08 for uint8) and the number of dimensions. "
                           "It is not an (uncompressed or gzip) MNIST file; download it again.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ProblemError(f"IDX file {path!r} is truncated inside its header ({len(raw)} bytes); download it again.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ProblemError(f"IDX file {path!r} declares shape {shape} ({expected} bytes with its header) but has "
                           f"{len(raw)} bytes: it is {'truncated' if len(raw) < expected else 'padded'}; "
                           "download it again.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def data_root() -> str | None:
    """The data folder: ``$UNRELU_DATA`` when set, else ``../shared/data`` beside a source checkout when it
    exists, else None (loaders then fall back or ask for a folder).

    The second rule is the development layout (a checkout whose ``pyproject.toml`` sits next to these
    packages, with the read-only data folder beside the checkout); after a non-editable install there is no
    checkout, so only the variable or an explicit folder finds the data.

    Raises
    ------
    ProblemError
        ``UNRELU_DATA`` is set but is not a folder.
    """
    value = os.environ.get(DATA_ENV)
    if value:
        if not os.path.isdir(value):
            raise ProblemError(f"{DATA_ENV}={value!r} is not a folder; point it at the data folder (the one "
                               "that holds mnist/, set11/, cs_phi/) or unset it.")
        return os.path.abspath(value)
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    beside = os.path.normpath(os.path.join(checkout, "..", "shared", "data"))
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")) and os.path.isdir(beside):
        return beside
    return None


def _data_dir(name: str) -> str | None:
    root = data_root()
    return None if root is None else os.path.join(root, name)


def default_mnist_dir() -> str | None:
    """``mnist/`` in the data folder (:func:`data_root`; it may not exist), or None without a data folder."""
    return _data_dir("mnist")


def load_mnist(mnist_dir: str | os.PathLike | None = None, *, n_train: int = 8000, n_test: int = 2000,
               allow_fallback: bool = True, test_first: bool = False) -> Dataset:
    """MNIST digits from the 10k IDX split: the first ``n_train`` for training, the last ``n_test`` for test
    (with ``test_first``: the first ``n_test`` for test, the next ``n_train`` for training, as the CSGM
    protocol takes its test images).

    Parameters
    ----------
    mnist_dir : path-like or None
        Folder with ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` (a folder with
        the four standard files works too). ``None``: ``mnist/`` of the data folder (:func:`data_root`)
        when it exists, else the fallback.
    n_train, n_test : int
        Sizes of the two splits, taken from the two ends of the 10,000 images (``n_train + n_test``
        must not exceed 10,000, so they never overlap).
    allow_fallback : bool
        With ``mnist_dir=None`` and no shared folder, use scikit-learn's bundled 8×8 digits
        (:func:`load_digits_fallback`); otherwise raise.

    Raises
    ------
    ProblemError
        An explicit ``mnist_dir`` that does not exist or lacks the files, or corrupt files.
    """
    if mnist_dir is None:
        mnist_dir = default_mnist_dir()
        if mnist_dir is None or not os.path.isdir(mnist_dir):
            where = (f"no MNIST folder at {mnist_dir}" if mnist_dir is not None
                     else f"no data folder: {DATA_ENV} is unset and there is no ../shared/data beside a checkout")
            if not allow_fallback:
                raise ProblemError(f"{where[0].upper()}{where[1:]}; pass --mnist-dir or set {DATA_ENV}.")
            return load_digits_fallback(reason=where)
    mnist_dir = os.fspath(mnist_dir)
    if not os.path.isdir(mnist_dir):
        raise ProblemError(f"MNIST folder {mnist_dir!r} does not exist; pass the folder that holds "
                           "t10k-images-idx3-ubyte.gz (or omit --mnist-dir to use the default).")
    images_path, labels_path = (_find(mnist_dir, stem) for stem in _MNIST_TEST)
    if images_path is None:
        present = sorted(os.listdir(mnist_dir))[:10]
        raise ProblemError(f"MNIST folder {mnist_dir!r} has no t10k-images-idx3-ubyte[.gz] (found {present}); "
                           "pass the folder that holds the standard MNIST IDX files.")
    if n_train + n_test > 10000 or n_train < 1 or n_test < 1:
        raise ProblemError(f"n_train={n_train} and n_test={n_test} must be positive and sum to at most 10000.")
    images = read_idx(images_path)
    if images.ndim != 3 or images.shape[0] < n_train + n_test or images.shape[1:] != (28, 28):
        raise ProblemError(f"{images_path!r} holds an array of shape {images.shape}, expected (10000, 28, 28) "
                           "images: is it the images file of the MNIST test split?")
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.shape != (images.shape[0],):
            raise ProblemError(f"{labels_path!r} has shape {labels.shape} but the images file has "
                               f"{images.shape[0]} images; the two files do not belong together.")
    flat = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    if test_first:
        return Dataset(name="mnist", train=flat[n_test:n_test + n_train], test=flat[:n_test], image_shape=(28, 28),
                       source=f"MNIST t10k split from {images_path} (first {n_test} test, next {n_train} train)",
                       test_labels=None if labels is None else labels[:n_test])
    return Dataset(name="mnist", train=flat[:n_train], test=flat[-n_test:], image_shape=(28, 28),
                   source=f"MNIST t10k split from {images_path} (first {n_train} train, last {n_test} test)",
                   test_labels=None if labels is None else labels[-n_test:])


def load_digits_fallback(reason: str = "", test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, values 0..16 scaled to ``[0, 1]``).

    The first ``1 − test_fraction`` of the images train, the rest test (no shuffling, like MNIST).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = bunch.data.astype(np.float64) / 16.0
    split = int(round(len(data) * (1 - test_fraction)))
    note = "FALLBACK: scikit-learn's bundled 8x8 digits, NOT MNIST" + (f" ({reason})" if reason else "")
    return Dataset(name="digits", train=data[:split], test=data[split:], image_shape=(8, 8),
                   source=f"{note}; first {split} train, last {len(data) - split} test", fallback=True,
                   test_labels=bunch.target[split:])


# ============================================================================ natural images
#: Photographs of ``sklearn.datasets.load_sample_images`` added to the training photos (file stems).
SAMPLE_IMAGES = ("china", "flower")
#: Stride (pixels) of the grid of training patches: every ``BLOCK × BLOCK`` patch at these steps is used.
PATCH_STRIDE = 14


def training_photos(names=TRAINING_PHOTOS, sample_images: bool = True) -> dict[str, np.ndarray]:
    """Grayscale float ``[0, 1]`` versions of bundled ``skimage.data`` photographs (no ``camera``) and, with
    ``sample_images``, of scikit-learn's two sample photographs (keys ``sklearn-china``, ``sklearn-flower``).
    All of them ship inside the packages: no download."""
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float

    if "camera" in names:
        raise ProblemError("`camera` is Set11's cameraman, a test image; leave it out of the training photos.")
    photos = {}
    for name in names:
        image = getattr(skimage.data, name)()
        if image.ndim == 3 and image.shape[2] == 4:
            image = rgba2rgb(image)
        image = rgb2gray(image) if image.ndim == 3 else img_as_float(image)
        photos[name] = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if sample_images:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for filename, image in zip(bunch.filenames, bunch.images):
            stem = os.path.splitext(os.path.basename(filename))[0]
            photos[f"sklearn-{stem}"] = np.clip(rgb2gray(image), 0.0, 1.0)
    return photos


@dataclass
class Patches:
    """Training and validation patches (rows of length ``block²``) and how they were cut."""

    train: np.ndarray
    val: np.ndarray
    info: dict


def training_patches(photos: dict[str, np.ndarray], rng: np.random.Generator, *, train_count: int | None = None,
                     val_count: int | None = None, stride: int = PATCH_STRIDE, block: int = BLOCK,
                     val_fraction: float = 0.1) -> Patches:
    """Every ``block × block`` patch of ``photos`` on a grid of step ``stride``, in its 8 orientations (the
    dihedral group: 90° rotations, each also flipped), split by position.

    A random ``val_fraction`` of the grid positions (seeded by ``rng``) is held out for validation, so the
    orientations of one patch never straddle the split. ``train_count`` / ``val_count`` subsample each side
    without replacement (``None``: all of it); ``info`` says how many patches were available and used.
    """
    if stride < 1 or block < 1:
        raise ProblemError(f"stride={stride} and block={block} must be positive.")
    names = sorted(photos)
    positions = []
    for index, name in enumerate(names):
        height, width = photos[name].shape
        rows, cols = np.arange(0, height - block + 1, stride), np.arange(0, width - block + 1, stride)
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
        positions.append(np.column_stack([np.full(len(grid), index), grid]))
    positions = np.concatenate(positions)
    if len(positions) < 2:
        raise ProblemError(f"The training photos hold {len(positions)} patch position(s) of {block}x{block}; "
                           "add larger photos.")
    order = rng.permutation(len(positions))
    held = max(1, int(round(val_fraction * len(positions))))
    sides = {"val": positions[order[:held]], "train": positions[order[held:]]}
    out, info = {}, {"photos": names, "stride": stride, "orientations": 8, "positions": len(positions)}
    for side, count in (("train", train_count), ("val", val_count)):
        pool = len(sides[side]) * 8
        chosen = np.arange(pool) if count is None or count >= pool else np.sort(rng.choice(pool, count, replace=False))
        patches = np.empty((len(chosen), block * block))
        for row, item in enumerate(chosen):
            k, i, j = sides[side][item // 8]
            patch = photos[names[k]][i:i + block, j:j + block]
            transform = item % 8
            patch = np.rot90(patch, transform % 4)
            patches[row] = (patch[:, ::-1] if transform >= 4 else patch).ravel()
        out[side] = patches
        info[f"{side}_available"], info[f"{side}_used"] = pool, len(chosen)
    return Patches(out["train"], out["val"], info)


def default_set11_dir() -> str | None:
    """``set11/`` in the data folder (:func:`data_root`), or None without a data folder."""
    return _data_dir("set11")


def load_set11(set11_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The Set11 test images as float ``[0, 1]`` grayscale arrays, keyed by file stem.

    Raises
    ------
    ProblemError
        A folder that does not exist or holds no ``.tif`` images, or an unreadable image.
    """
    import skimage.io
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    set11_dir = default_set11_dir() if set11_dir is None else os.fspath(set11_dir)
    if set11_dir is None:
        raise ProblemError(f"No data folder for Set11: {DATA_ENV} is unset and there is no ../shared/data beside "
                           f"a checkout; set {DATA_ENV} to the folder that holds set11/, pass --set11-dir, or use "
                           "--datasets mnist.")
    if not os.path.isdir(set11_dir):
        raise ProblemError(f"Set11 folder {set11_dir!r} does not exist; pass --set11-dir with the folder of the "
                           "Set11 .tif images, or use --datasets mnist.")
    files = sorted(f for f in os.listdir(set11_dir) if f.lower().endswith((".tif", ".tiff", ".png", ".bmp")))
    if not files:
        raise ProblemError(f"Set11 folder {set11_dir!r} holds no .tif images; pass the folder of the Set11 images.")
    images = {}
    for name in files:
        path = os.path.join(set11_dir, name)
        try:
            image = skimage.io.imread(path)
        except Exception as exc:  # imageio / tifffile raise many types
            raise ProblemError(f"Set11 image {path!r} could not be read ({exc}); replace the file.") from exc
        if image.ndim not in (2, 3) or min(image.shape[:2], default=0) < 1:
            raise ProblemError(f"Set11 image {path!r} could not be read (it decodes to an array of shape "
                               f"{image.shape}, not an image); replace the file.")
        if image.ndim == 3:
            image = rgb2gray(image[..., :3])
        images[os.path.splitext(name)[0]] = np.asarray(img_as_float(image), dtype=np.float64)
    return images


def sampling_matrix(ratio: int, n: int = BLOCK * BLOCK, *, phi_dir: str | os.PathLike | None = None,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, str]:
    """Block sampling matrix ``A`` of shape ``(m, n)`` for a ratio in percent, and where it came from.

    ``phi_0_{ratio}_{n}.mat`` (key ``phi``, as distributed with ISTA-Net) from ``phi_dir``
    (default ``cs_phi/`` of the data folder, :func:`data_root`) when present; otherwise a Gaussian matrix with
    orthonormal rows drawn from ``rng`` with ``m = PHI_ROWS[ratio]`` (or ``round(ratio n / 100)``). An explicit
    ``phi_dir`` without the file is an error (a fallback would silently change the experiment).
    """
    directory = _data_dir("cs_phi") if phi_dir is None else os.fspath(phi_dir)
    path = os.path.join(directory or "cs_phi", f"phi_0_{ratio}_{n}.mat")
    if phi_dir is not None and not os.path.isfile(path):
        where = "does not exist" if not os.path.isdir(directory) else "has no such file"
        raise ProblemError(f"No sampling matrix {path!r}: the --phi-dir folder {where}. Pass the folder that holds "
                           f"the ISTA-Net matrices phi_0_{{R}}_{n}.mat, or omit --phi-dir for a seeded Gaussian matrix "
                           "(whose numbers are not comparable with published tables).")
    if directory is not None and os.path.isfile(path):
        import scipy.io

        try:
            content = scipy.io.loadmat(path)
        except Exception as exc:
            raise ProblemError(f"Sampling matrix {path!r} could not be read ({exc}); replace the file.") from exc
        if "phi" not in content:
            raise ProblemError(f"{path!r} has keys {sorted(k for k in content if not k.startswith('__'))}, "
                               "expected `phi`.")
        A = np.asarray(content["phi"], dtype=np.float64)
        if A.ndim != 2 or A.shape[1] != n:
            raise ProblemError(f"`phi` in {path!r} has shape {A.shape}, expected (m, {n}).")
        return A, path
    if rng is None:
        raise ProblemError(f"No sampling matrix {path!r}; pass `rng` to draw a seeded Gaussian one.")
    m = PHI_ROWS.get(ratio, max(1, int(round(ratio * n / 100)))) if n == BLOCK * BLOCK else \
        max(1, int(round(ratio * n / 100)))
    return gaussian_orthonormal(m, n, rng), "seeded Gaussian, orthonormal rows"


def gaussian_orthonormal(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """An ``m × n`` Gaussian matrix with its rows orthonormalised (QR of the transpose)."""
    if m > n:
        raise ProblemError(f"m={m} measurements exceed the signal length n={n}; choose m <= n.")
    Q, R = np.linalg.qr(rng.standard_normal((n, m)))
    return (Q * np.sign(np.diag(R))).T


# ============================================================================ blocks
def image_to_blocks(image: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, tuple[int, int]]:
    """Split an image into non-overlapping ``block × block`` blocks, row-major, one per row.

    The image is zero-padded at the bottom and right to a multiple of ``block``. Returns the
    blocks ``(B, block²)`` and the padded shape, for :func:`blocks_to_image`.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ProblemError(f"`image` has shape {image.shape}; pass a 2-D grayscale image.")
    rows, cols = (-(-s // block) * block for s in image.shape)
    padded = np.zeros((rows, cols))
    padded[:image.shape[0], :image.shape[1]] = image
    blocks = padded.reshape(rows // block, block, cols // block, block).transpose(0, 2, 1, 3)
    return blocks.reshape(-1, block * block).copy(), (rows, cols)


def blocks_to_image(blocks: np.ndarray, padded_shape: tuple[int, int], shape: tuple[int, int],
                    block: int = BLOCK) -> np.ndarray:
    """Inverse of :func:`image_to_blocks`: reassemble and crop back to ``shape``."""
    rows, cols = padded_shape
    blocks = np.asarray(blocks, dtype=np.float64)
    expected = (rows // block) * (cols // block)
    if blocks.shape != (expected, block * block):
        raise ProblemError(f"`blocks` has shape {blocks.shape}, expected ({expected}, {block * block}) for a "
                           f"padded image of shape {padded_shape}.")
    image = blocks.reshape(rows // block, cols // block, block, block).transpose(0, 2, 1, 3).reshape(rows, cols)
    return image[:shape[0], :shape[1]].copy()
