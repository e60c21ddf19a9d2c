"""``python -m mlplatform.cli``: the same as the ``mlplatform`` command."""

from mlplatform.cli.main import main

raise SystemExit(main())
