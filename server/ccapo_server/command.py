"""`ccapo serve`, registered in the `ccapo.commands` entry-point group (the core's CLI knows no server).

Light to import: the server itself (uvicorn, FastAPI) loads only when `ccapo serve` runs.
"""

from __future__ import annotations

import argparse
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the REST scoring server (options: ccapo serve --help)", add_help=False)
    serve.set_defaults(own_argv=serve_main)  # the server parses its own flags


def serve_main(argv: list[str]) -> int:
    try:
        from ccapo_server.cli import main
    except ImportError as err:
        print(f"the scoring server needs its extra: pip install '.[server]' from a clone ({err})", file=sys.stderr)
        return 2
    return main(argv) or 0
