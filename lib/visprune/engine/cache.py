"""The run cache on disk: content fingerprints, chunk files, locks and atomic writes.

DESIGN.md section 4 ("per-sample records, cached on disk, resumable"). The evaluation engine
(``visprune.engine``) decides *what* a run computes; this module decides how its results are
identified and stored so that nothing computed is lost or served stale:

- **Identity by content.** A file's identity is the SHA-256 of its bytes. Hashing a 14 GB
  checkpoint takes about a minute, so digests are remembered in ``<results>/.file_digests.json``
  by (absolute path, size, modification time in ns): a file is re-hashed only when one of those
  changes, and a checkpoint retrained, fine-tuned or damaged in place gets a new fingerprint.
- **Chunks.** A run's records are stored in chunks of whole images, one JSON line per record,
  then a footer with the record count, the body's SHA-256 and the run key. A chunk whose footer
  does not match (partial, corrupt, edited, or copied in from another run) is redone.
- **Atomic writes.** Every file is written to a temporary file named after the writing process
  and a random token, flushed, fsync'ed and renamed over the target; a failure (a full disk, a
  read-only folder) removes the temporary file and raises :class:`CacheWriteError` naming the
  path.
- **Locks.** Each chunk has an advisory lock (``flock``) under ``<run>/.locks/``; a process
  computes a chunk only while holding its lock, so two processes on one run never compute the
  same chunk and never delete each other's temporary files (a temporary file of chunk i can only
  be stale when its lock is free). A killed process releases its locks with its file descriptors.
  Locks are POSIX advisory locks: they hold on local file systems and on NFS v4; a results folder
  shared between machines needs a file system that honours ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from visprune import _validation as v

import numpy as np

FOOTER_KEY = "__chunk_footer__"
DIGEST_CACHE = ".file_digests.json"

#: Files of a checkpoint directory that do not change what the model computes (documentation and
#: measurements written beside it); every other file is part of the model's fingerprint.
NON_MODEL_FILES = frozenset({"README.md", "card.json", "training_log.json", ".gitattributes"})


class CacheWriteError(OSError):
    """A cache file could not be written (full disk, read-only folder, ...); names the path."""


# ------------------------------------------------------------------------------ atomic writes


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically: a unique temporary file, fsync, then rename.

    Raises CacheWriteError naming ``path`` (and nothing partial is left) when writing fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        hint = "free some space" if err.errno == errno.ENOSPC else "check its permissions"
        raise CacheWriteError(
            err.errno, f"cannot write {path}: {err.strerror or err}; {hint} or choose another results folder"
        ) from None


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Delete leftover temporary files of ``folder/name`` (call only while holding its lock)."""
    for stale in Path(folder).glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def check_writable_dir(path: Path, what: str = "results folder") -> Path:
    """Make sure ``path`` is (or can become) a writable directory; raise ValueError naming it.

    Called before a run starts, so a bad ``--results`` fails before any model is loaded. The
    static checks are ``visprune._validation.output_folder``'s; this creates the folder and
    proves it writable with a probe file (permissions alone do not say so on every file system).
    """
    path = v.output_folder(Path(path).expanduser(), what)  # a file in the way, an unwritable parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{what}: {path} is not writable ({err.strerror or err}); choose another folder") from None
    return path


# ------------------------------------------------------------------------------ locks


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    Yields True once the lock is held; with ``blocking=False`` yields False at once when another
    process holds it. Released when the block ends or the process dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ content digests


class DigestCache:
    """SHA-256 of files, remembered on disk by (path, size, mtime_ns) so each is hashed once.

    ``DigestCache(folder)`` keeps its table in ``folder/.file_digests.json`` (written atomically
    under a lock; a damaged table is ignored and rebuilt). ``DigestCache(None)`` keeps it in
    memory only.
    """

    def __init__(self, folder: Path | None) -> None:
        self.path = Path(folder) / DIGEST_CACHE if folder is not None else None
        self._memory: dict[str, list] = {}

    def _load(self) -> dict[str, list]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            table = json.loads(self.path.read_text())
            return table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            return {}

    def digest(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        key = str(path)
        hit = self._memory.get(key)
        if hit is None:
            hit = self._load().get(key)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
            self._memory[key] = hit
            return hit[2]
        value = sha256_file(path)
        entry = [*stamp, value]
        self._memory[key] = entry
        if self.path is not None:
            with file_lock(self.path.with_name(DIGEST_CACHE + ".lock")):
                table = self._load()
                table[key] = entry
                write_atomic(self.path, json.dumps(table, sort_keys=True))
        return value


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: Path) -> None:
    """Raise ValueError naming ``path`` unless it is a structurally whole safetensors file.

    A safetensors file is an 8-byte little-endian header length n, a JSON header of n bytes
    mapping tensor names to ``data_offsets`` [begin, end) into the data that follows, and the
    data. A truncated, empty or overwritten file fails one of those checks (bytes flipped inside
    the tensor data do not; they change the file's digest, hence the run key, instead).
    """
    path = Path(path)
    size = path.stat().st_size
    problem = None
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                problem = "shorter than a safetensors header"
            else:
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 100 * 2**20:
                    problem = "its header length is larger than the file"
                else:
                    header = json.loads(handle.read(n))
                    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                    if 8 + n + max(ends, default=0) != size:
                        problem = f"its tensors need {8 + n + max(ends, default=0)} bytes, the file has {size} (truncated?)"
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        problem = "its header is not valid safetensors JSON"
    if problem:
        raise ValueError(f"model weights {path} are corrupt: {problem}. Restore the file from the original checkpoint")


def model_fingerprint(model_dir: Path, digests: DigestCache | None = None) -> dict:
    """Identity of a checkpoint by content: the SHA-256 of every file that defines the model.

    Every regular file of the directory is hashed (config, weights, tokenizer, processor and
    prompt-format files) except documentation and measurements (``NON_MODEL_FILES``, ``*.md``).
    Safetensors weights are checked for structural damage first (:func:`check_safetensors`), so a
    corrupt file is named before anything is loaded. The directory's name and location are not
    part of the identity: a copy of a checkpoint shares its cache.
    """
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"model checkpoint not found: {config} is missing. Point the profile's model at a "
            "llava-hf-layout directory (config.json, *.safetensors, tokenizer and processor files)."
        )
    digests = digests if digests is not None else DigestCache(None)
    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name not in NON_MODEL_FILES and p.suffix != ".md")
    for p in files:
        if p.suffix == ".safetensors":
            check_safetensors(p)
    try:
        return {"files": {p.name: digests.digest(p) for p in files}}
    except OSError as err:
        raise ValueError(f"model checkpoint {model_dir}: cannot read {err.filename or model_dir} ({err.strerror})") from None


# ------------------------------------------------------------------------------ chunk files


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a record")


def write_chunk(path: Path, records: list[dict], key: str | None = None) -> None:
    """Write one chunk atomically: a JSON line per record, then a footer (count, checksum, run key)."""
    body = "".join(json.dumps(r, default=_json_default, sort_keys=True) + "\n" for r in records)
    footer = {FOOTER_KEY: True, "n": len(records), "sha256": hashlib.sha256(body.encode()).hexdigest(), "key": key}
    write_atomic(path, body + json.dumps(footer, sort_keys=True) + "\n")


def read_chunk(path: Path, expected_ids: Sequence[str] | None = None, key: str | None = None) -> list[dict] | None:
    """The records of a chunk, or None if it is missing, corrupt, partial, of another run
    (``key`` given and different from the footer's) or not the expected samples."""
    try:
        lines = Path(path).read_text().splitlines(keepends=True)
        footer = json.loads(lines[-1])
        body = "".join(lines[:-1])
        if not footer.get(FOOTER_KEY) or hashlib.sha256(body.encode()).hexdigest() != footer["sha256"]:
            return None
        records = [json.loads(line) for line in lines[:-1]]
    except (OSError, ValueError, IndexError, KeyError, AttributeError):
        return None
    if len(records) != footer["n"]:
        return None
    if key is not None and footer.get("key") != key:
        return None
    if expected_ids is not None and [r.get("sample_id") for r in records] != list(expected_ids):
        return None
    return records
