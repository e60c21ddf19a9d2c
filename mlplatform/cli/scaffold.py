"""``mlplatform init``: scaffold a pipeline from a table (:mod:`mlplatform.scaffold`)."""

from __future__ import annotations

import argparse
import json

from mlplatform.cli.common import UsageError, say
from mlplatform.settings import Settings


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Profile ``--data``, print what was decided and why, write the YAML and the suite, and
    print the next steps. Bad input (no such file, no usable column, a file that exists) is
    one line, exit 2, nothing written."""
    from mlplatform.cli.run import absolute_data_uri
    from mlplatform.scaffold import pipeline
    from mlplatform.scaffold.guess import GuessError
    from mlplatform.stages import StageError

    uri = absolute_data_uri(args.data)
    try:
        scaffold = pipeline.plan(
            args.name, uri, settings, label=args.label, entity=args.entity,
            timestamp=args.timestamp,
        )  # fmt: skip
        yaml_path, suite_path = pipeline.write(scaffold, settings, force=args.force)
    except (pipeline.ScaffoldError, GuessError, StageError) as exc:
        raise UsageError(f"init {args.name}: {exc}") from None
    for note in scaffold.notes:
        say(f"  {note}")
    say(f"wrote {yaml_path}")
    n = len(scaffold.suite["expectations"])
    say(f"wrote {suite_path} ({n} expectations drafted from the data)")
    name = scaffold.name
    row = json.dumps([scaffold.example], ensure_ascii=False)
    say("next:")
    say(f"  mlplatform check {name}        # validate the config and suite, build its DAGs")
    say(
        f"  mlplatform run {name}          # ingest, validate, train, gate, serve (mlp_{name}_train)"
    )
    say("  mlplatform serve &             # the local TF-Serving-compatible server")
    say(f"  mlplatform predict {name} --json '{row}'")
    return 0
