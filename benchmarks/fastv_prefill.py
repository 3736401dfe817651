"""Benchmark: FastV's prefill time versus visual-token budget, beside pre-LLM pruning, through the wrapper.

Not a test (timings never gate anything); run it by hand:

    python benchmarks/fastv_prefill.py                                  # CPU, a scaled-down LLaVA LM
    python benchmarks/fastv_prefill.py --threads 1 --clock process      # steadier on a busy machine
    python benchmarks/fastv_prefill.py --batches 1 4                    # also 4 prompts per forward
    python benchmarks/fastv_prefill.py --device cuda --batches 1 16     # LLaVA-1.5-7B LM shapes, fp16

``prefill_and_selectors.py`` times transformers' own Llama forward with K visual tokens. FastV
cannot be timed that way: it prunes *inside* the language model. So this script times the
project's own language-model path, ``PrunedLlava``'s decoder loop (``_run_prompt``, then the
final norm and the LM head on the last position: exactly what ``first_token_logits`` and hence
every POPE / ScienceQA answer costs), for

- ``unpruned``: all 576 visual tokens;
- ``pre-LLM``: K visual tokens in the prompt (what every pre-LLM selector hands the LM);
- ``fastv``: all 576 visual tokens enter; layers 0..L-1 see them all; the last prompt token's
  attention computed inside layer L-1 (the released code's ranking, ``ranking="previous"``)
  picks K and the others are dropped from layer L on (default L = 2);
- ``transformers (unpruned)``: ``LlamaModel.forward`` on the same unpruned prompt, a reference
  that the wrapper's layer-by-layer loop costs no more than transformers' own forward.

The language model has random weights and LLaVA's shapes, the same as in
``prefill_and_selectors.py`` (CPU: 8 layers, hidden 1024, intermediate 2816, 16 heads, vocab
32000, fp32; CUDA: Vicuna-7B's 32 layers, hidden 4096, intermediate 11008, 32 heads, fp16),
inside a real ``LlavaForConditionalGeneration`` (a tiny CLIP tower at 336 px / 14 px patches,
so N = 576; the tower is not timed). The prompt is LLaVA-shaped: 30 text tokens, the visual
tokens, 10 text tokens, given as embeddings; ``--batches`` prompts of that shape go through
together (the evaluation engine runs 16). Timing: ``--warmup`` untimed rounds, then ``--repeats``
rounds in which every case runs once, under ``torch.inference_mode``; the median per case. Timing
in rounds means a change in the machine's load moves all cases alike, not the ratio's numerator
or denominator alone.

FLOPs ratio beside each time ratio. With F(T) the FLOPs of one prefill over T tokens as in
``prefill_and_selectors.py``,

    F(T) = L_total * f(T) + 2 h V,    f(T) = 2 P_layer T + 4 T^2 h,

pre-LLM pruning costs F(40 + K), and FastV at layer L costs

    F_FastV(K, L) = L * f(40 + 576) + (L_total - L) * f(40 + K) + 2 h V + s,
    s = 2 h^2 + 2 h (n_kv_heads * head_dim) (40 + 576) + 2 h (40 + 576),

where s is FastV's own choice: the last token's query and every token's key at layer L-1,
and the query-key products (norms and the softmax left out, as elsewhere). The ratios are to
F(40 + 576); all FLOPs scale with the batch.

The CSV (default benchmarks/results/fastv_prefill.csv) has one row per measurement: device,
method (unpruned | pre-LLM | fastv | transformers), k, fastv_layer, batch, seq_len (tokens entering
the LM), median_ms, flops_ratio, time_ratio (to the wrapper's unpruned prefill at the same
batch), repeats, torch_threads, clock, load_avg.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

from visprune.book.performance import write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefill_and_selectors import (  # noqa: E402  (the shared shapes, formula and timer)
    BUDGETS,
    CLOCKS,
    MODEL_SHAPES,
    N_VISUAL,
    TEXT_AFTER,
    TEXT_BEFORE,
    prefill_flops,
    synchronize,
)

N_TEXT = TEXT_BEFORE + TEXT_AFTER
VOCAB = 32000


def build_llava(device: torch.device, dtype: torch.dtype, seed: int):
    """A ``PrunedLlava`` around a random LLaVA whose language model has the benchmark's shapes."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from visprune.instrument import prompts
    from visprune.instrument.llava import PrunedLlava
    from visprune.toymodel import build

    side = int(N_VISUAL**0.5)  # 24 patches per side
    size = build.ToyLlavaSize(image_size=14 * side, patch_size=14, vision_hidden=32, vision_layers=2,
                              vision_heads=2, vision_intermediate=64)
    tokenizer = build.train_tokenizer([prompts.conversation(prompts.pope_question("Is there a cat in the image?"))],
                                      vocab_size=400)
    processor = build.build_processor(tokenizer, size)
    shapes = MODEL_SHAPES["cuda" if device.type == "cuda" else "cpu"]
    text = LlamaConfig(vocab_size=VOCAB, num_key_value_heads=shapes["num_attention_heads"], max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **shapes)
    vision = CLIPVisionConfig(hidden_size=size.vision_hidden, intermediate_size=size.vision_intermediate,
                              num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
                              image_size=size.image_size, patch_size=size.patch_size, projection_dim=size.vision_hidden)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(prompts.IMAGE_TOKEN),
                         image_seq_length=N_VISUAL, vision_feature_layer=-2, vision_feature_select_strategy="default",
                         tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:  # built in place: 7B parameters never pass through the CPU
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return PrunedLlava(model, processor, device=device, dtype=dtype), text


def lm_inputs(llava, n_visual: int, batch: int, generator: torch.Generator):
    """``batch`` LLaVA-shaped prompts (30 text, ``n_visual`` visual, 10 text tokens) as ``LMInputs``."""
    from visprune.instrument.llava import LMInputs

    embed = llava.model.get_input_embeddings()
    seq_len = N_TEXT + n_visual
    ids = torch.randint(5, 400, (batch, seq_len), generator=generator)
    ids[:, TEXT_BEFORE : TEXT_BEFORE + n_visual] = llava.image_token_id
    ids = ids.to(llava.device)
    text = embed(ids)  # (b, T, h)
    scale = text.float().std()
    visual = torch.randn(batch, n_visual, text.shape[-1], generator=generator) * scale
    text[:, TEXT_BEFORE : TEXT_BEFORE + n_visual] = visual.to(text.device, text.dtype)
    positions = torch.arange(seq_len, device=llava.device).expand(batch, seq_len)
    return LMInputs(
        inputs_embeds=text, attention_mask=torch.ones_like(ids), position_ids=positions, input_ids=ids,
        image_start=torch.full((batch,), TEXT_BEFORE, device=llava.device), num_visual=n_visual,
    )


def fastv_flops(config, k: int, layer: int) -> float:
    """FLOPs of one FastV prefill (formula in the module docstring)."""
    h, n_layers = config.hidden_size, config.num_hidden_layers
    head_dim = h // config.num_attention_heads
    lm_head = 2 * h * config.vocab_size
    t_full, t_k = N_TEXT + N_VISUAL, N_TEXT + k
    per_layer_full = (prefill_flops(config, t_full) - lm_head) / n_layers
    per_layer_k = (prefill_flops(config, t_k) - lm_head) / n_layers
    choice = 2 * h * h + 2 * h * config.num_key_value_heads * head_dim * t_full + 2 * h * t_full
    return layer * per_layer_full + (n_layers - layer) * per_layer_k + lm_head + choice


def interleaved_ms(fns, device: torch.device, repeats: int, warmup: int, clock: str) -> list[float]:
    """Median ms of each of ``fns``, timed in rounds (every function once per round), so that a
    change in the machine's load during the run moves all of them alike instead of one."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = now()
            fn()
            synchronize(device)
            out.append(now() - start)
    return [1000.0 * statistics.median(t) for t in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", default="benchmarks/results/fastv_prefill.csv", help="CSV to write")
    parser.add_argument("--layers", type=int, nargs="+", default=[2], help="FastV layers L (default 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1], help="prompts per forward (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default: 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or process: this process's CPU time (with --threads 1 on CPU only)")
    args = parser.parse_args(argv)
    if args.clock == "process" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock process: needs --device cpu and --threads 1 (CPU time of several threads adds up)")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads: must be >= 1")
        torch.set_num_threads(args.threads)
    if any(b < 1 for b in args.batches):
        parser.error("--batches: each must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    llava, config = build_llava(device, dtype, args.seed)
    if any(not 1 <= layer < config.num_hidden_layers for layer in args.layers):  # ranking inside layer L-1
        parser.error(f"--layers: each must be in 1..{config.num_hidden_layers - 1}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = torch.get_num_threads()
    print(f"device: {device_name}; torch {torch.__version__}; threads {threads}; clock {args.clock}; load average {load:.2f}")
    print(f"language model: {config.num_hidden_layers} layers, hidden {config.hidden_size}, intermediate "
          f"{config.intermediate_size}, {config.num_attention_heads} heads, vocab {config.vocab_size}, {dtype}")
    if device.type == "cpu" and args.clock == "wall" and load > 0.5 * (os.cpu_count() or 1):
        print("warning: this machine is busy, so wall-clock times are unreliable; use --threads 1 --clock process")

    from visprune.instrument.llava import Selection

    decoder = llava._decoder
    full_flops = prefill_flops(config, N_TEXT + N_VISUAL)
    common = dict(device=device_name, repeats=repeats, torch_threads=threads, clock=args.clock, load_avg=round(load, 2))
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    with torch.inference_mode():
        for batch in args.batches:
            full = lm_inputs(llava, N_VISUAL, batch, generator)
            pruned = {k: lm_inputs(llava, k, batch, generator) for k in BUDGETS}

            def wrapper(inputs, fastv=None):
                hidden, _, _, _ = llava._run_prompt(inputs, fastv)  # what first_token_logits runs
                return llava.model.lm_head(decoder.norm(hidden[:, -1]))

            def transformers_forward(inputs=full):
                hidden = decoder(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 position_ids=inputs.position_ids, use_cache=False).last_hidden_state
                return llava.model.lm_head(hidden[:, -1])

            cases = [("unpruned", N_VISUAL, None, lambda: wrapper(full), full_flops)]
            cases.append(("transformers", N_VISUAL, None, transformers_forward, full_flops))
            for k in BUDGETS:
                cases.append(("pre-LLM", k, None, lambda k=k: wrapper(pruned[k]), prefill_flops(config, N_TEXT + k)))
            for layer in args.layers:
                for k in BUDGETS:
                    selection = Selection("fastv", k, None, {"layer": layer})
                    cases.append(("fastv", k, layer, lambda s=selection: wrapper(full, s), fastv_flops(config, k, layer)))
            times = interleaved_ms([case[3] for case in cases], device, repeats, args.warmup, args.clock)
            unpruned_ms = times[0]
            for (method, k, layer, _, flops), ms in zip(cases, times):
                rows.append(dict(method=method, k=k, fastv_layer="" if layer is None else layer, batch=batch,
                                 seq_len=N_TEXT + (N_VISUAL if method != "pre-LLM" else k), median_ms=ms,
                                 flops_ratio=flops / full_flops, time_ratio=ms / unpruned_ms, **common))
                print(f"  batch {batch}: {method:>12} K={k:<4} {'L=' + str(layer) if layer is not None else '':<5} "
                      f"{ms:9.1f} ms", flush=True)

    print(f"\nprefill through the wrapper (median of {repeats}; time and FLOPs ratios to the unpruned prefill)")
    print(f"{'batch':>5} {'method':>13} {'K':>4} {'L':>3} {'ms':>9} {'time ratio':>11} {'FLOPs ratio':>12} {'time/FLOPs':>11}")
    for r in rows:
        print(f"{r['batch']:>5} {r['method']:>13} {r['k']:>4} {str(r['fastv_layer']):>3} {r['median_ms']:>9.1f} "
              f"{r['time_ratio']:>11.3f} {r['flops_ratio']:>12.3f} {r['time_ratio'] / r['flops_ratio']:>11.2f}")
    worst = max((r for r in rows if r["method"] in ("pre-LLM", "fastv")), key=lambda r: r["time_ratio"] / r["flops_ratio"])
    factor = worst["time_ratio"] / worst["flops_ratio"]
    print(f"\nlargest time / FLOPs ratio: {factor:.2f} ({worst['method']}, K = {worst['k']}, batch {worst['batch']}; "
          f"{'within' if factor <= 1.3 else 'ABOVE'} the 1.3x target)")

    fields = ["device", "method", "k", "fastv_layer", "batch", "seq_len", "median_ms", "flops_ratio", "time_ratio",
              "repeats", "torch_threads", "clock", "load_avg"]
    print(f"wrote {write_csv(rows, args.out, fields)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
