"""Writing a rendered toy world into its folder without touching files it did not write.

DESIGN.md sections 2 and 3 (generated files go under ``data/``; the user's files are never
touched): :func:`sync_world` writes only the generator's missing or different files (each
atomically, through :func:`visprune.datasets.samples.write_atomically`), hard-links the
ScienceQA images to the same images under ``images/``, removes files of an earlier world that
the new one lacks, and refuses, before writing anything, to replace a file that is not the
generator's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from visprune.datasets.samples import write_atomically

_INCOMPLETE = "the toy world is left marked incomplete: fix this and rerun to complete it"


def json_bytes(obj) -> bytes:
    """The bytes of one of the world's JSON files (compact, UTF-8, one final newline)."""
    return (json.dumps(obj, indent=None, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def sync_world(root: Path, manifest_path: Path, files: dict[str, bytes], links: dict[str, str], manifest: dict,
               owned: set[str]) -> None:
    """Make the folder ``root`` hold the rendered world, touching only the generator's files.

    ``files`` maps relative path -> content, ``links`` relative path -> the relative path of the
    file with the same content (hard-linked), ``owned`` the files the earlier manifest lists.
    First every path is checked and nothing is written if one is the user's (see
    :func:`visprune.toyworld.world.generate_toyworld`). Then the manifest is marked incomplete, the missing and
    different files are written (each atomically), files of the earlier world that the new one
    lacks are removed, and the complete manifest is written last.
    """
    wanted = {**files, **{rel: files[src] for rel, src in links.items()}}
    to_write: list[str] = []
    conflicts: list[str] = []
    parent_ok: dict[Path, bool] = {}
    for rel in sorted(wanted):
        target = root / rel
        blocker = _file_in_the_way(root, target.parent, parent_ok)
        if blocker is not None:
            conflicts.append(f"{blocker} is a file where the toy world needs a folder")
        elif target.is_dir():
            conflicts.append(f"{target} is a folder where the toy world writes a file")
        elif not target.exists():
            to_write.append(rel)
        elif not _same_content(target, wanted[rel]):
            if rel in owned:
                to_write.append(rel)  # the generator's own file, damaged or from other parameters
            else:
                conflicts.append(f"{target} is not listed in the toy world's manifest and differs from the file "
                                 "the generator writes there")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ValueError(f"out: refusing to overwrite what the toy world did not write: {conflicts[0]}{more}; "
                         "move it away and rerun")
    to_remove = sorted(rel for rel in owned - set(wanted) if (root / rel).is_file())
    final = json_bytes(manifest)
    if not to_write and not to_remove and manifest_path.is_file() and _same_content(manifest_path, final):
        return

    pending = dict(manifest, complete=False, files=sorted(set(manifest["files"]) | owned))
    _write_file(manifest_path, json_bytes(pending))  # from here on the world is "incomplete"
    for rel in to_write:
        if rel not in links:
            _write_file(root / rel, wanted[rel])
    for rel in to_write:
        if rel in links:
            _link_file(root / links[rel], root / rel, wanted[rel])
    for rel in to_remove:
        _remove_file(root, root / rel)
    _write_file(manifest_path, final)


def _file_in_the_way(root: Path, folder: Path, cache: dict[Path, bool]) -> Path | None:
    """The first existing non-folder among ``folder`` and its parents below ``root``, if any."""
    chain = []
    probe = folder
    while probe != root and root in probe.parents:
        chain.append(probe)
        probe = probe.parent
    for d in reversed(chain):  # from the root down
        if d not in cache:
            cache[d] = not (d.exists() and not d.is_dir())
        if not cache[d]:
            return d
    return None


def _same_content(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _write_file(target: Path, data: bytes) -> None:
    """Write one of the world's files atomically; an ``OSError`` names it and says the world is
    left marked incomplete."""
    write_atomically(target, data, hint=_INCOMPLETE)


def _link_file(src: Path, target: Path, data: bytes) -> None:
    """``target`` as a hard link to ``src`` (written as a copy of ``data`` where links are not
    possible), put in place by a rename like :func:`_write_file`."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            tmp.unlink(missing_ok=True)
            tmp.write_bytes(data)
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"cannot write {target} ({err.strerror or err}); {_INCOMPLETE}") from err
        raise


def _remove_file(root: Path, path: Path) -> None:
    """Remove one of the generator's files, then its folders if that left them empty."""
    path.unlink(missing_ok=True)
    folder = path.parent
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            break
        folder = folder.parent
