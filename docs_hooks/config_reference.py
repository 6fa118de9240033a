"""The training-config reference page, generated from `TrainConfig` and the models it nests.

Every key a `ccapo train` YAML file may set, with its type, default and description, read from the
pydantic models themselves, so the page cannot drift from the code: the top level, then `lora`,
`counterfactual`, `counterfactual.scoring` and `counterfactual.scoring.weights`.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from typing import Any

import annotated_types
from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PAGE = "reference/train-config.md"
_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)


def type_text(annotation: Any) -> str:
    """A field's type as a reader says it: `int or None`, `one of "dapo", "grpo"`, `list[str]` (no `|`,
    which a Markdown table cell cannot hold inside code)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_text(arg) for arg in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return "section" if issubclass(annotation, BaseModel) else annotation.__name__
    return re.sub(r"\b(?:typing|[a-z_]+(?:\.[a-z_]+)*)\.", "", repr(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as YAML would spell it (`null`, `true`, `"text"`, `[0.9, 0.999]`), or `required`."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its section's defaults"
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def bounds_text(field: FieldInfo) -> str:
    return ", ".join(
        f"{sign} {getattr(m, name)}" for m in field.metadata for kind, name, sign in _BOUNDS if isinstance(m, kind)
    )


def field_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_text(field.annotation)
        if bounds := bounds_text(field):
            kind = f"{kind}, {bounds}"
        description = (field.description or "").replace("|", "\\|")
        default = default_text(field)
        cells = [
            f"`{prefix}{name}`",
            f"`{kind}`",
            default if default.startswith("its") else f"`{default}`",
            description,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def sections() -> list[tuple[str, type[BaseModel], str]]:
    """(title, model, key prefix) for the top level and every nested section, in the order of a file."""
    from ccapo_adapters.config import CounterfactualConfig
    from ccapo_trainer.config import LoraSettings, TrainConfig

    from ccapo import ScoringConfig, WeightConfig

    return [
        ("Top level", TrainConfig, ""),
        ("`lora`", LoraSettings, "lora."),
        ("`counterfactual`", CounterfactualConfig, "counterfactual."),
        ("`counterfactual.scoring`", ScoringConfig, "counterfactual.scoring."),
        ("`counterfactual.scoring.weights`", WeightConfig, "counterfactual.scoring.weights."),
    ]


def page_text() -> str:
    lines = [
        "# Training config",
        "",
        "Every key of a `ccapo train` config (`--config FILE.yaml`, `key=value` overrides,",
        "`TrainConfig(...)`), generated from `ccapo_trainer.TrainConfig` and the models it nests. A key",
        "that is not here fails at load, naming it. Nested keys are written as a YAML section or dotted",
        "(`counterfactual.scoring.max_spans=8`). How to use them: [Training](../training.md); what the",
        "weighting settings mean: [Choosing settings](../choosing-settings.md).",
    ]
    for title, model, prefix in sections():
        lines += ["", f"## {title}", ""]
        if prefix.startswith("counterfactual.scoring"):
            lines += [f"`{model.__module__.split('.')[0]}.{model.__name__}`, checked when the config loads.", ""]
        elif prefix == "counterfactual.":
            lines += ["`ccapo_adapters.CounterfactualConfig`, the same settings every RL adapter takes.", ""]
        # The model's own docstring: where its fields carry no description, it says what they mean.
        lines += [inspect.cleandoc(model.__doc__ or ""), "", *field_rows(model, prefix)]
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=page_text()))
    return files
