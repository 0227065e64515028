"""Input validation at the boundary, with messages that name the array and the fix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from formulation.results import ProblemError


def as_float_array(name: str, value, *, ndim: int | None = None, allow_nonfinite: bool = False):
    """Return ``value`` as a float64 array, or raise ``ProblemError`` naming ``name``.

    Rejects non-numeric dtypes (strings, objects, complex), a wrong number of
    dimensions and, unless ``allow_nonfinite``, NaN or inf entries.
    """
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ProblemError(f"`{name}` could not be read as an array ({exc}); pass a numeric ndarray.") from exc
    if array.dtype == bool:
        array = array.astype(np.float64)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ProblemError(
            f"`{name}` has dtype {array.dtype}, which is not real-valued; convert it with "
            f"`np.asarray({name}, dtype=float)` after removing non-numeric entries."
        )
    if ndim is not None and array.ndim != ndim:
        raise ProblemError(
            f"`{name}` has {array.ndim} dimension(s) with shape {array.shape}, expected {ndim}"
            + (": samples are columns, so pass shape (features, N)." if ndim == 2 else ".")
        )
    array = np.ascontiguousarray(array, dtype=np.float64)
    if not allow_nonfinite and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))
        where = tuple(int(i) for i in bad[0])
        raise ProblemError(
            f"`{name}` has {len(bad)} NaN or inf entries (first at index {where}); "
            "remove or impute them before passing the array."
        )
    return array


def check_shape(name: str, array: np.ndarray, shape: Sequence[int | None], hint: str = "") -> None:
    """Raise ``ProblemError`` unless ``array.shape`` matches ``shape`` (``None`` = any)."""
    ok = array.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, array.shape))
    if not ok:
        wanted = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ProblemError(f"`{name}` has shape {array.shape}, expected {wanted}." + (f" {hint}" if hint else ""))


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ProblemError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_nonnegative(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"`{name}` must be a real number, got {value!r}.") from exc
    if not np.isfinite(number) or number < 0:
        raise ProblemError(f"`{name}` must be finite and nonnegative, got {value!r}.")
    return number


#: Largest total uncompressed size of an ``.npz`` that :func:`read_npz` loads (a small compressed file can
#: expand to many GiB: 762 KiB to 2.55 GiB was seen). The sizes come from the zip directory, before loading.
MAX_NPZ_BYTES = 2 * 2**30


def _npy_bytes(archive, member) -> int:
    """Bytes the array of an ``.npy`` member will take once loaded, from its header (shape x item size)."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in reader:
            raise ValueError(f"member {member.filename!r} has .npy format version {version}")
        shape, _, dtype = reader[version](stream)
    return int(np.prod(shape, dtype=np.float64) * dtype.itemsize)


def read_npz(path, what: str, fix: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, never unpickling; ``ProblemError`` naming ``what`` otherwise.

    ``fix`` ends the message of a missing or unreadable file (how to make a good one). ``max_bytes``
    caps the declared size (default :data:`MAX_NPZ_BYTES`; a caller that knows how large the file
    must be, such as a checkpoint of a given run, passes that).
    """
    limit = MAX_NPZ_BYTES if max_bytes is None else int(max_bytes)
    import os
    import zipfile

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ProblemError(f"{what} {path!r} does not exist; {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            others = [member.filename for member in members if not member.filename.endswith(".npy")]
            if others:
                raise ProblemError(f"{what} {path!r} holds members that are not .npy arrays "
                                   f"({', '.join(others[:5])}); {fix}")
            declared = sum(_npy_bytes(archive, member) for member in members)
        if declared > limit:
            raise ProblemError(f"{what} {path!r} expands to {declared / 2**30:.2f} GiB when loaded (shapes in its "
                               f"members' headers), above the limit of {limit / 2**30:.2f} GiB; load a smaller "
                               f"file or raise formulation._checks.MAX_NPZ_BYTES.")
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ProblemError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ProblemError(f"{what} {path!r} is not a readable .npz archive without pickles ({exc}); {fix}") from exc


#: Magnitudes inside which squares and sums of squares of data stay in float64's normal range
#: (1e100² = 1e200 < 1.8e308 with room for sums over 1e100 samples; 1e-100² = 1e-200 > 2.2e-308).
DATA_SCALE_RANGE = (1e-100, 1e100)


def check_data_scale(name: str, array: np.ndarray, *, source: str = "") -> None:
    """Raise ``ProblemError`` when ``array`` (samples are columns) cannot be standardised safely in float64.

    Refused: entries beyond ``1e100`` in magnitude, a non-finite mean or standard deviation, or data that is
    not all zero but has no entry above ``1e-100`` in magnitude. The message names the rescaling to apply.
    """
    where = f" in {source!r}" if source else ""
    if array.size == 0:
        return
    largest = float(np.max(np.abs(array)))
    low, high = DATA_SCALE_RANGE
    if not np.isfinite(largest) or largest > high:
        raise ProblemError(f"`{name}`{where} has entries up to {largest:.3g}, beyond {high:.0e}: squares overflow "
                           f"float64. Rescale it first, e.g. divide by {largest:.3g}.")
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        spread = np.std(array, axis=1) if array.ndim == 2 else np.std(array)
        mean = np.mean(array, axis=1) if array.ndim == 2 else np.mean(array)
    if not (np.all(np.isfinite(spread)) and np.all(np.isfinite(mean))):
        raise ProblemError(f"`{name}`{where} has a non-finite mean or standard deviation; rescale it to values "
                           "of order 1.")
    if 0 < largest < low:
        raise ProblemError(f"`{name}`{where} has entries of at most {largest:.3g}, below {low:.0e}: their squares "
                           f"underflow float64. Rescale it first, e.g. multiply by {1 / largest:.3g}.")


def check_checkpoint(path, meta: dict, arrays: dict, expected: dict) -> None:
    """Refuse a damaged checkpoint before any of it is used; ``ProblemError`` naming the entry and the fix.

    Parameters
    ----------
    path : str
        The checkpoint file (for the message).
    meta : dict
        Its metadata: ``rho_abs`` must be a finite number > 0, ``depth`` an integer >= 1, ``history`` a list
        of dicts and ``loop`` a dict whose ``iteration`` is an integer >= 0.
    arrays : dict of str to ndarray
        Its arrays, metadata entry removed.
    expected : dict of str to tuple
        Array key -> shape the run needs (e.g. ``{f"{name}_{index}": array.shape for name, index, array in
        state.arrays()}`` of a fresh state): every key present with that shape and finite entries, no other key.
    """
    fix = "delete it (or pass another --checkpoint path) to start afresh"

    def refuse(problem: str):
        raise ProblemError(f"Checkpoint {str(path)!r} is damaged: {problem}; {fix}.")

    rho = meta.get("rho_abs")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not np.isfinite(rho) or rho <= 0:
        refuse(f"its penalty rho_abs is {rho!r}, not a finite number > 0")
    depth = meta.get("depth")
    layers = sum(1 for key in expected if key.startswith("W_"))
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1 or (layers and depth != layers):
        refuse(f"its depth is {depth!r}, not the network's {layers} layers" if layers else
               f"its depth is {depth!r}, not an integer >= 1")
    history = meta.get("history")
    columns = {"iteration", "objective", "train_loss", "violation", "kkt", "rho", "seconds"}
    if (not isinstance(history, list) or not history
            or not all(isinstance(row, dict) and columns <= set(row) for row in history)):
        refuse(f"its history is not a list of rows with the columns {sorted(columns)}")
    loop = meta.get("loop")
    iteration = loop.get("iteration") if isinstance(loop, dict) else None
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        refuse(f"its loop state {loop!r} has no iteration count >= 0")
    if history[-1]["iteration"] != iteration:
        refuse(f"its loop is at iteration {iteration} but its history ends at iteration {history[-1]['iteration']}")
    if meta.get("dtype", "float64") not in ("float32", "float64"):
        refuse(f"its dtype is {meta.get('dtype')!r}, not float32 or float64")
    missing = sorted(set(expected) - set(arrays))
    if missing:
        refuse(f"arrays {missing[:5]} are missing")
    unknown = sorted(set(arrays) - set(expected))
    if unknown:
        refuse(f"arrays {unknown[:5]} do not belong to this network")
    for key, shape in expected.items():
        array = np.asarray(arrays[key])
        if array.shape != tuple(shape):
            refuse(f"array {key!r} has shape {array.shape}, this network needs {tuple(shape)}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            refuse(f"array {key!r} has dtype {array.dtype}, not real numbers")
        if not np.all(np.isfinite(array)):
            refuse(f"array {key!r} has NaN or inf entries")


# ====================================================================== memory
#: Share of the available memory a single piece of work may plan to use: the rest is headroom for the
#: estimate's error, the interpreter and other processes.
MEMORY_SHARE = 0.8


def available_memory() -> int:
    """Bytes this process can still allocate: ``MemAvailable`` of ``/proc/meminfo``, capped by a cgroup (v2)
    memory limit when one is set; physical memory where neither can be read."""
    import os

    candidates = []
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as stream:
            limit = stream.read().strip()
        with open("/sys/fs/cgroup/memory.current") as stream:
            current = int(stream.read().strip())
        if limit.isdigit():
            candidates.append(max(int(limit) - current, 0))
    except (OSError, ValueError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (OSError, ValueError, AttributeError):  # no sysconf: nothing is known, nothing is refused
            return 2**62
    return min(candidates)


def check_memory(needed: float, what: str, fix: str, *, limit: float | None = None) -> None:
    """Raise ``MemoryLimitError`` when ``needed`` bytes exceed ``MEMORY_SHARE`` of the available memory, or
    ``limit`` when given (a budget the caller set). ``what`` names the work, ``fix`` the smaller setting."""
    from formulation.results import MemoryLimitError

    available = available_memory()
    usable = MEMORY_SHARE * available
    source = f"{MEMORY_SHARE:.0%} of the {available / 2**30:.3g} GiB available"
    if limit is not None and limit < usable:
        usable, source = float(limit), "the memory budget"
    if needed > usable:
        error = MemoryLimitError(f"{what} would need about {needed / 2**30:.3g} GiB (estimated before allocating "
                                 f"it), above {source} ({usable / 2**30:.3g} GiB); {fix}")
        error.needed, error.usable, error.against = float(needed), float(usable), source
        raise error


#: Bytes of the interpreter and the numerical libraries of a training run, before any array (measured:
#: 140 MB peak RSS after importing the trainer).
TRAINING_BASE_BYTES = 150 * 2**20
#: Arrays of ``n_l x (N + N_val)`` alive at the peak of a training run, per mode, fitted with margin to the peak
#: RSS of ``unrelu train --iters 2``: restarted mode, float32, 12 to 14 arrays (hidden 1,000 on N = 2,000 + 1,000
#: validation: 270 MB; hidden 64,64 and 256 on N = 50,000: 469 and 876 MB); exact mode, float64, about 7 (hidden
#: 2,000: 629 MB). With the terms below the estimate is 1.13-1.6 times these peaks.
TRAINING_ARRAYS = {"restarted": 16, "exact": 10}
#: ``(n + 1) x (n + 1)`` float64 matrices per layer input width ``n`` (Gram of the weight block, the
#: post-activation block's ``(I + WᵀW)^{-1}``, their factors and an identity).
TRAINING_SQUARES = 5


def training_memory(widths: Sequence[int], N: int, N_val: int = 0, *, itemsize: int = 4,
                    mode: str = "restarted") -> float:
    """Estimated peak bytes of an AL training run on ``widths = (n0, n1, ..., nL)`` with ``N`` training and
    ``N_val`` validation samples, state of ``itemsize`` bytes per entry (4: float32, 8: float64)."""
    widths = [int(width) for width in widths]
    samples = float(N) + float(N_val)
    state = TRAINING_ARRAYS.get(mode, max(TRAINING_ARRAYS.values())) * itemsize * sum(widths[1:]) * samples
    squares = TRAINING_SQUARES * 8.0 * sum((width + 1.0) ** 2 for width in widths[:-1])
    data = 3 * 8.0 * (widths[0] + widths[-1]) * samples
    return TRAINING_BASE_BYTES + state + squares + data


def check_training_memory(widths: Sequence[int], N: int, N_val: int = 0, *, itemsize: int = 4,
                          mode: str = "restarted", limit: float | None = None) -> float:
    """Refuse (``MemoryLimitError``) a training run whose :func:`training_memory` does not fit, naming the
    hidden widths that do; returns the estimate."""
    widths = [int(width) for width in widths]
    needed = training_memory(widths, N, N_val, itemsize=itemsize, mode=mode)

    def scaled(factor: float) -> list[int]:
        return [widths[0], *(max(1, int(width * factor)) for width in widths[1:-1]), widths[-1]]

    usable = MEMORY_SHARE * available_memory() if limit is None else min(limit, MEMORY_SHARE * available_memory())
    if needed <= usable:
        return needed
    low, high = 0.0, 1.0  # the largest common factor of the hidden widths that fits
    for _ in range(40):
        middle = (low + high) / 2
        if training_memory(scaled(middle), N, N_val, itemsize=itemsize, mode=mode) <= usable:
            low = middle
        else:
            high = middle
    smaller = scaled(low)[1:-1]
    if training_memory(scaled(low), N, N_val, itemsize=itemsize, mode=mode) <= usable and min(smaller) >= 1:
        fix = (f"use --hidden {','.join(map(str, smaller))} (or fewer samples"
               + (", or --dtype float32" if itemsize == 8 else "") + ").")
    else:
        fix = "use fewer samples: the data alone do not fit."
    check_memory(needed, f"Training a {'-'.join(map(str, widths))} network on {N} samples"
                 + (f" (+{N_val} validation)" if N_val else ""), fix, limit=limit)
    return needed
