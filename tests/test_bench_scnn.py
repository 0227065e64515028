"""Tests of the optional pyscnn peer comparison (validation/baselines/scnn.py)."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest

from validation.baselines import scnn as bench_scnn
from validation.baselines.scnn import _within_seconds, run_scnn
from validation.train_data import digits_classification


def _subset(data: dict, n_train: int, n_val: int) -> dict:
    return {"X": data["X"][:, :n_train], "Y": data["Y"][:, :n_train], "labels": data["labels"][:n_train],
            "X_val": data["X_val"][:, :n_val], "Y_val": data["Y_val"][:, :n_val],
            "labels_val": data["labels_val"][:n_val], "name": data["name"]}


def test_missing_pyscnn_gives_install_hint(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("scnn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scnn", None)  # makes `import scnn` raise ImportError
    rows = run_scnn(_subset(digits_classification(), 50, 20))
    assert len(rows) == 1
    row = rows[0]
    assert row["problem"] == "digits" and row["method"] == "pyscnn"
    assert "make scnn" in row["note"]
    assert all(math.isnan(row[k]) for k in ("seconds", "train_acc", "val_acc"))


def test_unknown_solver_rejected():
    with pytest.raises(ValueError, match="unknown pyscnn solver"):
        run_scnn(_subset(digits_classification(), 50, 20), solvers=("sgd",))


def test_within_seconds_doubles_while_the_next_run_fits(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(bench_scnn, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    calls = []

    def solve(iters):  # 0.01 s per iteration on the fake clock
        calls.append(iters)
        clock["now"] += 0.01 * iters
        return f"net{iters}", 0.01 * iters

    # runs of 1, 2, 4 s fit in 10 s; the next (8 s) would end at 15 s
    assert _within_seconds(10.0, 10_000, solve) == ("net400", 4.0, 400)
    assert calls == [100, 200, 400]
    calls.clear()
    clock["now"] = 0.0
    assert _within_seconds(100.0, 300, solve)[2] == 300  # the cap wins
    assert calls == [100, 200, 300]


def test_gated_rfista_learns_digits_subset():
    pytest.importorskip("scnn")
    data = _subset(digits_classification(), 600, 300)
    rows = run_scnn(data, hidden=50, seed=0, solvers=("rfista",), fista_iters=2000)
    assert len(rows) == 1
    row = rows[0]
    assert row["method"] == "pyscnn R-FISTA (gated ReLU)"
    assert row["train_acc"] > 0.9, row
    assert row["val_acc"] > 0.8, row  # chance is 0.1
    assert row["seconds"] > 0.0, row  # timings belong to the benchmark, not to tests
    assert "50 sampled gates" in row["note"] and "lam=" in row["note"]
