"""Command line: run one configuration or a grid and print the headline metrics.

Examples::

    python -m visprune run --dataset pope-adversarial --method scope --k 16 -P alpha=0
    python -m visprune grid --datasets pope-random scienceqa --methods none saliency scope random \\
        --budgets 16 32 48 --n-samples 300
    python -m visprune run --profile llava-1.5-7b --model /models/llava-1.5-7b-hf \\
        --pope /data/pope --coco-images /data/coco/val2014 --dataset pope-random --method fastv --k 64

Results are cached under the profile's results folder (``data/results`` by default); a run that
is already complete is loaded, an interrupted one resumes. Bad input ends with one line on
stderr naming what was wrong, and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import replace

import pandas as pd

from visprune.evaluation import DATASETS, METHODS, Evaluator, RunConfig, summarize
from visprune.profiles import PROFILES, resolve_profile


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-P expects name=value, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m visprune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "grid"):
        p = sub.add_parser(name)
        p.add_argument("--profile", default="toy", choices=PROFILES)
        for opt in ("model", "coco-images", "coco-annotations", "pope", "scienceqa", "results"):
            p.add_argument(f"--{opt}", default=None, help="path (see visprune.profiles)")
        p.add_argument("--world", default=None, help="toy world folder (toy profile; default data/toyworld)")
        p.add_argument("--chunk-size", type=int, default=96, help="samples per cache chunk")
        p.add_argument("--n-samples", type=int, default=None, help="first n samples (CHAIR: n images)")
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        p.add_argument("--max-new-tokens", type=int, default=64, help="caption length limit (chair)")
        p.add_argument("-P", "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                       help="method parameter, e.g. alpha=0.5, gap_power=2, layer=2, seed=1 (repeatable)")
        p.add_argument("--no-progress", action="store_true")
    run = sub.choices["run"]
    run.add_argument("--dataset", required=True, choices=DATASETS)
    run.add_argument("--method", default="none", choices=METHODS)
    run.add_argument("--k", type=int, default=None)
    grid = sub.choices["grid"]
    grid.add_argument("--datasets", nargs="+", required=True, choices=DATASETS)
    grid.add_argument("--methods", nargs="+", required=True, choices=METHODS)
    grid.add_argument("--budgets", nargs="+", type=int, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        profile = resolve_profile(
            args.profile, model=args.model, coco_images=args.coco_images,
            coco_annotations=args.coco_annotations, pope=args.pope, scienceqa=args.scienceqa,
            results=args.results, **({"world": args.world} if args.world else {}),
        )
        evaluator = Evaluator(profile, device=args.device, batch_size=args.batch_size, progress=not args.no_progress)
        params = dict(args.param)
        if args.command == "run":
            configs = [RunConfig(args.dataset, args.method, args.k, dict(params), args.n_samples, args.max_new_tokens,
                                 chunk_size=args.chunk_size)]
        else:
            configs = []
            for dataset in args.datasets:
                for method in args.methods:
                    budgets = [None] if method == "none" else args.budgets
                    for k in budgets:
                        mine = {} if method == "none" else _params_for(method, params)
                        configs.append(RunConfig(dataset, method, k, mine, args.n_samples, args.max_new_tokens,
                                                 chunk_size=args.chunk_size))
        for config in configs:  # all checked before any model is loaded; erank_ref is measured below
            needs_ref = config.method == "adaptive" and "erank_ref" not in config.params
            evaluator.validate(replace(config, params={**config.params, "erank_ref": 1.0}) if needs_ref else config)
        if any(c.method == "adaptive" and "erank_ref" not in c.params for c in configs):
            ref = evaluator.reference_erank()
            configs = [replace(c, params={**c.params, "erank_ref": ref})
                       if c.method == "adaptive" and "erank_ref" not in c.params else c for c in configs]
        rows = []
        truth = None
        for config in configs:
            records = evaluator.run(config)
            if config.dataset == "chair" and truth is None:
                from visprune.evaluation import chair_truth

                truth = chair_truth(profile)
            summary = summarize(records, ground_truth=truth, synonyms=profile.chair_synonyms)
            rows.append({"dataset": config.dataset, "run": config.label(), **summary})
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if evaluator.processes.rank != 0:
        return 0  # under accelerate launch, the first process prints the table
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.precision", 4):
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _params_for(method: str, params: dict) -> dict:
    """The subset of ``-P`` parameters a method takes (a grid mixes methods)."""
    takes = {
        "random": {"seed"}, "saliency": set(), "scope": {"alpha", "gap_power"}, "divprune": set(),
        "adaptive": {"c", "tau_max", "erank_ref"}, "fastv": {"layer"},
    }[method]
    return {k: v for k, v in params.items() if k in takes}


if __name__ == "__main__":
    raise SystemExit(main())
