"""Reading pipeline files: the bounded YAML loader, errors by file, line and field, and the
files of a pipelines directory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlplatform.config.common import (
    MAX_ALIASES,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_ERROR_LINES,
    MAX_NODES,
    ConfigError,
    FieldProblem,
    echo,
    one_line,
)
from mlplatform.config.pipeline import PipelineConfig


class _LimitExceeded(yaml.YAMLError):
    """The bounded loader refused the document; ``problem`` says why, at ``problem_mark``."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with the limits of the module doc, checked while composing.

    Every node composed counts 1; an alias counts the expanded size of the node it names (that
    size is recorded when the anchored node is complete, so the count is exact and linear in
    the text). Composition only links alias to node, so it stays cheap even on a bomb: the
    limits stop the *expansion* that validation and error messages would otherwise walk.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded = 0
        self._open_anchors: set[str] = set()
        self._sizes: dict[int, int] = {}  # id(node) -> size with aliases expanded

    def _count(self, size: int, mark: yaml.Mark) -> None:
        self._expanded += size
        if self._expanded > MAX_NODES:
            raise _LimitExceeded(
                f"YAML with its aliases expanded exceeds {MAX_NODES} nodes "
                "(the limit of a pipeline config)",
                mark,
            )

    def _size(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.SequenceNode):
            children: Iterable[yaml.Node] = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            return 1
        return 1 + sum(self._sizes.get(id(child), 1) for child in children)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitExceeded(
                    f"more than {MAX_ALIASES} YAML aliases (the limit of a pipeline config)",
                    event.start_mark,
                )
            if event.anchor in self._open_anchors:
                raise _LimitExceeded(
                    f"recursive YAML alias *{one_line(event.anchor)}", event.start_mark
                )
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1), event.start_mark)
            return node
        if self._depth >= MAX_DEPTH:
            raise _LimitExceeded(
                f"YAML nested deeper than {MAX_DEPTH} levels (the limit of a pipeline config)",
                event.start_mark,
            )
        self._count(1, event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)
        if not isinstance(node, yaml.ScalarNode):
            self._sizes[id(node)] = self._size(node)
        return node


def _read_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """``(data, root node)`` of one YAML document read with :class:`_BoundedLoader`; raises
    :class:`ConfigError` ``where[:line]: ...`` on a size limit or invalid YAML."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{where}: {size} bytes, over the {MAX_CONFIG_BYTES // 1024} KiB limit "
            "of a pipeline config"
        )
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except _LimitExceeded as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise ConfigError(f"{where}{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{line}: not valid YAML: {one_line(problem)}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an int literal past Python's digit limit
        raise ConfigError(f"{where}: not valid YAML: {one_line(exc)}") from None
    finally:
        loader.dispose()
    return data, root


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field_errors(exc: ValidationError, root: yaml.Node | None, where: str) -> str:
    """One ``where:line: field: problem (got ...)`` line per pydantic error (the first
    ``MAX_ERROR_LINES``), the echoed input cut to ``ECHO_CHARS``."""
    errors = exc.errors()
    lines = []
    for err in errors[:MAX_ERROR_LINES]:
        loc = tuple(err["loc"])
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):  # a validator naming a field below its own;
            loc = loc + problem.loc  # its message names the value itself
            err = {**err, "input": {}}
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = None if err["type"] == "missing" and len(loc) == 1 else _line_of(root, loc)
        msg = one_line(err["msg"].removeprefix("Value error, "), 200)
        shown = err["type"] != "missing" and not isinstance(err.get("input"), dict)
        got = f" (got {echo(err['input'])})" if shown else ""
        lines.append(
            f"{where}:{line}: {field}: {msg}{got}" if line else f"{where}: {field}: {msg}{got}"
        )
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"{where}: ... and {len(errors) - MAX_ERROR_LINES} more errors")
    return "\n".join(lines)


def _parse(text: str, where: str) -> tuple[PipelineConfig, yaml.Node]:
    data, root = _read_yaml(text, where)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of pipeline settings, got {type(data).__name__}"
        )
    try:
        return PipelineConfig.model_validate(data), root
    except ValidationError as exc:
        raise ConfigError(_field_errors(exc, root, where)) from None


def parse_pipeline(text: str, where: str = "<config>") -> PipelineConfig:
    """Validate YAML text; errors name ``where:line: field: problem`` (see the module doc for
    the limits on size, nesting and aliases)."""
    return _parse(text, where)[0]


def _read(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline config: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: over the {MAX_CONFIG_BYTES // 1024} KiB limit of a pipeline config"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate ``pipelines/<name>.yaml`` (never more than ``MAX_CONFIG_BYTES``)."""
    path = Path(path)
    return parse_pipeline(_read(path), where=str(path))


def field_locator(path: str | Path) -> Callable[[tuple[str | int, ...]], str]:
    """For a pipeline file that parses: a function from a field's path (``("features",
    "numeric", 2)``) to ``file:line`` of that field in the file (``file`` alone when the field is
    not written there, e.g. a default), for errors found after validation (``mlplatform check``)."""
    path = Path(path)
    _, root = _read_yaml(_read(path), str(path))

    def where(loc: tuple[str | int, ...]) -> str:
        line = _line_of(root, loc)
        return f"{path}:{line}" if line else str(path)

    return where


@dataclass(frozen=True)
class PipelineFile:
    """One pipeline file as the DAG factory and ``mlplatform check`` see it: its validated
    ``config``, or the ``error`` (the :class:`ConfigError` text) that keeps it out."""

    path: Path
    config: PipelineConfig | None = None
    error: str | None = None
    name_line: int | None = None

    @property
    def ok(self) -> bool:
        return self.config is not None


def _load_file(path: Path) -> PipelineFile:
    try:
        cfg, root = _parse(_read(path), str(path))
    except ConfigError as exc:
        return PipelineFile(path, error=str(exc))
    return PipelineFile(path, config=cfg, name_line=_line_of(root, ("name",)))


def _name_matches_file(item: PipelineFile) -> PipelineFile:
    """Tasks look a pipeline's config up as ``<name>.yaml``: another file name is an error."""
    if item.config is None or item.config.name == item.path.stem:
        return item
    where = f"{item.path}:{item.name_line}" if item.name_line else str(item.path)
    error = (
        f"{where}: name: {item.config.name!r} must match the file name; rename the file to "
        f"{item.config.name}.yaml or set name: {item.path.stem}"
    )
    return PipelineFile(item.path, error=error, name_line=item.name_line)


def load_pipelines(paths: Iterable[Path]) -> list[PipelineFile]:
    """Load every file of ``paths`` (duplicates by resolved path once, in the given order).

    A file that does not validate carries its error, and so does one whose ``name`` differs
    from its file name (tasks find a pipeline's config as ``<name>.yaml``). Files that validate
    but declare a
    pipeline ``name`` that another file also declares all fail, each with one line naming the
    others::

        pipelines/b.yaml:3: name: pipeline 'churn' is also declared in pipelines/a.yaml:3;
        pipeline names must be unique (DAG ids derive from them)
    """
    seen: set[Path] = set()
    files = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            files.append(_load_file(path))
    by_name: dict[str, list[PipelineFile]] = {}
    for item in files:
        if item.config is not None:
            by_name.setdefault(item.config.name, []).append(item)
    clashes = {id(f): group for group in by_name.values() if len(group) > 1 for f in group}
    return [
        _duplicate(item, clashes[id(item)]) if id(item) in clashes else _name_matches_file(item)
        for item in files
    ]


def _duplicate(item: PipelineFile, group: list[PipelineFile]) -> PipelineFile:
    assert item.config is not None
    others = ", ".join(
        f"{other.path}:{other.name_line}" if other.name_line else str(other.path)
        for other in group
        if other is not item
    )
    where = f"{item.path}:{item.name_line}" if item.name_line else str(item.path)
    error = (
        f"{where}: name: pipeline {item.config.name!r} is also declared in {others}; "
        "pipeline names must be unique (DAG ids derive from them)"
    )
    return PipelineFile(item.path, error=error, name_line=item.name_line)


def pipeline_files(pipelines_dir: Path) -> list[Path]:
    """The pipeline files of a directory: ``*.yaml``, sorted."""
    return sorted(pipelines_dir.glob("*.yaml"))


def find_pipeline(name_or_path: str, pipelines_dir: Path) -> Path:
    """Resolve ``demo`` or ``pipelines/demo.yaml`` to a file, with a clear error when absent."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = pipelines_dir / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in pipelines_dir.glob("*.yaml"))
        raise ConfigError(
            f"no pipeline {name_or_path!r} in {pipelines_dir} (known: {', '.join(known) or 'none'})"
        )
    return path
