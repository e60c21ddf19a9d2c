"""The trainer entry point: ``python -m training.train (--spec SPEC.json | --spec-json TEXT)``.

Run it under ``horovodrun`` for data parallelism (the command of
:func:`training.spec.horovodrun_command`) or plainly (world size 1). The spec is the contract
between the platform and this executor (:class:`training.spec.TrainSpec`); ``--spec PATH`` reads
it from a file, ``--spec-json TEXT`` takes the same JSON inline (a Kubernetes pod's command line).

What runs, by module: :mod:`training.spec` (validation, no TensorFlow) -> :mod:`training.data`
(the Parquet tables, no TensorFlow) -> :mod:`training.distribution` (``hvd.init``; TensorFlow is
imported from here on) -> :mod:`training.loop` (the model, optimizer and GradientTape step) with
:mod:`training.checkpoints` (per-epoch checkpoints, resume) and :mod:`training.tracking` (the
MLflow run) -> :mod:`training.export` (SavedModel, hold-out metrics, ``result.json``). A bad spec
or bad data therefore fails in well under a second, before any TensorFlow start-up.

With ``--dump-weights`` every rank writes ``<output_dir>/weights_rank<r>.npz``.

Environment: ``MLP_TRAINER_EPOCH_PAUSE_S`` (a test hook, default 0) makes rank 0 sleep that long
after each epoch's checkpoint, so that a test can kill the trainer at a known epoch.

Exit codes: 0 ok; 2 bad spec / data / environment / incompatible checkpoint; 1 any other error.
A failure prints one ``training.train: error: ...`` line on stderr (after the traceback for an
unexpected error) and, once the spec is read, records the same line as
``<output_dir>/error-rank<r>.json`` (:func:`training.spec.read_error` reads it back).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from training.data import read_table  # noqa: E402
from training.spec import (  # noqa: E402
    ERROR_PREFIX,
    PROG,
    Job,
    SpecError,
    load_spec,
    load_spec_json,
    write_error,
)

PAUSE_ENV = "MLP_TRAINER_EPOCH_PAUSE_S"
#: the error line is cut here (a TensorFlow error can run to pages)
MAX_ERROR_CHARS = 600


def launch_rank() -> int:
    """This process's rank as its launcher set it (horovodrun/Gloo or mpirun), before
    ``hvd.init``; 0 when run plainly."""
    for key in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def run(job: Job, dump: bool) -> int:
    """Train (resuming from the checkpoint directory if it holds a checkpoint), export, log."""
    spec, paths = job.spec, job.paths
    if paths.remote:
        from training import remote_io

        remote_io.fetch_inputs(paths)
    # The data first: a bad table fails here, before TensorFlow is imported.
    train_table = read_table(paths.train, spec, "train")
    holdout = read_table(paths.holdout, spec, "holdout") if launch_rank() == 0 else None

    from training import distribution
    from training.checkpoints import Checkpointer, model_fingerprint, resume_state
    from training.export import dump_weights, finish
    from training.loop import Trainer
    from training.tracking import MlflowTracker

    rank, size, device = distribution.init_horovod()
    if rank == 0 and holdout is None:  # a launcher whose rank variable this code does not know
        holdout = read_table(paths.holdout, spec, "holdout")
    epochs = spec.model.epochs
    if rank == 0:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"training {spec.model.kind} on {len(train_table)} rows, world_size={size}, "
            f"device={device}, batch={spec.model.batch_size}/rank",
            flush=True,
        )

    trainer = Trainer(spec, train_table, rank, size)
    checkpointer = None
    if rank == 0:
        if paths.remote:
            remote_io.restore_checkpoints(paths)
        checkpointer = Checkpointer(
            paths.checkpoint_dir,
            trainer.model,
            trainer.optimizer,
            model_fingerprint(spec, trainer.model),
        )
    state = resume_state(checkpointer)
    trainer.broadcast_state()  # fresh or restored: rank 0's state everywhere before step one
    if rank == 0 and state.checkpoint:
        print(
            f"resuming from checkpoint at epoch {state.epoch}/{epochs} ({state.checkpoint})",
            flush=True,
        )
        if state.epoch >= epochs:
            print(f"all {epochs} epochs are trained already: exporting", flush=True)

    tracker = None
    if rank == 0 and job.mlflow is not None:
        tracker = MlflowTracker(job, device, size, len(train_table))
    try:
        if tracker is not None:
            tracker.open(state)
        history = list(state.history)
        epoch_seconds: list[float] = []
        pause = float(os.environ.get(PAUSE_ENV) or 0)
        for epoch in range(state.epoch + 1, epochs + 1):
            loss, dt = trainer.run_epoch(epoch)
            point = {
                "epoch": epoch,
                "loss": loss,
                "seconds": dt,
                "samples_per_sec": trainer.global_rows / dt,
            }
            history.append(point)
            epoch_seconds.append(dt)
            if checkpointer is not None:
                checkpointer.save(epoch, history)
                if paths.remote:
                    remote_io.publish_checkpoints(paths)
                if tracker is not None:
                    tracker.log_epoch(point)
                print(
                    f"epoch {epoch}/{epochs} loss={loss:.4f} "
                    f"samples/s={trainer.global_rows / dt:.0f} ({dt:.1f}s, world_size={size})",
                    flush=True,
                )
                if pause > 0:
                    time.sleep(pause)
        if dump:
            dump_weights(trainer.model, paths.output_dir / f"weights_rank{rank}.npz")
        if rank != 0:
            return 0
        assert holdout is not None
        finish(job, trainer, holdout, history, epoch_seconds, state, device, tracker)
        if paths.remote:
            print(f"published the outputs to {remote_io.publish_outputs(paths)}", flush=True)
        return 0
    except BaseException:
        if tracker is not None:
            tracker.fail()
        raise


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; a failure is one ``error:`` line (see the module doc)."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", metavar="PATH", help="the JSON train spec, as a file")
    source.add_argument(
        "--spec-json", metavar="TEXT", help="the JSON train spec, inline (e.g. in a pod command)"
    )
    parser.add_argument(
        "--dump-weights",
        action="store_true",
        help="every rank writes <output_dir>/weights_rank<r>.npz",
    )
    args = parser.parse_args(argv)
    output_dir: Path | None = None
    try:
        spec = load_spec(args.spec) if args.spec is not None else load_spec_json(args.spec_json)
        job = spec.resolve()
        output_dir = job.paths.output_dir
        return run(job, args.dump_weights)
    except SpecError as exc:
        message, code = str(exc), 2
    except Exception as exc:  # noqa: BLE001 - any failure ends as one line the stage can show
        traceback.print_exc()
        message, code = f"{type(exc).__name__}: {exc}", 1
    message = " ".join(message.split())[:MAX_ERROR_CHARS] or "unknown error"
    print(f"{ERROR_PREFIX}{message}", file=sys.stderr, flush=True)
    if output_dir is not None:
        write_error(output_dir, launch_rank(), message)
    return code


if __name__ == "__main__":
    sys.exit(main())
