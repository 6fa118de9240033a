"""`ccapo ARGV` run in the test's own process: its exit status, with its output left to capsys.

A subprocess spends seconds importing torch and transformers; a test that checks what a command
says about a mistake needs none of that (one real subprocess per command is enough).
"""

from __future__ import annotations

from ccapo.cli import main


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as done:  # argparse's errors and commands that exit on their own
        return 0 if done.code is None else int(done.code)
