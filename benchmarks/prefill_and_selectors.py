"""Benchmark: language-model prefill time versus visual-token budget, and selector cost.

Not a test (timings never gate anything); run it by hand:

    python benchmarks/prefill_and_selectors.py                 # CPU, a scaled-down LLaVA LM
    python benchmarks/prefill_and_selectors.py --device cuda   # LLaVA-1.5-7B LM shapes, fp16
    python benchmarks/prefill_and_selectors.py --out benchmarks/results/mine.csv

What it measures (see benchmarks/README.md for the method and how to read the table):

1. Prefill. A Llama language model with random weights, built from a transformers
   ``LlamaConfig`` (CPU: 8 layers, hidden 1024, intermediate 2816, 16 heads, vocab 32000, fp32;
   CUDA: LLaVA-1.5-7B's Vicuna-7B shapes, 32 layers, hidden 4096, intermediate 11008, 32 heads,
   fp16), fed ``inputs_embeds`` for a LLaVA-shaped prompt: 30 text tokens, the visual tokens,
   10 text tokens. One prefill = one forward over the prompt with the KV cache on and logits for
   the last position only (what generating the first answer token costs). Timed unpruned
   (576 visual tokens) and with K in {64, 128, 192}; the median of several repeats after a
   warm-up, under ``torch.inference_mode``.
2. FLOPs ratio beside it, from the formula
       FLOPs(T) = L * (2 * P_layer * T + 4 * T^2 * h) + 2 * h * V
   with T the sequence length, L layers, h hidden size, V vocabulary, and
   P_layer = 2 h^2 + 2 h (n_kv_heads * head_dim) + 3 h * intermediate the matmul parameters of
   one layer (q, o; k, v; gate, up, down). 2 * P_layer * T: every weight does one multiply-add per
   token. 4 T^2 h: Q K^T and (attention) V, 2 T^2 h each, counting the full square (the causal
   mask is not discounted, as in the usual FastV-style accounting). 2 h V: the LM head on the last
   token only. Norms, rotary embeddings, softmax and activations are left out.
3. Selectors. Each of ``visprune.pruning``'s selectors on one image at N = 576, d = 1024 (CLIP
   ViT-L/14-336's width) for the same K, as a fraction of one unpruned prefill. The features are
   synthetic but shaped like CLIP patch features (a shared component, smooth regions on the
   24 x 24 grid, noise, and two high-norm outlier tokens); the saliency is peaked on a few tokens.
   "adaptive" includes the effective-rank SVD of the image; "adaptive (erank given)" passes it
   precomputed (``image_erank``), as an evaluation run that records erank anyway can.

The CSV (default benchmarks/results/prefill_and_selectors.csv) has one row per measurement:
device, section (prefill | selector), name, k, seq_len, median_ms, flops_ratio (prefill only),
time_ratio (prefill: pruned / unpruned time; selector: selector / unpruned prefill time),
repeats, torch_threads, clock (wall, or process = this process's CPU time), load_avg (1-minute
load average when the run started; on a shared machine a high value means noisy wall timings).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from visprune.instrument.image_stats import erank_batch
from visprune.book.performance import write_csv
from visprune.pruning import select

N_VISUAL = 576  # LLaVA-1.5: 24 x 24 patches at 336 px
FEATURE_DIM = 1024  # CLIP ViT-L/14 width
TEXT_BEFORE, TEXT_AFTER = 30, 10  # system sentence + "USER:" | question + "ASSISTANT:"
BUDGETS = (64, 128, 192)

MODEL_SHAPES = {
    # A scaled-down LLaVA language model that runs in seconds on a laptop CPU.
    "cpu": dict(num_hidden_layers=8, hidden_size=1024, intermediate_size=2816, num_attention_heads=16),
    # Vicuna-7B, the language model of LLaVA-1.5-7B.
    "cuda": dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32),
}


def build_model(device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = MODEL_SHAPES["cuda" if device.type == "cuda" else "cpu"]
    config = LlamaConfig(
        vocab_size=32000,
        num_key_value_heads=shapes["num_attention_heads"],
        max_position_embeddings=4096,
        **shapes,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), config


def prefill_flops(config, seq_len: int) -> float:
    """FLOPs of one prefill over ``seq_len`` tokens (formula in the module docstring)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    head_dim = h // config.num_attention_heads
    params_per_layer = 2 * h * h + 2 * h * config.num_key_value_heads * head_dim + 3 * h * config.intermediate_size
    per_layer = 2 * params_per_layer * seq_len + 4 * seq_len**2 * h
    return layers * per_layer + 2 * h * config.vocab_size


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def median_ms(fn, device: torch.device, repeats: int, warmup: int, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        synchronize(device)
        times.append(now() - start)
    return 1000.0 * statistics.median(times)


def prompt_embeddings(model, n_visual: int, generator: torch.Generator) -> torch.Tensor:
    """(1, TEXT_BEFORE + n_visual + TEXT_AFTER, h) prompt: text-token embeddings around visual
    embeddings drawn at the text embeddings' scale."""
    embed = model.get_input_embeddings()
    device, dtype = embed.weight.device, embed.weight.dtype
    ids = torch.randint(0, embed.num_embeddings, (1, TEXT_BEFORE + TEXT_AFTER), generator=generator)
    text = embed(ids.to(device))  # (1, 40, h)
    scale = text.float().std()
    visual = (torch.randn(1, n_visual, text.shape[-1], generator=generator) * scale).to(device, dtype)
    return torch.cat([text[:, :TEXT_BEFORE], visual, text[:, TEXT_BEFORE:]], dim=1)


def clip_like_image(generator: torch.Generator, device, dtype, n_regions: int = 12):
    """Synthetic (1, 576, 1024) patch features and (1, 576) saliency shaped like CLIP's."""
    side = int(N_VISUAL**0.5)  # 24
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2).float()
    seeds = torch.rand(n_regions, 2, generator=generator) * side
    region = torch.cdist(grid, seeds).argmin(dim=1)  # (576,) Voronoi regions on the patch grid
    shared = torch.randn(FEATURE_DIM, generator=generator) * 1.5
    centres = torch.randn(n_regions, FEATURE_DIM, generator=generator)
    noise = torch.randn(N_VISUAL, FEATURE_DIM, generator=generator) * 0.6
    x = shared + centres[region] + noise  # (576, 1024)
    outliers = torch.randperm(N_VISUAL, generator=generator)[:2]
    x[outliers] = torch.randn(2, FEATURE_DIM, generator=generator) * 8.0  # high-norm artefact tokens
    logits = torch.randn(n_regions, generator=generator)[region] + 0.5 * torch.randn(N_VISUAL, generator=generator)
    logits[outliers] += 6.0  # CLS attention piles onto the artefact tokens
    saliency = torch.softmax(logits, dim=0) * 16  # summed over 16 heads
    return x.unsqueeze(0).to(device, dtype), saliency.unsqueeze(0).to(device, dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", default="benchmarks/results/prefill_and_selectors.csv", help="CSV to write")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default: 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 gives steadier ratios on a busy machine")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or process: this process's CPU time, which other processes' "
                             "load does not inflate; meaningful with --threads 1 on CPU only")
    args = parser.parse_args(argv)
    if args.clock == "process" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock process: needs --device cpu and --threads 1 (CPU time of several threads adds up)")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads: must be >= 1")
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = torch.get_num_threads()
    print(f"device: {device_name}; torch {torch.__version__}; threads {threads}; clock {args.clock}; "
          f"load average {load:.2f}")
    if device.type == "cpu" and args.clock == "wall" and load > 0.5 * (os.cpu_count() or 1):
        print("warning: this machine is busy, so wall-clock times are unreliable; rerun when it is idle, "
              "or use --threads 1 --clock process")

    rows = []
    common = dict(device=device_name, repeats=repeats, torch_threads=threads, clock=args.clock, load_avg=round(load, 2))
    generator = torch.Generator().manual_seed(args.seed)

    # 1-2. Prefill, unpruned and pruned.
    model, config = build_model(device, dtype, args.seed)
    print(
        f"language model: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"intermediate {config.intermediate_size}, {config.num_attention_heads} heads, {dtype}"
    )
    full = prompt_embeddings(model, N_VISUAL, generator)
    prefill_ms = {}
    with torch.inference_mode():
        for k in (N_VISUAL, *BUDGETS):
            # the kept visual tokens: the first k of the visual block (which ones does not matter for time)
            emb = torch.cat([full[:, : TEXT_BEFORE + k], full[:, TEXT_BEFORE + N_VISUAL :]], dim=1)

            def run(emb=emb):
                return model(inputs_embeds=emb, use_cache=True, logits_to_keep=1)

            prefill_ms[k] = median_ms(run, device, repeats, args.warmup, args.clock)
            seq_len = emb.shape[1]
            rows.append(
                dict(
                    section="prefill",
                    name="unpruned" if k == N_VISUAL else "pruned",
                    k=k,
                    seq_len=seq_len,
                    median_ms=prefill_ms[k],
                    flops_ratio=prefill_flops(config, seq_len) / prefill_flops(config, TEXT_BEFORE + N_VISUAL + TEXT_AFTER),
                    time_ratio=prefill_ms[k] / prefill_ms.get(N_VISUAL, prefill_ms[k]),
                    **common,
                )
            )
    del model
    unpruned_ms = prefill_ms[N_VISUAL]

    # 3. Selectors at N = 576, d = 1024.
    features, saliency = clip_like_image(generator, device, dtype)
    image_erank = erank_batch(features)  # (1,)
    erank_ref = float(image_erank[0])  # so tau = c for this image
    selectors = [
        ("random", "random", {}),
        ("saliency", "saliency", {}),
        ("scope", "scope", {}),
        ("scope alpha=0", "scope", {"alpha": 0.0}),
        ("scope p=2", "scope", {"gap_power": 2.0}),
        ("divprune", "divprune", {}),
        ("adaptive", "adaptive", {"erank_ref": erank_ref}),
        ("adaptive (erank given)", "adaptive", {"erank_ref": erank_ref, "image_erank": image_erank}),
    ]
    for label, method, params in selectors:
        for k in BUDGETS:
            ms = median_ms(lambda: select(method, features, saliency, k, **params), device, repeats, 1, args.clock)
            rows.append(
                dict(section="selector", name=label, k=k, seq_len="", median_ms=ms, flops_ratio="",
                     time_ratio=ms / unpruned_ms, **common)
            )

    # Table and CSV.
    print(f"\nprefill (median of {repeats}; FLOPs formula in the module docstring)")
    print(f"{'visual tokens':>14} {'seq len':>8} {'ms':>9} {'time ratio':>11} {'FLOPs ratio':>12}")
    for r in rows:
        if r["section"] == "prefill":
            print(f"{r['k']:>14} {r['seq_len']:>8} {r['median_ms']:>9.1f} {r['time_ratio']:>11.3f} {r['flops_ratio']:>12.3f}")
    print(f"\nselectors at N = {N_VISUAL}, d = {FEATURE_DIM}, one image (median of {repeats}): "
          f"ms and % of one unpruned prefill ({unpruned_ms:.1f} ms)")
    print(f"{'selector':>24} " + " ".join(f"{'K=' + str(k):>16}" for k in BUDGETS))
    for label, _, _ in selectors:
        cells = [r for r in rows if r["section"] == "selector" and r["name"] == label]
        print(f"{label:>24} " + " ".join(f"{c['median_ms']:>7.2f} ms {100 * c['time_ratio']:>5.2f}%" for c in cells))
    scope_192 = next(r for r in rows if r["name"] == "scope" and r["k"] == 192)
    verdict = "within" if scope_192["time_ratio"] <= 0.02 else "ABOVE"
    print(f"\nSCOPE at K = 192: {100 * scope_192['time_ratio']:.2f}% of an unpruned prefill ({verdict} the 2% target)")

    fields = ["device", "section", "name", "k", "seq_len", "median_ms", "flops_ratio", "time_ratio",
              "repeats", "torch_threads", "clock", "load_avg"]
    print(f"wrote {write_csv(rows, args.out, fields)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
