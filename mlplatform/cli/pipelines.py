"""Commands on pipelines and their data: check, reset, data versions/checkout, skew, airflow."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlplatform.cli.common import OutcomeError, UsageError, say
from mlplatform.config import (
    ConfigError,
    find_pipeline,
    load_pipeline,
)
from mlplatform.settings import Settings


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a pipeline as the DAG factory does (YAML limits, schema, schedules, a name no
    other pipeline file declares), build its DAGs in-process, then check its expectation suite.
    A config error is the line that the placeholder DAG of the file shows in the Airflow UI."""
    from mlplatform.dag_factory import check_pipeline
    from mlplatform.stages import StageError
    from mlplatform.stages.validate import load_suite_definition

    cfg, dags_built = check_pipeline(
        find_pipeline(args.pipeline, settings.pipelines_dir), settings.pipelines_dir
    )
    try:
        suite = load_suite_definition(settings, cfg.validation.suite)
    except StageError as exc:
        raise UsageError(str(exc)) from None
    columns = {e["kwargs"].get("column") for e in suite.get("expectations", [])} - {None}
    unchecked = [
        c
        for c in [cfg.source.entity, cfg.source.timestamp, *cfg.features.all, cfg.features.label]
        if c not in columns
    ]
    say(
        f"{cfg.name}: config ok (hash {cfg.config_hash()}), suite {cfg.validation.suite!r} has {len(suite['expectations'])} expectations"
    )
    if dags_built:
        say(f"  DAGs mlp_{cfg.name}_train and mlp_{cfg.name}_rollback build")
    else:
        say("  note: Airflow is not installed here: the DAGs were not built")
    if unchecked:
        say(f"  note: no column expectation covers {', '.join(unchecked)}")
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    """Remove the pipeline's feature history (and, without --features, its run markers)."""
    from mlplatform.reset import ResetRefused, reset_pipeline

    try:
        lines = reset_pipeline(settings, args.pipeline, features_only=args.features)
    except ResetRefused as exc:
        raise OutcomeError(f"reset refused, nothing removed: {exc}") from None
    for line in lines:
        say(f"reset {args.pipeline}: {line}")
    if not lines:
        say(f"reset {args.pipeline}: nothing to remove")
    say(
        f"reset {args.pipeline}: kept its run directories, DVC data versions, quarantine, MLflow "
        "models and served versions; the next run starts the feature history from its batch"
    )
    return 0


def _data_pipeline_name(name: str, settings: Settings) -> str:
    """The pipeline name of ``NAME`` (a file's ``name:``); a pipeline whose YAML is gone keeps
    its data versions, so a bare name is taken as it is."""
    try:
        return load_pipeline(find_pipeline(name, settings.pipelines_dir)).name
    except ConfigError:
        if Path(name).suffix in (".yaml", ".yml"):
            raise
        return name


def cmd_data_versions(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.data_versions import list_versions

    name = _data_pipeline_name(args.pipeline, settings)
    versions = list_versions(settings, name)
    if not versions:
        raise UsageError(f"no data versions of {name!r} in {settings.dvc_repo_dir}")
    say(f"{name}: {len(versions)} data version(s), newest first (md5, commit, date, file)")
    for version in versions:
        say(f"  {version.describe()}")
    return 0


def cmd_data_checkout(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.data_versions import checkout_version
    from mlplatform.stages import StageError

    name = _data_pipeline_name(args.pipeline, settings)
    try:
        version, path = checkout_version(
            settings, name, args.version, Path(args.out) if args.out else None
        )
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    say(f"{name}: data version {version.md5} (commit {version.commit[:10]}) restored to {path}")
    return 0


def cmd_skew(args: argparse.Namespace, settings: Settings) -> int:
    """Compare online and offline features of a sample of entities; exit 1 on any difference."""
    from mlplatform.skew import SkewDetected, check_skew
    from mlplatform.stages import StageError

    cfg = load_pipeline(find_pipeline(args.pipeline, settings.pipelines_dir))
    try:
        report = check_skew(cfg, settings, sample=args.sample, seed=args.seed)
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    if report.ok:
        say(report.summary())
        return 0
    for line in report.lines():
        say(line)
    raise OutcomeError(str(SkewDetected(report)))


#: airflow commands that serve the UI: ``mlplatform airflow`` prints its URL and login first
UI_COMMANDS = ("standalone", "api-server")


def cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    """Run an ``airflow`` command on the embedded home; for the UI commands, print where the UI
    is and how to log in (generating the password on first use) before starting it."""
    from mlplatform.airflow_runner import prepare_airflow, ui_banner, ui_url

    env = prepare_airflow()
    if args.airflow_args[:1] and args.airflow_args[0] in UI_COMMANDS:
        try:
            lines = ui_banner(settings, env, ui_url())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for line in lines:
            say(line)
    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = (
        f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"  # standalone spawns `airflow`
    )
    airflow_bin = str(bin_dir / "airflow")
    os.execv(airflow_bin, [airflow_bin, *args.airflow_args])
    return 0  # pragma: no cover - exec does not return
