"""The run cache's file mechanics: content digests, safetensors checks, chunk keys, atomic writes, locks."""

from __future__ import annotations

import errno
import os
import struct
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from visprune.engine import cache as runcache


def _weights(path, seed=0):
    gen = torch.Generator().manual_seed(seed)
    save_file({"a": torch.randn(8, 8, generator=gen), "b": torch.randn(3, generator=gen)}, str(path))


def test_digest_is_content_and_remembered(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    cache = runcache.DigestCache(tmp_path)
    import hashlib

    assert cache.digest(f) == hashlib.sha256(b"abc").hexdigest()
    assert (tmp_path / runcache.DIGEST_CACHE).is_file()
    calls = []
    real = runcache.sha256_file
    monkeypatch.setattr(runcache, "sha256_file", lambda p: calls.append(p) or real(p))
    assert runcache.DigestCache(tmp_path).digest(f) == hashlib.sha256(b"abc").hexdigest()
    assert calls == []  # a second process reads the remembered digest: the file is hashed once
    # same size, new content, new modification time: hashed again
    f.write_bytes(b"abd")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert runcache.DigestCache(tmp_path).digest(f) == hashlib.sha256(b"abd").hexdigest()
    assert len(calls) == 1
    (tmp_path / runcache.DIGEST_CACHE).write_text("{not json")  # a damaged table is rebuilt
    assert runcache.DigestCache(tmp_path).digest(f) == hashlib.sha256(b"abd").hexdigest()


def test_model_fingerprint_follows_the_bytes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    _weights(tmp_path / "model.safetensors")
    (tmp_path / "README.md").write_text("card")
    first = runcache.model_fingerprint(tmp_path)
    assert set(first["files"]) == {"config.json", "model.safetensors"}  # documentation is not identity
    (tmp_path / "README.md").write_text("a new card")
    assert runcache.model_fingerprint(tmp_path) == first
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor: same size, same header
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    load_file(str(tmp_path / "model.safetensors"))  # still a loadable file ...
    assert runcache.model_fingerprint(tmp_path) != first  # ... but another model


@pytest.mark.parametrize("damage", ["truncate", "empty", "header", "garbage"])
def test_corrupt_safetensors_is_named(tmp_path, damage):
    path = tmp_path / "model-00001-of-00002.safetensors"
    _weights(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-7])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "header":
        n = struct.unpack("<Q", data[:8])[0]
        path.write_bytes(data[:8] + b"{" * n + data[8 + n:])
    else:
        path.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    with pytest.raises(ValueError, match="model-00001-of-00002.safetensors.*corrupt"):
        runcache.check_safetensors(path)


def test_whole_safetensors_passes(tmp_path):
    _weights(tmp_path / "m.safetensors")
    runcache.check_safetensors(tmp_path / "m.safetensors")


def test_chunk_of_another_run_is_rejected(tmp_path):
    path = tmp_path / "chunk-00000.jsonl"
    records = [{"sample_id": "a", "x": np.float32(0.5)}, {"sample_id": "b", "x": 1}]
    runcache.write_chunk(path, records, key="k1")
    assert [r["sample_id"] for r in runcache.read_chunk(path, ["a", "b"], key="k1")] == ["a", "b"]
    assert runcache.read_chunk(path, ["a", "b"], key="k2") is None  # copied in from another run
    assert runcache.read_chunk(path, ["a", "c"], key="k1") is None  # other samples
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[1] + lines[0] + lines[2])  # reordered body: checksum fails
    assert runcache.read_chunk(path, key="k1") is None


def test_failed_write_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "chunk-00003.jsonl"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runcache.os, "fsync", full)
    with pytest.raises(runcache.CacheWriteError, match="chunk-00003.jsonl.*No space left.*free some space"):
        runcache.write_atomic(target, "data")
    assert list(tmp_path.iterdir()) == []  # no temporary file, no partial chunk


def test_writable_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        runcache.check_writable_dir(tmp_path / "file")
    assert runcache.check_writable_dir(tmp_path / "new" / "deeper").is_dir()
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"):
                runcache.check_writable_dir(ro)
        finally:
            ro.chmod(0o700)


def test_lock_excludes_and_is_released(tmp_path):
    lock = tmp_path / ".locks" / "chunk.lock"
    order = []
    with runcache.file_lock(lock) as held:
        assert held
        with runcache.file_lock(lock, blocking=False) as other:  # another open file: excluded
            assert other is False

        def waiter():
            with runcache.file_lock(lock):
                order.append("waiter")

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.2)
        order.append("holder")
    t.join(5)
    assert order == ["holder", "waiter"]
    with runcache.file_lock(lock, blocking=False) as again:
        assert again


def test_stale_temporaries_only_of_that_file(tmp_path):
    (tmp_path / ".chunk-00001.jsonl.11.ab.tmp").write_text("stale")
    (tmp_path / ".chunk-00002.jsonl.12.cd.tmp").write_text("another chunk's, maybe live")
    runcache.remove_stale_temporaries(tmp_path, "chunk-00001.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".chunk-00002.jsonl.12.cd.tmp"]
