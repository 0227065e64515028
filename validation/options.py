"""Checks shared by the commands: option types for ``argparse`` and output paths.

Option types are declarative: ``parser.add_argument("--seed", type=options.seed)``. A bad value stops the
command at parse time with ``unrelu CMD: error: argument --seed: ...`` and exit code 2, before any work.

Output paths are checked before the work starts (:func:`output_file`, :func:`output_directory`): not a
folder where a file is wanted, parent folder created when missing, the folder writable. Outputs are then
written atomically (:func:`atomic_open`, :func:`save_figure`): a temporary file in the same folder renamed
over the target, so an interruption never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import errno
import json
import math
import os
import re
import secrets
import stat
import tempfile

import numpy as np

from formulation.results import ProblemError

__all__ = ["seed", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "scheduler_url",
           "check_scheduler", "output_file", "output_directory", "atomic_open", "save_figure", "json_text"]


# ====================================================================== option types
def _integer(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _at_least(parse, kind: str, minimum, strict: bool = False, note: str = ""):
    """An argparse type: ``parse(text)``, refused below ``minimum`` (or at it, with ``strict``)."""
    bound = f"{'>' if strict else '>='} {minimum}"

    def check(text: str):
        value = parse(text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {kind} {bound}{note}, got {text!r}")
        return value

    return check


def _at_most(parse, maximum, note: str = ""):
    """``parse`` refused above ``maximum``."""

    def check(text: str):
        value = parse(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}{note}, got {text!r}")
        return value

    return check


#: A seed of ``np.random.default_rng``: an integer ``>= 0`` that fits the stores' 64-bit integers.
seed = _at_most(_at_least(_integer, "an integer", 0, note=" (a seed of numpy's generator)"), 2**63 - 1,
                note=" (seeds are stored as 64-bit integers)")
positive_int = _at_least(_integer, "an integer", 1)
nonnegative_int = _at_least(_integer, "an integer", 0)
#: A finite number ``> 0`` (seconds, box sizes, tolerances).
positive_float = _at_least(_real, "a finite number", 0, strict=True)
nonnegative_float = _at_least(_real, "a finite number", 0)
def positive_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers ``>= 1`` (``--mnist-ms 25,50``)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, got {text!r}")
    return values


#: Seconds of a solver's time limit: ``> 0`` and at most a year (solvers refuse larger limits).
time_limit = _at_most(positive_float, 3.2e7, note=" s (a year; solvers refuse larger limits)")


def batch_size(text: str):
    """``--batch-size``: ``auto``, ``full`` (``None``) or a positive integer."""
    if text in ("auto", "full"):
        return None if text == "full" else text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'full' or an integer >= 1, got {text!r}") from None


#: ``scheme://host:port`` of a Dask scheduler.
_SCHEDULER = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://[^\s/:]+(:\d{1,5})?/?$")


def check_scheduler(text: str) -> str:
    """Raise ``ProblemError`` unless ``text`` looks like a scheduler address ``tcp://HOST:PORT``."""
    if not isinstance(text, str) or not _SCHEDULER.match(text):
        raise ProblemError(f"--scheduler {text!r} is not a scheduler address; give tcp://HOST:PORT "
                           "(e.g. tcp://127.0.0.1:8786).")
    return text


def scheduler_url(text: str) -> str:
    try:
        return check_scheduler(text)
    except ProblemError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ====================================================================== output paths
def _writable_folder(folder: str, option: str, path: str) -> None:
    """Create ``folder`` when missing and prove it writable by creating and removing a file in it."""
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ProblemError(f"{option} {path!r} cannot be written: {probe!r} is a file, not a folder.")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".unrelu-write-check-"):
            pass
    except OSError as exc:
        raise ProblemError(f"{option} {path!r} cannot be written: folder {folder!r} is not writable "
                           f"({exc.strerror or exc}); choose another path.") from exc


def output_file(path, option: str, *, suffix: str = "") -> str:
    """Check an output file path before any work; return it (with ``suffix`` appended when missing).

    Raises ``ProblemError`` when the path is a folder, a parent is a file, or the folder cannot be
    created or written. The folder is created when missing.
    """
    path = os.fspath(path)
    if not path:
        raise ProblemError(f"{option} got an empty path; give a file name.")
    if os.path.isdir(path) or path.endswith(os.sep):
        raise ProblemError(f"{option} {path!r} is a folder; give a file name inside it, "
                           f"e.g. {os.path.join(path, 'result' + (suffix or ''))!r}.")
    if suffix and not path.endswith(suffix):
        path += suffix
    if os.path.isdir(path):
        raise ProblemError(f"{option} {path!r} is a folder; give a file name.")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ProblemError(f"{option} {path!r} exists and is not a regular file; choose another path.")
    _writable_folder(os.path.dirname(os.path.abspath(path)), option, path)
    return path


def output_directory(path, option: str) -> str:
    """Check (and create) an output folder before any work; ``ProblemError`` when it is a file or read-only."""
    path = os.fspath(path)
    if not path:
        raise ProblemError(f"{option} got an empty path; give a folder name.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ProblemError(f"{option} {path!r} is a file; give a folder for the outputs.")
    _writable_folder(os.path.abspath(path), option, path)
    return path


def _new_file_beside(path: str) -> str:
    """Create an empty file ``.NAME.RANDOM.tmp`` next to ``path`` and return its path.

    It is created with mode 0o666 less the umask, applied by the system as for any ``open(path, "w")``
    (``tempfile.mkstemp`` would create it 0o600 whatever the umask).
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = os.path.join(folder, prefix + secrets.token_hex(6) + ".tmp")
        try:
            os.close(os.open(temporary, flags, 0o666))
            return temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name after 100 tries",  # pragma: no cover
                          os.path.join(folder, prefix + "*.tmp"))


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """Open a temporary file next to ``path``; on success rename it over ``path``, on failure remove it.

    The file ends with the permissions a plain ``open(path, mode)`` leaves: 0o666 less the umask for a new
    file, the permission bits of the file it replaces otherwise (writing over a file in place keeps them).
    """
    path = os.fspath(path)
    temporary = _new_file_beside(path)
    try:
        with open(temporary, mode, **kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileNotFoundError):
            replaced = os.stat(path)
            if stat.S_ISREG(replaced.st_mode):
                os.chmod(temporary, stat.S_IMODE(replaced.st_mode) & 0o777)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def save_figure(figure, path, **kwargs) -> None:
    """``figure.savefig`` written atomically (the format comes from ``path``'s extension)."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_open(path, "wb") as stream:
        figure.savefig(stream, format=extension, **kwargs)


def check_plot_options(args) -> None:
    """``--plot DIR`` checked (created if missing) before any work; ``--svg`` only together with it."""
    if getattr(args, "svg", False) and not args.plot:
        raise ProblemError("--svg writes an SVG beside each --plot figure; give --plot DIR as well.")
    if args.plot:
        args.plot = output_directory(args.plot, "--plot")


# ====================================================================== JSON outputs
def _json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN), arrays and numpy
    scalars as lists and numbers, enums as their values."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return _json_safe(value.tolist())
    if isinstance(value, enum.Enum):
        return _json_safe(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value, **kwargs) -> str:
    """Strict JSON of ``value`` (NaN and inf written as null), for every ``--json`` output."""
    return json.dumps(_json_safe(value), allow_nan=False, **kwargs)
