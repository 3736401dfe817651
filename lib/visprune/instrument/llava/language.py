"""The language side of the wrapper: prompts with K visual tokens, and the decoder loop that
in-LLM methods prune inside (DESIGN.md section 4)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from visprune.instrument.llava._checks import _as_str_list, _image_rows, _to_bias
from visprune.instrument.llava.outputs import LMInputs, PromptRun, Selection, VisionOutput
from visprune.instrument.prompts import strip_answer_format
from visprune.pruning import LayerDrop, select as select_method, spec as method_spec
from visprune.pruning.fastv import kept_sequence_index


class LanguageMixin:
    """Part of :class:`~visprune.instrument.llava.PrunedLlava` (see its docstring)."""

    # ---------------------------------------------------------------- building inputs

    def visual_embeddings(
        self, vision: VisionOutput, keep: torch.Tensor | None = None, image_index: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Projected visual tokens: (P, K, d_text) for ``keep`` (B, K), or all N when ``keep`` is None.

        Only the kept features are projected (the projector is per token). ``image_index[i]``
        is the image row prompt i uses (default: row i).
        """
        features = vision.features  # (B, N, d_v)
        if keep is not None:
            features = features.gather(1, keep[..., None].expand(-1, -1, features.shape[-1]))  # (B, K, d_v)
        tokens = self.model.model.multi_modal_projector(features)  # (B, K, d_text)
        if image_index is None:
            return tokens
        return tokens[torch.as_tensor(image_index, dtype=torch.long, device=tokens.device)]

    def prompt_token_ids(self, question: str) -> list[int]:
        """Token ids of ``build_prompt(question)`` with one ``image_token_id`` where the image goes.

        As LLaVA's ``tokenizer_image_token(prompt, tokenizer)``: the prompt is split on the image
        token; each chunk is tokenised on its own with the tokenizer's special tokens (so a Llama
        tokenizer gives each chunk its BOS and its own leading "\u2581", e.g. ``"\\n..."`` after
        the image becomes "\u2581", "<0x0A>", ... as in LLaVA-1.5's training); the first chunk's
        BOS is kept, the later chunks' BOS dropped, and the image id put between the chunks.
        (Tokenising the whole prompt with ``<image>`` as an added token differs for a
        non-legacy Llama tokenizer: no "\u2581" after the image.)
        """
        prompt = self.build_prompt(question)
        chunks = [self.tokenizer(c)["input_ids"] for c in prompt.split(self.image_token)]
        if len(chunks) != 2:
            raise ValueError(
                f"prompt_format: the prompt must hold the image token once, got {len(chunks) - 1}: {prompt!r}"
            )
        bos = self.tokenizer.bos_token_id
        offset = 1 if chunks[0] and bos is not None and chunks[0][0] == bos else 0
        ids = list(chunks[0])
        for chunk in chunks[1:]:
            if offset and chunk[:1] != [bos]:
                raise ValueError(f"questions: a prompt chunk did not tokenise with a leading BOS: {question!r}")
            ids += [self.image_token_id] + list(chunk[offset:])
        if ids.count(self.image_token_id) != 1:
            raise ValueError(
                f"questions: the prompt must tokenise to exactly one image token, got "
                f"{ids.count(self.image_token_id)}: {question!r}"
            )
        return ids

    def text_prompt_token_ids(self, question: str) -> list[int]:
        """Token ids of the prompt for ``question`` without an image
        (``prompt_format.conversation_without_image``), tokenised whole with the tokenizer's
        special tokens (one BOS for a Llama tokenizer), as LLaVA tokenises a text-only prompt."""
        if not isinstance(question, str):
            raise ValueError(f"questions: expected strings, got {type(question).__name__}")
        if self.image_token in question:
            raise ValueError(f"questions: pass the question only; {self.image_token!r} is placed by the prompt format")
        return list(self.tokenizer(self.prompt_format.conversation_without_image(question))["input_ids"])

    def build_inputs(self, questions: Sequence[str], visual_tokens: torch.Tensor) -> LMInputs:
        """Tokenise the prompts and put ``visual_tokens`` (P, M, d_text) in their image slot.

        Each prompt is ``build_prompt(question)`` tokenised as LLaVA's ``tokenizer_image_token``
        does (``llava/mm_utils.py``, :meth:`prompt_token_ids`): split on the image token, each
        chunk tokenised on its own, one BOS kept; the image's place becomes M consecutive
        embedding slots. Prompts are left-padded to a common length. With M = 0 (the "no visual
        tokens" control) each prompt is the format's text-only conversation
        (:meth:`text_prompt_token_ids`) and ``image_start`` points past its end.
        """
        questions = _as_str_list(questions, "questions")
        if visual_tokens.dim() != 3 or visual_tokens.shape[0] != len(questions):
            raise ValueError(
                f"visual_tokens: expected shape ({len(questions)}, M, d), got {tuple(visual_tokens.shape)}"
            )
        m = visual_tokens.shape[1]
        pieces = []  # (ids before the image, ids after it) per prompt
        for q in questions:
            if m == 0:  # no visual tokens: the prompt without its image slot
                pieces.append((self.text_prompt_token_ids(q), []))
                continue
            ids = self.prompt_token_ids(q)
            slot = ids.index(self.image_token_id)
            pieces.append((ids[:slot], ids[slot + 1 :]))
        lengths = [len(a) + m + len(b) for a, b in pieces]
        seq_len = max(lengths)

        p = len(questions)
        input_ids = torch.full((p, seq_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((p, seq_len), dtype=torch.long)
        image_start = torch.zeros(p, dtype=torch.long)
        for i, ((before, after), length) in enumerate(zip(pieces, lengths)):
            start = seq_len - length  # left padding
            row = before + [self.image_token_id] * m + after
            input_ids[i, start:] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, start:] = 1
            image_start[i] = start + len(before)
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        image_start = image_start.to(self.device)

        is_visual = torch.zeros_like(attention_mask, dtype=torch.bool)  # (P, T)
        slot = image_start[:, None] + torch.arange(m, device=self.device)  # (P, M)
        is_visual.scatter_(1, slot, True)
        text_ids = input_ids.masked_fill(is_visual, self.pad_token_id)
        embeds = self._decoder.embed_tokens(text_ids)  # (P, T, d)
        visual = visual_tokens.to(device=embeds.device, dtype=embeds.dtype)
        embeds = embeds.masked_scatter(is_visual[..., None], visual)  # row-major: slot j of row i <- visual[i, j]
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
        return LMInputs(embeds, attention_mask, position_ids, input_ids, image_start, m)

    def _prepare(
        self, questions: Sequence[str], vision: Any, selection: Any, image_index: Sequence[int] | None
    ) -> tuple[LMInputs, Selection | None, torch.Tensor | None]:
        """Vision -> selection -> projected tokens -> LM inputs.

        Returns (inputs, the selection when an in-LLM method chooses inside the language model
        else None, the (P, K) visual tokens each prompt keeps: patch indices, a merger's sources
        (-1 for the CLS token), None for an in-LLM method, whose choice comes with the run).
        """
        questions = _as_str_list(questions, "questions")
        vision = self._as_vision(vision)
        selection = self._as_selection(selection, vision)
        rows = _image_rows(image_index, len(questions), len(vision), self.device)
        if selection.in_llm:  # all N tokens enter; the method drops inside
            return self.build_inputs(questions, self.visual_embeddings(vision, None, rows)), selection, None
        if selection.tokens is not None:  # a merger's vectors (M = 0: the prompt without its image)
            merged = selection.tokens.to(device=vision.features.device, dtype=vision.features.dtype)[rows]
            keep = selection.sources.to(vision.features.device)[rows]
            if merged.shape[1] == 0:
                width = self._decoder.embed_tokens.weight.shape[1]
                tokens = merged.new_zeros(len(questions), 0, width)
            else:
                tokens = self.model.model.multi_modal_projector(merged)
            return self.build_inputs(questions, tokens), None, keep
        if selection.per_prompt:  # text-conditioned: chosen per prompt, now that the questions are known
            keep, projected = self._select_per_prompt(selection, vision, rows, questions)
            if projected is None:
                tokens = self.visual_embeddings(vision.rows(rows), keep)
            else:  # the selector ranked projected tokens: take the kept ones instead of projecting again
                tokens = projected.gather(1, keep[..., None].expand(-1, -1, projected.shape[-1]))
            return self.build_inputs(questions, tokens), None, keep
        keep = selection.keep[rows]
        return self.build_inputs(questions, self.visual_embeddings(vision, selection.keep, rows)), None, keep

    def question_embeddings(self, questions: Sequence[str]) -> list[torch.Tensor]:
        """The language model's input embeddings of each question's tokens (no special tokens),
        float32 (T_i, d_text): a text-conditioned selector's view of the question (CDPruner's
        fallback relevance; ALGORITHMS.md, "CDPruner")."""
        out = []
        for q in questions:
            ids = self.tokenizer(q, add_special_tokens=False)["input_ids"]
            ids = torch.tensor(ids, dtype=torch.long, device=self.device)
            out.append(self._decoder.embed_tokens(ids).float())
        return out

    def _select_per_prompt(self, selection: Selection, vision: VisionOutput, rows: torch.Tensor,
                           questions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A text-conditioned selector run once for the P prompts (their images at ``rows``):
        the features of each prompt's image, the question without its answer-format
        instruction (``prompts.strip_answer_format``) and that question's input embeddings.

        Returns the (P, K) kept indices and, for a selector of projected tokens, the (P, N,
        d_text) projected tokens it ranked (each image projected once, however many prompts use
        it), so the kept ones are taken from them rather than projected again; else None."""
        method_ = method_spec(selection.method)
        params = dict(selection.params)
        feature_space = params.pop("feature_space", method_.feature_space)
        sub = vision.rows(rows)
        projected = self.model.model.multi_modal_projector(vision.features)[rows] if feature_space == "projected" else None
        features = sub.features if projected is None else projected
        stripped = [strip_answer_format(q) for q in questions]
        extra = dict(self._vision_inputs(method_, sub))
        if "questions" in method_.inputs:
            extra["questions"] = stripped
        if "question_embeddings" in method_.inputs:
            extra["question_embeddings"] = self.question_embeddings(stripped)
        keep = select_method(selection.method, features.float(), sub.cls_attention.float(), selection.k,
                             **params, **extra)
        keep = torch.as_tensor(keep, dtype=torch.long, device=vision.features.device)
        self._check_keep(keep, len(questions), vision.num_tokens)
        return keep, projected

    # ---------------------------------------------------------------- the language model

    def _causal_bias(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(P, 1, T, T) additive bias: 0 where query i may see key j (j <= i, j real), else dtype's min.

        A padding query may see itself, so no row is fully masked (its output is never used).
        """
        t = valid.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
        allowed = (causal[None] & valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=valid.device)[None]
        return _to_bias(allowed[:, None], dtype)

    def _run_prompt(
        self,
        inputs: LMInputs,
        in_llm: Selection | None = None,
        cache: Any = None,
        select_row: int | None = None,
    ) -> PromptRun:
        """Run every decoder layer over a prompt batch, letting an in-LLM method drop visual tokens.

        ``in_llm``: a selection of an in-LLM method (``keep`` None; FastV, PyramidDrop, SparseVLM,
        DART; ALGORITHMS.md). Its spec's ``pruner(params, k)`` is consulted before each layer i
        with the layer's input (the ``state`` of :class:`~visprune.pruning.LayerPruner`;
        ``query_row`` is the last prompt token's row, or ``select_row`` when given, both in the
        current, possibly shortened, sequence). When it returns kept visual-token indices (or a
        :class:`~visprune.pruning.LayerDrop`), the other visual tokens are dropped from layer i
        on and any inserted hidden states follow the kept ones; the kept tokens keep their
        original position ids, unless the pruner's ``renumber`` is True, when the positions are
        renumbered 0, 1, ... over the real tokens after each drop. Returns a :class:`PromptRun`.
        """
        lm = self._decoder
        hidden = inputs.inputs_embeds
        valid = inputs.attention_mask.bool()
        positions = inputs.position_ids
        input_ids = inputs.input_ids
        bias = self._causal_bias(valid, hidden.dtype)
        rope = lm.rotary_emb(hidden, position_ids=positions)  # (cos, sin), each (P, T, head_dim)
        keep = pruner = None
        renumber = False
        num_visual = inputs.num_visual
        p = hidden.shape[0]
        if in_llm is not None:
            pruner = method_spec(in_llm.method).pruner(in_llm.params, in_llm.k)
            renumber = bool(getattr(pruner, "renumber", False))
            keep = torch.arange(num_visual, device=hidden.device).expand(p, num_visual)
        layer_valid: list[torch.Tensor] = []
        layer_last: list[torch.Tensor] = []
        tokens, visual = [], []
        prompt_end = inputs.attention_mask.shape[1] - 1 if select_row is None else select_row
        for i, layer in enumerate(lm.layers):
            # the last prompt token's row in the current (possibly shortened) sequence
            row = hidden.shape[1] - 1 if select_row is None else prompt_end - (inputs.num_visual - num_visual)
            decision = None
            if pruner is not None:
                state = {"hidden": hidden, "rope": rope, "valid": valid, "positions": positions,
                         "input_ids": input_ids, "image_start": inputs.image_start, "num_visual": num_visual,
                         "query_row": row, "final_norm": lm.norm}
                decision = pruner.before_layer(i, layer, state)
                if decision is not None:  # layers i and above see only the kept visual tokens
                    drop = decision if isinstance(decision, LayerDrop) else LayerDrop(decision)
                    kept_now = drop.keep.to(hidden.device)
                    index = kept_sequence_index(hidden.shape[1], inputs.image_start, num_visual, kept_now)
                    hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # (P, T', d)
                    positions = positions.gather(1, index)  # original position ids of the kept tokens
                    valid = valid.gather(1, index)
                    input_ids = input_ids.gather(1, index)
                    keep = keep.gather(1, kept_now)
                    num_visual = kept_now.shape[1]
                    if drop.insert is not None and drop.insert.shape[1] > 0:
                        hidden, positions, valid, input_ids, keep = self._insert_visual(
                            drop.insert, inputs.image_start + num_visual, hidden, positions, valid, input_ids, keep)
                        num_visual += drop.insert.shape[1]
                    if renumber:
                        positions = (valid.long().cumsum(dim=1) - 1).clamp_min(0)
                    bias = self._causal_bias(valid, hidden.dtype)
                    rope = lm.rotary_emb(hidden, position_ids=positions)
            if decision is not None:  # the drop moved the last prompt token's row
                row = hidden.shape[1] - 1 if select_row is None else prompt_end - (inputs.num_visual - num_visual)
            layer_valid.append(valid)
            layer_last.append(positions[:, row])
            tokens.append(valid.sum(dim=1))
            visual.append(torch.full((p,), num_visual, dtype=torch.long, device=hidden.device))
            hidden = layer(
                hidden,
                attention_mask=bias,
                position_ids=positions,
                position_embeddings=rope,
                cache=cache,
                use_cache=cache is not None,
            )
        if select_row is not None:  # generated tokens are not part of the prompt's cost
            tokens = [t - (inputs.attention_mask.shape[1] - 1 - select_row) for t in tokens]
        return PromptRun(hidden, keep, layer_valid, layer_last, positions,
                         torch.stack(tokens, dim=1).cpu(), torch.stack(visual, dim=1).cpu())

    def _insert_visual(self, insert, at, hidden, positions, valid, input_ids, keep):
        """Put ``insert`` (P, E, d) into each row right before column ``at[p]`` (after the kept
        visual tokens): real tokens, the image token id, positions of the token before them
        (renumbering methods renumber afterwards), -1 in ``keep``."""
        rows = []
        for name, tensor, fill in (("hidden", hidden, None), ("positions", positions, None), ("valid", valid, True),
                                   ("ids", input_ids, self.image_token_id)):
            pieces = []
            for r in range(tensor.shape[0]):
                cut = int(at[r])
                if fill is None and name == "hidden":
                    middle = insert[r].to(tensor.dtype)
                elif fill is None:
                    middle = tensor[r, cut - 1 : cut].expand(insert.shape[1])
                else:
                    middle = torch.full((insert.shape[1],), fill, dtype=tensor.dtype, device=tensor.device)
                pieces.append(torch.cat([tensor[r, :cut], middle, tensor[r, cut:]], dim=0))
            rows.append(torch.stack(pieces))
        extra = torch.full((keep.shape[0], insert.shape[1]), -1, dtype=keep.dtype, device=keep.device)
        return (*rows, torch.cat([keep, extra], dim=1))

    def _decode_step(
        self, tokens: torch.Tensor, step: int, cache: Any, run: PromptRun
    ) -> torch.Tensor:
        """One cached step: ``tokens`` (P,), the ``step``-th generated token (0-based) after the
        prompt of ``run``; each layer places it at its own last prompt position + 1 + step.
        Updates ``run.layer_valid`` in place. Returns the final-norm hidden state (P, d).
        """
        lm = self._decoder
        hidden = lm.embed_tokens(tokens[:, None])  # (P, 1, d)
        layer_valid = run.layer_valid
        grown: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layers sharing a validity tensor share its update
        ropes: dict[tuple, tuple] = {}
        for i, layer in enumerate(lm.layers):
            key = id(layer_valid[i])
            if key not in grown:
                new_valid = torch.cat([layer_valid[i], torch.ones_like(layer_valid[i][:, :1])], dim=1)  # (P, S + 1)
                grown[key] = (new_valid, _to_bias(new_valid[:, None, None, :], hidden.dtype))  # (P, 1, 1, S + 1)
            layer_valid[i], bias = grown[key]
            pos = (run.layer_last[i] + 1 + step)[:, None]  # (P, 1)
            pos_key = tuple(pos[:, 0].tolist())
            if pos_key not in ropes:
                ropes[pos_key] = lm.rotary_emb(hidden, position_ids=pos)
            hidden = layer(
                hidden, attention_mask=bias, position_ids=pos, position_embeddings=ropes[pos_key], cache=cache,
                use_cache=True,
            )
        return lm.norm(hidden[:, -1])

    def lm_logits(self, inputs: LMInputs, selection: Selection | None = None) -> torch.Tensor:
        """Logits (P, T', V) at every position of ``inputs`` (autograd kept; for training and checks).

        With a FastV ``selection``, T' = T - N + K (the dropped visual positions are gone).
        """
        in_llm = selection if selection is not None and selection.in_llm else None
        run = self._run_prompt(inputs, in_llm)
        return self.model.lm_head(self._decoder.norm(run.hidden))

    @torch.inference_mode()
    def first_token_logits(
        self,
        questions: Sequence[str],
        vision: Any,
        selection: Selection | torch.Tensor | None = None,
        image_index: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits after each prompt: ((P, V) float32, keep (P, K) long), both on CPU.

        ``vision``: a VisionOutput (or images, encoded here); ``selection``: from
        ``select_tokens``, a (B, K) keep tensor, or None (all tokens); ``image_index[i]``: the
        image row prompt i uses (default i).
        """
        logits, keep, _ = self._first_token_logits(questions, vision, selection, image_index)
        return logits, keep

    def _first_token_logits(self, questions, vision, selection, image_index) -> tuple[torch.Tensor, torch.Tensor, PromptRun]:
        """As :meth:`first_token_logits`, with the :class:`PromptRun` (its per-layer token counts)."""
        inputs, in_llm, keep = self._prepare(questions, vision, selection, image_index)
        run = self._run_prompt(inputs, in_llm)
        logits = self.model.lm_head(self._decoder.norm(run.hidden[:, -1])).float()  # (P, V)
        keep = run.keep if in_llm is not None else keep
        return logits.cpu(), keep.cpu(), run

