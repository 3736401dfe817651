"""Command line for the toy world (README "Data").

    python -m visprune.toyworld [--out data/toyworld] [--seed 0] [--n-images 2000]
        [--split-fractions 0.7 0.1 0.2] [--pope-images 500] [--sqa-per-image 1]
        [--sqa-text-only 0.08] [--force]
    python -m visprune.toyworld synonyms [--out lib/visprune/assets/chair/toy_synonyms.txt]

The first form generates (or completes, or repairs) the toy world
(:func:`visprune.toyworld.world.generate_toyworld`, DESIGN.md section 3); it never removes or
replaces a file it did not write, and a rerun after an interruption completes the world.
``synonyms`` writes the toy world's CHAIR synonym table. Every bad input (an option out of
range, an output path that is a file or cannot be written, a folder that holds something other
than a toy world) gives one line on stderr naming the option or the file, and exit status 2;
Ctrl-C gives "interrupted; rerun the same command to ..." and exit status 130
(``visprune._validation.run_command``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from visprune import _paths
from visprune import _validation as v
from visprune.datasets.samples import write_atomically
from visprune.toyworld import categories, world

PROG = "python -m visprune.toyworld"


def build_parser() -> v.CommandLineParser:
    """The parser of the first form (generating the world)."""
    parser = v.CommandLineParser(
        prog=PROG, description="Generate the toy world (images, COCO, POPE, ScienceQA files).",
        epilog=f"{PROG} synonyms [--out FILE] writes the toy world's CHAIR synonym table.",
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: toyworld/ under the data folder, data/toyworld in a checkout)")
    parser.add_argument("--seed", type=v.int_option(0), default=0)
    parser.add_argument("--n-images", type=v.int_option(1), default=2000)
    parser.add_argument("--split-fractions", type=v.float_option(0.0, 1.0), nargs=3, default=(0.7, 0.1, 0.2),
                        metavar=("TRAIN", "VAL", "TEST"), help="fractions of the images per split, summing to 1")
    parser.add_argument("--pope-images", type=v.int_option(0), default=500,
                        help="at most this many images per POPE file (0: all)")
    parser.add_argument("--sqa-per-image", type=v.int_option(0), default=1)
    parser.add_argument("--sqa-text-only", type=v.float_option(0.0, 1.0, high_open=True), default=0.08,
                        help="fraction of ScienceQA problems without image, in [0, 1)")
    parser.add_argument("--force", action="store_true",
                        help="re-render and check every file even if the folder is up to date")
    return parser


def build_synonyms_parser() -> v.CommandLineParser:
    parser = v.CommandLineParser(prog=f"{PROG} synonyms", description="Write the toy world's CHAIR synonym table.")
    parser.add_argument("--out", type=Path, default=None, help="default: lib/visprune/assets/chair/toy_synonyms.txt")
    return parser


def _generate(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fractions = tuple(args.split_fractions)
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        parser.error(f"argument --split-fractions: the three fractions must sum to 1, got "
                     f"{' + '.join(f'{f:g}' for f in fractions)} = {sum(fractions):g}")
    root = world.check_world_folder(args.out, "--out")  # before any work
    print(f"toy world at {root}: checking (seed {args.seed}, {args.n_images} images)", flush=True)
    start = time.perf_counter()
    manifest = world.generate_toyworld(
        root, seed=args.seed, n_images=args.n_images, split_fractions=fractions,
        pope_images=args.pope_images or None, sqa_per_image=args.sqa_per_image,
        sqa_text_only=args.sqa_text_only, force=args.force,
    )
    print(f"toy world at {root} is complete ({time.perf_counter() - start:.1f} s)")
    print(json.dumps(manifest["counts"], indent=1))
    return 0


def _synonyms(argv: list[str]) -> int:
    args = build_synonyms_parser().parse_args(argv)
    out = args.out or _paths.asset(_paths.TOY_SYNONYMS)
    v.output_file(out, "--out")
    write_atomically(out, categories.toy_synonyms_text())
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    synonyms = argv[:1] == ["synonyms"]

    def body() -> int:
        return _synonyms(argv[1:]) if synonyms else _generate(argv)

    # an interrupted toy world is completed by a rerun
    return v.run_command(PROG, body, on_interrupt="start again" if synonyms else "resume")


if __name__ == "__main__":
    sys.exit(main())
