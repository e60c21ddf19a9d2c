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
    other pipeline file declares), build its DAGs in-process, then check it against its
    expectation suite and a sample of its data (:mod:`mlplatform.preflight`). Every problem is
    one ``file:line: field: problem`` line (exit 2); a config error is the line that the
    placeholder DAG of the file shows in the Airflow UI."""
    from mlplatform.cli.run import absolute_data_uri
    from mlplatform.dag_factory import check_pipeline
    from mlplatform.preflight import preflight

    path = find_pipeline(args.pipeline, settings.pipelines_dir)
    cfg, dags_built = check_pipeline(path, settings.pipelines_dir)
    data = absolute_data_uri(args.data) if args.data else None
    report = preflight(cfg, path, settings, data_uri=data)
    if report.problems:
        raise ConfigError("\n".join(p.line() for p in report.problems))
    say(f"{cfg.name}: config ok (hash {cfg.config_hash()}), suite {cfg.validation.suite!r} agrees")
    say(f"  gate: {cfg.gate.describe()}")
    if report.data is not None:
        say(
            f"  data: {report.sample_rows} sampled rows of {report.data} have every column; "
            f"label {cfg.features.label!r} fits {cfg.model.kind}"
        )
    if dags_built:
        say(f"  DAGs mlp_{cfg.name}_train and mlp_{cfg.name}_rollback build")
    else:
        say("  note: Airflow is not installed here: the DAGs were not built")
    for note in report.notes:
        say(f"  note: {note}")
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
