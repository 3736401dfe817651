"""Command line for the toy LLaVA.

    python -m visprune.toymodel train --world data/toyworld --out data/models/toy-llava --seed 0 [--small]
    python -m visprune.toymodel card --model data/models/toy-llava --world data/toyworld [--captions 100]

``train`` generates the toy world first if ``--world`` holds none (``--small`` then generates a
tiny one and trains a tiny model in seconds, for tests). ``card`` measures the model on the
test split and writes ``README.md`` and ``card.json`` beside the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from visprune.toymodel import build, train


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visprune.toymodel", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train the toy LLaVA on the toy world and save it")
    tr.add_argument("--world", type=Path, default=Path("data/toyworld"), help="toy world folder (generated if missing)")
    tr.add_argument("--out", type=Path, default=Path("data/models/toy-llava"), help="output checkpoint folder")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--small", action="store_true", help="tiny model, schedule and world (tests)")
    tr.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    tr.add_argument("--vision-epochs", type=int, default=None)
    tr.add_argument("--lm-epochs", type=int, default=None)
    tr.add_argument("--max-lm-steps", type=int, default=None)

    cd = sub.add_parser("card", help="measure the model on the test split and write its model card")
    cd.add_argument("--model", type=Path, default=Path("data/models/toy-llava"))
    cd.add_argument("--world", type=Path, default=Path("data/toyworld"))
    cd.add_argument("--captions", type=int, default=100, help="test images captioned for CHAIR")
    cd.add_argument("--questions", type=int, default=None, help="first N questions per data set (default: all)")
    cd.add_argument("--threads", type=int, default=2)

    args = parser.parse_args(argv)
    if args.command == "train":
        size = build.SMALL if args.small else build.FULL
        schedule = train.SMALL_SCHEDULE if args.small else train.FULL_SCHEDULE
        changes = {k: v for k, v in (("threads", args.threads), ("vision_epochs", args.vision_epochs),
                                     ("lm_epochs", args.lm_epochs), ("max_lm_steps", args.max_lm_steps)) if v is not None}
        schedule = dataclasses.replace(schedule, **changes)
        world_params = train.SMALL_WORLD if args.small else None
        train.train_toy_llava(args.world, args.out, seed=args.seed, size=size, schedule=schedule,
                              world_params=world_params, log=_log)
    elif args.command == "card":
        from visprune.toymodel import card

        result = card.write_card(args.model, args.world, n_captions=args.captions, n_questions=args.questions,
                                 threads=args.threads, log=_log)
        for name, check in result["targets"].items():
            print(f"{'met ' if check['met'] else 'MISSED'}  {name}: {check['value']}")
        print(f"wrote {args.model / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
