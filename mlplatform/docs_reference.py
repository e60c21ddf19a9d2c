"""Generate ``docs/reference.md`` from the code: every pipeline config field and every operator's
constructor arguments.

The config part walks :class:`~mlplatform.config.PipelineConfig` recursively (one table per
section: field, type, default, constraints, description from ``Field(description=...)``); the
operator part imports every module of ``operators/`` and lists each operator class defined there
(its keyword arguments with type and default, and its docstring, which states the XCom contract).
Nothing is written by hand, so the file stays true by regenerating it::

    python -m mlplatform.docs_reference            # (re)write docs/reference.md
    python -m mlplatform.docs_reference --check    # exit 1 with a one-line hint if it is stale

``tests/test_docs_reference.py`` runs the check. Importing the operators needs Airflow (and the
Kubernetes operator its provider, ≈ 4 s): run it from the project's environment.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import pkgutil
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mlplatform.config import PipelineConfig
from mlplatform.settings import REPO_ROOT

#: where the reference lives in the checkout
REFERENCE = Path("docs") / "reference.md"
#: arguments every platform operator takes from :class:`operators.base.PlatformOperator`
BASE_ARGS_NOTE = (
    "Every platform operator (a `PlatformOperator`) also takes `pipeline` (the pipeline name; "
    "the platform DAGs pass it through `default_args`), `run_scope` (see "
    "[Authoring a custom DAG](custom_dags.md#run-scope)) and Airflow's `BaseOperator` "
    "arguments (`task_id` defaults to the stage name, `retries`, ...)."
)

HEADER = """# Reference: pipeline config fields and operator arguments

Generated from the code by `python -m mlplatform.docs_reference`; do not edit by hand
(`tests/test_docs_reference.py` fails when this file is stale). The descriptions come from the
pydantic models in `mlplatform/config/` and the operators' docstrings in `operators/`.
"""


# -- pipeline config ---------------------------------------------------------------------------


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a field's type: ``str | None``, ``list[int]``,
    ``Literal['csv', 'parquet']``, a nested model by its class name."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    return str(annotation).replace("typing.", "")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def default_text(info: FieldInfo) -> str:
    """The default as YAML would spell it (``null``, ``true``, ``[64, 32]``); ``required`` when
    the field has none; a nested section's default is its own defaults (``{}``)."""
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "{}"
    return json.dumps(value)


def constraints_text(info: FieldInfo) -> str:
    """Bounds and patterns the model enforces (``>= 1``, ``< 1``, ``pattern ^[a-z]...``)."""
    parts = []
    symbols = {
        annotated_types.Ge: (">=", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("<=", "le"),
        annotated_types.Lt: ("<", "lt"),
    }
    for item in info.metadata:
        for kind, (symbol, attr) in symbols.items():
            if isinstance(item, kind):
                parts.append(f"{symbol} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length} characters")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            parts.append(f"pattern `{pattern}`")
    return ", ".join(parts)


def _cell(text: str) -> str:
    """A markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


ROLE = re.compile(r":(?:mod|func|class|meth|data|attr):`~?([^`]+)`")
CODE = re.compile(r"(``.+?``|`[^`]+`)", re.S)


def markdown(text: str) -> str:
    """Docstring prose as markdown: Sphinx roles become code spans, and ``<`` outside code is
    escaped (``<uri>`` would otherwise vanish as an HTML tag)."""
    parts = CODE.split(ROLE.sub(r"`\1`", text))
    return "".join(p if CODE.fullmatch(p) else p.replace("<", "&lt;") for p in parts)


def missing_descriptions(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """Dotted paths of config fields without ``Field(description=...)`` (the reference would
    have nothing to say about them)."""
    missing = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if not (info.description or "").strip():
            missing.append(path)
        nested = _nested_model(info.annotation)
        if nested is not None:
            missing += missing_descriptions(nested, f"{path}.")
    return missing


def config_section(model: type[BaseModel], prefix: str, title: str) -> list[str]:
    """The markdown of one config section and, after it, of its nested sections."""
    anchor = prefix.rstrip(".") or "top-level"
    lines = [f"### `{anchor}`" if prefix else f"### {title}", ""]
    doc = model.__dict__.get("__doc__")  # its own docstring, never BaseModel's
    if doc:
        lines += [" ".join(inspect.cleandoc(doc).split("\n\n")[0].split()), ""]
    lines += [
        "| field | type | default | constraints | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    nested_sections = []
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        path = f"{prefix}{name}"
        typ = (
            f"[`{nested.__name__}`](#{path.replace('.', '')})"
            if nested
            else type_name(info.annotation)
        )
        typ = typ if nested else f"`{_cell(typ)}`"
        cells = [
            f"`{path}`",
            typ,
            f"`{_cell(default_text(info))}`",
            _cell(constraints_text(info)),
            _cell(markdown(info.description or "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if nested is not None:
            nested_sections.append((nested, f"{path}."))
    lines.append("")
    for nested, sub in nested_sections:
        lines += config_section(nested, sub, title)
    return lines


# -- operators ---------------------------------------------------------------------------------


def operator_classes() -> list[type]:
    """Every Airflow operator class defined in a module of the ``operators`` package, by module
    and then by name (the base class first)."""
    from airflow.sdk import BaseOperator

    import operators

    found: dict[str, type] = {}
    for module_info in sorted(pkgutil.iter_modules(operators.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"operators.{module_info.name}")
        for _, cls in sorted(inspect.getmembers(module, inspect.isclass)):
            public = not cls.__name__.startswith("_")  # a private base shows in its subclasses
            if public and cls.__module__ == module.__name__ and issubclass(cls, BaseOperator):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def constructor_args(cls: type) -> list[tuple[str, str, str]]:
    """``(name, type, default)`` of the arguments ``cls.__init__`` and its private base classes
    (``_Name``, not documented apart) declare; ``**kwargs``, passed on to the public base
    classes, left out."""
    args: dict[str, tuple[str, str, str]] = {}
    owners = [cls] + [base for base in cls.__mro__[1:] if base.__name__.startswith("_")]
    for owner in owners:
        if "__init__" not in vars(owner):
            continue
        signature = inspect.signature(owner.__init__)
        hints = typing.get_type_hints(owner.__init__)
        for name, param in signature.parameters.items():
            if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            typ = type_name(hints[name]) if name in hints else "Any"
            default = "required" if param.default is param.empty else repr(param.default)
            args.setdefault(name, (name, typ, default))
    return list(args.values())


def operator_section(cls: type) -> list[str]:
    """The markdown of one operator: import path, task id, arguments, docstring."""
    lines = [f"### `{cls.__name__}`", ""]
    stage = getattr(cls, "stage", None)
    where = f"`from {cls.__module__} import {cls.__name__}`"
    named = isinstance(stage, str) and cls.__name__ != "PlatformOperator"
    lines.append(where + (f"; default `task_id`: `{stage}`" if named else ""))
    lines.append("")
    args = constructor_args(cls)
    if args:
        lines += ["| argument | type | default |", "| --- | --- | --- |"]
        lines += [f"| `{n}` | `{_cell(t)}` | `{_cell(d)}` |" for n, t, d in args]
    else:
        lines.append("No arguments of its own.")
    lines.append("")
    doc = inspect.getdoc(cls)
    if doc:
        lines += [markdown(doc), ""]
    return lines


def render() -> str:
    """The whole reference as markdown (what ``docs/reference.md`` must hold)."""
    lines = [HEADER, "## Pipeline config (`pipelines/<name>.yaml`)", ""]
    lines += [
        "Validated by `mlplatform.config.PipelineConfig`; unknown fields are errors. "
        "`required` fields have no default.",
        "",
    ]
    lines += config_section(PipelineConfig, "", "Top level")
    lines += ["## Operators (`operators/`)", "", BASE_ARGS_NOTE, ""]
    for cls in operator_classes():
        lines += operator_section(cls)
    return "\n".join(lines).rstrip("\n") + "\n"


def stale_hint(expected: str, actual: str, path: Path) -> str | None:
    """None when ``actual`` equals ``expected``, else one line naming the first differing line."""
    if expected == actual:
        return None
    want, have = expected.splitlines(), actual.splitlines()
    differing = (n for n, (a, b) in enumerate(zip(want, have, strict=False), 1) if a != b)
    number = next(differing, min(len(want), len(have)) + 1)
    diff = difflib.unified_diff(have, want, lineterm="", n=0)
    first = next((d for d in diff if d[:1] in "+-" and d[:3] not in ("---", "+++")), "")
    return (
        f"{path} is stale (first difference at line {number}: {first[:120]!r}); "
        "run `python -m mlplatform.docs_reference`"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--path", type=Path, default=REPO_ROOT / REFERENCE)
    args = parser.parse_args(argv)
    missing = missing_descriptions()
    if missing:
        print(f"config fields without a description: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = render()
    if args.check:
        actual = args.path.read_text() if args.path.exists() else ""
        hint = stale_hint(text, actual, args.path)
        if hint:
            print(hint, file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
