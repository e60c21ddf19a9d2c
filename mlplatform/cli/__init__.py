"""``mlplatform``: the command line for what people do by hand (the Airflow UI does the rest).

Exit codes: 0 success; 1 a pipeline outcome the user must act on (validation failed, gate
refused, a stage failed); 2 bad usage or bad config. Errors are one line; ``--verbose`` for traces.

The commands live by subject in ``run``, ``models`` and ``pipelines``; ``main`` holds the parser.
"""

from mlplatform.cli.common import OutcomeError, UsageError
from mlplatform.cli.main import build_parser, main

__all__ = ["OutcomeError", "UsageError", "build_parser", "main"]
