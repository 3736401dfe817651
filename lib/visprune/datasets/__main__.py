"""Command line for the readers of real data sets (README "Data").

    python -m visprune.datasets pope --instances INSTANCES.json --out-dir DIR [--prefix coco_pope_]
        [--n-images 500] [--seed 0]

``pope`` writes POPE's three question files (random, popular, adversarial) built from COCO
instances annotations with POPE's rules (:func:`visprune.datasets.pope.build_pope`, DESIGN.md
section 6); everything is built before the first file is written, and each file is written
atomically. Every bad input (an option out of range, a missing or malformed file, an output
path that is a file or cannot be written) gives one line on stderr naming the option or the
file, and exit status 2; Ctrl-C gives "interrupted; rerun the same command to start again" and
exit status 130 (``visprune._validation.run_command``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from visprune import _validation as v
from visprune.datasets import pope

PROG = "python -m visprune.datasets"


def build_parser() -> v.CommandLineParser:
    parser = v.CommandLineParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("pope", help="build POPE question files from COCO instances annotations")
    pp.add_argument("--instances", type=Path, required=True)
    pp.add_argument("--out-dir", type=Path, required=True)
    pp.add_argument("--prefix", default="coco_pope_", help="file name prefix (files are {prefix}{strategy}.json)")
    pp.add_argument("--n-images", type=v.int_option(0), default=500, help="images per file (0: all eligible)")
    pp.add_argument("--seed", type=v.int_option(0), default=0)
    parser.commands = {"pope": pp}  # their errors name the sub-command
    return parser


def _pope(args, parser) -> int:
    if not args.prefix or "/" in args.prefix or "\\" in args.prefix or args.prefix in (".", ".."):
        parser.error(f"argument --prefix: must be a file name prefix without a folder, got {args.prefix!r}")
    instances = v.input_file(args.instances, "--instances", "COCO instances file")
    v.output_folder(args.out_dir, "--out-dir")
    targets = {s: args.out_dir / f"{args.prefix}{s}.json" for s in pope.STRATEGIES}
    for target in targets.values():
        v.output_file(target, "--out-dir")
    index = pope.load_instances(instances)  # names the file (and line) if it is malformed
    built = {s: pope.build_pope(index, s, n_images=args.n_images or None, seed=args.seed) for s in pope.STRATEGIES}
    for strategy, questions in built.items():  # everything is built before the first file is written
        path = pope.write_pope(questions, targets[strategy])
        print(f"{path}: {len(questions)} questions")
    return 0


COMMANDS = {"pope": _pope}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args, parser.commands[args.command])

    return v.run_command(PROG, body, on_interrupt="start again")


if __name__ == "__main__":
    sys.exit(main())
