"""Commands of the monitor: ``labels`` (store delayed ground truth for a pipeline)."""

from __future__ import annotations

import argparse

from mlplatform.cli.common import UsageError, say
from mlplatform.config import find_pipeline, load_pipeline
from mlplatform.settings import Settings


def cmd_labels(args: argparse.Namespace, settings: Settings) -> int:
    """Store a delivery of labels (CSV/Parquet, or any source URI) under the pipeline; the next
    monitor check joins them to the request log (:mod:`mlplatform.monitoring.labels`)."""
    from mlplatform.monitoring.labels import read_source, store_labels
    from mlplatform.stages import StageError

    cfg = load_pipeline(find_pipeline(args.pipeline, settings.pipelines_dir))
    try:
        stored = store_labels(cfg, read_source(cfg, args.data, settings), settings, args.data)
    except StageError as exc:
        raise UsageError(str(exc).replace("ingest: ", "labels: ", 1)) from None
    if stored["stored"]:
        say(
            f"{cfg.name}: stored {stored['rows']} labels in {stored['file']}; the next monitor "
            f"check (mlp_{cfg.name}_monitor) joins them to the request log"
        )
    else:
        say(f"{cfg.name}: these {stored['rows']} labels were already stored ({stored['file']})")
    return 0
