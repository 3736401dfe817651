"""Input checks shared by the metric functions and the command lines (private helpers).

- Array checks (``visprune.metrics``): every check converts NumPy arrays, torch tensors (any
  device) and nested lists to NumPy and raises a ``ValueError`` whose message starts with the
  argument's name and says what was wrong and what to pass instead. Booleans are never class
  indices (STYLE.md, "bad input").
- Command-line helpers (``python -m visprune.toyworld``, ``python -m visprune.datasets``, ``python -m visprune.toymodel``): an
  argparse parser whose errors are one line, option types that check ranges, output and input
  path checks that name the option and the path, and :func:`run_command`, which turns every
  error into one line on stderr (exit status 2; 130 for Ctrl-C; never a traceback).

This module imports only NumPy (torch tensors are recognised once torch is imported), so the
command lines start fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _torch():
    """The torch module if it has been imported (a tensor cannot exist before that), else None."""
    return sys.modules.get("torch")

# Rows of a probability matrix may miss 1 by this much (float32 softmax, then renormalised).
ROW_SUM_TOL = 1e-4
# Entries may leave [0, 1] by this much (float32 rounding); such entries are clipped.
RANGE_TOL = 1e-6


def is_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def holds_bool(x: Any) -> bool:
    """Whether ``x`` is or holds booleans: a bool array or tensor, or a (nested) list with a bool.

    ``np.asarray([True, 2])`` is an int array, so lists are inspected element by element.
    """
    if isinstance(x, (bool, np.bool_)):
        return True
    if is_tensor(x):
        return x.dtype == _torch().bool
    if isinstance(x, np.ndarray):
        return x.dtype == bool
    if isinstance(x, (list, tuple)):
        return any(holds_bool(e) for e in x)
    return False


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array without changing its dtype (torch tensors: detached, moved to CPU)."""
    if is_tensor(x):
        torch = _torch()
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
            t = t.float()
        return t.numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists and the like
        raise ValueError(f"{name}: could not be read as an array ({err}); pass a NumPy array or torch tensor") from err
    return arr


def numeric_array(x: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """A non-empty, finite, real-valued array with ``ndim`` dimensions (dtype kept)."""
    arr = to_numpy(x, name)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: must be {want}, got shape {tuple(arr.shape)}")
    if arr.size == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(arr.shape)}); need at least one sample")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); all values must be finite")
    return arr


def probability_matrix(probs: Any, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """Check an (n, C) probability matrix; return (float64 copy, copy in the input's float precision).

    Each row is one sample's distribution over its answer set: entries in [0, 1] and rows summing
    to 1 within ``ROW_SUM_TOL`` (or ``C`` machine epsilons of the input's precision, if larger:
    float16 rows may miss 1 by ~1e-3). The second array keeps float16/float32 inputs in their own
    precision so that bin edges can be compared in that precision (see ``bin_index``).
    Booleans are rejected (a one-hot bool matrix is labels, not probabilities).
    """
    if holds_bool(probs):
        raise ValueError(f"{name}: must hold probabilities (floats), got booleans; pass the probability of each answer")
    arr = numeric_array(probs, name, 2)
    n, c = arr.shape
    if c < 2:
        raise ValueError(
            f"{name}: must have one column per answer (at least 2), got shape {(n, c)}; "
            "for a binary task with p = P(class 1) pass np.stack([1 - p, p], axis=1)"
        )
    native = arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)
    p = native.astype(np.float64)
    eps = float(np.finfo(native.dtype).eps)  # float16 inputs get a looser tolerance than float32
    range_tol, sum_tol = max(RANGE_TOL, eps), max(ROW_SUM_TOL, c * eps)
    low, high = p.min(), p.max()
    if low < -range_tol or high > 1 + range_tol:
        raise ValueError(
            f"{name}: probabilities must lie in [0, 1], got values from {low:.6g} to {high:.6g}; "
            "pass probabilities (e.g. softmax over the answer set), not logits"
        )
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > sum_tol:
        raise ValueError(
            f"{name}: each row must sum to 1 (within {sum_tol:g}); row {worst} sums to {sums[worst]:.6g}. "
            "Renormalise the probabilities over the answer set"
        )
    p = np.clip(p, 0.0, 1.0)
    native = np.clip(native, native.dtype.type(0), native.dtype.type(1))
    return p, native


def integer_vector(x: Any, name: str, n_classes: int | None = None) -> np.ndarray:
    """A 1-D array of non-negative integer class indices (below ``n_classes`` when given), as int64.

    Booleans are rejected, in arrays, tensors and lists alike (``True`` is not the class 1).
    """
    if holds_bool(x):
        raise ValueError(f"{name}: must hold integer class indices, got booleans; pass ints (e.g. 0 and 1), not True/False")
    arr = numeric_array(x, name, 1)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: must hold integer class indices, got non-integer values such as {float(arr[arr != np.round(arr)][0])}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or (n_classes is not None and arr.max() >= n_classes):
        upper = f"{n_classes - 1}" if n_classes is not None else "infinity"
        raise ValueError(
            f"{name}: class indices must lie in 0..{upper}, got values from {arr.min()} to {arr.max()}"
        )
    return arr


def binary_vector(x: Any, name: str) -> np.ndarray:
    """A 1-D array of 0/1 (or bool) values, as float64."""
    arr = numeric_array(x, name, 1).astype(np.float64)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name}: must hold 0/1 (or True/False) values, got e.g. {float(arr[(arr != 0) & (arr != 1)][0])}")
    return arr


def real_vector(x: Any, name: str) -> np.ndarray:
    """A 1-D array of finite real numbers, as float64."""
    return numeric_array(x, name, 1).astype(np.float64)


def same_length(**arrays: np.ndarray) -> int:
    """Check that all arrays have the same first dimension; return it."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{' and '.join(lengths)}: must have one entry per sample, but {described}")
    return next(iter(lengths.values()))


def positive_int(x: Any, name: str, minimum: int = 1) -> int:
    """An int >= ``minimum`` (bools and non-integral numbers are rejected)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {x!r}")
    if x < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {x}")
    return int(x)


# --------------------------------------------------------------------------- command lines
#
# ``python -m visprune.toyworld``, ``visprune.datasets`` and ``visprune.toymodel`` share these: every bad input
# gives ONE line on stderr that names the option or the file, and exit status 2; Ctrl-C gives
# one line and 130; no traceback reaches the user (STYLE.md, "bad input").


def one_line(text: Any) -> str:
    """``text`` with every run of whitespace (newlines included) replaced by one space."""
    return " ".join(str(text).split())


def error_line(err: BaseException) -> str:
    """The message of ``err`` on one line; an ``OSError`` as "what went wrong: path"."""
    if isinstance(err, OSError) and err.strerror:
        where = [str(f) for f in (err.filename, err.filename2) if f is not None]
        return one_line(err.strerror + (": " + " -> ".join(where) if where else ""))
    return one_line(err)


class CommandLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line on stderr (exit status 2).

    ``add_subparsers`` makes its sub-command parsers of this class too.
    """

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def int_option(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a decimal integer (not "1.5", not "True") in [minimum, maximum]."""
    want = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def integer(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    return integer


def float_option(low: float, high: float, *, high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [low, high] (or [low, high) with ``high_open``)."""
    want = f"a number in [{low:g}, {high:g}{')' if high_open else ']'}"

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    return number


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def output_folder(path: str | os.PathLike, name: str) -> Path:
    """``path`` as a Path if it is a folder, or can be made one, that we may write into.

    ValueError naming ``name`` and the path when ``path`` is a file, when a parent of it is a
    file, or when the nearest existing folder is not writable. Nothing is created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} is a file, not a folder; pass a folder")
    probe = _nearest_existing(path)
    if not probe.is_dir():
        raise ValueError(f"{name}: cannot make the folder {path}, because {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the folder {probe} is not writable; pass a folder you can write to")
    return path


def output_file(path: str | os.PathLike, name: str) -> Path:
    """``path`` as a Path if a file may be written there (ValueError naming ``name`` if not)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder, not a file; pass a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name}: the file {path} is not writable")
    probe = _nearest_existing(path.parent)
    if not probe.is_dir():
        raise ValueError(f"{name}: cannot write {path}, because {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the folder {probe} is not writable; pass a file in a folder you can write to")
    return path


def input_file(path: str | os.PathLike, name: str, what: str) -> Path:
    """``path`` as a Path if it is a file; FileNotFoundError naming ``name``, ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        kind = "is a folder, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"{name}: {what} {kind}: {path}")
    return path


def input_folder(path: str | os.PathLike, name: str, what: str) -> Path:
    """``path`` as a Path if it is a folder; FileNotFoundError naming ``name``, ``what`` and the path."""
    path = Path(path)
    if not path.is_dir():
        kind = "is a file, not a folder" if path.exists() else "not found"
        raise FileNotFoundError(f"{name}: {what} {kind}: {path}")
    return path


def run_command(prog: str, body: Callable[[], int], *, on_interrupt: str = "start again") -> int:
    """Run a command line's ``body`` and turn every error into one line on stderr.

    - ``ValueError`` and ``OSError`` (bad input, missing files, a full disk): "PROG: error:
      MESSAGE", exit status 2. The code that finds the problem raises it with a message that
      names the option or the file.
    - ``KeyboardInterrupt`` (Ctrl-C): "interrupted; rerun the same command to ON_INTERRUPT",
      exit status 130 (``on_interrupt`` is "resume" where a rerun continues the work).
    - anything else (a bug): one line with the exception, exit status 1; set the environment
      variable ``VISPRUNE_DEBUG=1`` to get the traceback instead.

    argparse's usage errors (``CommandLineParser``) exit with status 2 by themselves.
    """
    try:
        return body()
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to {on_interrupt}", file=sys.stderr, flush=True)
        return 130
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # a bug: still no traceback unless asked for
        if os.environ.get("VISPRUNE_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(err).__name__}: {error_line(err)} "
              "(set VISPRUNE_DEBUG=1 to see the traceback)", file=sys.stderr, flush=True)
        return 1
