"""Benchmark: the evaluation engine's throughput against the bare model forward, and peak memory.

Not a test (timings never gate anything); run it by hand:

    python benchmarks/engine_throughput.py                                  # toy profile, CPU
    python benchmarks/engine_throughput.py --threads 1 --clock process      # steadier on a busy machine
    python benchmarks/engine_throughput.py --device cuda                    # the same on a GPU
    python benchmarks/engine_throughput.py --profile llava-1.5-7b --device cuda   # paths from VISPRUNE_* variables

What it measures (benchmarks/README.md says how to read the table). The same POPE questions
(the first ``--n-samples`` of ``--dataset``, six per image), the same model object and the same
``--batch-size`` go through three paths:

- ``bare``: the plain transformers model. For each batch of ``batch_size`` questions in data-set
  order: open the images, ``LlavaProcessor(images=..., text=..., padding=True)`` (left padding,
  ``<image>`` expanded to N tokens), ``LlavaForConditionalGeneration(**inputs, logits_to_keep=1)``,
  softmax and argmax of the last position's logits. Every question runs its image through the
  vision tower again, and nothing is stored: the least work that answers the questions.
- ``engine``: ``Evaluator.run(RunConfig(dataset, "none", n_samples=n))`` into a fresh, empty
  results folder: samples read from the data set's files, grouped by image, the vision tower,
  the image statistics (erank, CLS-attention entropy) and the selection once per image, the
  prompts in padded batches through ``PrunedLlava.score``, the erank of the kept tokens, the
  records written chunk by chunk (fsync, checksum) and read back into a table. Everything a
  chapter pays for a run that is not cached yet.
- ``engine-no-reuse``: the same, but every question's image goes through the vision tower on its
  own (a subclass of ``Evaluator`` gives each sample of a chunk its own image group; the chunks,
  the batches of prompts and the records are otherwise the same). The engine's default is
  unchanged.

Each path runs in its own fresh Python process (so its peak memory is its own): the model is
loaded first (not timed), then one small untimed warm-up pass, then ``--repeats`` timed passes;
the median time gives samples per second. Peak memory: on CPU the peak resident set size of the
process during the timed passes (Linux: the ``VmHWM`` counter is reset after loading and the
warm-up, through ``/proc/self/clear_refs``; elsewhere ``getrusage``'s lifetime peak), beside the
resident size at that point (``rss_loaded_mb``); on CUDA ``torch.cuda.max_memory_allocated``
over the timed passes.

As a check that the three paths compute the same thing, each reports P(yes) over {yes, no} for
every question (from the last pass), and the table gives the largest difference to ``bare``.

The CSV (default benchmarks/results/engine_throughput.csv) has one row per path: device, model,
variant, dataset, n_samples, n_images, batch_size, median_s, samples_per_s, ratio_to_bare,
rss_loaded_mb, peak_rss_mb, peak_scope (run | process), cuda_peak_mb, max_abs_diff_p_yes,
repeats, torch_threads, clock, load_avg (1-minute load average when the path started).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("bare", "engine", "engine-no-reuse")
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
RESULT_TAG = "ENGINE_THROUGHPUT_RESULT "


# ------------------------------------------------------------------------------ memory


def _status_kb(field: str) -> float | None:
    """A ``/proc/self/status`` counter in kB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def reset_peak_rss() -> bool:
    """Reset the peak resident set size (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def peak_rss_mb(reset_worked: bool) -> float:
    if reset_worked:
        return _status_kb("VmHWM") / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# ------------------------------------------------------------------------------ the three paths


def bare_pass(llava, samples, batch_size: int):
    """The plain transformers forward over ``samples`` in batches; returns the last logits (n, V)."""
    import torch

    from visprune.instrument import prompts

    model, processor = llava.model, llava.processor
    image_token = getattr(processor, "image_token", prompts.IMAGE_TOKEN)
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            images = [s.load_image() for s in batch]
            texts = [prompts.conversation(s.prompt, image_token=image_token) for s in batch]
            inputs = processor(images=images, text=texts, padding=True, return_tensors="pt").to(llava.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(llava.dtype)
            logits = model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (B, V)
            probs = torch.softmax(logits, dim=-1)
            probs.argmax(dim=-1).cpu()  # the answer token (synchronises on CUDA)
            out.append(logits.cpu())
    return torch.cat(out)


def no_reuse_evaluator_class():
    """An ``Evaluator`` that runs every question's image through the vision tower on its own."""
    from visprune.engine import Evaluator

    class NoReuseEvaluator(Evaluator):
        def _compute(self, config, samples, positions):
            # each sample becomes its own image group inside the chunk; the records get the real ids back
            alone = [dataclasses.replace(s, image_id=f"{s.image_id}#{s.sample_id}") for s in samples]
            records = super()._compute(config, alone, positions)
            for record, sample in zip(records, samples):
                record["image_id"] = sample.image_id
            return records

    return NoReuseEvaluator


def engine_pass(profile, llava, config, batch_size: int, reuse: bool, device):
    """``Evaluator.run`` into a fresh temporary results folder; returns the records table."""
    from visprune.engine import Evaluator
    from visprune.engine.profiles import with_results

    cls = Evaluator if reuse else no_reuse_evaluator_class()
    with tempfile.TemporaryDirectory(prefix="engine-throughput-") as folder:
        ev = cls(with_results(profile, folder), device=device, batch_size=batch_size, progress=False, model=llava)
        return ev.run(config)


def worker(args) -> int:
    """Measure one path in this process; print one tagged JSON line for the parent."""
    import torch

    from visprune.engine import RunConfig, ensure_toy_world, load_samples
    from visprune.instrument.llava import PrunedLlava
    from visprune.engine.profiles import resolve_profile

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = torch.device(args.device)
    profile = resolve_profile(args.profile, model=args.model, world=args.world) if args.profile == "toy" \
        else resolve_profile(args.profile, model=args.model)
    ensure_toy_world(profile)
    config = RunConfig(args.dataset, "none", n_samples=args.n_samples)
    samples = load_samples(profile, config)
    llava = PrunedLlava.from_pretrained(profile.model, device=device)
    yes_ids, no_ids = llava.answer_token_ids("yes"), llava.answer_token_ids("no")

    variant = args.worker
    if variant == "bare":
        warm = lambda: bare_pass(llava, samples[: args.batch_size], args.batch_size)  # noqa: E731
        run = lambda: bare_pass(llava, samples, args.batch_size)  # noqa: E731
    else:
        reuse = variant == "engine"
        warm_config = dataclasses.replace(config, n_samples=min(args.batch_size, len(samples)))
        warm = lambda: engine_pass(profile, llava, warm_config, args.batch_size, reuse, args.device)  # noqa: E731
        run = lambda: engine_pass(profile, llava, config, args.batch_size, reuse, args.device)  # noqa: E731

    warm()
    rss_loaded = current_rss_mb()
    reset_worked = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    now = CLOCKS[args.clock]
    times, result = [], None
    for _ in range(args.repeats):
        start = now()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(now() - start)
    peak = peak_rss_mb(reset_worked)
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")

    if variant == "bare":  # P(yes) over {yes, no}, each answer's mass summed over its variants
        lse = lambda ids: torch.logsumexp(result[:, ids], dim=-1)  # noqa: E731
        p_yes = torch.sigmoid(lse(yes_ids) - lse(no_ids)).tolist()
        n_images = len(samples)  # every question encodes its image
    else:
        p_yes = [float(p[0]) for p in result["probs"]]
        n_images = len({s.image_id for s in samples}) if variant == "engine" else len(samples)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    out = dict(
        device=device_name, model=Path(profile.model).name, variant=variant, dataset=args.dataset,
        n_samples=len(samples), n_images=n_images, batch_size=args.batch_size,
        times=times, rss_loaded_mb=rss_loaded, peak_rss_mb=peak, peak_scope="run" if reset_worked else "process",
        cuda_peak_mb=cuda_peak, p_yes=p_yes, torch_threads=torch.get_num_threads(), clock=args.clock,
        load_avg=round(load, 2), dtype=str(llava.dtype).replace("torch.", ""),
    )
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------------------ the parent


def run_child(variant: str, args) -> dict:
    """Run one path in a fresh Python process and return its measurements."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", variant]
    for name in ("profile", "model", "world", "dataset", "n_samples", "batch_size", "repeats", "device", "threads", "clock"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    if args.threads == 1:  # keep the tokenizer's Rust threads out of a one-thread measurement
        env["TOKENIZERS_PARALLELISM"] = "false"
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {variant!r} measurement failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy", help="toy (default) or llava-1.5-7b (paths from VISPRUNE_* variables)")
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the profile's model)")
    parser.add_argument("--world", default=None, help="toy world folder (default: data/toyworld)")
    parser.add_argument("--dataset", default="pope-random", help="a POPE split (default pope-random)")
    parser.add_argument("--n-samples", type=int, default=192, help="questions (default 192: 32 images x 6)")
    parser.add_argument("--batch-size", type=int, default=16, help="images and prompts per forward (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the three paths this many times, interleaved (default 1); the table "
                             "takes the median over all passes")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or process: the process's CPU time (with --threads 1 on CPU only; "
                             "it leaves out time spent waiting for the disk)")
    parser.add_argument("--out", default="benchmarks/results/engine_throughput.csv", help="CSV to write")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.dataset.startswith("pope-"):
        parser.error("--dataset: a POPE split (pope-random, pope-popular, pope-adversarial)")
    for name in ("n_samples", "batch_size", "repeats", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads: must be >= 1")
    if args.clock == "process" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock process: needs --device cpu and --threads 1 (CPU time of several threads adds up)")
    if args.worker:
        return worker(args)

    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            print(f"round {round_index + 1}/{args.rounds}: {variant} ...", flush=True)
            results[variant].append(run_child(variant, args))

    rows = []
    for variant in VARIANTS:
        parts = results[variant]
        first = parts[0]
        times = [t for p in parts for t in p["times"]]
        median_s = statistics.median(times)
        rows.append(dict(
            device=first["device"], model=first["model"], variant=variant, dataset=first["dataset"],
            n_samples=first["n_samples"], n_images=first["n_images"], batch_size=first["batch_size"],
            median_s=median_s, samples_per_s=first["n_samples"] / median_s, ratio_to_bare=float("nan"),
            rss_loaded_mb=max(p["rss_loaded_mb"] for p in parts), peak_rss_mb=max(p["peak_rss_mb"] for p in parts),
            peak_scope=first["peak_scope"], cuda_peak_mb=max(p["cuda_peak_mb"] for p in parts),
            max_abs_diff_p_yes=float("nan"), repeats=len(times), torch_threads=first["torch_threads"],
            clock=first["clock"], load_avg=max(p["load_avg"] for p in parts), dtype=first["dtype"],
            _p_yes=first["p_yes"],
        ))
    bare = rows[0]
    for r in rows:
        r["ratio_to_bare"] = r["samples_per_s"] / bare["samples_per_s"]
        r["max_abs_diff_p_yes"] = max(abs(a - b) for a, b in zip(r.pop("_p_yes"), bare["_p_yes"])) if r is not bare else 0.0
    bare.pop("_p_yes", None)

    print(f"\ndevice: {bare['device']}; model {bare['model']} ({bare['dtype']}); {bare['dataset']}, "
          f"{bare['n_samples']} questions, batch size {bare['batch_size']}; threads {bare['torch_threads']}; "
          f"clock {bare['clock']}; load average up to {max(r['load_avg'] for r in rows):.2f}")
    memory = "peak CUDA MB" if args.device == "cuda" else "peak RSS MB"
    print(f"{'path':>16} {'images':>7} {'s':>8} {'samples/s':>10} {'vs bare':>8} {'RSS before MB':>14} {memory:>13} "
          f"{'max |dP(yes)|':>14}")
    for r in rows:
        mem = r["cuda_peak_mb"] if args.device == "cuda" else r["peak_rss_mb"]
        print(f"{r['variant']:>16} {r['n_images']:>7} {r['median_s']:>8.2f} {r['samples_per_s']:>10.1f} "
              f"{r['ratio_to_bare']:>8.2f} {r['rss_loaded_mb']:>14.0f} {mem:>13.0f} {r['max_abs_diff_p_yes']:>14.2e}")
    for variant in ("engine", "engine-no-reuse"):
        r = next(x for x in rows if x["variant"] == variant)
        verdict = "meets" if r["ratio_to_bare"] >= 0.9 else "MISSES"
        print(f"{variant}: {100 * r['ratio_to_bare']:.0f}% of the bare forward's throughput ({verdict} the 90% target)")

    from visprune.book.performance import write_csv  # here, so the timed worker processes do not load matplotlib

    print(f"wrote {write_csv(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
