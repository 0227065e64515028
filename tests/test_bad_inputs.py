"""Bad inputs of issue 13, one table row each: the exact error class, a fragment of its message, and no
output file left behind (neither the output nor a half-written temporary).

Option types fail in ``argparse`` (``SystemExit`` with code 2, message on stderr); everything checked after
parsing raises ``ProblemError`` (or ``SolverNotFound``) before any work starts.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import solvers
from formulation._checks import check_checkpoint
from formulation.network import ReluNetwork
from formulation.results import MemoryLimitError, ProblemError, SolverNotFound
from validation.cli import build_parser, main

HAS_MI = {"SCIP", "HIGHS"} <= set(solvers.available_backends())
pytestmark = pytest.mark.filterwarnings("ignore::formulation.results.ConvergenceWarning")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder with the input files the table refers to (the default store lands here too)."""
    monkeypatch.chdir(tmp_path)
    ReluNetwork.random([3, 6, 4, 2], seed=1).save(tmp_path / "net.npz")
    ReluNetwork.random([2, 2, 1], seed=4).save(tmp_path / "teacher.npz")
    np.save(tmp_path / "A0.npy", np.zeros((0, 1)))
    np.save(tmp_path / "y0.npy", np.zeros(0))
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    np.savez(tmp_path / "data.npz", X=X, Y=Y)
    np.savez(tmp_path / "huge.npz", X=X * 1e300, Y=Y)
    np.savez(tmp_path / "tiny.npz", X=X * 1e-300, Y=Y)
    np.savez(tmp_path / "val1.npz", X=X, Y=Y, X_val=X[:1], Y_val=Y[:1])
    np.savez(tmp_path / "val0.npz", X=X, Y=Y, X_val=X[:0], Y_val=Y[:0])
    buffer = io.BytesIO()
    np.save(buffer, X)
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as archive:
        archive.writestr("X.npy", buffer.getvalue())
        archive.writestr("Y.txt", b"1 2 3")
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    return tmp_path


VERIFY_NET = ["verify", "--network", "net.npz", "--problem", "bound", "--starts", "0"]
TRAIN = ["train", "--data", "data.npz", "--hidden", "4", "--iters", "1", "--quiet"]
BENCH = ["bench", "subproblems", "--quick", "--backends", "closed_form", "--subproblems", "slacks"]
COMPARE = ["compare-solvers", "--quick", "--backends", "closed_form", "--subproblems", "slacks", "--seeds", "1"]

# (id, arguments, error class, message fragment, outputs that must not exist afterwards)
PARSE_ERRORS = [
    ("verify seed -1", ["verify", "--seed", "-1"], "--seed: must be an integer >= 0", []),
    ("verify time-limit -1", ["verify", "--time-limit", "-1"], "--time-limit: must be a finite number > 0", []),
    ("verify time-limit nan", ["verify", "--time-limit", "nan"], "--time-limit: must be a finite number", []),
    ("verify time-limit text", ["verify", "--time-limit", "soon"], "--time-limit: must be a number", []),
    ("verify samples -3", [*VERIFY_NET, "--samples", "-3"], "--samples: must be an integer >= 1", []),
    ("verify samples 0", [*VERIFY_NET, "--samples", "0"], "--samples: must be an integer >= 1", []),
    ("verify starts -2", ["verify", "--starts", "-2"], "--starts: must be an integer >= 0", []),
    ("verify instances 0", ["verify", "--instances", "0"], "--instances: must be an integer >= 1", []),
    ("verify workers 0", ["verify", "--workers", "0"], "--workers: must be an integer >= 1", []),
    ("verify case-timeout nan", ["verify", "--case-timeout", "nan"], "--case-timeout: must be a finite", []),
    ("verify box 0", [*VERIFY_NET, "--box", "0"], "--box: must be a finite number > 0", []),
    ("verify box inf", [*VERIFY_NET, "--box", "inf"], "--box: must be a finite number", []),
    ("verify k -1", [*VERIFY_NET, "--k", "-1"], "--k: must be an integer >= 0", []),
    ("verify scheduler", ["verify", "--scheduler", "not a url"], "not a scheduler address", []),
    # a seed past 2**63 was solved, then lost when the store refused the integer
    ("verify seed 2**70", ["verify", "--seed", str(2**70)], "--seed: must be at most", []),
    ("verify time-limit 1e300", ["verify", "--time-limit", "1e300"], "--time-limit: must be at most", []),
    ("train batch-size 0", [*TRAIN, "--batch-size", "0"], "--batch-size: must be 'auto', 'full' or an integer", []),
    ("train mu -1", [*TRAIN, "--mu", "-1"], "--mu: must be a finite number >= 0", []),
    ("cs seed -1", ["cs", "--quick", "--seed", "-1"], "--seed: must be an integer >= 0", []),
    ("cs noise nan", ["cs", "--quick", "--noise", "nan"], "--noise: must be a finite number", []),
    ("cs noise -0.1", ["cs", "--quick", "--noise", "-0.1"], "--noise: must be a finite number >= 0", []),
    ("cs budget -1", ["cs", "--quick", "--budget", "-1"], "--budget: must be a finite number > 0", []),
    ("cs al-rho nan", ["cs", "--quick", "--al-rho", "nan"], "--al-rho: must be a finite number", []),
    ("cs lasso-solver", ["cs", "--quick", "--lasso-solver", "NOPE"], "not an installed CVXPY solver", []),
    ("cs mnist-ms 0", ["cs", "--quick", "--mnist-ms", "0"], "--mnist-ms: must be comma-separated integers >= 1",
     []),
    # more measurements than pixels is not compressed sensing (m = 5000 ran and reported a 114 dB "recovery")
    ("cs mnist-ms 5000", ["cs", "--quick", "--mnist-ms", "25,5000"], "--mnist-ms: must be at most the 784 pixels",
     []),
    ("cs image-ratios text", ["cs", "--quick", "--image-ratios", "ten"], "--image-ratios: must be comma-separated",
     []),
    ("train seed -1", [*TRAIN, "--seed", "-1"], "--seed: must be an integer >= 0", []),
    ("train time-budget -1", [*TRAIN, "--time-budget", "-1"], "--time-budget: must be a finite number > 0", []),
    ("train time-budget nan", [*TRAIN, "--time-budget", "nan"], "--time-budget: must be a finite number", []),
    ("train iters -1", [*TRAIN, "--iters", "-1"], "--iters: must be an integer >= 0", []),
    ("train rho nan", [*TRAIN, "--rho", "nan"], "--rho: must be a finite number", []),
    ("train sweeps 0", [*TRAIN, "--sweeps", "0"], "--sweeps: must be an integer >= 1", []),
    ("train checkpoint-every 0", [*TRAIN, "--checkpoint-every", "0"], "--checkpoint-every: must be an integer", []),
    ("bench repeats 0", [*BENCH, "--repeats", "0"], "--repeats: must be an integer >= 1", []),
    ("bench seed -1", [*BENCH, "--seed", "-1"], "--seed: must be an integer >= 0", []),
    ("bench workers 0", [*BENCH, "--workers", "0"], "--workers: must be an integer >= 1", []),
    ("bench case-timeout -1", [*BENCH, "--case-timeout", "-1"], "--case-timeout: must be a finite number > 0", []),
    ("bench memory-budget 0", [*BENCH, "--memory-budget", "0"], "--memory-budget: must be a finite number > 0", []),
    ("bench scheduler", [*BENCH, "--scheduler", "not a url"], "not a scheduler address", []),
    ("compare-solvers seeds 0", [*COMPARE[:-1], "0"], "--seeds: must be an integer >= 1", []),
    ("compare-solvers workers 0", [*COMPARE, "--workers", "0"], "--workers: must be an integer >= 1", []),
    ("compare-solvers case-timeout nan", [*COMPARE, "--case-timeout", "nan"], "--case-timeout: must be a finite",
     []),
    ("compare-solvers memory-budget -1", [*COMPARE, "--memory-budget", "-1"], "--memory-budget: must be a finite",
     []),
    ("compare-solvers scheduler", [*COMPARE, "--scheduler", "localhost"], "not a scheduler address", []),
]

RUN_ERRORS = [
    # verify: problems that are empty, out of float64's range or given to a solver that cannot take them
    ("verify box 1e300", [*VERIFY_NET, "--box", "1e300", "--json", "o.json"], ProblemError,
     "beyond 1e+15", ["o.json"]),
    ("verify box 1e16", [*VERIFY_NET, "--box", "1e16", "--json", "o.json"], ProblemError,
     "Use a smaller box", ["o.json"]),
    ("verify OSQP", ["verify", "--backends", "OSQP", "--json", "o.json"], ProblemError,
     "not a mixed-integer solver", ["o.json"]),
    ("verify unknown backend", ["verify", "--backends", "NOPE", "--json", "o.json"], SolverNotFound,
     "Unknown backend", ["o.json"]),
    ("verify A with 0 rows", ["verify", "--network", "teacher.npz", "--problem", "recovery", "--A", "A0.npy",
                              "--y", "y0.npy", "--json", "o.json"], ProblemError, "A has 0 rows", ["o.json"]),
    # verify: outputs checked before any solve
    ("verify json is a folder", [*VERIFY_NET, "--json", "adir"], ProblemError, "is a folder", []),
    ("verify json under a file", [*VERIFY_NET, "--json", "afile/o.json"], ProblemError,
     "is a file, not a folder", ["afile/o.json"]),
    ("verify plot is a file", [*VERIFY_NET, "--plot", "afile", "--json", "o.json"], ProblemError,
     "is a file; give a folder", ["o.json"]),
    ("verify store is a folder", ["verify", "--instances", "1", "--store", "adir", "--json", "o.json"],
     ProblemError, "is a folder", ["o.json"]),
    ("verify store under a file", ["verify", "--instances", "1", "--store", "afile/s.sqlite"], ProblemError,
     "is a file, not a folder", []),
    # train: outputs checked before training, data checked when read
    ("train out is a folder", [*TRAIN, "--out", "adir"], ProblemError, "is a folder", []),
    ("train out ends with a separator", [*TRAIN, "--out", "newdir/"], ProblemError, "is a folder", ["newdir"]),
    ("train out under a file", [*TRAIN, "--out", "afile/net"], ProblemError, "is a file, not a folder",
     ["afile/net.npz"]),
    ("train history under a file", [*TRAIN, "--out", "net_out", "--history", "afile/h.csv"], ProblemError,
     "is a file, not a folder", ["net_out.npz"]),
    ("train plot is a folder", [*TRAIN, "--out", "net_out", "--plot", "adir"], ProblemError, "is a folder",
     ["net_out.npz"]),
    ("train checkpoint is a folder", [*TRAIN, "--out", "net_out", "--checkpoint", "adir"], ProblemError,
     "is a folder", ["net_out.npz"]),
    ("train history unwritable", [*TRAIN, "--out", "net_out", "--history", "/proc/unrelu/h.csv"], ProblemError,
     "cannot be written", ["net_out.npz"]),
    ("train out = history", [*TRAIN, "--out", "same.npz", "--history", "same.npz"], ProblemError,
     "name the same file", ["same.npz"]),
    ("train out = data", [*TRAIN, "--out", "data.npz"], ProblemError, "is the training data file", []),
    ("train hidden with an empty entry", [*TRAIN, "--hidden", "4,,4", "--out", "net_out"], ProblemError,
     "comma-separated positive integers", ["net_out.npz"]),
    ("train npz member not .npy", ["train", "--data", "member.npz", "--out", "net_out"], ProblemError,
     "not .npy arrays (Y.txt)", ["net_out.npz"]),
    ("train validation of 1 sample", ["train", "--data", "val1.npz", "--out", "net_out"], ProblemError,
     "`X_val` in 'val1.npz' has 1 sample(s)", ["net_out.npz"]),
    ("train validation of 0 samples", ["train", "--data", "val0.npz", "--out", "net_out"], ProblemError,
     "has 0 sample(s)", ["net_out.npz"]),
    ("train X times 1e300", ["train", "--data", "huge.npz", "--out", "net_out"], ProblemError,
     "beyond 1e+100", ["net_out.npz"]),
    ("train X times 1e-300", ["train", "--data", "tiny.npz", "--out", "net_out"], ProblemError,
     "underflow float64", ["net_out.npz"]),
    # train: memory estimated before the AL state is allocated (--hidden 100000 asked for a 74.5 GiB array);
    # a million units need terabytes for their n x n matrices on any machine
    ("train hidden 1000000", [*TRAIN, "--hidden", "1000000", "--out", "net_out"], MemoryLimitError,
     "estimated before allocating it", ["net_out.npz"]),
    # bench subproblems, bench train, compare-solvers, cs: outputs checked before any case runs
    ("bench csv is a folder", [*BENCH, "--csv", "adir"], ProblemError, "is a folder", []),
    ("bench csv under a file", [*BENCH, "--csv", "afile/t.csv"], ProblemError, "is a file, not a folder",
     ["afile/t.csv"]),
    ("bench store is a folder", [*BENCH, "--csv", "t.csv", "--store", "adir"], ProblemError, "is a folder",
     ["t.csv"]),
    ("bench csv unwritable", [*BENCH, "--csv", "/proc/unrelu/t.csv", "--store", "s.sqlite"], ProblemError,
     "cannot be written", ["s.sqlite"]),
    ("bench train csv is a folder", ["bench", "train", "--quick", "--problems", "teacher-student", "--csv", "adir"],
     ProblemError, "is a folder", []),
    ("bench train csv under a file", ["bench", "train", "--quick", "--problems", "teacher-student", "--csv",
                                      "afile/t.csv"], ProblemError, "is a file, not a folder", ["afile/t.csv"]),
    ("compare-solvers store is a folder", [*COMPARE, "--store", "adir"], ProblemError, "is a folder", []),
    ("compare-solvers plot is a file", [*COMPARE, "--store", "s.sqlite", "--plot", "afile"], ProblemError,
     "is a file; give a folder", ["s.sqlite"]),
    ("compare-solvers plot under a file", [*COMPARE, "--store", "s.sqlite", "--plot", "afile/plots"],
     ProblemError, "is a file, not a folder", ["s.sqlite"]),
    ("cs json is a folder", ["cs", "--quick", "--no-progress", "--json", "adir", "--checkpoint-dir", "ck"],
     ProblemError, "is a folder", ["ck"]),
    ("cs json under a file", ["cs", "--quick", "--no-progress", "--json", "afile/r.json", "--checkpoint-dir", "ck"],
     ProblemError, "is a file, not a folder", ["ck"]),
    ("cs checkpoint-dir is a file", ["cs", "--quick", "--no-progress", "--checkpoint-dir", "afile", "--json",
                                     "r.json"], ProblemError, "is a file; give a folder", ["r.json"]),
]


def _leftovers(folder, before: set) -> set:
    """Files created by the failed command (a temporary of an atomic write would show up here)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} - before


@pytest.mark.parametrize("arguments, fragment, outputs", [row[1:] for row in PARSE_ERRORS],
                         ids=[row[0] for row in PARSE_ERRORS])
def test_bad_option_is_refused_when_parsed(folder, capsys, arguments, fragment, outputs):
    before = {str(p.relative_to(folder)) for p in folder.rglob("*")}
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(arguments)
    assert stopped.value.code == 2
    assert fragment in capsys.readouterr().err
    assert not _leftovers(folder, before)


@pytest.mark.parametrize("arguments, error, fragment, outputs", [row[1:] for row in RUN_ERRORS],
                         ids=[row[0] for row in RUN_ERRORS])
def test_bad_input_is_refused_before_work(folder, capsys, arguments, error, fragment, outputs):
    if arguments[0] == "verify" and not HAS_MI:
        pytest.skip("verify needs SCIP and HiGHS (pip install '.[mip]')")
    before = {str(p.relative_to(folder)) for p in folder.rglob("*")}
    args = build_parser().parse_args(arguments)
    with pytest.raises(error) as raised:
        args.func(args)
    assert fragment in str(raised.value)
    for name in outputs:
        assert not (folder / name).exists(), name
    # nothing else either: no half-written output, no temporary of an atomic write, no store
    assert not {name for name in _leftovers(folder, before) if not name.startswith("results")}
    # and through the command line: exit code 2, the same message
    assert main(arguments) == 2
    assert fragment in capsys.readouterr().err


def test_scheduler_is_checked_by_the_runner_too(tmp_path):
    from validation.runner import TRIVIAL_FIGURES, Case, Study, run_study

    study = Study("bad_scheduler", [Case(problem={"value": 1}, backend="none")], run="validation.runner:trivial_case",
                  figures=TRIVIAL_FIGURES)
    with pytest.raises(ProblemError, match="not a scheduler address"):
        run_study(study, store=str(tmp_path / "s.sqlite"), scheduler="not a url")
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.skipif(not HAS_MI, reason="verify needs SCIP and HiGHS (pip install '.[mip]')")
def test_verify_json_never_holds_nan(folder, capsys):
    # l1 recovery with a time limit this short leaves NaN objectives and infinite interval ends
    assert main(["verify", "--instances", "2", "--time-limit", "0.001", "--starts", "0", "--no-adam",
                 "--json", "o.json"]) == 0
    raw = (folder / "o.json").read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    json.loads(raw)


def test_train_out_prints_the_path_written(folder, capsys):
    assert main([*TRAIN, "--out", "x"]) == 0
    assert "wrote network x.npz" in capsys.readouterr().out
    assert (folder / "x.npz").exists() and not (folder / "x").exists()


# ---------------------------------------------------------------- damaged checkpoints
def _checkpoint(folder):
    from solvers.methods.al_trainer import ALTrainer

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3, 30)), rng.normal(size=(1, 30))
    path = folder / "run.npz"
    ALTrainer((4,), max_iters=2, checkpoint=path, checkpoint_every=1, progress=False).fit(X, Y)
    return path, X, Y


def _damage(path, meta_key=None, value=None, array=None):
    arrays = dict(np.load(path, allow_pickle=False))
    meta = json.loads(str(arrays["__meta__"]))
    if meta_key is not None:
        meta[meta_key] = value
    arrays["__meta__"] = np.array(json.dumps(meta))
    if array is not None:
        arrays[array[0]] = array[1]
    np.savez(path, **arrays)


DAMAGE = [
    ("rho NaN", dict(meta_key="rho_abs", value=float("nan")), "rho_abs"),
    ("rho negative", dict(meta_key="rho_abs", value=-1.0), "rho_abs"),
    ("depth wrong", dict(meta_key="depth", value=7), "depth"),
    ("history not a list", dict(meta_key="history", value=None), "history"),
    ("loop missing", dict(meta_key="loop", value={}), "loop"),
    ("loop ahead of its history", dict(meta_key="loop", value={"iteration": 10**9}), "history ends at"),
    ("history rows without columns", dict(meta_key="history", value=[{"nonsense": 1}]), "columns"),
    ("dtype float16", dict(meta_key="dtype", value="float16"), "dtype"),
    ("array wrong shape", dict(array=("W_0", np.ones((7, 7)))), "shape"),
    ("array NaN", dict(array=("W_0", np.full((4, 3), np.nan))), "NaN"),
]


@pytest.mark.parametrize("damage, fragment", [row[1:] for row in DAMAGE], ids=[row[0] for row in DAMAGE])
def test_check_checkpoint_names_the_damage(folder, damage, fragment):
    """The helper the trainer is to call on resume (``formulation._checks.check_checkpoint``)."""
    from solvers.methods.al_trainer import ALTrainer

    path, _, _ = _checkpoint(folder)
    _, clean = ALTrainer.load_checkpoint(str(path))
    expected = {key: array.shape for key, array in clean.items()}
    _damage(path, **damage)
    meta, arrays = ALTrainer.load_checkpoint(str(path))
    with pytest.raises(ProblemError, match="is damaged") as raised:
        check_checkpoint(path, meta, arrays, expected)
    assert fragment in str(raised.value) and "start afresh" in str(raised.value)


def test_check_checkpoint_accepts_a_good_one(folder):
    from solvers.methods.al_trainer import ALTrainer

    path, _, _ = _checkpoint(folder)
    meta, arrays = ALTrainer.load_checkpoint(str(path))
    check_checkpoint(path, meta, arrays, {key: array.shape for key, array in arrays.items()})


@pytest.mark.parametrize("damage, fragment", [row[1:] for row in DAMAGE], ids=[row[0] for row in DAMAGE])
def test_trainer_refuses_a_damaged_checkpoint(folder, damage, fragment):
    from solvers.methods.al_trainer import ALTrainer

    path, X, Y = _checkpoint(folder)
    _damage(path, **damage)
    with pytest.raises(ProblemError, match="Checkpoint") as raised:
        ALTrainer((4,), max_iters=4, checkpoint=path, checkpoint_every=1, progress=False).fit(X, Y)
    assert fragment in str(raised.value)


@pytest.mark.parametrize("meta, fragment", [("{not json", "not JSON"), ("[1, 2, 3]", "not a JSON object")])
def test_checkpoint_metadata_that_is_not_a_json_object_is_refused(folder, meta, fragment):
    from solvers.methods.al_trainer import ALTrainer

    path, X, Y = _checkpoint(folder)
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["__meta__"] = np.array(meta)
    np.savez(path, **arrays)
    with pytest.raises(ProblemError, match=fragment):
        ALTrainer((4,), max_iters=4, checkpoint=path, checkpoint_every=1, progress=False).fit(X, Y)


def test_refused_store_with_a_pending_wal_is_left_untouched(tmp_path):
    """A store of another schema version whose last writes are still in its -wal file (its writer was
    killed): refused, and neither the main file nor the -wal file changes."""
    import hashlib
    import subprocess
    import sys

    from validation.runner import TRIVIAL_FIGURES, Case, Study, run_study

    store = tmp_path / "store.sqlite"
    writer = (
        "import os, sqlite3\n"
        f"c = sqlite3.connect({str(store)!r}, isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)')\n"
        "c.execute(\"INSERT INTO meta VALUES ('schema_version', '2')\")\n"
        "c.execute('CREATE TABLE rows (x TEXT)')\n"
        "for i in range(100): c.execute('INSERT INTO rows VALUES (?)', ('y' * 200,))\n"
        "os._exit(0)\n"  # no close, no checkpoint: the writes stay in the -wal file
    )
    subprocess.run([sys.executable, "-c", writer], check=True)
    wal = tmp_path / "store.sqlite-wal"
    assert wal.exists()

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def files():  # every file of the store (the -shm index included), byte for byte
        return {path.name: digest(path) for path in tmp_path.iterdir() if path.name.startswith("store.sqlite")}

    before = files()
    study = Study("kept", [Case(problem={"value": 1}, backend="none")], run="validation.runner:trivial_case",
                  figures=TRIVIAL_FIGURES)
    with pytest.raises(ProblemError, match="schema version 2"):
        run_study(study, store=str(store))
    assert wal.exists() and files() == before


def test_an_interrupted_case_is_not_a_result(monkeypatch):
    from validation import runner

    def interrupted(case):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_resolve", lambda reference: interrupted)
    result = runner.execute_case("any:thing", runner.Case(problem={"value": 1}, backend="none").to_json())
    assert result["status"] == "interrupted"  # the coordinator stops on it and stores nothing


def test_stored_timeouts_are_retried_with_a_longer_case_timeout(tmp_path):
    from validation.runner import TRIVIAL_FIGURES, Case, Study, read_results, run_study

    store = str(tmp_path / "store.sqlite")
    study = Study("slow", [Case(problem={"value": 1}, backend="none", settings={"sleep": 1.5})],
                  run="validation.runner:trivial_case", figures=TRIVIAL_FIGURES)
    first = run_study(study, store=store, case_timeout=0.5, progress=False)
    assert first.timeout == 1 and read_results(store, "slow")[0]["status"] == "timeout"
    again = run_study(study, store=store, case_timeout=0.5, progress=False)
    assert again.skipped == 1 and again.ran == 0  # the same limit would time out again: kept
    longer = run_study(study, store=store, case_timeout=30.0, progress=False)
    assert longer.skipped == 0 and longer.ok == 1
    rows = read_results(store, "slow")
    assert len(rows) == 1 and rows[0]["status"] == "ok"


# ---------------------------------------------------------------- time limits, progress and memory of long work
@pytest.mark.skipif("ECOS_BB" not in solvers.available_backends(), reason="ECOS_BB not installed (pip install ecos)")
def test_ecos_bb_is_stopped_at_its_time_limit():
    """ECOS_BB has no time limit of its own (a 784-200-10 recovery ran for minutes past --time-limit): it runs
    in a child process killed at the limit, and the result says so instead of blocking."""
    import time

    from formulation import mixed_integer as mi
    from formulation.results import SolutionStatus, TerminationCondition

    hard = mi.OutputBound(ReluNetwork.random([6, 30, 30, 1], seed=3), 1.0, k=0, sense="max")  # 60 unstable units
    start = time.perf_counter()
    stopped = solvers.solve(hard.binary(), "ECOS_BB", time_limit=0.5)
    assert time.perf_counter() - start < 2.0
    assert stopped.termination is TerminationCondition.TIME_LIMIT
    assert stopped.status is SolutionStatus.NO_SOLUTION and stopped.extras["enforced_time_limit"]
    # a solve that ends inside the limit comes back from the child process as it would in this one
    easy = mi.OutputBound(ReluNetwork.random([3, 6, 4, 2], seed=1), 1.0, k=0, sense="max")
    child = solvers.solve(easy.binary(), "ECOS_BB", time_limit=30.0)
    here = solvers.solve(easy.binary(), "ECOS_BB")
    assert child.status is here.status is SolutionStatus.OPTIMAL
    assert child.objective == here.objective and child.iterations == here.iterations
    np.testing.assert_array_equal(child.values["v"], here.values["v"])


@pytest.mark.skipif(not HAS_MI, reason="verify needs SCIP and HiGHS (pip install '.[mip]')")
def test_verify_of_one_network_reports_progress_on_stderr(folder, capsys):
    assert main([*VERIFY_NET, "--backends", "HIGHS"]) == 0
    err = capsys.readouterr().err
    assert "unrelu: (i) binary MILP with HIGHS: 9 binaries, 1 split(s), time limit 30 s each" in err
    assert "unrelu: (ii) SCIP: proved in" in err


def test_bench_skips_cases_above_its_memory_budget_before_building():
    """ECOS on the activation block with slacks at 400 x 16 (a quick size) grew a worker to 19.9 GiB; under the
    quick budget it is skipped with its estimate, and a budget large enough lets a small case run."""
    from validation.runner import Case
    from validation.solver_study import QUICK_MEMORY_BUDGET_GIB, solve_case

    budget = {"repeats": 1, "memory_budget": QUICK_MEMORY_BUDGET_GIB * 2**30}
    skipped = solve_case(Case({"kind": "activation_slacks", "N": 400, "n": 16}, "ECOS", budget, 0))
    assert skipped["skipped"] == "memory guard: needs about 25.4 GiB by the estimate, above the memory budget (1 GiB)"
    assert skipped["solve_s"] is None
    small = solve_case(Case({"kind": "activation_slacks", "N": 20, "n": 4}, "ECOS", budget, 0))
    assert small["skipped"] is None and small["claimed"] == "optimal" and small["max_abs_err"] < 1e-3


def test_compare_solvers_skips_cases_above_its_memory_budget():
    """The same guard and the same note for compare-solvers: skipped with the estimate, not raised."""
    from validation.runner import Case
    from validation.solver_study import solve_case

    case = Case({"kind": "slacks", "N": 800, "n": 16, "n_other": 16}, "ECOS", {"memory_budget": 2.0**30}, 0)
    row = solve_case(case)
    assert row["skipped"] == "memory guard: needs about 16.9 GiB by the estimate, above the memory budget (1 GiB)"
    assert row["success"] is None and row["solve_s"] is None


def test_training_memory_refusal_names_widths_that_fit(monkeypatch):
    """``train --hidden 100000`` (74.5 GiB asked for) is refused before allocating, naming the largest hidden
    width that fits by the same estimate."""
    import re

    import formulation._checks as checks

    monkeypatch.setattr(checks, "available_memory", lambda: 8 * 2**30)
    widths, N, N_val = (10, 100000, 1), 2000, 1000
    with pytest.raises(MemoryLimitError, match=r"10-100000-1 network on 2000 samples \(\+1000 validation\) would need "
                                               r"about 3\d\d GiB") as raised:
        checks.check_training_memory(widths, N, N_val)
    suggested = int(re.search(r"use --hidden (\d+)", str(raised.value)).group(1))
    usable = checks.MEMORY_SHARE * 8 * 2**30
    assert checks.training_memory((10, suggested, 1), N, N_val) <= usable
    assert checks.training_memory((10, int(suggested * 1.01) + 1, 1), N, N_val) > usable
    assert checks.check_training_memory((10, suggested, 1), N, N_val) <= usable  # and it is accepted
