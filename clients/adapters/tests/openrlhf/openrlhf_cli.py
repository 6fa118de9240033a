"""OpenRLHF's own `train_ppo_ray` arguments: its parser and its checks on them, without its GPU imports.

`openrlhf/cli/train_ppo_ray.py` imports vLLM and its GPU actors at the top, so its `__main__` block
(the parser and every check on the arguments) runs here from its own source, with `train` replaced
by a function that keeps the arguments: `train` would start the GPU actor groups.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import SimpleNamespace


def openrlhf_args(argv: list[str]) -> SimpleNamespace:
    """`train_ppo_ray`'s parsed and checked arguments for `argv` (OpenRLHF's hierarchical namespace)."""
    import openrlhf

    path = Path(openrlhf.__file__).parent / "cli" / "train_ppo_ray.py"
    module = ast.parse(path.read_text())
    main = next(node for node in module.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))
    kept: list[SimpleNamespace] = []
    namespace = {"__name__": "__main__", "train": kept.append}
    for node in module.body:  # the plain imports the block uses (argparse, os, datetime); not vLLM's
        stdlib = not ast.unparse(node).startswith(("from openrlhf", "from ray", "import ray"))
        if isinstance(node, ast.Import | ast.ImportFrom) and stdlib:
            exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    old_argv = sys.argv
    sys.argv = ["train_ppo_ray", *argv]
    try:
        exec(compile(ast.Module(main.body, []), str(path), "exec"), namespace)
    finally:
        sys.argv = old_argv
    (args,) = kept
    return args
