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
import os
import sys
import warnings

import pandas as pd

from visprune.engine.cache import CacheWriteError, check_writable_dir
from visprune.engine.config import RunConfig, method_parameters
from visprune.engine.datasets import DATASETS, chair_truth, dataset_spec
from visprune.engine.profiles import PROFILES, resolve_profile
from visprune.engine.runner import Evaluator
from visprune.engine.summary import LowAnswerMassWarning, answer_mass_warning, summarize
from visprune.instrument.llava.images import PREPROCESS
from visprune.pruning import available_methods, spec as method_spec

INTERRUPTED = "interrupted; rerun the same command to resume"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...``) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _param(text: str) -> tuple[str, object]:
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"-P expects name=value, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m visprune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in ("run", "grid"):
        p = sub.add_parser(name)
        p.add_argument("--profile", default="toy", choices=PROFILES)
        for opt in ("model", "coco-images", "coco-annotations", "pope", "scienceqa", "results"):
            p.add_argument(f"--{opt}", default=None, help="path (see visprune.engine.profiles)")
        p.add_argument("--world", default=None, help="toy world folder (toy profile; default data/toyworld)")
        p.add_argument("--chunk-size", type=int, default=96, help="samples per cache chunk")
        p.add_argument("--n-samples", type=int, default=None,
                       help="first n samples (CHAIR: n images; default: all, or 500 on a real profile)")
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
        p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: by device)")
        p.add_argument("--max-new-tokens", type=int, default=None,
                       help="caption length limit (chair; default 512 on a real profile, 64 on the toy one)")
        p.add_argument("--sample-seed", type=int, default=0, help="seed of the CHAIR image draw")
        p.add_argument("--preprocess", default="pad", choices=PREPROCESS,
                       help="pad: expand to a square with the processor's mean colour (LLaVA-1.5); crop: centre crop")
        p.add_argument("-P", "--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                       help="method parameter, e.g. alpha=0.5, gap_power=2, layer=2, seed=1, "
                            "feature_space=vision (repeatable; every parameter of the method is accepted)")
        p.add_argument("--no-progress", action="store_true")
    run = sub.choices["run"]
    run.add_argument("--dataset", required=True, choices=DATASETS)
    run.add_argument("--method", default="none", choices=available_methods())
    run.add_argument("--k", type=int, default=None)
    grid = sub.choices["grid"]
    grid.add_argument("--datasets", nargs="+", required=True, choices=DATASETS)
    grid.add_argument("--methods", nargs="+", required=True, choices=available_methods())
    grid.add_argument("--budgets", nargs="+", type=int, required=True)
    return parser


def _configs(args: argparse.Namespace) -> list[RunConfig]:
    """The run configurations the command asks for; every -P parameter must belong to a method."""
    params = dict(args.param)
    common = dict(n_samples=args.n_samples, max_new_tokens=args.max_new_tokens, sample_seed=args.sample_seed,
                  chunk_size=args.chunk_size, preprocess=args.preprocess)
    if args.command == "run":
        return [RunConfig(args.dataset, args.method, args.k, params, **common)]
    takes = {m: set(method_parameters(m)) for m in args.methods}
    for name in params:
        if not any(name in t for t in takes.values()):
            listing = "; ".join(f"{m}: {', '.join(sorted(t)) or 'none'}" for m, t in takes.items())
            raise ValueError(f"{name}: not a parameter of any of the methods {', '.join(args.methods)} ({listing})")
    configs = []
    for dataset in args.datasets:
        for method in args.methods:
            mine = {k: v for k, v in params.items() if k in takes[method]}
            for k in ([None] if method_spec(method).stage == "none" or not method_spec(method).budget else args.budgets):
                configs.append(RunConfig(dataset, method, k, mine, **common))
    return configs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, CacheWriteError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("VISPRUNE_DEBUG"):
            raise
        print(f"error: internal error ({type(err).__name__}: {_one_line(err)}); rerun with VISPRUNE_DEBUG=1 "
              "for the traceback and report it", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, OSError) and err.strerror and not text.startswith(str(err.strerror)):
        text = text.replace(f"[Errno {err.errno}] ", "")
    return " ".join(text.split()) or type(err).__name__


def _main(args: argparse.Namespace) -> int:
    profile = resolve_profile(
        args.profile, model=args.model, coco_images=args.coco_images,
        coco_annotations=args.coco_annotations, pope=args.pope, scienceqa=args.scienceqa,
        results=args.results, **({"world": args.world} if args.world else {}),
    )
    evaluator = Evaluator(profile, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                          progress=not args.no_progress)
    configs = _configs(args)
    for config in configs:  # all checked before any model is loaded; measured parameters come below
        evaluator.validate(evaluator.with_measured(config, placeholder=True))
    check_writable_dir(profile.results)
    configs = [evaluator.with_measured(config) for config in configs]
    rows = []
    truth = None
    notes = []
    for config in configs:
        records = evaluator.run(config)
        if dataset_spec(config.dataset).task == "captioning" and truth is None:
            truth = chair_truth(profile)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowAnswerMassWarning)  # printed below, once per run
            summary = summarize(records, ground_truth=truth, synonyms=profile.chair_synonyms)
        note = answer_mass_warning(records)
        if note:
            notes.append(note)
        rows.append({"dataset": config.dataset, "run": records["run"].iloc[0], **summary})
    if evaluator.processes.rank != 0:
        return 0  # under accelerate launch, the first process prints the table
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.precision", 4):
        print(pd.DataFrame(rows).to_string(index=False))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
