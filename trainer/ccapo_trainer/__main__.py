"""`python -m ccapo_trainer ARGS` is `ccapo train ARGS`, for `accelerate launch -m ccapo_trainer ...`."""

import sys

from ccapo.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
