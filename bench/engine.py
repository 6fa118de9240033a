"""Engine benchmark: the fast engine against the naive reference, side by side in one run.

Same as `ccapo bench`; takes the same flags (e.g. `python bench/engine.py -n 32 --model DIR`).
"""

import sys

from ccapo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
