"""``unrelu verify --scaling``: one study on the runner, resumable, configurations stop at their first failure;
bad input is refused before anything is written to a store."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

import solvers
from formulation.network import ReluNetwork
from formulation.results import ProblemError
from validation import verify
from validation.cli import main

pytestmark = pytest.mark.skipif(not {"HIGHS", "SCIP"} <= set(solvers.available_backends()),
                                reason="the scaling study needs HiGHS and SCIP (pip install highspy pyscipopt)")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _rows(store):
    with sqlite3.connect(store) as connection:
        return connection.execute(
            'SELECT case_id, finished_at, closed, binaries FROM "verify_scaling_quick"').fetchall()


def test_scaling_quick_is_stored_resumable_and_judged(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(verify, "SCALING_QUICK", {2: (8,)})
    monkeypatch.setattr(verify, "_scaling_configs", lambda: [("interval", "HIGHS"), ("lp", "SCIP relaxed"),
                                                             ("obbt", "SCIP")])
    store, out = tmp_path / "scaling.sqlite", tmp_path / "scaling.json"
    arguments = ["verify", "--scaling", "--quick", "--time-limit", "20", "--obbt-time", "0.2",
                 "--store", str(store), "--json", str(out), "--plot", str(tmp_path / "plots")]
    assert main(arguments) == 0
    text = capsys.readouterr().out
    assert "8-4-4-1" in text and "largest size closed (proved optimal) within 20 s" in text
    assert "(i) against (ii): proved equal 2" in text
    first = _rows(store)
    assert len(first) == 3 and all(closed == 1 for _, _, closed, _ in first)
    document = json.loads(out.read_text())
    assert document["largest_closed"]["HIGHS (interval)"] == {"2": 8}
    obbt = next(row for row in document["rows"] if row["stage"] == "obbt")
    assert [stage["stage"] for stage in obbt["result"]["stages"]] == ["interval", "lp", "obbt"]
    assert (tmp_path / "plots" / "scaling_time_vs_binaries.png").exists()
    assert main(arguments) == 0  # resumed: every case is read back, none is solved again
    assert _rows(store) == first


def test_a_configuration_stops_after_its_first_size_not_closed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(verify, "SCALING_QUICK", {2: (8, 16)})
    monkeypatch.setattr(verify, "_scaling_configs", lambda: [("interval", "HIGHS"), ("interval", "SCIP relaxed")])
    store = tmp_path / "stop.sqlite"
    # a 1 ms limit: the relaxed global solve cannot be proved, so its 16-unit case is never run
    assert main(["verify", "--scaling", "--quick", "--time-limit", "0.001", "--store", str(store)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(json.dumps(verify.read_scaling(str(store), quick=True)))
    relaxed = [row for row in rows if row["solver"] == "SCIP relaxed"]
    assert [row["units"] for row in relaxed] == [8] and relaxed[0]["closed"] == 0
    assert "SCIP relaxed (interval): depth 2: 0" in text


@pytest.mark.parametrize("flags, message", [
    (["--bounds", "obbt", "--tighten"], "--tighten is an alias of --bounds lp"),
    (["--quick"], "--quick is an option of --scaling"),
])
def test_bad_options_leave_no_store(tmp_path, capsys, flags, message):
    store = tmp_path / "never.sqlite"
    assert main(["verify", "--scaling", *flags, "--store", str(store)] if "--quick" not in flags else
                ["verify", *flags, "--store", str(store)]) == 2
    assert message in capsys.readouterr().err
    assert not store.exists()


def test_configs_chooses_configurations_and_names_the_choices(tmp_path, monkeypatch, capsys):
    configs = [("interval", "HIGHS"), ("lp", "HIGHS"), ("lp", verify.BAB), verify.OMLT_CONFIG]
    assert verify.select_configs(configs, "") == configs
    assert verify.select_configs(configs, "lp:bab, omlt") == [("lp", verify.BAB), verify.OMLT_CONFIG]
    assert verify.select_configs(configs, "HIGHS") == [("interval", "HIGHS"), ("lp", "HIGHS")]
    with pytest.raises(ProblemError, match=r"\['obbt:scip'\].*interval:highs.*lp:bab"):
        verify.select_configs(configs, "lp:BAB,obbt:SCIP")
    # on the command line: only the chosen configuration runs; a wrong name or a missing --scaling leaves no store
    monkeypatch.setattr(verify, "SCALING_QUICK", {2: (8,)})
    monkeypatch.setattr(verify, "_scaling_configs", lambda: [("interval", "HIGHS"), ("interval", "SCIP relaxed")])
    store = tmp_path / "chosen.sqlite"
    assert main(["verify", "--scaling", "--quick", "--configs", "interval:HIGHS", "--store", str(store)]) == 0
    assert [row["solver"] for row in verify.read_scaling(str(store), quick=True)] == ["HIGHS"]
    never = tmp_path / "never.sqlite"
    assert main(["verify", "--scaling", "--quick", "--configs", "nope", "--store", str(never)]) == 2
    assert "--configs names ['nope']" in capsys.readouterr().err and not never.exists()
    assert main(["verify", "--configs", "lp:BAB", "--store", str(never)]) == 2
    assert "--configs is an option of --scaling" in capsys.readouterr().err and not never.exists()


@pytest.mark.parametrize("budget", ["0", "-0.5"])
def test_obbt_budget_not_positive_is_refused_at_parse_time(tmp_path, capsys, budget):
    store = tmp_path / "never.sqlite"
    with pytest.raises(SystemExit) as stop:
        main(["verify", "--scaling", "--bounds", "obbt", "--obbt-time", budget, "--store", str(store)])
    assert stop.value.code == 2 and "--obbt-time" in capsys.readouterr().err
    assert not store.exists()


@pytest.mark.parametrize("name, arrays, message", [
    ("shapes", {"W1": np.ones((4, 3)), "b1": np.zeros(4), "W2": np.ones((1, 5)), "b2": np.zeros(1)},
     "W2 must have 4 columns"),
    ("nan", {"W1": np.full((4, 3), np.nan), "b1": np.zeros(4), "W2": np.ones((1, 4)), "b2": np.zeros(1)},
     "NaN or inf"),
])
def test_bad_networks_are_refused_and_nothing_is_written(tmp_path, capsys, name, arrays, message):
    np.savez(tmp_path / f"{name}.npz", **arrays)
    out, store = tmp_path / "out.json", tmp_path / "never.sqlite"
    assert main(["verify", "--network", str(tmp_path / f"{name}.npz"), "--problem", "bound", "--bounds", "obbt",
                 "--json", str(out), "--store", str(store)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not store.exists()


def test_empty_box_is_refused():
    network = ReluNetwork.random([3, 4, 1], seed=0)
    with pytest.raises(verify.ProblemError, match="Input box is empty"):
        verify.staged_bounds(network, np.ones(3), -np.ones(3), "obbt")


def test_mnist_logit_gap_skips_with_a_reason_without_the_data(monkeypatch, capsys):
    import validation.datasets

    monkeypatch.setattr(validation.datasets, "default_mnist_dir", lambda: None)
    assert main(["verify", "--mnist"]) == 0
    assert "MNIST logit gap skipped: no MNIST folder" in capsys.readouterr().out
