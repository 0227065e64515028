"""The study runner: stable case ids, local vs Dask, resume after SIGKILL, failures, store errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from formulation.results import ProblemError
from validation.runner import (
    SCHEMA_VERSION,
    Case,
    Study,
    drop_study,
    read_results,
    run_study,
    trivial_study,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _failing_cases() -> list[Case]:
    return [Case({"kind": "trivial"}, "none", {"raise": "deliberate failure"}, 0),
            Case({"kind": "trivial"}, "none", {"hang": True}, 0)]


def test_case_id_is_canonical_and_stable():
    a = Case({"kind": "weights", "N": 10, "n": 3}, "OSQP", {"eps": 1e-9, "polish": True}, 4)
    b = Case({"n": 3, "N": 10, "kind": "weights"}, "OSQP", {"polish": True, "eps": 1e-9}, 4)
    assert a.case_id == b.case_id and len(a.case_id) == 64
    # a fixed value: the id must not change between releases or machines
    assert Case({"kind": "trivial"}, "none", {}, 0).case_id.startswith("eabcfb7c800a")
    assert Case({"kind": "weights", "N": 10, "n": 3}, "OSQP", {"eps": 1e-9, "polish": True}, 5).case_id != a.case_id
    with pytest.raises(ProblemError, match="not plain JSON"):
        _ = Case({"x": float("nan")}, "OSQP").case_id
    with pytest.raises(ProblemError, match="same case twice"):
        Study("dup", [a, b], run="validation.runner:trivial_case", figures={})


def test_failures_are_recorded_and_the_study_goes_on(tmp_path):
    store = str(tmp_path / "s.sqlite")
    study = trivial_study("fail", 6, extra=_failing_cases())
    start = time.monotonic()
    summary = run_study(study, store=store, workers=2, case_timeout=1.5, progress=False)
    assert time.monotonic() - start < 20  # the hung case was killed, not waited for
    assert (summary.ok, summary.error, summary.timeout) == (6, 1, 1)
    rows = read_results(store, "fail")
    assert [r["case_index"] for r in rows] == list(range(8))
    assert rows[6]["status"] == "error" and "deliberate failure" in rows[6]["message"]
    assert rows[7]["status"] == "timeout" and "time-out" in rows[7]["message"]
    assert all(r["status"] == "ok" and r["square"] == pytest.approx(r["value"] ** 2) for r in rows[:6])
    # re-running skips everything already stored
    again = run_study(study, store=store, workers=2, case_timeout=1.5, progress=False)
    assert again.skipped == 8 and again.ran == 0
    assert read_results(store, "fail", exclude_timing=True) == [
        {k: v for k, v in r.items() if k not in ("wall_s", "finished_at", "elapsed_s")} for r in rows]


def test_drop_study_runs_it_afresh_and_leaves_the_others(tmp_path):
    store = str(tmp_path / "s.sqlite")
    assert read_results(store, "one", missing_ok=True) == [] and drop_study(store, "one") == 0
    assert not os.path.exists(store)  # nothing to drop: no store created
    for name in ("one", "two"):
        run_study(trivial_study(name, 2), store=store, progress=False)
    assert read_results(store, "three", missing_ok=True) == []
    first = read_results(store, "one")
    assert drop_study(store, "one") == 2 and drop_study(store, "one") == 0
    assert read_results(store, "one", missing_ok=True) == [] and len(read_results(store, "two")) == 2
    with pytest.raises(ProblemError, match="no study 'one'"):
        read_results(store, "one")
    assert run_study(trivial_study("one", 2), store=store, progress=False).ran == 2
    assert read_results(store, "one", exclude_timing=True) == [
        {k: v for k, v in r.items() if k not in ("wall_s", "finished_at", "elapsed_s")} for r in first]
    with pytest.raises(ProblemError, match="letters, digits"):
        drop_study(store, 'one"; DROP TABLE two; --')


@pytest.mark.slow
def test_local_and_dask_give_identical_tables(tmp_path):
    distributed = pytest.importorskip("distributed")
    study = trivial_study("same", 12, extra=_failing_cases())
    local = str(tmp_path / "local.sqlite")
    remote = str(tmp_path / "dask.sqlite")
    run_study(study, store=local, workers=2, case_timeout=1.5, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        summary = run_study(study, store=remote, scheduler=cluster.scheduler_address, case_timeout=1.5,
                            progress=False)
    assert (summary.ok, summary.error, summary.timeout) == (12, 1, 1)
    strip = [{k: v for k, v in row.items() if k != "message"} for row in read_results(local, "same",
                                                                                     exclude_timing=True)]
    other = [{k: v for k, v in row.items() if k != "message"} for row in read_results(remote, "same",
                                                                                     exclude_timing=True)]
    assert strip == other
    # the messages agree on the failure itself (the time-out wording says killed vs abandoned)
    assert read_results(local, "same")[12]["message"] == read_results(remote, "same")[12]["message"]


KILLABLE = textwrap.dedent(
    """
    import sys
    from validation.runner import run_study, trivial_study
    if __name__ == "__main__":
        run_study(trivial_study("killed", 40, settings={"sleep": 0.2}), store=sys.argv[1], workers=2, progress=False)
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_full_table(tmp_path):
    store = str(tmp_path / "k.sqlite")
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    reference = str(tmp_path / "ref.sqlite")
    run_study(trivial_study("killed", 40, settings={"sleep": 0.2}), store=reference, workers=2, progress=False)

    process = subprocess.Popen([sys.executable, str(script), store], cwd=REPO)
    stored = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if os.path.exists(store):
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as connection:
                    stored = connection.execute('SELECT COUNT(*) FROM "killed"').fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0  # table not created yet
            if stored >= 5:
                break
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL
    partial = len(read_results(store, "killed"))
    assert 5 <= partial < 40, "the study was not interrupted mid-run"

    summary = run_study(trivial_study("killed", 40, settings={"sleep": 0.2}), store=store, workers=2,
                        progress=False)
    assert summary.skipped == partial and summary.ran == 40 - partial
    rows = read_results(store, "killed", exclude_timing=True)
    ids = [row["case_id"] for row in rows]
    assert len(ids) == len(set(ids)) == 40
    assert rows == read_results(reference, "killed", exclude_timing=True)


def _bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_older_schema_is_refused_and_left_untouched(tmp_path):
    store = str(tmp_path / "old.sqlite")
    run_study(trivial_study("old", 2), store=store, progress=False)
    with sqlite3.connect(store) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION - 1),))
    before = _bytes(store)
    with pytest.raises(ProblemError, match=r"old\.sqlite.*schema version 0.*mv .*--store"):
        run_study(trivial_study("old", 4), store=store, progress=False)
    with pytest.raises(ProblemError, match="schema version"):
        read_results(store, "old")
    assert _bytes(store) == before
    assert not os.path.exists(store + "-wal") or os.path.getsize(store + "-wal") == 0


def test_unknown_layout_is_refused(tmp_path):
    store = str(tmp_path / "other.sqlite")
    with sqlite3.connect(store) as connection:
        connection.execute("CREATE TABLE something (x)")
    before = _bytes(store)
    with pytest.raises(ProblemError, match="unknown schema"):
        run_study(trivial_study("other", 2), store=store, progress=False)
    assert _bytes(store) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_store_is_refused_and_left_untouched(tmp_path, damage):
    store = str(tmp_path / "bad.sqlite")
    if damage == "garbage":
        with open(store, "wb") as handle:
            handle.write(b"this is not a database\n" * 100)
    else:
        run_study(trivial_study("bad", 50), store=store, workers=2, progress=False)
        with sqlite3.connect(store) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        data = _bytes(store)
        # keep the header page, overwrite the rest with noise
        with open(store, "wb") as handle:
            handle.write(data[:100] + bytes(range(256)) * ((len(data) - 100) // 256 + 1))
    before = _bytes(store)
    with pytest.raises(ProblemError, match=r"bad\.sqlite.*(not an SQLite database|damaged).*left untouched"):
        run_study(trivial_study("bad", 2), store=store, progress=False)
    assert _bytes(store) == before


def test_bad_arguments_say_the_fix(tmp_path):
    with pytest.raises(ProblemError, match="case-timeout"):
        run_study(trivial_study("args", 1), store=str(tmp_path / "a.sqlite"), case_timeout=0)
    with pytest.raises(ProblemError, match="letters, digits"):
        trivial_study("bad name", 1)
    with pytest.raises(ProblemError, match="no study"):
        run_study(trivial_study("args", 1), store=str(tmp_path / "a.sqlite"), workers=1, progress=False)
        read_results(str(tmp_path / "a.sqlite"), "missing")
