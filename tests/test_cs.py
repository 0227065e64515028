"""The compressed-sensing application: loaders, blocks, metrics, sparse recovery, ``unrelu cs --quick``."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pytest

from formulation.results import ProblemError
from validation import datasets as ds
from validation.baselines.linear import SparseRecovery
from validation.cs import dct_basis, psnr, ssim

# the data folder: $UNRELU_DATA, else ../shared/data beside this checkout (datasets.data_root)
DATA = ds.data_root()
SHARED = DATA is not None
needs_shared = pytest.mark.skipif(not SHARED, reason="no data folder (set UNRELU_DATA)")


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path, payload: bytes, compress: bool):
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        with open(path, "wb") as handle:
            handle.write(payload)


# ============================================================================ IDX / MNIST
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = tmp_path / ("x.gz" if compress else "x")
    _write(path, _idx_bytes(array), compress)
    np.testing.assert_array_equal(ds.read_idx(path), array)


def test_read_idx_rejects_bad_magic_truncation_and_padding(tmp_path):
    array = np.zeros((4, 28, 28), dtype=np.uint8)
    good = _idx_bytes(array)
    cases = {"magic": b"\x08\x03" + good[2:], "truncated": good[:-10], "padded": good + b"\x00",
             "empty": b""}
    for name, payload in cases.items():
        path = tmp_path / name
        _write(path, payload, compress=False)
        with pytest.raises(ProblemError, match="download it again"):
            ds.read_idx(path)
    broken_gzip = tmp_path / "broken.gz"
    compressed = gzip.compress(good)
    broken_gzip.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ProblemError, match="corrupt or truncated"):
        ds.read_idx(broken_gzip)
    with pytest.raises(ProblemError, match="does not exist"):
        ds.read_idx(tmp_path / "missing.gz")


def test_load_mnist_from_user_dir_with_four_files(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=10, dtype=np.uint8)
    for stem, array in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels),
                        ("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        _write(tmp_path / stem, _idx_bytes(array), compress=False)
    data = ds.load_mnist(tmp_path, n_train=7, n_test=3)
    assert not data.fallback and data.name == "mnist"
    np.testing.assert_allclose(data.train, images[:7].reshape(7, -1) / 255.0)
    np.testing.assert_allclose(data.test, images[-3:].reshape(3, -1) / 255.0)
    np.testing.assert_array_equal(data.test_labels, labels[-3:])


def test_load_mnist_wrong_dir_and_corrupt_file(tmp_path):
    with pytest.raises(ProblemError, match="does not exist"):
        ds.load_mnist(tmp_path / "nope")
    with pytest.raises(ProblemError, match="no t10k-images"):
        ds.load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all, not idx either")
    with pytest.raises(ProblemError, match="bad magic"):
        ds.load_mnist(tmp_path)


def test_data_folder_comes_from_the_environment_with_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ds.DATA_ENV, str(tmp_path))
    assert ds.data_root() == str(tmp_path)
    assert ds.default_mnist_dir() == str(tmp_path / "mnist") and ds.default_set11_dir() == str(tmp_path / "set11")
    data = ds.load_mnist()  # the folder has no mnist/: the fallback says where it looked
    assert data.fallback and f"no MNIST folder at {tmp_path / 'mnist'}" in data.source
    with pytest.raises(ProblemError, match="Set11 folder .* does not exist"):
        ds.load_set11()
    monkeypatch.setenv(ds.DATA_ENV, str(tmp_path / "absent"))
    with pytest.raises(ProblemError, match="UNRELU_DATA=.*absent.* is not a folder"):
        ds.data_root()


def test_without_a_data_folder_loaders_say_how_to_name_one(monkeypatch):
    monkeypatch.delenv(ds.DATA_ENV, raising=False)
    monkeypatch.setattr(ds, "data_root", lambda: None)  # an installed copy: no checkout, no variable
    assert ds.default_mnist_dir() is None
    assert "no data folder: UNRELU_DATA is unset" in ds.load_mnist().source
    with pytest.raises(ProblemError, match="No data folder.*pass --mnist-dir or set UNRELU_DATA"):
        ds.load_mnist(allow_fallback=False)
    with pytest.raises(ProblemError, match="set UNRELU_DATA to the folder that holds set11/, pass --set11-dir"):
        ds.load_set11()
    A, source = ds.sampling_matrix(10, rng=np.random.default_rng(0))
    assert A.shape == (ds.PHI_ROWS[10], ds.BLOCK**2) and "Gaussian" in source


def test_load_mnist_falls_back_to_bundled_digits(monkeypatch, tmp_path):
    monkeypatch.setattr(ds, "default_mnist_dir", lambda: str(tmp_path / "absent"))
    data = ds.load_mnist()
    assert data.fallback and data.name == "digits" and data.image_shape == (8, 8)
    assert "FALLBACK" in data.source and "NOT MNIST" in data.source
    assert data.train.shape[1] == 64 and data.train.min() >= 0 and data.train.max() <= 1
    with pytest.raises(ProblemError):
        ds.load_mnist(allow_fallback=False)


@needs_shared
def test_load_mnist_shared_split():
    data = ds.load_mnist()
    assert not data.fallback
    assert data.train.shape == (8000, 784) and data.test.shape == (2000, 784)
    assert data.train.min() == 0.0 and data.train.max() == 1.0
    assert data.test_labels.shape == (2000,)


# ============================================================================ images
@needs_shared
def test_set11_and_phi_shared():
    images = ds.load_set11()
    assert len(images) == 11 and {"cameraman", "Monarch"} <= set(images)
    assert all(im.ndim == 2 and im.dtype == np.float64 and 0 <= im.min() and im.max() <= 1 for im in images.values())
    for ratio, m in ds.PHI_ROWS.items():
        A, source = ds.sampling_matrix(ratio)
        assert A.shape == (m, 1089) and source.endswith(f"phi_0_{ratio}_1089.mat")


def test_set11_wrong_dir_and_gaussian_fallback(tmp_path, monkeypatch):
    with pytest.raises(ProblemError, match="does not exist"):
        ds.load_set11(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ProblemError, match="no .tif"):
        ds.load_set11(tmp_path)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 truncated")
    with pytest.raises(ProblemError, match="broken.tif.*could not be read.*replace the file"):
        ds.load_set11(tmp_path)
    # an explicit --phi-dir without the matrix is an error naming the fix, never a silent fallback
    with pytest.raises(ProblemError, match="phi_0_10_1089.mat.*has no such file.*omit --phi-dir"):
        ds.sampling_matrix(10, phi_dir=tmp_path, rng=np.random.default_rng(0))
    with pytest.raises(ProblemError, match="does not exist"):
        ds.sampling_matrix(10, phi_dir=tmp_path / "nope", rng=np.random.default_rng(0))
    (tmp_path / "phi_0_10_1089.mat").write_bytes(b"garbage")
    with pytest.raises(ProblemError, match="could not be read"):
        ds.sampling_matrix(10, phi_dir=tmp_path, rng=np.random.default_rng(0))
    # without a data folder: a seeded Gaussian with orthonormal rows, said in its source
    monkeypatch.setattr(ds, "_data_dir", lambda name: None)
    A, source = ds.sampling_matrix(10, rng=np.random.default_rng(0))
    assert A.shape == (109, 1089) and "Gaussian" in source
    np.testing.assert_allclose(A @ A.T, np.eye(109), atol=1e-12)
    B, _ = ds.sampling_matrix(10, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(A, B)


def test_cs_refuses_a_missing_phi_file_before_any_cell(tmp_path, capsys):
    from validation.cli import main

    assert main(["cs", "--quick", "--datasets", "images", "--phi-dir", str(tmp_path), "--set11-dir",
                 str(tmp_path), "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    assert "no .tif" in capsys.readouterr().err  # the test images are checked first, then the matrices
    if SHARED:
        assert main(["cs", "--quick", "--datasets", "images", "--phi-dir", str(tmp_path),
                     "--checkpoint-dir", str(tmp_path / "ck")]) == 2
        assert "phi_0_25_1089.mat" in capsys.readouterr().err
        assert not (tmp_path / "ck" / "cs.sqlite").exists() or not _rows(tmp_path / "ck" / "cs.sqlite")


def test_training_photos_exclude_camera():
    assert "camera" not in ds.TRAINING_PHOTOS
    with pytest.raises(ProblemError, match="cameraman"):
        ds.training_photos(("camera",))


def test_training_patches_cover_the_grid_in_eight_orientations_split_by_position():
    photos = ds.training_photos(("coins",), sample_images=False)  # 303 x 384
    rows, cols = len(range(0, 303 - 33 + 1, 14)), len(range(0, 384 - 33 + 1, 14))
    patches = ds.training_patches(photos, np.random.default_rng(0))
    info = patches.info
    assert info["positions"] == rows * cols and info["orientations"] == 8
    held = int(round(0.1 * rows * cols))
    assert info["val_available"] == 8 * held and info["train_available"] == 8 * (rows * cols - held)
    assert patches.train.shape == (info["train_available"], 1089) and patches.val.shape == (8 * held, 1089)
    # the 8 orientations of a position are the dihedral images of its patch, and one side holds all of them
    train = {p.tobytes() for p in patches.train}
    for patch in patches.val[:16]:
        assert patch.tobytes() not in train
    block = patches.val[0].reshape(33, 33)
    turns = [np.rot90(block, k) for k in range(4)]
    group = {np.ascontiguousarray(t).tobytes() for turn in turns for t in (turn, turn[:, ::-1])}
    assert {p.tobytes() for p in patches.val[:8]} == group
    # subsampling without replacement, seeded
    small = ds.training_patches(photos, np.random.default_rng(0), train_count=100, val_count=10)
    assert small.train.shape == (100, 1089) and small.info["train_used"] == 100
    assert len({p.tobytes() for p in small.train}) == 100
    again = ds.training_patches(photos, np.random.default_rng(0), train_count=100, val_count=10)
    np.testing.assert_array_equal(small.train, again.train)


def test_full_image_setting_trains_on_at_least_50000_patches_of_non_set11_photos():
    from validation.cs import SETTINGS

    photos = ds.training_photos()
    assert {"sklearn-china", "sklearn-flower"} <= set(photos) and "camera" not in photos
    rows = sum(len(range(0, p.shape[0] - 32, 14)) * len(range(0, p.shape[1] - 32, 14)) for p in photos.values())
    assert 8 * (rows - round(0.1 * rows)) >= SETTINGS["full"]["image_blocks"] >= 50000
    assert SETTINGS["full"]["image_val_blocks"] >= 0.1 * SETTINGS["full"]["image_blocks"]


@pytest.mark.parametrize("shape", [(66, 99), (70, 100), (33, 33), (5, 40), (256, 256)])
def test_blocks_split_and_reassembly_exact(shape):
    image = np.random.default_rng(2).random(shape)
    blocks, padded = ds.image_to_blocks(image)
    assert padded[0] % 33 == 0 and padded[1] % 33 == 0
    assert blocks.shape == ((padded[0] // 33) * (padded[1] // 33), 1089)
    np.testing.assert_array_equal(ds.blocks_to_image(blocks, padded, shape), image)
    # block k is the k-th 33x33 tile in row-major order
    np.testing.assert_array_equal(blocks[0].reshape(33, 33)[: min(33, shape[0]), : min(33, shape[1])],
                                  image[:33, :33])


# ============================================================================ metrics
def test_psnr_constant_offset_is_hand_computed():
    reference = np.full((16, 16), 0.5)
    estimate = reference + 0.1  # MSE = 0.01, data range 1: PSNR = 10 log10(1 / 0.01) = 20 dB
    assert psnr(reference, estimate) == pytest.approx(20.0, abs=1e-12)
    assert psnr(reference, reference - 0.01) == pytest.approx(40.0, abs=1e-9)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    reference = rng.random((64, 64))
    estimate = np.clip(reference + 0.05 * rng.standard_normal((64, 64)), 0, 1)
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert ssim(reference, estimate) == pytest.approx(structural_similarity(reference, estimate, data_range=1.0))
    assert ssim(reference, estimate) < 1.0


# ============================================================================ sparse recovery
def test_dct_basis_is_orthonormal_and_matches_scipy():
    from scipy.fft import dctn

    basis = dct_basis(8)
    np.testing.assert_allclose(basis.T @ basis, np.eye(64), atol=1e-12)
    block = np.random.default_rng(4).random((8, 8))
    np.testing.assert_allclose(basis.T @ block.ravel(), dctn(block, norm="ortho").ravel(), atol=1e-12)


def _sparse_instance(seed=5, n=64, k=3, m=40):
    rng = np.random.default_rng(seed)
    signal = np.zeros(n)
    support = rng.choice(n, size=k, replace=False)
    signal[support] = rng.choice([-1.0, 1.0], size=k) * (1 + rng.random(k))
    A = rng.standard_normal((m, n)) / np.sqrt(m)
    return A, signal


def test_basis_pursuit_recovers_exactly_sparse_signal():
    # n = 64, k = 3, m = 40 Gaussian: far inside the l1 phase-transition region, recovery is exact
    A, signal = _sparse_instance()
    recovered = SparseRecovery(A, mode="bp", solver="CLARABEL").recover(A @ signal)
    np.testing.assert_allclose(recovered, signal, atol=1e-6)


def test_lasso_recovers_sparse_signal_in_a_basis():
    A, coefficients = _sparse_instance(seed=6)
    basis = dct_basis(8)
    signal = basis @ coefficients
    solver = SparseRecovery(A @ basis.T, basis, mode="lasso", solver="CLARABEL")  # M = A Ψᵀ Ψ = A
    kappa = 1e-4
    recovered = solver.recover(A @ basis.T @ signal, kappa=kappa)
    # the LASSO shrinks by at most about lambda per coordinate: error O(kappa * lambda_max)
    assert np.linalg.norm(recovered - signal) <= 1e-3 * np.linalg.norm(signal)
    assert solver.problem.is_dpp()


# ============================================================================ command
def _rows(store, study="cs_quick") -> dict:
    """Stored rows of the study by (dataset, ratio, method)."""
    from validation.runner import read_results

    rows = {}
    for row in read_results(str(store), study):
        problem = json.loads(row["problem"])
        rows[(problem["dataset"], problem["ratio"], row["backend"])] = row
    return rows


@pytest.mark.slow
@pytest.mark.skipif(not SHARED, reason="no data folder (set UNRELU_DATA; Set11 needed)")
def test_cs_quick_end_to_end_and_resume(tmp_path, capsys):
    from validation.cli import main

    checkpoint, out_json, plots = tmp_path / "ck", tmp_path / "cs.json", tmp_path / "plots"
    code = main(["cs", "--quick", "--no-progress", "--smooth", "--checkpoint-dir", str(checkpoint),
                 "--json", str(out_json), "--plot", str(plots)])
    assert code == 0
    text = capsys.readouterr().out
    assert "== mnist" in text and "== images" in text and "lasso" in text and "10 cells run, 0 already" in text
    content = json.loads(out_json.read_text())
    records = content["records"]
    methods = ("al", "al_init", "adam", "ridge", "lasso")
    assert {r["method"] for r in records.values()} == set(methods)
    assert len(records) == 2 * len(methods)
    for record in records.values():
        assert np.isfinite(record["psnr"]) and record["recovery_seconds_per_item"] > 0
        if record["dataset"] == "images":
            assert 0 < record["ssim"] <= 1 and np.isfinite(record["smooth"]["psnr"])
    assert {p.name for p in plots.iterdir()} >= {"cs_mnist_psnr.png", "cs_mnist_examples.png",
                                                 "cs_images_psnr.png", "cs_images_examples.png",
                                                 "cs_mnist_100_training.png"}
    # one row per cell in the runner's store; Adam was given the seconds of the stored AL loop
    rows = _rows(checkpoint / "cs.sqlite")
    assert len(rows) == 10 and {row["status"] for row in rows.values()} == {"ok"}
    for dataset, ratio in (("mnist", 100), ("images", 25)):
        al_seconds = json.loads(rows[(dataset, ratio, "al")]["details"])["al"]["train_seconds"]
        assert json.loads(rows[(dataset, ratio, "adam")]["settings"])["al_seconds"] == al_seconds
        assert records[f"{dataset}/{ratio}/adam"]["budget"] == al_seconds
    assert not list((checkpoint / "al").glob("*.npz"))  # AL checkpoints go once their cells are stored
    # a rerun skips every stored cell: nothing is retrained, the rows are untouched, the numbers unchanged
    start = time.perf_counter()
    again_json = tmp_path / "again.json"
    assert main(["cs", "--quick", "--no-progress", "--smooth", "--checkpoint-dir", str(checkpoint),
                 "--json", str(again_json)]) == 0
    assert time.perf_counter() - start < 30
    assert "0 cells run, 10 already stored" in capsys.readouterr().out
    assert _rows(checkpoint / "cs.sqlite") == rows
    assert json.loads(again_json.read_text()) == content
    # the AL start is the ridge decoder as a ReLU network (--init pairs): on MNIST the same recoveries as the ridge
    # cell; on images (--image-net pixel) stage 1 is that decoder and the start adds its linear filter, fitted on
    # the training pixels (tests/test_pixel_decoder.py), which lifts cameraman here (23.73 against 23.49 dB)
    start, ridge = records["mnist/100/al_init"], records["mnist/100/ridge"]
    assert start["psnr"] == pytest.approx(ridge["psnr"], abs=1e-6)
    start, ridge = records["images/25/al_init"], records["images/25/ridge"]
    assert start["image_net"] == "pixel" and start["psnr"] > ridge["psnr"]
    for dataset, ratio in (("mnist", 100), ("images", 25)):
        assert records[f"{dataset}/{ratio}/al"]["al"]["final_train_loss"] < records[f"{dataset}/{ratio}/al"]["al"][
            "init_train_loss"]
    # the bar of the quick setting: the AL-trained MLP beats linear ridge recovery on MNIST
    assert records["mnist/100/al"]["psnr"] > records["mnist/100/ridge"]["psnr"]


@pytest.fixture
def digits(monkeypatch, tmp_path):
    """No MNIST folder: ``cs`` falls back to the bundled 8x8 digits."""
    monkeypatch.setattr(ds, "default_mnist_dir", lambda: str(tmp_path / "absent"))


def test_cs_falls_back_to_digits_and_says_so(digits, tmp_path, capsys):
    from validation.cli import main

    out_json = tmp_path / "cs.json"
    code = main(["cs", "--quick", "--no-progress", "--datasets", "mnist", "--methods", "ridge,lasso",
                 "--checkpoint-dir", str(tmp_path / "ck"), "--json", str(out_json)])
    assert code == 0
    text = capsys.readouterr().out
    assert "FALLBACK" in text and "== digits" in text
    records = json.loads(out_json.read_text())["records"]
    assert set(records) == {"digits/100/ridge", "digits/100/lasso"}
    assert records["digits/100/ridge"]["m"] == 8  # m/n kept: 100/784 of n = 64
    assert records["digits/100/ridge"]["A"] == "seeded Gaussian, variance 1/m, m=8"
    assert set(_rows(tmp_path / "ck" / "cs.sqlite")) == {("digits", 100, "ridge"), ("digits", 100, "lasso")}
    # a rerun with other settings refuses the store instead of mixing numbers, and leaves it as it was
    before = (tmp_path / "ck" / "cs.sqlite").read_bytes()
    code = main(["cs", "--quick", "--no-progress", "--datasets", "mnist", "--methods", "ridge", "--seed", "1",
                 "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 2
    error = capsys.readouterr().err
    assert "other settings" in error and "seed: 0 -> 1" in error and "--fresh" in error
    assert (tmp_path / "ck" / "cs.sqlite").read_bytes() == before


def test_cs_resumes_between_cells_and_fresh_starts_again(digits, tmp_path, capsys):
    """A run stopped after some cells (here: one that asked only for them) is completed by the next one
    without recomputing them; --fresh drops the stored cells of the setting."""
    from validation.cli import main

    arguments = ["cs", "--quick", "--no-progress", "--datasets", "mnist", "--checkpoint-dir", str(tmp_path / "ck")]
    store = tmp_path / "ck" / "cs.sqlite"
    assert main([*arguments, "--methods", "ridge"]) == 0
    assert "1 cells run, 0 already stored" in capsys.readouterr().out
    ridge = _rows(store)[("digits", 100, "ridge")]
    assert main([*arguments, "--methods", "ridge,lasso"]) == 0
    assert "1 cells run, 1 already stored" in capsys.readouterr().out
    rows = _rows(store)
    assert set(rows) == {("digits", 100, "ridge"), ("digits", 100, "lasso")}
    assert rows[("digits", 100, "ridge")] == ridge  # the same row, finished_at included: not recomputed
    # other --mnist-ms only choose cells: they are added to the same study
    assert main([*arguments, "--methods", "ridge", "--mnist-ms", "50,100"]) == 0
    assert "1 cells run, 1 already stored" in capsys.readouterr().out
    assert len(_rows(store)) == 3
    # --fresh drops the AL checkpoints of this command's datasets only (another store may be training others)
    ours, other = tmp_path / "ck" / "al" / "quick_digits_100.npz", tmp_path / "ck" / "al" / "quick_images_25.npz"
    ours.parent.mkdir(exist_ok=True)
    ours.write_bytes(b"x")
    other.write_bytes(b"x")
    assert main([*arguments, "--methods", "ridge", "--fresh"]) == 0
    assert "dropped 3 stored cs_quick cells" in capsys.readouterr().out
    assert not ours.exists() and other.exists()
    rows = _rows(store)
    assert set(rows) == {("digits", 100, "ridge")} and rows[("digits", 100, "ridge")]["finished_at"] > \
        ridge["finished_at"]
    assert rows[("digits", 100, "ridge")]["psnr"] == ridge["psnr"]


def test_cs_rejects_unknown_dataset_and_method(tmp_path, capsys):
    from validation.cli import main

    assert main(["cs", "--quick", "--datasets", "audio", "--checkpoint-dir", str(tmp_path)]) == 2
    assert "Unknown dataset 'audio'" in capsys.readouterr().err
    assert main(["cs", "--quick", "--methods", "adam", "--checkpoint-dir", str(tmp_path)]) == 2
    assert "include `al`" in capsys.readouterr().err


def test_json_output_is_strict_json(tmp_path):
    """--json writes NaN and inf as null (strict JSON that any reader accepts), numpy values as numbers."""
    from validation.cs import write_json

    records = {"mnist/100/al": {"psnr": np.float64(21.5), "ssim": float("nan"), "loss": float("inf"),
                                "curve": np.array([1.0, np.nan])}}
    path = tmp_path / "out.json"
    write_json(str(path), {"setting": "quick", "ratios": (1, 4)}, records)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    content = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert content["records"]["mnist/100/al"] == {"psnr": 21.5, "ssim": None, "loss": None, "curve": [1.0, None]}
    assert content["config"]["ratios"] == [1, 4]


def test_cs_and_bench_train_share_one_mnist_task(digits, monkeypatch, tmp_path):
    """One MNIST-CS task: ``cs`` builds its matrix with the function ``bench train``'s data come from."""
    from validation import cs, train_data
    from validation.cli import build_parser

    data = train_data.mnist_cs(m=100, n_train=50, n_val=20, seed=3)
    A = train_data.mnist_cs_matrix(data["A"].shape[0], data["A"].shape[1], 3)
    np.testing.assert_array_equal(data["A"], A)
    np.testing.assert_array_equal(data["X"], A @ data["Y"])
    with pytest.raises(ProblemError, match="1 <= m <= n"):
        train_data.mnist_cs_matrix(785, 784)
    seen = []
    monkeypatch.setattr(cs, "mnist_cs_matrix", lambda m, n, seed: seen.append((m, n, seed)) or A[:m, :n])
    # the cell as the command builds it, run in this process (the command runs it in a worker process)
    args = build_parser().parse_args(["cs", "--quick", "--datasets", "mnist", "--methods", "ridge", "--seed", "3"])
    config, cells, methods = cs.plan(args, out=lambda line: None)
    assert cells == [("digits", 100)] and methods == ["ridge"]
    figures = cs.cs_case(cs.cell_case(config, *cells[0], "ridge", str(tmp_path)))
    assert seen == [(8, 64, 3)]
    assert figures["m"] == 8 and np.isfinite(figures["psnr"])
    assert (tmp_path / "examples" / "quick_digits_100_ridge.npz").exists()


# ============================================================================ the CSGM protocol
def test_csgm_matrix_is_unnormalised_gaussian_and_seeded():
    from validation.train_data import csgm_matrix

    A = csgm_matrix(200, 784, seed=0)
    assert A.shape == (200, 784) and abs(A.std() - 1.0) < 0.01 and abs(A.mean()) < 0.01
    np.testing.assert_array_equal(A, csgm_matrix(200, 784, seed=0))
    assert not np.array_equal(A[:100], csgm_matrix(100, 784, seed=0))
    with pytest.raises(ProblemError, match="1 <= m <= n"):
        csgm_matrix(785, 784)


@needs_shared
def test_cs_csgm_quick_follows_the_protocol(tmp_path, capsys):
    """--protocol csgm: test set = the first 300 t10k digits, A i.i.d. N(0,1), noise std 0.1, per-pixel MSE; the
    LASSO row is recomputed here with scikit-learn's Lasso(alpha=0.1) as CSGM's scripts call it."""
    from sklearn.linear_model import Lasso

    from validation.cli import main
    from validation.train_data import csgm_matrix

    out_json = tmp_path / "cs.json"
    assert main(["cs", "--protocol", "csgm", "--quick", "--no-progress", "--checkpoint-dir", str(tmp_path / "ck"),
                 "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "first 300 test" in text and "per-pixel MSE" in text
    records = json.loads(out_json.read_text())["records"]
    assert set(records) == {f"mnist-csgm/100/{m}" for m in ("al", "al_init", "adam", "ridge", "lasso", "lasso_dct")}
    for record in records.values():
        assert record["psnr"] == pytest.approx(10 * np.log10(1 / record["mse"]), rel=1e-12)
    # the AL start is the ridge decoder (init pairs), so its row is ridge's; the AL iterations improve on it
    assert records["mnist-csgm/100/al_init"]["mse"] == pytest.approx(records["mnist-csgm/100/ridge"]["mse"], rel=1e-9)
    assert records["mnist-csgm/100/al"]["mse"] < records["mnist-csgm/100/al_init"]["mse"]
    images = ds.load_mnist(n_train=1, n_test=10, test_first=True).test
    A = csgm_matrix(100, 784, seed=0)
    Y = images @ A.T + 0.1 * np.random.default_rng(1).standard_normal((10, 100))
    R = np.clip([Lasso(alpha=0.1).fit(A, y).coef_ for y in Y], 0, 1)
    lasso = records["mnist-csgm/100/lasso"]
    assert lasso["items"] == 10 and lasso["mse"] == pytest.approx(np.mean((R - images) ** 2), rel=1e-6)
    assert lasso["solver"] == "sklearn.linear_model.Lasso" and lasso["alpha"] == 0.1
    # its own study in the store, beside the normalised protocol's
    assert len(_rows(tmp_path / "ck" / "cs.sqlite", "cs_quick_csgm")) == 6


def test_cs_protocol_errors_name_the_fix(tmp_path, capsys, monkeypatch):
    from validation.cli import main

    ck = str(tmp_path / "ck")
    assert main(["cs", "--quick", "--protocol", "csgm", "--datasets", "mnist,images", "--checkpoint-dir", ck]) == 2
    assert "protocol for MNIST" in capsys.readouterr().err
    assert main(["cs", "--quick", "--methods", "ridge,lasso_dct", "--checkpoint-dir", ck]) == 2
    assert "belongs to --protocol csgm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cs", "--quick", "--hidden", "1,2,3,4", "--checkpoint-dir", ck])
    assert "1 to 3 hidden layers" in capsys.readouterr().err
    monkeypatch.setattr(ds, "default_mnist_dir", lambda: str(tmp_path / "absent"))
    assert main(["cs", "--quick", "--protocol", "csgm", "--checkpoint-dir", ck]) == 2
    assert "--protocol csgm needs the MNIST files" in capsys.readouterr().err
