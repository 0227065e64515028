"""``unrelu verify`` end to end, and its error paths for user files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import solvers
from formulation.network import ReluNetwork
from validation import verify
from validation.cli import main

pytestmark = pytest.mark.skipif("SCIP" not in solvers.available_backends(),
                                reason="unrelu verify needs SCIP for the relaxed model (pip install pyscipopt)")


@pytest.fixture(autouse=True)
def _fresh_results_folder(tmp_path, monkeypatch):
    # the default store is ./results/verify.sqlite: each test starts without one
    monkeypatch.chdir(tmp_path)


def test_default_specs_cover_all_kinds_and_sizes():
    specs = verify.default_specs(30, 0)
    assert {s["kind"] for s in specs} == set(verify.KINDS)
    for spec in specs:
        if spec["kind"] == "training":
            assert 2 <= spec["n0"] <= 6
            continue
        widths = spec["widths"]
        assert 2 <= widths[0] <= 6 and 1 <= len(widths) - 2 <= 3
        assert all(2 <= w <= 12 for w in widths[1:-1]) and sum(widths[1:-1]) <= 14
    assert verify.default_specs(5, 1) == verify.default_specs(5, 1)


def test_verify_end_to_end(tmp_path, capsys):
    out = tmp_path / "verify.json"
    code = main(["verify", "--instances", "3", "--starts", "1", "--seed", "1", "--json", str(out),
                 "--plot", str(tmp_path / "plots")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "3 instances: relaxation preserved the optimum on 3/3" in text
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 3 and {row["kind"] for row in data["rows"]} == set(verify.KINDS)
    for row in data["rows"]:
        assert row["preserved"] and row["relaxed"]["rounding_ok"]
        assert row["al_best_gap"] >= -1e-7
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "local_gaps.png", "mi_vs_relaxed.png", "solve_times.png"]


def test_verify_without_highs_skips_only_highs(monkeypatch, capsys):
    monkeypatch.delitem(solvers._REGISTRY, "HIGHS", raising=False)
    monkeypatch.setitem(solvers._MISSING, "HIGHS", "highspy is not installed (pip install highspy)")
    code = main(["verify", "--instances", "2", "--starts", "0"])
    text = capsys.readouterr().out
    assert code == 0
    header = text.splitlines()[0]
    assert "HIGHS" not in header and "SCIP" in header
    # asking for it explicitly names the install command
    assert main(["verify", "--instances", "1", "--backends", "HIGHS"]) == 2
    assert "pip install highspy" in capsys.readouterr().err


def test_verify_without_scip_says_what_to_install(monkeypatch, capsys):
    monkeypatch.delitem(solvers._REGISTRY, "SCIP")
    monkeypatch.setitem(solvers._MISSING, "SCIP", "pyscipopt is not installed (pip install pyscipopt)")
    assert main(["verify", "--instances", "1"]) == 2
    assert "pip install pyscipopt" in capsys.readouterr().err


@pytest.fixture
def user_files(tmp_path):
    network = ReluNetwork.random([2, 4, 3], seed=0)
    network.save(tmp_path / "net.npz")
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 3))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "y.npy", A @ network.forward(np.array([[0.3], [-0.2]]))[:, 0] + 0.05)
    return tmp_path


@pytest.mark.parametrize("problem", ["recovery", "bound"])
def test_verify_user_network(user_files, capsys, problem):
    args = ["verify", "--network", str(user_files / "net.npz"), "--problem", problem, "--starts", "1",
            "--A", str(user_files / "A.npy"), "--y", str(user_files / "y.npy"), "--box", "1"]
    assert main(args) == 0
    assert "1 instances: relaxation preserved the optimum on 1/1" in capsys.readouterr().out


def test_verify_user_training_needs_a_two_layer_scalar_network(user_files, capsys):
    assert main(["verify", "--network", str(user_files / "net.npz"), "--problem", "training"]) == 2
    assert "two-layer scalar-output" in capsys.readouterr().err


def _run_error(args, capsys) -> str:
    assert main(["verify", *args]) == 2
    return capsys.readouterr().err


def test_bad_files(user_files, capsys):
    d = user_files
    net = ["--network", str(d / "net.npz"), "--problem", "recovery"]
    err = _run_error(["--network", str(d / "missing.npz")], capsys)
    assert "does not exist" in err
    err = _run_error(net + ["--y", str(d / "y.npy")], capsys)
    assert "needs --A A.npy" in err
    err = _run_error(net + ["--A", str(d / "nope.npy"), "--y", str(d / "y.npy")], capsys)
    assert "A file" in err and "does not exist" in err
    (d / "corrupt.npy").write_bytes(b"not an array at all")
    err = _run_error(net + ["--A", str(d / "corrupt.npy"), "--y", str(d / "y.npy")], capsys)
    assert "not a readable .npy" in err
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    err = _run_error(net + ["--A", str(d / "objects.npy"), "--y", str(d / "y.npy")], capsys)
    assert "not a readable .npy" in err  # never unpickled
    np.save(d / "A_wrong.npy", np.ones((4, 5)))
    err = _run_error(net + ["--A", str(d / "A_wrong.npy"), "--y", str(d / "y.npy")], capsys)
    assert "needs 3 columns" in err
    np.save(d / "y_wrong.npy", np.ones(7))
    err = _run_error(net + ["--A", str(d / "A.npy"), "--y", str(d / "y_wrong.npy")], capsys)
    assert "y needs 4 entries" in err
    np.save(d / "y_nan.npy", np.array([1.0, np.nan, 0.0, 0.0]))
    err = _run_error(net + ["--A", str(d / "A.npy"), "--y", str(d / "y_nan.npy")], capsys)
    assert "NaN" in err
    np.save(d / "A_text.npy", np.array([["a", "b", "c"]]))
    err = _run_error(net + ["--A", str(d / "A_text.npy"), "--y", str(d / "y.npy")], capsys)
    assert "real numeric" in err
    (d / "bad.npz").write_bytes(b"garbage")
    err = _run_error(["--network", str(d / "bad.npz")], capsys)
    assert "not a readable .npz" in err


def test_verify_user_training_teacher(tmp_path, capsys):
    teacher = ReluNetwork.random([2, 2, 1], seed=4)
    teacher.save(tmp_path / "teacher.npz")
    args = ["verify", "--network", str(tmp_path / "teacher.npz"), "--problem", "training", "--samples", "4",
            "--starts", "1", "--no-adam"]
    assert main(args) == 0
    assert "1 instances: relaxation preserved the optimum on 1/1" in capsys.readouterr().out


def test_verify_runs_as_a_resumable_study(tmp_path, capsys):
    store = tmp_path / "verify.sqlite"
    arguments = ["verify", "--instances", "2", "--starts", "0", "--no-adam", "--store", str(store)]
    assert main(arguments) == 0
    first = capsys.readouterr().out
    assert store.exists() and "already in" not in first
    assert main(arguments) == 0  # every instance is read back from the store, none is solved again
    second = capsys.readouterr().out
    assert f"2 of 2 instances were already in {store}" in second
    summary = [line for line in first.splitlines() if line.startswith("2 instances:")]
    assert summary and summary[0] in second.splitlines()
