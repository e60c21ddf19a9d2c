"""The pipeline config: one YAML per model under ``pipelines/``, the self-service contract.

:func:`load_pipeline` parses and validates a file and raises :class:`ConfigError` whose message
names the file, the line and the field, e.g.::

    pipelines/churn.yaml:14: gate.min: Input should be less than or equal to 1 (got 1.5)

:func:`load_pipelines` does that for every file of a directory and also refuses pipeline names
declared by more than one file (DAG ids derive from the name), naming both files.

A pipeline file cannot hurt the others, nor the process that reads it:

* YAML is read by a bounded loader: at most ``MAX_CONFIG_BYTES`` (256 KiB), nesting at most
  ``MAX_DEPTH`` levels, at most ``MAX_ALIASES`` alias uses and at most ``MAX_NODES`` nodes *after*
  alias expansion, so an alias bomb ("billion laughs") is refused in milliseconds at the alias
  that crosses the limit. Anchors and aliases stay allowed (``<<: *defaults`` is handy) because a
  bounded expansion costs nothing; only their expansion is capped. Recursive aliases are refused.
* Echoed input in errors (``(got ...)``) is cut to ``ECHO_CHARS`` characters and at most
  ``MAX_ERROR_LINES`` field errors are listed.
* Schedules (``source.schedule``, ``monitoring.schedule``, ``retrain.schedule``,
  ``scoring.schedule``) are null, an Airflow preset or a cron
  expression that croniter (Airflow's own cron parser, imported lazily) accepts and that fires.

The package: :mod:`.common` (limits, names, errors, checks), the sections
(:mod:`.data_sections`, :mod:`.model_sections`, :mod:`.ops_sections`), :mod:`.pipeline`
(:class:`PipelineConfig`) and :mod:`.loading` (files, YAML, errors by line); every name is
importable from ``mlplatform.config``.
"""

from __future__ import annotations

from mlplatform.config.common import (  # noqa: F401
    _ECHO,
    _HIDDEN_LAYER,
    AIRFLOW_SCHEDULE_PRESETS,
    COLUMN_NAME,
    COLUMN_NAME_RULE,
    ECHO_CHARS,
    INGESTED_AT_COLUMN,
    MAX_ALIASES,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_ERROR_LINES,
    MAX_NODES,
    MODEL_LAYER_NAMES,
    MODEL_LAYER_PREFIXES,
    ConfigError,
    FieldProblem,
    _Strict,
    _usable_names,
    check_schedule,
    echo,
    model_name_clash,
    one_line,
    quantity_problem,
    suggest_name,
    unusable_column_names,
)
from mlplatform.config.data_sections import (  # noqa: F401
    FeaturesConfig,
    SourceConfig,
    ValidationConfig,
)
from mlplatform.config.loading import (  # noqa: F401
    PipelineFile,
    _BoundedLoader,
    _duplicate,
    _field_errors,
    _LimitExceeded,
    _line_of,
    _load_file,
    _name_matches_file,
    _parse,
    _read,
    _read_yaml,
    field_locator,
    find_pipeline,
    load_pipeline,
    load_pipelines,
    parse_pipeline,
    pipeline_files,
)
from mlplatform.config.model_sections import (  # noqa: F401
    CLASSIFIER_METRICS,
    CORES_PER_CPU_PROCESS,
    REGRESSOR_METRICS,
    ROWS_PER_CPU_PROCESS,
    GateConfig,
    ModelConfig,
    TrainingConfig,
)
from mlplatform.config.ops_sections import (  # noqa: F401
    AlertEvent,
    AlertsConfig,
    MonitoringConfig,
    RetrainConfig,
    ScoringConfig,
    ServingConfig,
)
from mlplatform.config.pipeline import (  # noqa: F401
    PipelineConfig,
)
