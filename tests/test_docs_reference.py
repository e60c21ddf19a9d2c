"""docs/reference.md is generated from the code and kept true: it fails here when it is stale."""

from __future__ import annotations

import pytest

from mlplatform import docs_reference
from mlplatform.config import PipelineConfig
from tests.conftest import REPO
from tests.test_config_fields import config_fields


@pytest.fixture(scope="module")
def rendered() -> str:
    return docs_reference.render()


def test_every_config_field_has_a_description():
    missing = docs_reference.missing_descriptions()
    assert missing == [], f"add Field(description=...) in mlplatform/config/ for: {missing}"


def test_reference_is_current(rendered):
    path = REPO / docs_reference.REFERENCE
    hint = docs_reference.stale_hint(rendered, path.read_text(), path)
    if hint:
        pytest.fail(hint)


def test_reference_lists_every_field_and_operator(rendered):
    for path in config_fields(PipelineConfig):
        assert f"| `{'.'.join(path)}` |" in rendered, f"{'.'.join(path)} missing"
    names = {cls.__name__ for cls in docs_reference.operator_classes()}
    assert {"PlatformOperator", "IngestOperator", "GateOperator", "StartRunOperator"} <= names
    assert "HorovodKubernetesTrainOperator" in names
    for name in names:
        assert f"### `{name}`" in rendered
    # an operator's own arguments, with type and default, from its signature
    assert "| `source_uri` | `str` | `'{{ params.data_uri }}'` |" in rendered


def test_stale_hint_names_the_first_difference(tmp_path):
    path = tmp_path / "reference.md"
    assert docs_reference.stale_hint("a\nb\nc\n", "a\nb\nc\n", path) is None
    hint = docs_reference.stale_hint("a\nb\nc\n", "a\nB\nc\n", path)
    assert hint is not None and "\n" not in hint
    assert "first difference at line 2" in hint
    assert "python -m mlplatform.docs_reference" in hint
    shorter = docs_reference.stale_hint("a\nb\nc\n", "a\nb\n", path)
    assert "line 3" in shorter


def test_type_and_default_spelling():
    fields = PipelineConfig.model_fields
    assert docs_reference.type_name(fields["source"].annotation) == "SourceConfig"
    source = fields["source"].annotation.model_fields
    assert docs_reference.type_name(source["uri"].annotation) == "str | None"
    assert docs_reference.type_name(source["format"].annotation) == "Literal['csv', 'parquet']"
    assert docs_reference.default_text(source["uri"]) == "null"
    assert docs_reference.default_text(source["entity"]) == "required"
    name = docs_reference.constraints_text(fields["name"])
    assert "at most 64 characters" in name and "pattern `^[a-z][a-z0-9_]*$`" in name
