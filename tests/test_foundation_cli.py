"""The ``unrelu`` command line: help, the subproblem benchmark, errors with exit code 2, output file modes."""

from __future__ import annotations

import csv
import os
import stat

import pytest

from validation import options
from validation.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_bench_subproblems_writes_table_and_csv(tmp_path, capsys):
    path = tmp_path / "bench.csv"
    code = main(["bench", "subproblems", "--quick", "--subproblems", "slacks,output_softmax",
                 "--backends", "closed_form,OSQP,CLARABEL", "--repeats", "2", "--csv", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "re-solve s" in out and "x closed" in out
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 3  # kinds x sizes x backends
    solved = [r for r in rows if r["status"] == "optimal"]
    assert {r["backend"] for r in solved} == {"closed_form", "OSQP", "CLARABEL"}
    for row in solved:
        assert float(row["max_abs_err"]) < 1e-3
        assert float(row["resolve_median_s"]) > 0
    refused = [r for r in rows if r["status"] == "skipped"]
    assert {(r["backend"], r["subproblem"]) for r in refused} == {("closed_form", "output_softmax"),
                                                                  ("OSQP", "output_softmax")}


def test_bench_unknown_backend_is_a_clear_error(tmp_path, capsys):
    code = main(["bench", "subproblems", "--quick", "--backends", "NOPE", "--csv", str(tmp_path / "b.csv")])
    assert code == 2
    assert "Unknown backend 'NOPE'" in capsys.readouterr().err


def test_bench_table_shows_cases_without_figures():
    from validation.bench import format_table

    rows = [{"backend": "OSQP", "subproblem": "slacks", "N": 10000, "n": 256, "status": "timeout",
             "build_s": None, "resolve_median_s": None, "note": "stopped after 180 s"},
            {"backend": "closed_form", "subproblem": "slacks", "N": 10, "n": 2, "status": "optimal", "build_s": 1e-3,
             "resolve_median_s": 1e-4, "resolve_over_build": 0.1, "over_closed_form": 1.0, "max_abs_err": 0.0}]
    table = format_table(rows)
    assert "timeout" in table and "stopped after 180 s" in table and "0.0001" in table


def test_bench_train_digits_rows_and_csv(tmp_path, capsys):
    pytest.importorskip("torch", reason="the Adam baseline needs the [torch] extra")
    path = tmp_path / "bench_train.csv"
    code = main(["bench", "train", "--quick", "--problems", "digits", "--budget", "1", "--csv", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "AL sweep s" in out and "torch fwd+bwd s" in out
    with open(path) as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert {"AL (restarted)", "Adam", "init (He + ridge output)"} <= set(rows)
    for method in ("AL (restarted)", "Adam"):
        assert 0.5 < float(rows[method]["val_acc"]) <= 1.0  # chance is 0.1; the start is already ~0.95
        assert float(rows[method]["mu"]) == 10.0  # the digits' cross-validated weight decay, for both methods
    assert "weight decay mu = 10 for both methods" in out
    with pytest.raises(SystemExit):  # one way of choosing mu at a time
        main(["bench", "train", "--mu", "1", "--select-mu"])
    assert "not allowed with argument" in capsys.readouterr().err
    peers = [m for m in rows if m.startswith("pyscnn")]
    assert peers, "the pyscnn peer must appear, as results or as an install hint"
    if peers == ["pyscnn"]:  # not installed: the row says how to install it
        assert "make scnn" in rows["pyscnn"]["note"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path, umask):
    """An output written atomically (temporary file renamed over the target) ends with the permissions of a
    plain ``open(path, "w")``: 0o666 less the umask when new (not mkstemp's 0o600), the replaced file's when
    it existed."""
    def mode(name):
        return stat.S_IMODE(os.stat(tmp_path / name).st_mode)

    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.csv", "w") as handle:
            handle.write("a,b\n")
        with options.atomic_open(tmp_path / "atomic.csv", "w", newline="") as handle:
            handle.write("a,b\n")
        with options.atomic_open(tmp_path / "atomic.png", "wb") as handle:
            handle.write(b"\x89PNG")
        assert mode("atomic.csv") == mode("atomic.png") == mode("plain.csv") == 0o666 & ~umask
        for name in ("plain.csv", "atomic.csv"):  # an existing file keeps its mode when written over
            os.chmod(tmp_path / name, 0o640)
        with open(tmp_path / "plain.csv", "w") as handle:
            handle.write("c,d\n")
        with options.atomic_open(tmp_path / "atomic.csv", "w") as handle:
            handle.write("c,d\n")
        assert mode("atomic.csv") == mode("plain.csv") == 0o640
    finally:
        os.umask(previous)
    assert (tmp_path / "atomic.csv").read_text() == "c,d\n"
    assert sorted(os.listdir(tmp_path)) == ["atomic.csv", "atomic.png", "plain.csv"]  # no temporary left
