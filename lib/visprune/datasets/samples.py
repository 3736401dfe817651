"""The sample every data set yields, and the careful file reading and writing the readers share.

DESIGN.md section 4: a dataset reader turns files into *samples* (image, prompt, answer set,
label); the evaluation engine runs each sample through the model and records the result.
A :class:`Sample` holds the image *path* and opens the image only when asked
(:meth:`Sample.load_image`), so a reader over thousands of questions is cheap.

The helpers here give every reader the same error messages (STYLE.md, "errors name the thing
that was wrong and what to do"):

- a missing file names the path, what belongs there and where the official files come from
  (:func:`require_file`, :func:`require_dir`);
- a malformed JSON file or JSON line names the file and the line (:func:`read_json`,
  :func:`read_json_lines`);
- a missing field names the field and where it was expected (:func:`require_field`);
- an unreadable image names the file (:class:`ImageLoadError`);
- a file is written whole or not at all (:func:`write_atomically`), and a failed write names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from PIL import Image, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One evaluation item (DESIGN.md section 4).

    - ``sample_id``: unique within its data set (POPE: the question_id; ScienceQA: the pid;
      captioning: the COCO image id), as a string.
    - ``image_id``: groups samples about the same image, so the engine can reuse the vision
      tower's work (POPE: the image file name; ScienceQA: the pid; captioning: the image id).
    - ``image_path``: where the image is; opened only by :meth:`load_image` (``None`` only for
      ScienceQA problems without an image, read with ``img_only=False``).
    - ``prompt``: the user question, ready for ``PromptFormat.conversation`` (:mod:`visprune.instrument.prompts`).
    - ``answers``: the answer set, ``("yes", "no")``, ``("A", "B", ...)``, or ``()`` for captions.
    - ``label``: index of the correct answer in ``answers`` (``None`` for captions).
    - ``meta``: JSON-serialisable extras the chapters use (split, n_objects, scene, task, ...).
    """

    sample_id: str
    image_id: str
    image_path: Path
    prompt: str
    answers: tuple[str, ...]
    label: int | None
    meta: dict = field(default_factory=dict, hash=False, compare=True)

    def load_image(self) -> Image.Image:
        """The image as an RGB ``PIL.Image``; raises :class:`ImageLoadError` naming the file."""
        if self.image_path is None:
            raise ImageLoadError(f"sample {self.sample_id!r} has no image (a problem without an image)")
        return load_rgb(self.image_path)

    @property
    def answer(self) -> str | None:
        """The correct answer as text (``answers[label]``), or ``None`` for captions."""
        return None if self.label is None else self.answers[self.label]


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB image, fully decoded; :class:`ImageLoadError` names the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image file {path}: {err}") from err


# --------------------------------------------------------------------------- files and errors


def write_atomically(path: str | os.PathLike, data: bytes | str, hint: str | None = None) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through a temporary file and a rename.

    The file is either the old one or the complete new one, never half written, even when the
    process is killed; the temporary file ``.{name}.tmp-{pid}`` sits beside the target. An
    ``OSError`` (a full disk) names the path, ends with ``hint`` (default: "{path} was left as
    it was") and leaves no temporary file behind. Missing parent folders are made.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            hint = f"{path} was left as it was" if hint is None else hint
            raise OSError(err.errno, f"cannot write {path} ({err.strerror or err}); {hint}") from err
        raise
    return path


def require_file(path: str | os.PathLike, what: str, where: str = "") -> Path:
    """``path`` as a Path if it is a file; otherwise FileNotFoundError naming it.

    ``what`` says what belongs there ("POPE question file (JSON lines ...)"), ``where`` where
    the official files come from; both go into the message.
    """
    path = Path(path)
    if not path.is_file():
        hint = f" {where}" if where else ""
        kind = "is a folder, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"{what} {kind}: {path}.{hint}")
    return path


def require_dir(path: str | os.PathLike, what: str, where: str = "") -> Path:
    """``path`` as a Path if it is a folder; otherwise FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_dir():
        hint = f" {where}" if where else ""
        kind = "is a file, not a folder" if path.is_file() else "not found"
        raise FileNotFoundError(f"{what} {kind}: {path}.{hint}")
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {err.start}); expected JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
        ) from err


def read_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file.

    A line that is not a JSON object raises ValueError naming the file and the line number.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}, line {lineno}: not UTF-8 text; expected one JSON object per line") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(obj, dict):
                raise ValueError(
                    f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def require_field(obj: Mapping, name: str, where: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """``obj[name]``; ValueError naming the field and ``where`` (file and line or entry) if absent.

    With ``kind``, the value must be an instance of it (``bool`` is not accepted as ``int``).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a JSON object with field {name!r}, got {type(obj).__name__}")
    if name not in obj:
        raise ValueError(f"{where}: missing field {name!r}")
    value = obj[name]
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ValueError(
                f"{where}: field {name!r} should be {names}, got {type(value).__name__} {value!r}"
            )
    return value


def check_images_exist(samples: list[Sample], what: str, where: str = "") -> None:
    """FileNotFoundError naming the first missing images (and how many), if any are missing.

    Readers call this so a wrong image folder fails at once, not hours into a run.
    """
    missing = sorted({str(s.image_path) for s in samples if not s.image_path.is_file()})
    if missing:
        shown = ", ".join(missing[:3]) + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
        hint = f" {where}" if where else ""
        raise FileNotFoundError(f"{len(missing)} {what} not found: {shown}.{hint}")
