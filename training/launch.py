"""``python -m training.launch -np N --gloo -H localhost:N CMD...``: horovodrun without its
TensorFlow start-up.

Before it starts any rank, ``horovodrun`` checks that Horovod was built with Gloo by importing
``horovod.tensorflow`` — TensorFlow itself — in a forked process
(``horovod.common.util.gloo_built``): 10-30 s on a 2-core machine, before the ranks pay their own
TensorFlow import. This entry point runs Horovod's own launcher
(``horovod.runner.launch.run_commandline``, same arguments, same behaviour) with that one check
answered "yes" instead. It is only used with ``--gloo`` on an environment whose Horovod was built
with Gloo (``scripts/install_horovod.sh``: ``HOROVOD_WITH_GLOO=1``); if that were ever wrong, each
rank still fails at once in ``hvd.init`` with Horovod's own error. Without ``--gloo`` (MPI or
Horovod's own choice, as in the trainer image) it refuses to start: there the check decides
between MPI and Gloo and must run.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run horovod's launcher on ``argv`` (default ``sys.argv[1:]``) without the Gloo check."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--gloo" not in args:
        print("training.launch: error: only for --gloo launches (use horovodrun)", file=sys.stderr)
        return 2
    from horovod.runner import launch

    def gloo_built(verbose: bool = False) -> bool:
        # Replaces the check that imports TensorFlow in the launcher (see the module docstring).
        return True

    launch.gloo_built = gloo_built
    sys.argv = ["horovodrun", *args]
    return launch.run_commandline() or 0


if __name__ == "__main__":
    sys.exit(main())
