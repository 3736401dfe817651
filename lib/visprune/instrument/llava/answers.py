"""Answers from the wrapper: first-token scores over an answer set, and greedy captions
(DESIGN.md section 5)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from visprune.instrument.llava._checks import _answer_sets, _as_str_list
from visprune.instrument.llava.outputs import GenerationOutput, LMInputs, ScoreOutput, Selection
from visprune.instrument.prompts import answer_variants

ANSWER_CONTEXT = "ASSISTANT:"  # the prompt's last words: answer variants are tokenised after them


class AnswersMixin:
    """Part of :class:`~visprune.instrument.llava.PrunedLlava` (see its docstring)."""

    # ---------------------------------------------------------------- answers and scores

    def answer_token_ids(self, answer: str) -> list[int]:
        """Token ids whose first-token mass counts toward ``answer`` (DESIGN.md section 5).

        Each variant of ``prompts.answer_variants(answer)`` is tokenised right after
        ``"ASSISTANT:"`` (the end of the prompt), so a SentencePiece tokenizer sees the leading
        space as it would in the answer. A variant counts only if it adds *exactly one* token
        there (and that token is not the unknown token): a variant that splits into pieces
        (``Y`` + ``es`` for "Yes" without the space in Llama's vocabulary) is left out rather
        than counted by its first piece, which other words share. Returns the distinct ids in
        variant order; raises ValueError naming the answer and the tokenizer if no variant is
        a single token.
        """
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"answer_sets: answers must be non-empty strings, got {answer!r}")
        if answer in self._answer_ids_cache:
            return list(self._answer_ids_cache[answer])
        context = self.tokenizer(ANSWER_CONTEXT, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        ids: list[int] = []
        for variant in answer_variants(answer):
            full = self.tokenizer(ANSWER_CONTEXT + variant, add_special_tokens=False)["input_ids"]
            if full[: len(context)] != context or len(full) != len(context) + 1:
                continue  # merges with the context, or several tokens: not a single-token answer
            token = int(full[-1])
            if token != unk and token not in ids:
                ids.append(token)
        if not ids:
            name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
            raise ValueError(
                f"answer_sets: no variant of {answer!r} ({', '.join(map(repr, answer_variants(answer)))}) is a "
                f"single token after {ANSWER_CONTEXT!r} with the tokenizer {name!r}; "
                "use answers that are words of its vocabulary"
            )
        self._answer_ids_cache[answer] = ids
        return list(ids)

    def _answer_set_ids(self, answers: tuple[str, ...]) -> list[list[int]]:
        if len(answers) < 2 or len(set(answers)) != len(answers):
            raise ValueError(f"answer_sets: each set needs at least two distinct answers, got {answers!r}")
        ids = [self.answer_token_ids(a) for a in answers]
        owner: dict[int, str] = {}
        for a, a_ids in zip(answers, ids):
            for t in a_ids:
                if t in owner:
                    raise ValueError(
                        f"answer_sets: answers {owner[t]!r} and {a!r} share the first token "
                        f"{self.tokenizer.convert_ids_to_tokens(t)!r} (id {t}); their mass cannot be told apart"
                    )
                owner[t] = a
        return ids

    @torch.inference_mode()
    def score(
        self,
        questions: Sequence[str],
        answer_sets: Sequence[Sequence[str]] | Sequence[str],
        vision: Any,
        selection: Selection | torch.Tensor | None = None,
        image_index: Sequence[int] | None = None,
    ) -> ScoreOutput:
        """First-token distribution over each prompt's answer set (DESIGN.md section 5).

        Softmax over the full vocabulary in float32; an answer's mass is the sum over the
        distinct first tokens of its variants; the set's masses are renormalised to sum to 1.
        ``answer_sets``: one set per question, or a single set (a sequence of strings) for all.
        Answer sets may differ in size (ScienceQA); see ``ScoreOutput`` for the padded layout.
        The ids each answer used (its single-token variants) come back in ``answer_ids``, their
        logits in ``answer_logits``.
        """
        questions = _as_str_list(questions, "questions")
        sets = _answer_sets(answer_sets, len(questions))
        set_ids = {answers: self._answer_set_ids(answers) for answers in dict.fromkeys(sets)}  # before the model runs
        logits, keep, run = self._first_token_logits(questions, vision, selection, image_index)  # (P, V) float32
        log_total = torch.logsumexp(logits, dim=-1)  # (P,)
        width = max(len(s) for s in sets)
        probs = torch.zeros(len(sets), width, dtype=torch.float32)
        mass = torch.zeros(len(sets), dtype=torch.float32)
        for i, answers in enumerate(sets):
            per_answer = torch.stack(
                [torch.logsumexp(logits[i, ids], dim=0) for ids in set_ids[answers]]
            )  # (A,) log of each answer's unnormalised mass
            probs[i, : len(answers)] = torch.softmax(per_answer, dim=0)
            mass[i] = torch.exp(torch.logsumexp(per_answer, dim=0) - log_total[i])
        lengths = torch.tensor([len(s) for s in sets], dtype=torch.long)
        answer_ids = [[list(ids) for ids in set_ids[answers]] for answers in sets]
        answer_logits = [[logits[i, ids].tolist() for ids in set_ids[answers]] for i, answers in enumerate(sets)]
        return ScoreOutput(
            probs=probs, lengths=lengths, answer_mass=mass, keep=keep, answer_sets=sets, answer_ids=answer_ids,
            answer_logits=answer_logits, tokens_per_layer=run.tokens_per_layer, visual_per_layer=run.visual_per_layer,
        )

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(
        self,
        questions: Sequence[str],
        vision: Any,
        selection: Selection | torch.Tensor | None = None,
        image_index: Sequence[int] | None = None,
        max_new_tokens: int = 64,
        eos_token_id: int | Sequence[int] | None = None,
        use_cache: bool = True,
    ) -> GenerationOutput:
        """Greedy continuation of each prompt, stopping at end-of-sequence or ``max_new_tokens``.

        With ``use_cache`` (the default) the prompt runs once and each new token runs against a
        ``DynamicCache``; under FastV the layers >= L cache only the kept visual tokens.
        ``use_cache=False`` recomputes the whole sequence at every step (a slow reference: FastV
        then re-chooses from the last *prompt* token's attention, which the new tokens cannot
        change). ``eos_token_id`` defaults to the checkpoint's generation config; an empty list
        never stops early.
        """
        from transformers import DynamicCache

        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}")
        if eos_token_id is None:
            eos_ids = self.eos_token_ids
        else:
            eos_ids = [int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])]
        inputs, in_llm, keep = self._prepare(questions, vision, selection, image_index)
        p, prompt_len = inputs.attention_mask.shape
        eos = torch.tensor(eos_ids, dtype=torch.long, device=self.device)
        filler = eos_ids[0] if eos_ids else self.pad_token_id  # fed after a prompt has finished

        cache = DynamicCache(config=self.model.config.text_config) if use_cache else None
        run = self._run_prompt(inputs, in_llm, cache)
        last_position = inputs.position_ids[:, -1]  # (P,) the prompt's own last position (before any renumbering)
        next_hidden = self._decoder.norm(run.hidden[:, -1])  # (P, d)
        keep = run.keep if in_llm is not None else keep

        generated: list[torch.Tensor] = []
        finished = torch.zeros(p, dtype=torch.bool, device=self.device)
        for step in range(int(max_new_tokens)):
            logits = self.model.lm_head(next_hidden).float()  # (P, V)
            token = logits.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, filler), token)
            generated.append(token)
            finished |= torch.isin(token, eos)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            if use_cache:
                next_hidden = self._decode_step(token, step, cache, run)
            else:
                so_far = torch.stack(generated, dim=1)  # (P, step + 1)
                next_hidden = self._recompute_last(inputs, so_far, last_position, in_llm, prompt_len)

        tokens = torch.stack(generated, dim=1).cpu()  # (P, steps)
        token_ids: list[list[int]] = []
        for row in tokens.tolist():
            out: list[int] = []
            for t in row:
                if t in eos_ids:
                    break
                out.append(t)
            token_ids.append(out)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]
        return GenerationOutput(texts=texts, token_ids=token_ids, keep=keep.cpu(), tokens_per_layer=run.tokens_per_layer,
                                visual_per_layer=run.visual_per_layer)

    def _recompute_last(
        self,
        inputs: LMInputs,
        generated: torch.Tensor,
        last_position: torch.Tensor,
        in_llm: Selection | None,
        prompt_len: int,
    ) -> torch.Tensor:
        """Final-norm hidden state (P, d) at the end of prompt + ``generated`` (P, G), no cache."""
        g = generated.shape[1]
        new_embeds = self._decoder.embed_tokens(generated)  # (P, G, d)
        steps = torch.arange(1, g + 1, device=self.device)
        full = LMInputs(
            inputs_embeds=torch.cat([inputs.inputs_embeds, new_embeds], dim=1),
            attention_mask=torch.cat([inputs.attention_mask, torch.ones_like(generated)], dim=1),
            position_ids=torch.cat([inputs.position_ids, last_position[:, None] + steps], dim=1),
            input_ids=torch.cat([inputs.input_ids, generated], dim=1),
            image_start=inputs.image_start,
            num_visual=inputs.num_visual,
        )
        run = self._run_prompt(full, in_llm, None, select_row=prompt_len - 1)
        return self._decoder.norm(run.hidden[:, -1])


