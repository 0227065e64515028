"""Run a study (a list of cases) in worker processes or on a Dask cluster, resumably.

A **case** is one unit of work: a problem description, an optional network description, a
backend, solver settings and a seed, all plain JSON. Its id is the SHA-256 of the canonical
JSON of those five fields, so the same case always has the same id, whatever study or order it
appears in.

A **study** is a named list of cases plus the function that runs one case (given by reference,
``"module:function"``, so that any worker can import it) and the figures that function returns.

Execution
---------
* Local (default): ``workers`` long-lived worker processes (``multiprocessing`` with a
  ``forkserver`` whose imports are preloaded) each run one case at a time. A case that exceeds
  ``case_timeout`` is killed with its process (SIGKILL), recorded as ``timeout``, and the
  worker is replaced.
* Dask: with ``scheduler="tcp://HOST:PORT"`` (or a ``distributed.Client``), cases are submitted
  to the cluster, at most one per worker thread at a time. Inside the task the case runs in a
  thread that is abandoned at the time-out (the task returns ``timeout``); if the task itself
  does not come back within the time-out plus a grace period, its worker is restarted.

Results store
-------------
Each finished case is written at once to SQLite (WAL mode), one table per study, one row per
case, in one transaction, by the coordinating process only. Re-running a study skips the cases
already stored, so a study killed at any point resumes and ends with the same table as an
uninterrupted run; :func:`drop_study` deletes a study's rows to run it afresh. A store with
another schema version, an unknown layout or a damaged file raises
:class:`~formulation.results.ProblemError` and is never written to.

Results are stored as SQLite rows and case specifications as JSON; nothing is pickled to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm import tqdm

from formulation.results import ProblemError

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Case",
    "Study",
    "RunSummary",
    "run_study",
    "read_results",
    "drop_study",
    "default_store",
    "execute_case",
    "recorded_warnings",
    "SKIPPED",
    "check_memory_budget",
    "memory_guard_note",
    "trivial_case",
    "TRIVIAL_FIGURES",
]

#: Layout version of the results store. Bump it when tables or the meta table change.
SCHEMA_VERSION = 1

#: Status of a stored case: it returned figures, it raised, or it ran past the time-out.
STATUSES = ("ok", "error", "timeout")

#: Columns every study table has before its figures; ``wall_s`` and ``finished_at`` are timings.
BASE_COLUMNS = {
    "case_id": "TEXT PRIMARY KEY",
    "case_index": "INTEGER NOT NULL",
    "problem": "TEXT NOT NULL",
    "network": "TEXT",
    "backend": "TEXT NOT NULL",
    "settings": "TEXT NOT NULL",
    "seed": "INTEGER",
    "status": "TEXT NOT NULL CHECK (status IN ('ok', 'error', 'timeout'))",
    "message": "TEXT",
    "wall_s": "REAL",
    "finished_at": "REAL",
}
BASE_TIMING = ("wall_s", "finished_at")
_SQL_TYPES = {"REAL", "INTEGER", "TEXT"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Seconds a Dask task may overrun its time-out (it checks its own) before its worker is restarted.
DASK_GRACE = 5.0


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; raises ``ProblemError`` on NaN/inf or non-JSON types."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProblemError(
            f"A case field is not plain JSON ({exc}); use dicts, lists, str, int, finite float, bool or None."
        ) from exc


@dataclass(frozen=True)
class Case:
    """One unit of work of a study.

    Attributes
    ----------
    problem : dict
        What is solved (e.g. ``{"kind": "weights", "N": 100, "n": 16}``).
    backend : str
        Registry key of the backend (or any label of how it is solved).
    settings : dict
        Solver or method settings.
    seed : int
        Seed of the case's ``np.random.default_rng``.
    network : dict or None
        Network description, where the case has one.
    """

    problem: dict
    backend: str
    settings: dict = field(default_factory=dict)
    seed: int = 0
    network: dict | None = None

    def spec(self) -> dict:
        """The five identifying fields as one dict."""
        return {"problem": self.problem, "network": self.network, "backend": self.backend,
                "settings": self.settings, "seed": int(self.seed)}

    @property
    def case_id(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`spec`: stable across runs and machines."""
        return hashlib.sha256(canonical_json(self.spec()).encode()).hexdigest()

    def to_json(self) -> str:
        return canonical_json(self.spec())

    @classmethod
    def from_json(cls, text: str) -> Case:
        spec = json.loads(text)
        return cls(problem=spec["problem"], backend=spec["backend"], settings=spec["settings"],
                   seed=spec["seed"], network=spec["network"])


@dataclass
class Study:
    """A named list of cases and how to run one.

    Attributes
    ----------
    name : str
        Study name; also the table name (letters, digits, underscore).
    cases : list of Case
        The cases, in the order of the table (``case_index``). Ids must be distinct.
    run : str
        ``"module:function"``; ``function(case) -> dict`` of figures. It must be importable
        by every worker.
    figures : dict of str to str
        Figure name -> SQL type (``REAL``, ``INTEGER`` or ``TEXT``): one column each.
    timing : tuple of str
        Figures that are timings (left out when tables from two runs are compared).
    """

    name: str
    cases: list[Case]
    run: str
    figures: dict[str, str]
    timing: tuple[str, ...] = ()

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ProblemError(f"Study name {self.name!r} must be letters, digits and underscores (a table name).")
        for name, sql_type in self.figures.items():
            if not _NAME.match(name) or name in BASE_COLUMNS:
                raise ProblemError(
                    f"Figure {name!r} of study {self.name!r} must be an identifier that is not one of "
                    f"{sorted(BASE_COLUMNS)}."
                )
            if sql_type.upper() not in _SQL_TYPES:
                raise ProblemError(f"Figure {name!r} has SQL type {sql_type!r}; use one of {sorted(_SQL_TYPES)}.")
        unknown = set(self.timing) - set(self.figures)
        if unknown:
            raise ProblemError(f"Timing figures {sorted(unknown)} of study {self.name!r} are not among its figures.")
        if ":" not in self.run:
            raise ProblemError(f"Study {self.name!r}: `run` must be 'module:function', got {self.run!r}.")
        ids = [case.case_id for case in self.cases]
        if len(set(ids)) != len(ids):
            raise ProblemError(f"Study {self.name!r} lists the same case twice; every case must differ "
                               "in problem, network, backend, settings or seed.")

@dataclass
class RunSummary:
    """What one call of :func:`run_study` did."""

    study: str
    store: str
    total: int
    skipped: int
    ok: int = 0
    error: int = 0
    timeout: int = 0
    wall_s: float = 0.0

    @property
    def ran(self) -> int:
        return self.ok + self.error + self.timeout


def default_store(study_name: str) -> str:
    """``./results/<study>.sqlite``."""
    return os.path.join("results", f"{study_name}.sqlite")


# --------------------------------------------------------------------------- one case
def _resolve(reference: str) -> Callable:
    module_name, _, function_name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ProblemError(f"Cannot import the case function {reference!r} ({exc}); it must be "
                           "importable on every worker.") from exc


def _clean_figures(figures: Any, reference: str) -> dict:
    if not isinstance(figures, dict):
        raise TypeError(f"{reference} returned {type(figures).__name__}, not a dict of figures")
    out = {}
    for key, value in figures.items():
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # SQLite has no NaN; stored as NULL either way
        if value is not None and not isinstance(value, (int, float, str)):
            raise TypeError(f"{reference} returned figure {key!r} of type {type(value).__name__}")
        out[str(key)] = value
    return out


def execute_case(reference: str, case_json: str) -> dict:
    """Run one case in this process; never raises.

    Returns
    -------
    dict
        ``{"status": "ok"|"error", "message": str|None, "figures": dict, "wall_s": float}``.
    """
    start = time.perf_counter()
    try:
        figures = _clean_figures(_resolve(reference)(Case.from_json(case_json)), reference)
        return {"status": "ok", "message": None, "figures": figures, "wall_s": time.perf_counter() - start}
    except KeyboardInterrupt:
        # Ctrl-C (SIGINT to the process group) is not a result of the case: never stored as a failure
        return {"status": "interrupted", "message": "interrupted", "figures": {},
                "wall_s": time.perf_counter() - start}
    except BaseException as exc:  # noqa: B036 - a case may raise anything; it is recorded, not re-raised
        lines = traceback.format_exception_only(type(exc), exc)
        return {"status": "error", "message": "".join(lines).strip()[:2000], "figures": {},
                "wall_s": time.perf_counter() - start}


def _worker_main(connection, reference: str) -> None:
    """Entry point of a local worker process: run cases sent as JSON until an empty message."""
    while True:
        try:
            message = connection.recv_bytes()
        except (EOFError, OSError):
            return
        if not message:
            return
        result = execute_case(reference, message.decode())
        connection.send_bytes(json.dumps(result).encode())


def _execute_with_thread_timeout(reference: str, case_json: str, timeout: float | None) -> dict:
    """Dask task: run the case in a daemon thread and abandon it at ``timeout`` seconds."""
    if timeout is None:
        return execute_case(reference, case_json)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(execute_case(reference, case_json)), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return {"status": "timeout", "message": f"case exceeded its time-out of {timeout:g} s and was abandoned",
                "figures": {}, "wall_s": float(timeout)}
    return box


# --------------------------------------------------------------------------- store
_MAGIC = b"SQLite format 3\x00"


def _store_error(path: str, problem: str) -> ProblemError:
    return ProblemError(
        f"Results store {path!r} {problem}. It was left untouched. Move it aside (e.g. `mv {path} {path}.old`) "
        f"to start the study afresh, or pass --store NEW_PATH to write elsewhere."
    )


def _open_store(path: str) -> sqlite3.Connection:
    """Open (or create) the store at ``path`` after checking it without writing to it."""
    if os.path.isdir(path):
        raise ProblemError(f"Results store {path!r} is a folder; pass --store with a file name, e.g. "
                           f"{os.path.join(path, 'results.sqlite')!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ProblemError(f"Results store {path!r} cannot be created: {parent!r} is a file, not a folder.")
    exists = os.path.exists(path) and os.path.getsize(path) > 0
    if exists:
        with open(path, "rb") as handle:
            if handle.read(len(_MAGIC)) != _MAGIC:
                raise _store_error(path, "is not an SQLite database (damaged or another kind of file)")
        # checked on a copy of the main file and its -wal: a read-write connection checkpoints a pending -wal
        # into the main file when it closes (measured: 4 KiB -> 60 KiB, -wal and -shm removed), and even a
        # read-only one rewrites the -shm index and leaves -wal/-shm beside a damaged file; on the copy,
        # a refused store keeps all of its files byte for byte
        with tempfile.TemporaryDirectory(prefix="unrelu-store-check-") as scratch:
            copy = os.path.join(scratch, "store.sqlite")
            shutil.copyfile(path, copy)
            if os.path.exists(path + "-wal"):
                shutil.copyfile(path + "-wal", copy + "-wal")
            probe = sqlite3.connect(copy, timeout=30.0)
            try:
                _check_existing(probe, path)
            finally:
                probe.close()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        with connection:
            connection.execute("BEGIN")
            connection.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.execute("CREATE TABLE IF NOT EXISTS studies (name TEXT PRIMARY KEY, figures TEXT NOT NULL, "
                               "timing TEXT NOT NULL, run TEXT NOT NULL)")
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('written_by', 'unrelu validation.runner')")
    except BaseException:
        connection.close()
        raise
    return connection


def _check_existing(connection: sqlite3.Connection, path: str) -> None:
    """Read-only checks of an existing store: integrity and schema version."""
    try:
        check = connection.execute("PRAGMA quick_check").fetchone()
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise _store_error(path, f"is damaged ({exc})") from exc
    if check is None or check[0] != "ok":
        raise _store_error(path, f"is damaged (integrity check: {check[0] if check else 'no answer'})")
    if not tables:
        return  # an empty database: nothing to lose
    if "meta" not in tables:
        raise _store_error(path, "has no `meta` table: it was not written by this runner (unknown schema)")
    try:
        row = connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _store_error(path, f"has an unreadable `meta` table ({exc})") from exc
    if row is None or row[0] != str(SCHEMA_VERSION):
        found = "none" if row is None else row[0]
        raise _store_error(path, f"has schema version {found}; this unrelu reads and writes version "
                                 f"{SCHEMA_VERSION} only")


def _prepare_table(connection: sqlite3.Connection, study: Study, path: str) -> None:
    figures_json = canonical_json({k: v.upper() for k, v in study.figures.items()})
    timing_json = canonical_json(list(study.timing))
    row = connection.execute("SELECT figures FROM studies WHERE name=?", (study.name,)).fetchone()
    if row is not None:
        if row[0] != figures_json:
            raise _store_error(path, f"holds study {study.name!r} with other figures ({row[0]}) than this run "
                                     f"({figures_json})")
        return
    columns = [f'"{name}" {sql}' for name, sql in BASE_COLUMNS.items()]
    columns += [f'"{name}" {sql.upper()}' for name, sql in study.figures.items()]
    with connection:
        connection.execute("BEGIN")
        connection.execute(f'CREATE TABLE IF NOT EXISTS "{study.name}" ({", ".join(columns)})')
        connection.execute("INSERT INTO studies VALUES (?, ?, ?, ?)",
                           (study.name, figures_json, timing_json, study.run))


def _write_row(connection: sqlite3.Connection, study: Study, index: int, case: Case, result: dict) -> None:
    figures = result.get("figures") or {}
    names = list(BASE_COLUMNS) + list(study.figures)
    values = [case.case_id, index, canonical_json(case.problem), canonical_json(case.network), case.backend,
              canonical_json(case.settings), int(case.seed), result["status"], result.get("message"),
              result.get("wall_s"), time.time()]
    values += [figures.get(name) for name in study.figures]
    placeholders = ", ".join("?" for _ in names)
    quoted = ", ".join(f'"{name}"' for name in names)
    with connection:  # one transaction per row: a row is either complete or absent
        connection.execute("BEGIN IMMEDIATE")
        # a retried timeout replaces its stored row; every other case is written once
        connection.execute(f'DELETE FROM "{study.name}" WHERE case_id = ? AND status = ?', (case.case_id, "timeout"))
        connection.execute(f'INSERT OR IGNORE INTO "{study.name}" ({quoted}) VALUES ({placeholders})', values)


def read_results(store: str, study_name: str, *, exclude_timing: bool = False,
                 missing_ok: bool = False) -> list[dict]:
    """All stored rows of ``study_name`` in ``store``, ordered by case index.

    Parameters
    ----------
    exclude_timing : bool
        Leave out the timing columns (``wall_s``, ``finished_at`` and the study's timing
        figures), e.g. to compare two runs of the same study.
    missing_ok : bool
        No rows (instead of ``ProblemError``) when the store or the study does not exist yet.
    """
    if not os.path.exists(store):
        if missing_ok:
            return []
        raise ProblemError(f"No results store at {store!r}; run the study first or pass --store PATH.")
    with open(store, "rb") as handle:
        if handle.read(len(_MAGIC)) != _MAGIC:
            raise _store_error(store, "is not an SQLite database (damaged or another kind of file)")
    connection = sqlite3.connect(f"file:{os.path.abspath(store)}?mode=ro", uri=True)
    try:
        _check_existing(connection, store)
        row = connection.execute("SELECT timing FROM studies WHERE name=?", (study_name,)).fetchone()
        if row is None:
            if missing_ok:
                return []
            names = [r[0] for r in connection.execute("SELECT name FROM studies")]
            raise ProblemError(f"Store {store!r} has no study {study_name!r}; it has {names or 'none'}.")
        drop = set(BASE_TIMING) | set(json.loads(row[0])) if exclude_timing else set()
        cursor = connection.execute(f'SELECT * FROM "{study_name}" ORDER BY case_index')
        names = [d[0] for d in cursor.description]
        return [{k: v for k, v in zip(names, values) if k not in drop} for values in cursor]
    finally:
        connection.close()


def drop_study(store: str, study_name: str) -> int:
    """Delete every row of ``study_name`` from ``store`` (its table and its entry), in one transaction, so
    that the next run computes every case again (``--fresh``). Other studies in the store are untouched; a
    store that is damaged or of another schema is refused as by :func:`run_study`. Returns the number of
    rows dropped (0 when the store or the study does not exist).
    """
    if not _NAME.match(study_name):
        raise ProblemError(f"Study name {study_name!r} must be letters, digits and underscores (a table name).")
    if not os.path.exists(store):
        return 0
    connection = _open_store(store)
    try:
        if connection.execute("SELECT 1 FROM studies WHERE name=?", (study_name,)).fetchone() is None:
            return 0
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            count = connection.execute(f'SELECT COUNT(*) FROM "{study_name}"').fetchone()[0]
            connection.execute(f'DROP TABLE "{study_name}"')
            connection.execute("DELETE FROM studies WHERE name=?", (study_name,))
        return int(count)
    finally:
        connection.close()


# --------------------------------------------------------------------------- executors
class _LocalWorker:
    """One worker process and the case it is running (if any)."""

    def __init__(self, context, reference: str, number: int):
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child, reference), name=f"unrelu-worker-{number}",
                                       daemon=True)
        self.process.start()
        child.close()
        self.busy = None  # (index, case, started) while a case runs

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()


def _died(exitcode, wall_s: float) -> dict:
    """The result of a case whose worker process died before returning one."""
    why = ""
    if exitcode is not None and exitcode < 0:
        why = f" by signal {-exitcode}" + (" (SIGKILL: often the out-of-memory killer)" if exitcode == -9 else "")
    return {"status": "error", "message": f"worker process died{why} without a result (exit code {exitcode}); "
                                         "the case may need more memory than is free",
            "figures": {}, "wall_s": wall_s}


class _LocalExecutor:
    """``workers`` long-lived worker processes (forkserver, imports preloaded), one case each at a time.

    A worker whose case runs past the time-out, or that dies, is killed and replaced.
    """

    def __init__(self, study: Study, workers: int, timeout: float | None):
        self.reference, self.workers, self.timeout = study.run, max(1, int(workers)), timeout
        self.context = multiprocessing.get_context("forkserver")
        module = study.run.partition(":")[0]
        self.context.set_forkserver_preload(["validation.runner", module])
        self.pool: list[_LocalWorker] = []
        self.started = 0

    @property
    def running(self) -> list[_LocalWorker]:
        return [worker for worker in self.pool if worker.busy is not None]

    def has_room(self) -> bool:
        return len(self.running) < self.workers

    def submit(self, index: int, case: Case) -> None:
        idle = [worker for worker in self.pool if worker.busy is None]
        if idle:
            worker = idle[0]
        else:
            self.started += 1
            worker = _LocalWorker(self.context, self.reference, self.started)
            self.pool.append(worker)
        worker.connection.send_bytes(case.to_json().encode())
        worker.busy = (index, case, time.monotonic())

    def _retire(self, worker: _LocalWorker) -> None:
        worker.kill()
        self.pool.remove(worker)

    def collect(self, wait: float):
        """Yield ``(index, case, result)`` for finished cases, waiting at most ``wait`` seconds."""
        busy = self.running
        if not busy:
            return
        if self.timeout:
            wait = max(0.0, min(wait, min(w.busy[2] + self.timeout for w in busy) - time.monotonic()))
        objects = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        multiprocessing.connection.wait(objects, timeout=wait)
        now = time.monotonic()
        for worker in busy:
            index, case, started = worker.busy
            result = None
            if worker.connection.poll():
                try:
                    result = json.loads(worker.connection.recv_bytes().decode())
                    worker.busy = None
                except (EOFError, OSError, ValueError):  # the pipe closed: the worker died
                    worker.process.join(1)
                    result = _died(worker.process.exitcode, now - started)
                    self._retire(worker)
            elif not worker.process.is_alive():
                result = _died(worker.process.exitcode, now - started)
                self._retire(worker)
            elif self.timeout is not None and now - started > self.timeout:
                self._retire(worker)
                result = {"status": "timeout", "message": f"case exceeded its time-out of {self.timeout:g} s "
                                                          "and was killed", "figures": {}, "wall_s": now - started}
            if result is not None:
                yield index, case, result

    def close(self) -> None:
        for worker in list(self.pool):
            if worker.busy is None:
                try:
                    worker.connection.send_bytes(b"")
                except OSError:
                    pass
                worker.process.join(5)
            self._retire(worker)


class _DaskExecutor:
    """Cases as Dask tasks, at most one per worker thread in flight."""

    def __init__(self, study: Study, scheduler, timeout: float | None):
        try:
            import distributed
        except ImportError as exc:  # pragma: no cover - an optional dependency
            raise ProblemError("--scheduler needs Dask distributed: `pip install 'unrelu[dask]'`.") from exc
        self.distributed = distributed
        if isinstance(scheduler, distributed.Client):
            self.client, self.own_client = scheduler, False
        else:
            try:
                self.client, self.own_client = distributed.Client(scheduler, timeout="20s"), True
            except (OSError, TimeoutError) as exc:
                raise ProblemError(f"Cannot reach the Dask scheduler at {scheduler!r} ({exc}); start one with "
                                   "`dask scheduler` and workers with `dask worker ADDRESS`, or leave out "
                                   "--scheduler to run locally.") from exc
        self.reference, self.timeout, self.study = study.run, timeout, study
        self.running: dict = {}  # future -> (index, case, submitted)

    def has_room(self) -> bool:
        slots = max(1, sum(self.client.nthreads().values()))
        return len(self.running) < slots

    def submit(self, index: int, case: Case) -> None:
        future = self.client.submit(_execute_with_thread_timeout, self.reference, case.to_json(), self.timeout,
                                    key=f"{self.study.name}-{case.case_id}-{time.monotonic_ns()}", pure=False,
                                    retries=0)
        self.running[future] = (index, case, time.monotonic())

    def collect(self, wait: float):
        if not self.running:
            return
        try:
            self.distributed.wait(list(self.running), timeout=wait, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        except self.distributed.TimeoutError:  # older distributed  # pragma: no cover
            pass
        now = time.monotonic()
        for future in list(self.running):
            index, case, submitted = self.running[future]
            result = None
            if future.status == "finished":
                result = future.result()
            elif future.status in ("error", "cancelled", "lost"):
                try:
                    message = repr(future.exception(timeout=1))
                except Exception as exc:  # noqa: BLE001 - describing a failure; never raise here
                    message = f"task {future.status}: {exc!r}"
                result = {"status": "error", "message": f"Dask task failed: {message}"[:2000], "figures": {},
                          "wall_s": now - submitted}
            elif self.timeout is not None and now - submitted > self.timeout + DASK_GRACE:
                self._abandon(future)
                result = {"status": "timeout", "message": f"case exceeded its time-out of {self.timeout:g} s; "
                                                          "its Dask worker was restarted", "figures": {},
                          "wall_s": now - submitted}
            if result is not None:
                del self.running[future]
                yield index, case, result

    def _abandon(self, future) -> None:
        """Cancel a task that ignores its own time-out and restart the worker that holds it."""
        try:
            holders = [w for w, keys in self.client.processing().items() if future.key in keys]
            future.cancel()
            if holders:
                self.client.restart_workers(holders, raise_for_error=False)
        except Exception:  # noqa: BLE001 - best effort; the case is recorded as timeout anyway
            pass

    def close(self) -> None:
        for future in list(self.running):
            future.cancel()
        self.running.clear()
        if self.own_client:
            self.client.close()


# --------------------------------------------------------------------------- the runner
def run_study(study: Study, *, store: str | None = None, workers: int = 1, scheduler=None,
              case_timeout: float | None = None, progress: bool | None = None) -> RunSummary:
    """Run every case of ``study`` not yet in ``store``; write each result as soon as it finishes.

    Parameters
    ----------
    study : Study
    store : str, optional
        SQLite file (default ``results/<study>.sqlite``).
    workers : int
        Case processes at once on the local path (ignored with ``scheduler``).
    scheduler : str or distributed.Client, optional
        ``tcp://HOST:PORT`` of a Dask scheduler, or a connected client: run there instead.
    case_timeout : float, optional
        Seconds after which a case is stopped and stored with status ``timeout``.
    progress : bool or None
        Show a tqdm bar (``None``: only on a terminal).

    Returns
    -------
    RunSummary

    Raises
    ------
    ProblemError
        The store is damaged or has another schema (it is not modified), or the study is ill-formed.
    """
    if case_timeout is not None and not case_timeout > 0:
        raise ProblemError(f"--case-timeout must be positive seconds, got {case_timeout}.")
    if workers < 1:
        raise ProblemError(f"--workers must be at least 1, got {workers}.")
    if isinstance(scheduler, str):
        from validation.options import check_scheduler

        check_scheduler(scheduler)
    store = store or default_store(study.name)
    connection = _open_store(store)
    started = time.perf_counter()
    summary = None
    try:
        _prepare_table(connection, study, store)
        # a stored timeout is retried when this run allows a case more time than the stored attempt had
        done = {case_id for case_id, status, wall in
                connection.execute(f'SELECT case_id, status, wall_s FROM "{study.name}"')
                if status != "timeout" or (case_timeout is not None and (wall or 0.0) >= case_timeout)}
        todo = deque((index, case) for index, case in enumerate(study.cases) if case.case_id not in done)
        summary = RunSummary(study.name, store, total=len(study.cases), skipped=len(study.cases) - len(todo))
        if not todo:
            return summary
        executor = (_DaskExecutor(study, scheduler, case_timeout) if scheduler is not None
                    else _LocalExecutor(study, workers, case_timeout))
        disable = None if progress is None else not progress
        bar = tqdm(total=len(study.cases), initial=summary.skipped, desc=study.name, unit="case", disable=disable,
                   smoothing=0.1)
        try:
            while todo or executor.running:
                while todo and executor.has_room():
                    executor.submit(*todo.popleft())
                for index, case, result in executor.collect(wait=0.5):
                    if result["status"] == "interrupted":
                        raise KeyboardInterrupt  # the case was stopped by Ctrl-C: nothing is stored for it
                    _write_row(connection, study, index, case, result)
                    setattr(summary, result["status"], getattr(summary, result["status"]) + 1)
                    bar.update(1)
                    bar.set_postfix(done=summary.skipped + summary.ran, failed=summary.error + summary.timeout,
                                    remaining=len(todo) + len(executor.running), refresh=False)
        finally:
            executor.close()
            bar.close()
        return summary
    finally:
        summary_time = time.perf_counter() - started
        connection.close()
        if summary is not None:
            summary.wall_s = summary_time


# --------------------------------------------------------------------------- warnings of a case
@contextlib.contextmanager
def recorded_warnings():
    """Record the ``UserWarning``s raised inside the block (inaccurate solutions, convergence, solver notes),
    each distinct one once, as ``(category, message)`` in the yielded list, filled when the block ends; other
    warnings pass on as usual. A case puts them in its row, so that no warning is lost in a worker.
    """
    recorded: list[tuple[type[Warning], str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield recorded
    for item in caught:
        if issubclass(item.category, UserWarning):
            entry = (item.category, str(item.message))
            if entry not in recorded:
                recorded.append(entry)
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


# --------------------------------------------------------------------------- the memory guard of a case
#: Outcome of a case that was not run, with the reason in its note: in particular one the memory guard refused
#: (``MemoryLimitError``, raised before anything was built), noted with the estimate (:func:`memory_guard_note`).
#: A skipped case is not a failure.
SKIPPED = "skipped"


def check_memory_budget(backend, budget: float | None, build: Callable[[], Any]) -> None:
    """``--memory-budget`` of a case: raise ``MemoryLimitError`` when ``budget`` (bytes) is set, ``backend``
    goes through CVXPY (it has ``estimated_memory``) and the estimated build memory of the subproblem
    ``build()`` returns exceeds the budget (or the available memory). Checked before CVXPY canonicalises
    anything; ``build`` is called only when there is something to check.
    """
    if budget is None or not hasattr(backend, "estimated_memory"):
        return
    from formulation._checks import check_memory

    subproblem = build()
    check_memory(backend.estimated_memory(subproblem),
                 f"{backend.name} through CVXPY on {type(subproblem).__name__} with {subproblem.size()} unknowns",
                 "skipped under --memory-budget (raise it, or run without --quick).", limit=budget)


def memory_guard_note(error: BaseException) -> str:
    """Why a case was :data:`SKIPPED`: ``memory guard: needs about X GiB by the estimate, above ...``."""
    needed, usable = getattr(error, "needed", None), getattr(error, "usable", None)
    if needed is None or usable is None:  # raised without its figures: the message says it
        return "memory guard: " + (str(error).splitlines() or [""])[0]
    return (f"memory guard: needs about {needed / 2**30:.3g} GiB by the estimate, above {error.against} "
            f"({usable / 2**30:.3g} GiB)")


# --------------------------------------------------------------------------- a trivial study
#: Figures of :func:`trivial_case`.
TRIVIAL_FIGURES = {"value": "REAL", "square": "REAL", "label": "TEXT", "elapsed_s": "REAL"}


def trivial_case(case: Case) -> dict:
    """A case that does almost nothing: for tests and for measuring the runner's own overhead.

    ``case.settings`` may hold ``sleep`` (seconds), ``raise`` (a message to raise
    ``RuntimeError`` with) or ``hang`` (true: sleep forever).
    """
    import numpy as np

    start = time.perf_counter()
    settings = case.settings
    if settings.get("raise"):
        raise RuntimeError(str(settings["raise"]))
    if settings.get("hang"):
        while True:
            time.sleep(0.05)
    if settings.get("sleep"):
        time.sleep(float(settings["sleep"]))
    value = float(np.random.default_rng(case.seed).normal())
    return {"value": value, "square": value * value, "label": f"{case.backend}-{case.seed}",
            "elapsed_s": time.perf_counter() - start}


def trivial_study(name: str, n_cases: int, *, settings: dict | None = None, extra: list[Case] | None = None) -> Study:
    """``n_cases`` cases of :func:`trivial_case` (seeds ``0..n_cases-1``) plus ``extra`` ones."""
    cases = [Case(problem={"kind": "trivial"}, backend="none", settings=dict(settings or {}), seed=seed)
             for seed in range(n_cases)]
    return Study(name, cases + list(extra or []), run="validation.runner:trivial_case", figures=TRIVIAL_FIGURES,
                 timing=("elapsed_s",))
