"""Command line for the toy LLaVA.

    python -m visprune.toymodel train --world data/toyworld --out lib/visprune/assets/toy-llava --seed 0 [--small]
    python -m visprune.toymodel card --model lib/visprune/assets/toy-llava --world data/toyworld [--captions 100]

``train`` generates the toy world first if ``--world`` holds none (``--small`` then generates a
tiny one and trains a tiny model in seconds, for tests). ``card`` measures the model on the
test split and writes ``README.md`` and ``card.json`` beside the weights.

Every bad input (an option out of range, a missing world or model folder, a model folder that is
not a checkpoint, an output path that is a file or cannot be written) gives one line on stderr
naming the option or the file, and exit status 2, before any work; Ctrl-C gives "interrupted;
rerun the same command to start again" and exit status 130 (``visprune._validation.run_command``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from visprune import _validation as v

PROG = "python -m visprune.toymodel"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_parser() -> v.CommandLineParser:
    parser = v.CommandLineParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train the toy LLaVA on the toy world and save it")
    tr.add_argument("--world", type=Path, default=Path("data/toyworld"), help="toy world folder (generated if missing)")
    tr.add_argument("--out", type=Path, default=Path("lib/visprune/assets/toy-llava"), help="output checkpoint folder")
    tr.add_argument("--seed", type=v.int_option(0), default=0)
    tr.add_argument("--small", action="store_true", help="tiny model, schedule and world (tests)")
    tr.add_argument("--threads", type=v.int_option(1), default=None, help="torch threads (default 2)")
    tr.add_argument("--vision-epochs", type=v.int_option(0), default=None)
    tr.add_argument("--lm-epochs", type=v.int_option(0), default=None)
    tr.add_argument("--max-lm-steps", type=v.int_option(1), default=None)

    cd = sub.add_parser("card", help="measure the model on the test split and write its model card")
    cd.add_argument("--model", type=Path, default=Path("lib/visprune/assets/toy-llava"))
    cd.add_argument("--world", type=Path, default=Path("data/toyworld"))
    cd.add_argument("--captions", type=v.int_option(1), default=100, help="test images captioned for CHAIR")
    cd.add_argument("--questions", type=v.int_option(1), default=None, help="first N questions per data set (default: all)")
    cd.add_argument("--threads", type=v.int_option(1), default=2)
    return parser


def _train(args) -> int:
    from visprune import toyworld
    from visprune.toymodel import build, train

    world = toyworld.check_world_folder(args.world, "--world")  # generated there if it holds no toy world
    out = v.output_folder(args.out, "--out")
    if out.resolve() == world.resolve():
        raise ValueError(f"--out: {out} is the toy world folder; pass another folder for the checkpoint")
    size = build.SMALL if args.small else build.FULL
    schedule = train.SMALL_SCHEDULE if args.small else train.FULL_SCHEDULE
    changes = {k: val for k, val in (("threads", args.threads), ("vision_epochs", args.vision_epochs),
                                     ("lm_epochs", args.lm_epochs), ("max_lm_steps", args.max_lm_steps)) if val is not None}
    schedule = dataclasses.replace(schedule, **changes)
    world_params = train.SMALL_WORLD if args.small else None
    train.train_toy_llava(world, out, seed=args.seed, size=size, schedule=schedule, world_params=world_params, log=_log)
    return 0


def _card(args) -> int:
    from visprune.toymodel import card

    names = {"model_dir": "--model", "world": "--world", "n_captions": "--captions", "n_questions": "--questions",
             "threads": "--threads"}
    card.check_inputs(args.model, args.world, args.captions, args.questions, args.threads, names=names)
    result = card.write_card(args.model, args.world, n_captions=args.captions, n_questions=args.questions,
                             threads=args.threads, log=_log)
    for name, check in result["targets"].items():
        print(f"{'met ' if check['met'] else 'MISSED'}  {name}: {check['value']}")
    print(f"wrote {args.model / 'README.md'}")
    return 0


COMMANDS = {"train": _train, "card": _card}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)

    return v.run_command(PROG, body, on_interrupt="start again")


if __name__ == "__main__":
    sys.exit(main())
