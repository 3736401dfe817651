"""Command line for the data sets (README "Data").

    python -m visprune.data toyworld [--out data/toyworld] [--seed 0] [--n-images 2000]
        [--split-fractions 0.7 0.1 0.2] [--pope-images 500] [--sqa-per-image 1] [--force]
    python -m visprune.data pope --instances INSTANCES.json --out-dir DIR [--prefix coco_pope_]
        [--n-images 500] [--seed 0]
    python -m visprune.data synonyms [--out lib/visprune/assets/chair/toy_synonyms.txt]

Every bad input (an option out of range, a missing or malformed file, an output path that is a
file or cannot be written) gives one line on stderr naming the option or the file, and exit
status 2; Ctrl-C gives "interrupted; rerun the same command to ..." and exit status 130
(``visprune._validation.run_command``). ``toyworld`` never removes or replaces a file it did
not write (:func:`visprune.data.toyworld.generate_toyworld`); a rerun after an interruption
completes the world.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from visprune import _paths
from visprune import _validation as v
from visprune.data import pope, toyworld

PROG = "python -m visprune.data"


def build_parser() -> v.CommandLineParser:
    parser = v.CommandLineParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tw = sub.add_parser("toyworld", help="generate the toy world (images, COCO, POPE, ScienceQA files)")
    tw.add_argument("--out", type=Path, default=None, help="output folder (default: data/toyworld of the repository)")
    tw.add_argument("--seed", type=v.int_option(0), default=0)
    tw.add_argument("--n-images", type=v.int_option(1), default=2000)
    tw.add_argument("--split-fractions", type=v.float_option(0.0, 1.0), nargs=3, default=(0.7, 0.1, 0.2),
                    metavar=("TRAIN", "VAL", "TEST"), help="fractions of the images per split, summing to 1")
    tw.add_argument("--pope-images", type=v.int_option(0), default=500, help="at most this many images per POPE file (0: all)")
    tw.add_argument("--sqa-per-image", type=v.int_option(0), default=1)
    tw.add_argument("--sqa-text-only", type=v.float_option(0.0, 1.0, high_open=True), default=0.08,
                    help="fraction of ScienceQA problems without image, in [0, 1)")
    tw.add_argument("--force", action="store_true", help="re-render and check every file even if the folder is up to date")

    pp = sub.add_parser("pope", help="build POPE question files from COCO instances annotations")
    pp.add_argument("--instances", type=Path, required=True)
    pp.add_argument("--out-dir", type=Path, required=True)
    pp.add_argument("--prefix", default="coco_pope_", help="file name prefix (files are {prefix}{strategy}.json)")
    pp.add_argument("--n-images", type=v.int_option(0), default=500, help="images per file (0: all eligible)")
    pp.add_argument("--seed", type=v.int_option(0), default=0)

    sy = sub.add_parser("synonyms", help="write the toy world's CHAIR synonym table")
    sy.add_argument("--out", type=Path, default=None, help="default: lib/visprune/assets/chair/toy_synonyms.txt")
    parser.commands = {"toyworld": tw, "pope": pp, "synonyms": sy}  # their errors name the sub-command
    return parser


def _toyworld(args, parser) -> int:
    fractions = tuple(args.split_fractions)
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        parser.error(f"argument --split-fractions: the three fractions must sum to 1, got "
                     f"{' + '.join(f'{f:g}' for f in fractions)} = {sum(fractions):g}")
    root = toyworld.toy_paths(args.out).root
    toyworld.check_world_folder(root, "--out")  # before any work
    print(f"toy world at {root}: checking (seed {args.seed}, {args.n_images} images)", flush=True)
    start = time.perf_counter()
    manifest = toyworld.generate_toyworld(
        root, seed=args.seed, n_images=args.n_images, split_fractions=fractions,
        pope_images=args.pope_images or None, sqa_per_image=args.sqa_per_image,
        sqa_text_only=args.sqa_text_only, force=args.force,
    )
    print(f"toy world at {root} is complete ({time.perf_counter() - start:.1f} s)")
    print(json.dumps(manifest["counts"], indent=1))
    return 0


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


def _synonyms(args, parser) -> int:
    out = args.out or _paths.asset(_paths.TOY_SYNONYMS)
    v.output_file(out, "--out")
    pope.write_text_atomically(out, toyworld.toy_synonyms_text())
    print(f"wrote {out}")
    return 0


COMMANDS = {"toyworld": _toyworld, "pope": _pope, "synonyms": _synonyms}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    resumes = argv[:1] == ["toyworld"]  # an interrupted toy world is completed by a rerun

    def body() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args, parser.commands[args.command])

    return v.run_command(PROG, body, on_interrupt="resume" if resumes else "start again")


if __name__ == "__main__":
    sys.exit(main())
