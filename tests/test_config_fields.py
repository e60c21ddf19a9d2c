"""Every pipeline config field drives behaviour: each is read somewhere in the platform's code.

Walks every field of :class:`PipelineConfig` (recursively, so fields added later are covered) and
scans the non-test Python sources (``mlplatform/``, ``operators/``, ``dags/``, ``plugins/``,
``serving/``, ``training/``, ``feature_repo/``) with ``ast`` for a read of it:

* ``<x>.<section>.<field>`` (``cfg.retrain.window_days``), or ``<alias>.<field>`` where the alias was
  bound from ``<x>.<section>`` / ``getattr(<x>, "<section>")`` or annotated with the section's
  class (``g = cfg.gate; g.min_slice_rows``, ``scfg: ServingConfig``), or
  ``getattr(<alias>, "<field>")``;
* a top-level field as ``cfg.<field>`` / ``config.<field>``;
* ``self.<field>`` inside the section's own class, outside validators (properties such as
  ``TrainingConfig.processes``);
* ``<x>["<field>"]`` on a dict that was dumped from the config (the trainer reads its spec).

A field that nothing reads fails the test with its dotted path: wire it up or remove it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from mlplatform.config import PipelineConfig
from tests.conftest import REPO

SOURCE_DIRS = ("mlplatform", "operators", "dags", "plugins", "serving", "training", "feature_repo")
TOP = "<top>"
VALIDATORS = {"field_validator", "model_validator"}


def config_fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted paths of every field of ``model``, nested models included (and themselves)."""
    found = []
    for name, info in model.model_fields.items():
        found.append((*path, name))
        typ = info.annotation
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            found += config_fields(typ, (*path, name))
    return found


def _section_classes(model: type[BaseModel]) -> dict[str, str]:
    """Attribute name of a nested model -> its class name (``gate`` -> ``GateConfig``)."""
    out = {}
    for name, info in model.model_fields.items():
        typ = info.annotation
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            out[name] = typ.__name__
            out.update(_section_classes(typ))
    return out


def _attr_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
        if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            return str(node.args[1].value)
    return None


def reads(tree: ast.AST, sections: dict[str, str]) -> set[tuple[str, str]]:
    """``(section, field)`` pairs read in ``tree`` (``section`` is ``TOP`` for top-level
    fields; a string subscript is recorded as ``("[]", key)``)."""
    by_class = {cls: sec for sec, cls in sections.items()}
    aliases: dict[str, str] = {"cfg": TOP, "config": TOP}
    for node in ast.walk(tree):  # bind aliases first
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            pairs = [(target, value)]
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                pairs = list(zip(target.elts, value.elts, strict=False))  # a, b = x, cfg.serving
            for one, expr in pairs:
                name = _attr_name(expr)
                if isinstance(one, ast.Name) and name in sections:
                    aliases[one.id] = name
        elif isinstance(node, ast.arg) and node.annotation is not None:
            note = ast.unparse(node.annotation).strip("'\"")
            if note in by_class:
                aliases[node.arg] = by_class[note]
            elif note == "PipelineConfig":
                aliases[node.arg] = TOP
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in by_class:
            for item in node.body:
                decorators = {ast.unparse(d).split("(")[0] for d in getattr(item, "decorator_list", [])}  # fmt: skip
                if isinstance(item, ast.FunctionDef) and not decorators & VALIDATORS:
                    for sub in ast.walk(item):
                        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":  # fmt: skip
                            found.add((by_class[node.name], sub.attr))
        field = _attr_name(node)
        if field is not None:
            owner = node.value if isinstance(node, ast.Attribute) else node.args[0]
            parent = _attr_name(owner)
            if parent in sections:
                found.add((parent, field))
            elif isinstance(owner, ast.Name) and owner.id in aliases:
                found.add((aliases[owner.id], field))
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
        ):
            found.add(("[]", str(node.slice.value)))
    return found


def unread_fields(model: type[BaseModel], sources: Iterable[str]) -> list[str]:
    """Dotted paths of the fields of ``model`` that no source reads."""
    sections = _section_classes(model)
    seen: set[tuple[str, str]] = set()
    for text in sources:
        seen |= reads(ast.parse(text), sections)
    dumped = defaultdict(bool, {key: True for sec, key in seen if sec == "[]"})
    missing = []
    for path in config_fields(model):
        section = path[-2] if len(path) > 1 else TOP
        if (section, path[-1]) not in seen and not (len(path) > 1 and dumped[path[-1]]):
            missing.append(".".join(path))
    return missing


def platform_sources() -> list[str]:
    files: list[Path] = []
    for directory in SOURCE_DIRS:
        files += sorted((REPO / directory).rglob("*.py"))
    return [p.read_text(encoding="utf-8") for p in files]


def test_every_pipeline_config_field_is_read_by_the_platform():
    missing = unread_fields(PipelineConfig, platform_sources())
    assert not missing, (
        f"config field(s) read by nothing: {', '.join(missing)}; make them drive behaviour or "
        "remove them (a knob that does nothing is a defect)"
    )


def test_the_scan_finds_an_unread_field():
    class Knobs(BaseModel):
        used: int = 1
        unused: int = 2
        aliased: int = 3

    class Root(BaseModel):
        name: str = "x"
        knobs: Knobs = Knobs()

    code = "def f(cfg):\n    k = cfg.knobs\n    return cfg.name, cfg.knobs.used, k.aliased\n"
    assert unread_fields(Root, [code]) == ["knobs.unused"]
    assert unread_fields(Root, ["def g(cfg): return cfg.knobs.used"]) == [
        "name",
        "knobs.unused",
        "knobs.aliased",
    ]
