"""``unrelu cs --first-steps`` (:mod:`validation.first_steps`): slopes along a step, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from formulation.network import ReluNetwork
from validation import datasets as ds
from validation import first_steps as fs


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X, Xv = rng.standard_normal((5, 300)), rng.standard_normal((5, 100))
    teacher = ReluNetwork.random((5, 7, 2), 1)
    T, Tv = teacher.forward(X), teacher.forward(Xv)
    return ReluNetwork.random((5, 8, 2), 2), {"train": (X, T), "val": (Xv, Tv)}


def test_slope_of_the_gradient_step_is_the_gradient_norm(problem):
    """Along d = −∇mse the relative slope of the loss is −||∇mse||² / mse at the start (first-order calculus,
    independent of the central difference and of the flattening order)."""
    start, data = problem
    X, T = data["train"]
    gradient = fs.gradient_direction(start, X, T)
    mse = float(np.mean((start.forward(X) - T) ** 2))
    row = fs.slopes(start, gradient, data)
    assert row["train_slope"] == pytest.approx(-float(gradient @ gradient) / mse, rel=1e-5)
    assert row["ratio"] == pytest.approx(row["val_slope"] / row["train_slope"])
    # the step itself: the loss at start + d, as a relative change
    moved = fs._network(fs._flat(start) + gradient, start)
    assert row["train_step"] == pytest.approx(float(np.mean((moved.forward(X) - T) ** 2)) / mse - 1, rel=1e-9)


def test_layer_parts_add_up_and_touch_one_layer_each(problem):
    start, _ = problem
    direction = np.arange(fs._flat(start).size, dtype=float) + 1
    parts = fs._layer_parts(start, direction)
    assert len(parts) == start.depth
    np.testing.assert_array_equal(sum(parts), direction)
    first = fs._network(parts[0], start)
    assert np.all(first.weights[1] == 0) and np.all(first.biases[1] == 0) and np.all(first.weights[0] != 0)


def test_zero_step_has_no_ratio(problem):
    start, data = problem
    row = fs.slopes(start, np.zeros_like(fs._flat(start)), data)
    assert row["train_slope"] == 0 and row["ratio"] is None
    assert "| – |" in fs.format_rows([dict(row, direction="rejected", seconds=None)])


def test_cs_first_steps_command(monkeypatch, tmp_path, capsys):
    """The digits cell (no MNIST folder): every row is there, the AL rows are the trainer's first iteration (the
    step shrinks about tenfold from rho^ = 10 to 100, as a step of the restarted mode does for large rho^) and
    nothing is stored."""
    from validation.cli import main

    monkeypatch.setattr(ds, "default_mnist_dir", lambda: str(tmp_path / "absent"))
    out_json = tmp_path / "steps.json"
    assert main(["cs", "--quick", "--no-progress", "--datasets", "mnist", "--first-steps", "--checkpoint-dir",
                 str(tmp_path / "ck"), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "[digits 100] first steps" in text and "| direction |" in text
    rows = json.loads(out_json.read_text())["first_steps"]["digits/100"]
    names = [row["direction"] for row in rows]
    assert names == ["AL, 1 iteration, rho^=100", "AL, 1 iteration, rho^=10", "AL, 1 iteration, rho^=1",
                     "  its layer 1 only", "  its layer 2 only", "-gradient, same first-order decrease",
                     "Adam, 1 epoch", "Adam, 3 epochs"]
    by = {row["direction"]: row for row in rows}
    for row in rows:
        assert np.isfinite(row["train_slope"]) and np.isfinite(row["val_slope"])
    assert by["AL, 1 iteration, rho^=10"]["train_slope"] < 0  # an accepted step lowers the training loss
    shrink = by["AL, 1 iteration, rho^=10"]["step_norm"] / by["AL, 1 iteration, rho^=100"]["step_norm"]
    assert 5 < shrink < 20
    # the layer parts are the cell's step: their first-order slopes add up to its slope
    parts = by["  its layer 1 only"]["train_slope"] + by["  its layer 2 only"]["train_slope"]
    assert parts == pytest.approx(by["AL, 1 iteration, rho^=10"]["train_slope"], rel=1e-3)
    # the gradient row has the AL step's first-order training decrease (the scale comes from the slope of the
    # unscaled gradient; both are central differences of a curved loss, equal up to O(h²))
    assert by["-gradient, same first-order decrease"]["train_slope"] == pytest.approx(
        by["AL, 1 iteration, rho^=10"]["train_slope"], rel=1e-3)
    assert not (tmp_path / "ck").exists()  # no study was opened: no checkpoint folder, no store


def test_cs_first_steps_refuses_study_options(tmp_path, capsys):
    from validation.cli import main

    for extra in (["--plot", str(tmp_path / "plots")], ["--fresh"]):
        assert main(["cs", "--quick", "--datasets", "mnist", "--first-steps", "--checkpoint-dir", str(tmp_path / "ck"),
                     *extra]) == 2
        assert "--first-steps prints its table" in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()
