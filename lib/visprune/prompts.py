"""Prompt formats and answer sets (DESIGN.md section 5).

LLaVA-1.5's conversation format with its system sentence (the llava-hf chat template omits it;
it is prepended here to match the original model's training), POPE's and ScienceQA-IMG's
question formats, the captioning prompt used for CHAIR, the token variants whose first-token
probability mass is summed for each answer, and LLaVA's lenient POPE text parser.
"""

from __future__ import annotations

import re
from typing import Sequence

LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
IMAGE_TOKEN = "<image>"
POPE_SUFFIX = "\nAnswer the question using a single word or phrase."
SCIENCEQA_SUFFIX = "Answer with the option's letter from the given choices directly."
CAPTION_PROMPT = "Please describe this image in detail."
POPE_ANSWERS = ("yes", "no")
OPTION_LETTERS = "ABCDEFGHIJ"


def conversation(question: str, system: str = LLAVA_SYSTEM, image_token: str = IMAGE_TOKEN) -> str:
    """``"{system} USER: <image>\\n{question} ASSISTANT:"`` (LLaVA-1.5, one image, one turn)."""
    return f"{system} USER: {image_token}\n{question} ASSISTANT:"


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
    """Surface forms whose first-token mass counts toward ``answer`` (DESIGN.md section 5).

    Lower, capitalised and upper case, each with and without a leading space, without duplicates
    (so "A" gives "A" and " A").
    """
    forms: list[str] = []
    for base in (answer.lower(), answer.capitalize(), answer.upper()):
        for form in (base, " " + base):
            if form not in forms:
                forms.append(form)
    return forms


def parse_pope_answer(text: str) -> str:
    """LLaVA's lenient POPE parser: first sentence; "no", "No" or "not" among its words means no."""
    first = text.split(".")[0]
    words = re.findall(r"[A-Za-z']+", first.replace(",", " "))
    return "no" if any(w in ("no", "No", "not") for w in words) else "yes"
