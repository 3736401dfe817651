"""Command line for the data sets (README "Data").

    python -m visprune.data toyworld [--out data/toyworld] [--seed 0] [--n-images 2000]
        [--split-fractions 0.7 0.1 0.2] [--pope-images 500] [--sqa-per-image 1] [--force]
    python -m visprune.data pope --instances INSTANCES.json --out-dir DIR [--prefix coco_pope_]
        [--n-images 500] [--seed 0]
    python -m visprune.data synonyms [--out data/chair/toy_synonyms.txt]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from visprune.data import pope, toyworld


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visprune.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tw = sub.add_parser("toyworld", help="generate the toy world (images, COCO, POPE, ScienceQA files)")
    tw.add_argument("--out", type=Path, default=None, help="output folder (default: data/toyworld of the repository)")
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--n-images", type=int, default=2000)
    tw.add_argument("--split-fractions", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    tw.add_argument("--pope-images", type=int, default=500, help="at most this many images per POPE file (0: all)")
    tw.add_argument("--sqa-per-image", type=int, default=1)
    tw.add_argument("--sqa-text-only", type=float, default=0.08, help="fraction of ScienceQA problems without image")
    tw.add_argument("--force", action="store_true", help="regenerate even if the folder is up to date")

    pp = sub.add_parser("pope", help="build POPE question files from COCO instances annotations")
    pp.add_argument("--instances", type=Path, required=True)
    pp.add_argument("--out-dir", type=Path, required=True)
    pp.add_argument("--prefix", default="coco_pope_", help="file name prefix (files are {prefix}{strategy}.json)")
    pp.add_argument("--n-images", type=int, default=500, help="images per file (0: all eligible)")
    pp.add_argument("--seed", type=int, default=0)

    sy = sub.add_parser("synonyms", help="write the toy world's CHAIR synonym table")
    sy.add_argument("--out", type=Path, default=None, help="default: data/chair/toy_synonyms.txt")

    args = parser.parse_args(argv)
    if args.command == "toyworld":
        start = time.perf_counter()
        manifest = toyworld.generate_toyworld(
            args.out, seed=args.seed, n_images=args.n_images, split_fractions=tuple(args.split_fractions),
            pope_images=args.pope_images or None, sqa_per_image=args.sqa_per_image,
            sqa_text_only=args.sqa_text_only, force=args.force,
        )
        root = toyworld.toy_paths(args.out).root
        print(f"toy world at {root} ({time.perf_counter() - start:.1f} s)")
        print(json.dumps(manifest["counts"], indent=1))
    elif args.command == "pope":
        for strategy in pope.STRATEGIES:
            questions = pope.build_pope(args.instances, strategy, n_images=args.n_images or None, seed=args.seed)
            path = pope.write_pope(questions, args.out_dir / f"{args.prefix}{strategy}.json")
            print(f"{path}: {len(questions)} questions")
    elif args.command == "synonyms":
        out = args.out or toyworld.default_data_dir() / "chair" / "toy_synonyms.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(toyworld.toy_synonyms_text(), encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
