"""Prompt formats and answer sets (DESIGN.md section 5).

The conversation format belongs to the model (DESIGN.md section 5): a :class:`PromptFormat`
holds the system sentence and the one-turn template a checkpoint was trained with, and a
checkpoint declares it in ``prompt_format.json`` in its directory (:func:`read_prompt_format`;
no file means LLaVA-1.5's ``conv_vicuna_v1``, the format of every llava-hf LLaVA-1.5
checkpoint). Also here: POPE's and ScienceQA-IMG's question formats, the captioning prompt used
for CHAIR, the token variants whose first-token probability mass is summed for each answer, and
LLaVA's lenient POPE text parser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

IMAGE_TOKEN = "<image>"
POPE_SUFFIX = "\nAnswer the question using a single word or phrase."
SCIENCEQA_SUFFIX = "Answer with the option's letter from the given choices directly."
CAPTION_PROMPT = "Please describe this image in detail."
POPE_ANSWERS = ("yes", "no")
OPTION_LETTERS = "ABCDEFGHIJ"

#: The file in a checkpoint directory that declares its prompt format.
PROMPT_FORMAT_FILE = "prompt_format.json"

#: ``conv_vicuna_v1``'s system sentence (LLaVA's ``llava/conversation.py``): what LLaVA-1.5 is
#: trained and evaluated with, and what lmms-eval sends.
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
#: ``conv_vicuna_v0``'s system sentence, which the shipped toy model was trained with.
VICUNA_V0_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
#: LLaVA-1.5's system sentence (``conv_vicuna_v1``); kept under its old name for importers.
LLAVA_SYSTEM = VICUNA_V1_SYSTEM

#: ``conv_vicuna_v1`` / ``conv_llava_v1`` with one image in the first user turn:
#: system + sep " " + "USER: <image>\n{question}" + sep " " + "ASSISTANT:".
LLAVA_TEMPLATE = "{system} USER: {image}\n{question} ASSISTANT:"
_FIELDS = ("{system}", "{image}", "{question}")


@dataclass(frozen=True)
class PromptFormat:
    """A one-image, one-turn conversation format (DESIGN.md section 5).

    - ``name``: how runs and checkpoint declarations refer to it (``"vicuna_v1"``, ...).
    - ``system``: the system sentence.
    - ``template``: the prompt with ``{system}``, ``{image}`` and ``{question}`` each exactly
      once, e.g. ``"{system} USER: {image}\n{question} ASSISTANT:"``; the model's answer
      follows the template's end. The fields are substituted literally (a question may hold
      braces).
    """

    name: str
    system: str
    template: str = LLAVA_TEMPLATE

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: a prompt format needs a non-empty name, got {self.name!r}")
        if not isinstance(self.system, str):
            raise ValueError(f"system: expected a string, got {type(self.system).__name__}")
        if not isinstance(self.template, str):
            raise ValueError(f"template: expected a string, got {type(self.template).__name__}")
        for f in _FIELDS:
            if self.template.count(f) != 1:
                raise ValueError(
                    f"template: must hold {f} exactly once (and {', '.join(_FIELDS)}), got {self.template!r}"
                )

    def conversation(self, question: str, image_token: str = IMAGE_TOKEN) -> str:
        """The prompt for ``question`` with ``image_token`` where the image goes."""
        values = {"{system}": self.system, "{image}": image_token, "{question}": question}
        parts = re.split(r"(\{system\}|\{image\}|\{question\})", self.template)
        return "".join(values.get(part, part) for part in parts)

    def conversation_without_image(self, question: str) -> str:
        """The prompt for ``question`` with no image: ``{image}`` and the line break after it removed.

        LLaVA-1.5's text-only prompt (``"{system} USER: {question} ASSISTANT:"``), used by the
        "no visual tokens" control (ALGORITHMS.md, "Controls").
        """
        template = self.template.replace("{image}\n", "{image}").replace("{image}", "")
        values = {"{system}": self.system, "{question}": question}
        parts = re.split(r"(\{system\}|\{question\})", template)
        return "".join(values.get(part, part) for part in parts)

    def describe(self) -> dict:
        """A plain dict (name, system, template): the format as run fingerprints record it."""
        return {"name": self.name, "system": self.system, "template": self.template}


#: LLaVA-1.5 (``conv_vicuna_v1``): the default for any llava-hf checkpoint.
VICUNA_V1 = PromptFormat("vicuna_v1", VICUNA_V1_SYSTEM)
#: ``conv_vicuna_v0``'s system sentence in the USER/ASSISTANT layout above: the format the shipped
#: toy model was trained with (not LLaVA's full v0 conversation, which uses "### Human:" turns).
VICUNA_V0 = PromptFormat("vicuna_v0", VICUNA_V0_SYSTEM)
PROMPT_FORMATS = {f.name: f for f in (VICUNA_V1, VICUNA_V0)}
DEFAULT_PROMPT_FORMAT = VICUNA_V1


def read_prompt_format(model_dir: str | Path) -> PromptFormat:
    """The prompt format a checkpoint declares in ``prompt_format.json``, without loading weights.

    The file holds ``{"name": "vicuna_v0"}`` (a format of :data:`PROMPT_FORMATS`) or a whole
    format ``{"name": ..., "system": ..., "template": ...}`` (a known name must then match that
    format exactly). A directory without the file gets :data:`VICUNA_V1` (LLaVA-1.5's, as every
    llava-hf LLaVA-1.5 checkpoint). Raises FileNotFoundError for a missing directory and
    ValueError naming the file when it is malformed.
    """
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"model directory not found: {root} (a llava-hf layout checkpoint directory)")
    path = root / PROMPT_FORMAT_FILE
    if not path.is_file():
        return DEFAULT_PROMPT_FORMAT
    expected = (
        'expected {"name": one of ' + ", ".join(PROMPT_FORMATS) + '} or {"name", "system", "template"}'
    )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); {expected}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"{path}: {expected}")
    unknown = sorted(set(data) - {"name", "system", "template"})
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; {expected}")
    name = data["name"]
    if set(data) == {"name"}:
        if name not in PROMPT_FORMATS:
            raise ValueError(f"{path}: unknown prompt format {name!r}; {expected}, or give the whole format")
        return PROMPT_FORMATS[name]
    if "system" not in data:
        raise ValueError(f"{path}: a whole format needs 'system' (and optionally 'template'); {expected}")
    try:
        fmt = PromptFormat(name, data["system"], data.get("template", LLAVA_TEMPLATE))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if name in PROMPT_FORMATS and fmt != PROMPT_FORMATS[name]:
        raise ValueError(f"{path}: {name!r} names a known format but its system or template differs; rename it")
    return fmt


def write_prompt_format(model_dir: str | Path, fmt: PromptFormat) -> Path:
    """Declare ``fmt`` in ``model_dir``: ``{"name": ...}`` for a known format, else the whole format."""
    if not isinstance(fmt, PromptFormat):
        raise ValueError(f"fmt: expected a PromptFormat, got {type(fmt).__name__}")
    data = {"name": fmt.name} if PROMPT_FORMATS.get(fmt.name) == fmt else fmt.describe()
    path = Path(model_dir) / PROMPT_FORMAT_FILE
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def conversation(question: str, system: str = LLAVA_SYSTEM, image_token: str = IMAGE_TOKEN) -> str:
    """``"{system} USER: <image>\\n{question} ASSISTANT:"`` (LLaVA-1.5, one image, one turn).

    A checkpoint's own format: ``PromptFormat.conversation`` (``PrunedLlava.build_prompt``).
    """
    return f"{system} USER: {image_token}\n{question} ASSISTANT:"


def strip_answer_format(question: str) -> str:
    """The question without the answer-format instruction this module appends (POPE's short-answer
    cue, ScienceQA's option-letter cue), as CDPruner conditions on it (ALGORITHMS.md, "CDPruner")."""
    for suffix in (POPE_SUFFIX, "\n" + SCIENCEQA_SUFFIX, SCIENCEQA_SUFFIX):
        if question.endswith(suffix):
            return question[: -len(suffix)].rstrip()
    return question.strip()


def pope_question(text: str) -> str:
    """A POPE question as LLaVA-1.5 is evaluated on it: the question plus the short-answer cue."""
    return f"{text}{POPE_SUFFIX}"


def scienceqa_question(question: str, choices: Sequence[str], hint: str | None = None) -> str:
    """ScienceQA-IMG prompt: optional ``Context:`` line, the question, lettered options, the cue."""
    if len(choices) > len(OPTION_LETTERS):
        raise ValueError(f"choices: at most {len(OPTION_LETTERS)} options are supported, got {len(choices)}")
    lines = []
    if hint and hint.strip():
        lines.append(f"Context: {hint.strip()}")
    lines.append(question)
    lines.extend(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(choices))
    lines.append(SCIENCEQA_SUFFIX)
    return "\n".join(lines)


def option_letters(n_choices: int) -> tuple[str, ...]:
    """The answer set of an ``n_choices``-option ScienceQA problem: ("A", "B", ...)."""
    return tuple(OPTION_LETTERS[:n_choices])


def answer_variants(answer: str) -> list[str]:
    """Surface forms whose first-token mass may count toward ``answer`` (DESIGN.md section 5).

    - An option letter (one of ``OPTION_LETTERS``, upper case): the letter itself, with and
      without a leading space ("A", " A"). Lower-case forms are left out: " a" is the article.
    - Any other answer (POPE's "yes"/"no"): lower, capitalised and upper case, each without and
      with a leading space, without duplicates ("yes", " yes", "Yes", " Yes", "YES", " YES").

    Only the forms that are a single token right after the prompt count (the model wrapper's
    ``answer_token_ids`` filters them with the checkpoint's tokenizer).
    """
    if len(answer) == 1 and answer in OPTION_LETTERS:
        return [answer, " " + answer]
    forms: list[str] = []
    for base in (answer.lower(), answer.capitalize(), answer.upper()):
        for form in (base, " " + base):
            if form not in forms:
                forms.append(form)
    return forms

