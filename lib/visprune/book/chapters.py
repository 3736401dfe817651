"""What every chapter does first: resolve its profile, open an evaluator, show what it runs on.

Chapters stay thin (STYLE.md): their ``parameters`` cell holds the knobs, and one call here
turns them into an :class:`~visprune.engine.Evaluator`::

    ev = chapters.open_evaluator(profile, model_path=model_path, results_dir=results_dir, ...)
    budgets = chapters.budgets_for(ev, budgets)

Budgets are given in the papers' terms (visual tokens kept out of LLaVA-1.5's 576) and mapped to
the model's own token count by the same fraction (64, 128, 192 of 576 -> 16, 32, 48 of the toy
model's 144), so one parameter list means the same pruning ratios on every profile.

Every chapter parameter has a rule here (:data:`PARAMETER_RULES`, by name): the values it accepts.
``python -m visprune.book`` checks a ``-p`` override against it before any kernel starts, so a
bad value is refused in one line that names the parameter, never inside a chapter.

Length: over 400 lines because most of it is one declarative table, the rule for every chapter
parameter (PARAMETER_RULES), which the build checks before executing anything.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from visprune.engine import Evaluator, model_shape
from visprune.pruning import pre_llm_methods
from visprune.engine.profiles import POPE_SPLITS, PROFILES, Profile, resolve_profile

#: The papers' token budgets, out of LLaVA-1.5's 576 visual tokens.
PAPER_BUDGETS = (64, 128, 192)
PAPER_TOKENS = 576


def open_evaluator(
    profile: str = "toy",
    *,
    model_path: str | None = None,
    coco_images: str | None = None,
    coco_annotations: str | None = None,
    pope_dir: str | None = None,
    scienceqa_dir: str | None = None,
    world_dir: str | None = None,
    results_dir: str | None = None,
    device: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> Evaluator:
    """An evaluator on the chapter's profile (paths left ``None`` take the profile's defaults)."""
    kwargs: dict[str, Any] = dict(model=model_path, results=results_dir)
    if profile == "toy":
        kwargs["world"] = world_dir
    else:
        kwargs.update(coco_images=coco_images, coco_annotations=coco_annotations, pope=pope_dir,
                      scienceqa=scienceqa_dir)
    resolved: Profile = resolve_profile(profile, **kwargs)
    return Evaluator(resolved, device=device, batch_size=batch_size, progress=progress)


def n_visual_tokens(evaluator: Evaluator) -> int:
    """N, the visual tokens per image of the evaluator's model (from its config.json)."""
    return model_shape(evaluator.profile.model)[0]


def budgets_for(evaluator: Evaluator, paper_budgets: Sequence[int] = PAPER_BUDGETS) -> dict[int, int]:
    """Map the papers' budgets (of 576) to the model's N by the same fraction: {paper K: model K}."""
    n = n_visual_tokens(evaluator)
    out = {}
    for k in paper_budgets:
        if not isinstance(k, int) or not 1 <= k <= PAPER_TOKENS:
            raise ValueError(f"budgets: each budget is a token count out of {PAPER_TOKENS}, got {k!r}")
        out[k] = max(1, round(k * n / PAPER_TOKENS))
    return out


def model_card_targets(model_dir) -> dict | None:
    """The quality targets recorded in a toy model's ``card.json`` (``python -m visprune.toymodel
    card``): ``{target: {"value": ..., "met": bool}}``, or None when the checkpoint has no card."""
    import json
    from pathlib import Path

    card = Path(model_dir) / "card.json"
    if not card.is_file():
        return None
    return json.loads(card.read_text()).get("targets")


def profile_note(evaluator: Evaluator) -> str:
    """Markdown saying what the chapter ran on (shown under the parameters).

    On the toy profile it also says whether the model meets the quality targets its model card
    measured; when it misses any, the note lists them, so a reader knows how far the chapter's
    numbers can be trusted.
    """
    p = evaluator.profile
    n = n_visual_tokens(evaluator)
    if p.name != "toy":
        return f"Run on profile `{p.name}` with the checkpoint `{p.model}` ({n} visual tokens per image)."
    note = (f"**Toy-world run.** Model `{p.model.name}` ({n} visual tokens per image) on the "
            "synthetic toy world; these are toy-world numbers, not the papers'.")
    targets = model_card_targets(p.model)
    if targets is None:
        return note + " The model has no model card, so its quality is unmeasured."
    missed = {name: t for name, t in targets.items() if not t.get("met")}
    if not missed:
        return note + f" The model meets all {len(targets)} quality targets of its model card."
    listed = "; ".join(f"{name} (measured {t.get('value'):.3g})" if isinstance(t.get("value"), (int, float))
                       else name for name, t in missed.items())
    return (note + f"\n\n```{{warning}}\nThis toy model misses {len(missed)} of the {len(targets)} quality "
            f"targets of its model card: {listed}. Read this chapter's numbers that rest on those abilities as a "
            "demonstration of the method on an under-trained model, not as evidence for or against the papers' "
            "claims.\n```")


# ------------------------------------------------------------------------------ parameter rules


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Rule:
    """What one chapter parameter accepts (its entry in :data:`PARAMETER_RULES`).

    ``expected`` completes "expected ..." in a message; :meth:`problem` is None for an accepted
    value and otherwise says what is wrong with it; :meth:`check` raises with the parameter's name.
    """

    expected: str

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        raise NotImplementedError

    def check(self, name: str, value: Any, base: Path | None = None) -> None:
        """Raise ``ValueError("<name>: expected ..., got ...")`` for a value the rule refuses."""
        problem = self.problem(value, base)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")


@dataclass(frozen=True)
class Integer(Rule):
    """An int in ``low..high`` (booleans refused); None too when ``none`` says what None means."""

    low: int = 0
    high: int | None = None
    none: str | None = None

    @property
    def expected(self) -> str:
        if self.high is not None:
            what = f"an integer in {self.low}..{self.high}"
        else:
            what = {0: "a non-negative integer", 1: "a positive integer"}.get(self.low, f"an integer >= {self.low}")
        return what + (f" or None ({self.none})" if self.none else "")

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        if value is None and self.none:
            return None
        if _is_int(value) and value >= self.low and (self.high is None or value <= self.high):
            return None
        return f"expected {self.expected}, got {value!r}"


@dataclass(frozen=True)
class Real(Rule):
    """A finite int or float, at least ``low`` (above it when ``above``; no bound when ``low`` is None)."""

    low: float | None = 0.0
    above: bool = False
    none: str | None = None

    @property
    def expected(self) -> str:
        if self.low is None:
            what = "a finite number"
        elif self.low == 0:
            what = "a positive number" if self.above else "a number >= 0"
        else:
            what = f"a number {'>' if self.above else '>='} {self.low:g}"
        return what + (f" or None ({self.none})" if self.none else "")

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        if value is None and self.none:
            return None
        if _is_real(value) and (self.low is None or value > self.low or (value == self.low and not self.above)):
            return None
        return f"expected {self.expected}, got {value!r}"


@dataclass(frozen=True)
class Choice(Rule):
    """One of ``options`` (a tuple, or a function returning one, for a list kept in a heavy module)."""

    options: tuple | Callable[[], tuple]

    def choices(self) -> tuple:
        return tuple(self.options() if callable(self.options) else self.options)

    @property
    def expected(self) -> str:
        return f"one of {self.choices()}"

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        if isinstance(value, str) and value in self.choices():
            return None
        return f"expected {self.expected}, got {value!r}"


@dataclass(frozen=True)
class ListOf(Rule):
    """A list of at least ``min_len`` distinct items, each accepted by ``item``, holding ``include``.

    A tuple is accepted as a list (``python -m visprune.book`` passes it on as a list).
    """

    item: Rule
    min_len: int = 1
    include: tuple = ()
    none: str | None = None

    @property
    def expected(self) -> str:
        size = "a non-empty list of" if self.min_len == 1 else f"a list of at least {self.min_len}"
        must = f", including {' and '.join(repr(x) for x in self.include)}" if self.include else ""
        return f"{size} distinct values (each {self.item.expected}){must}" + (f" or None ({self.none})" if self.none else "")

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        if value is None and self.none:
            return None
        got = f"expected {self.expected}, got {value!r}"
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            return got
        for i, x in enumerate(value):
            if self.item.problem(x, base) is not None:
                return f"{got} ({x!r} is not {self.item.expected})"
            if any(x == y for y in value[:i]):
                return f"{got} ({x!r} appears twice)"
        missing = [x for x in self.include if not any(x == y for y in value)]
        if missing:
            return f"{got} (it lacks {', '.join(repr(x) for x in missing)})"
        return None


@dataclass(frozen=True)
class Folder(Rule):
    """None (``none`` says what that means) or a folder path as a string.

    An ``input`` folder must exist (FileNotFoundError otherwise). An ``output`` folder is created
    when missing, so it must be a writable folder or creatable (its nearest existing parent a
    writable folder). A relative path is read from ``base``, the folder the chapter runs in.
    """

    role: str
    none: str

    @property
    def expected(self) -> str:
        return f"None ({self.none}) or a folder path as a string"

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            return f"expected {self.expected}, got {value!r}"
        path, relative = self._resolve(value, base)
        if path.exists() and not path.is_dir():
            return f"{path} is a file, not a folder{relative}"
        if self.role == "input":
            return None if path.is_dir() else f"folder {path} not found{relative}"
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            return f"folder {path} cannot be created: {existing} is a file{relative}"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"folder {existing} is not writable{relative}" if existing == path else \
                f"folder {path} cannot be created: {existing} is not writable{relative}"
        return None

    @staticmethod
    def _resolve(value: str, base: Path | None) -> tuple[Path, str]:
        """The path as the chapter reads it, and a note for messages when it was relative."""
        path = Path(value).expanduser()
        if path.is_absolute() or base is None:
            return path, ""
        return base / path, f" (a relative path is read from the chapter's folder {base})"

    def check(self, name: str, value: Any, base: Path | None = None) -> None:
        problem = self.problem(value, base)
        if problem is not None:
            missing = self.role == "input" and isinstance(value, str) and bool(value.strip()) \
                and not self._resolve(value, base)[0].exists()
            raise (FileNotFoundError if missing else ValueError)(f"{name}: {problem}")


@dataclass(frozen=True)
class Device(Rule):
    """None (CUDA when available, else CPU) or a torch device name that this machine has."""

    expected = "None (CUDA when available, else CPU) or a torch device name such as 'cpu' or 'cuda:0'"

    def problem(self, value: Any, base: Path | None = None) -> str | None:
        if value is None:
            return None
        got = f"expected {self.expected}, got {value!r}"
        if not isinstance(value, str):
            return got
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            return got
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                return f"{value!r} asks for CUDA, but torch finds no CUDA device on this machine; use 'cpu' or None"
            if device.index is not None and device.index >= count:
                return f"{value!r} asks for CUDA device {device.index}, but this machine has {count} (0..{count - 1})"
        return None


def _complexity_measures() -> tuple:
    from visprune.book.diversity import COMPLEXITY_BY  # imported on use: visprune.book.diversity loads torch

    return COMPLEXITY_BY


def _glance_methods() -> tuple:
    from visprune.book.glance import glance_methods  # imported on use: it loads the engine's plotting helpers

    return glance_methods()


#: POPE's splits (the engine's POPE data sets are ``pope-<split>`` and their fitting splits ``pope-<split>-val``).
_SPLITS = tuple(POPE_SPLITS)
#: Methods whose kept patches a chapter can draw without run-specific inputs: the pre-LLM
#: selectors except ``adaptive``, whose ``erank_ref`` only the adaptive chapter measures.
DRAWN_METHODS = tuple(m for m in pre_llm_methods() if m != "adaptive")

_INPUT = "the profile's default"
#: The rule of every chapter parameter, by name; a parameter means the same in every chapter that
#: has it. Ranges follow the definitions: SCOPE's alpha >= 0 and gap power p > 0, the adaptive
#: rule's c >= 0 and tau_max >= 0 (ALGORITHMS.md, "SCOPE" and "Adaptive"); budgets are token counts
#: out of LLaVA-1.5's 576 (:data:`PAPER_TOKENS`); ECE needs at least one bin. tests/test_book.py
#: checks that every parameter of every chapter has a rule and that every default passes it.
PARAMETER_RULES: dict[str, Rule] = {
    # where the chapter runs (profiles.py)
    "profile": Choice(PROFILES),
    "model_path": Folder("input", _INPUT),
    "world_dir": Folder("output", "data/toyworld, generated when missing"),
    "coco_images": Folder("input", _INPUT),
    "coco_annotations": Folder("input", _INPUT),
    "pope_dir": Folder("input", _INPUT),
    "scienceqa_dir": Folder("input", _INPUT),
    "results_dir": Folder("output", "data/results or $VISPRUNE_RESULTS"),
    "benchmarks_dir": Folder("input", "benchmarks/results of the repository"),
    "device": Device(),
    "batch_size": Integer(1),
    "seed": Integer(0),
    # what the chapter runs (evaluation.py)
    "budgets": ListOf(Integer(1, PAPER_TOKENS)),
    "focus_budget": Integer(1, PAPER_TOKENS),
    "splits": ListOf(Choice(_SPLITS)),
    "pope_split": Choice(_SPLITS),
    "methods": ListOf(Choice(DRAWN_METHODS), include=("saliency", "divprune")),
    "alphas": ListOf(Real(0.0)),
    "gap_powers": ListOf(Real(0.0, above=True), include=(1.0,)),
    "fastv_layer": Integer(0),
    "n_samples": Integer(1, none="the whole data set"),
    "n_pope": Integer(1, none="the whole split"),
    "n_scienceqa": Integer(1, none="every test problem"),
    "sqa_samples": Integer(1, none="every test problem"),
    "n_fit": Integer(1, none="the whole fitting split"),
    "sqa_fit": Integer(1, none="the whole validation split"),
    "n_draws": Integer(1),
    "n_captions": Integer(1, none="the profile's number of caption images"),
    "max_new_tokens": Integer(1, none="the profile's caption length"),
    "c": Real(0.0),
    "tau_max": Real(0.0),
    "n_reference_images": Integer(1),
    "complexity_by": Choice(_complexity_measures),
    "complexity_threshold": Real(None, none="the median"),
    "n_examples": Integer(1),
    # how the results are summarised (metrics.py, primer.py)
    "n_bins": Integer(1),
    "n_bootstrap": Integer(1),
    "n_synthetic": Integer(2),
    "sharpness": Real(0.0, above=True),
    "temperatures": ListOf(Real(0.0, above=True)),
    "bin_counts": ListOf(Integer(1)),
    "sample_sizes": ListOf(Integer(2)),  # the primer's estimator study: n of each draw
    "n_repeats": Integer(2),  # draws per n (a spread needs at least two)
    "n_floor_draws": Integer(1),  # calibrated draws of each noise floor
    # the performance chapter's targets
    "selector_target": Real(0.0, above=True),
    "prefill_target": Real(0.0, above=True),
    "engine_target": Real(0.0, above=True),
    "book_target_minutes": Real(0.0, above=True),
}

#: Where one chapter asks more of a parameter than the others (chapter name -> name -> rule).
CHAPTER_RULES: dict[str, dict[str, Rule]] = {
    "alpha_sweep": {"alphas": ListOf(Real(0.0), min_len=2)},  # a sweep compares at least two
    # every method without run-specific inputs, None for all of them (book.glance.glance_methods)
    "every_method": {"methods": ListOf(Choice(_glance_methods), include=("random", "downsample"),
                                       none="every method but adaptive")},
}


def parameter_rule(name: str, chapter: str | None = None) -> Rule | None:
    """The rule of parameter ``name`` in ``chapter`` (its name, e.g. ``"alpha_sweep"``); None if none."""
    return CHAPTER_RULES.get(chapter or "", {}).get(name) or PARAMETER_RULES.get(name)


def check_parameters(
    parameters: Mapping[str, Any],
    chapter: str | None = None,
    *,
    changed: Sequence[str] | None = None,
    base: Path | None = None,
) -> None:
    """Check a chapter's parameters by value before anything runs; raise on the first bad one.

    ``parameters``: the chapter's values (defaults with any overrides). ``changed``: the names to
    check (default: all); a name without a rule is left alone. ``base``: the folder the chapter
    runs in, for relative paths. Then the parameters that go together are checked (the focus
    budget must be one of the budgets), naming the changed one. Raises ValueError
    ``"<name>: ..."``, or FileNotFoundError for an input folder that does not exist.
    """
    names = list(parameters) if changed is None else list(changed)
    for name in names:
        rule = parameter_rule(name, chapter)
        if rule is not None:
            rule.check(name, parameters[name], base)
    if {"focus_budget", "budgets"} <= set(parameters) and {"focus_budget", "budgets"} & set(names):
        focus, budgets = parameters["focus_budget"], list(parameters["budgets"])
        if focus not in budgets:
            if "focus_budget" in names:
                raise ValueError(f"focus_budget: {focus!r} is not one of budgets {budgets}; pick one of them")
            raise ValueError(f"budgets: {budgets} does not include focus_budget {focus!r} (the budget of the "
                             "reliability diagrams); include it, or change focus_budget too")
