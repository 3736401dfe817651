"""What every chapter does first: resolve its profile, open an evaluator, show what it runs on.

Chapters stay thin (STYLE.md): their ``parameters`` cell holds the knobs, and one call here
turns them into an :class:`~visprune.evaluation.Evaluator`::

    ev = chapters.open_evaluator(profile, model_path=model_path, results_dir=results_dir, ...)
    budgets = chapters.budgets_for(ev, budgets)

Budgets are given in the papers' terms (visual tokens kept out of LLaVA-1.5's 576) and mapped to
the model's own token count by the same fraction (64, 128, 192 of 576 -> 16, 32, 48 of the toy
model's 144), so one parameter list means the same pruning ratios on every profile.
"""

from __future__ import annotations

from typing import Any, Sequence

from visprune.evaluation import Evaluator, model_shape
from visprune.profiles import Profile, resolve_profile

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
