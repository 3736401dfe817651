"""``python -m visprune.book``: execute the chapters and render the book (:mod:`visprune.book.build`)."""

import sys

from visprune.book.build import main

if __name__ == "__main__":
    sys.exit(main())
