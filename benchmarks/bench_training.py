"""Trainer throughput: Horovod overhead at np=1, np=1 vs np=2, batch size and Horovod tuning.

Usage::

    .venv/bin/python benchmarks/bench_training.py [--quick] [--out benchmarks/results/training.md]

What it measures (samples/s = global training rows processed per second of training-loop time:
the steps and the per-epoch loss allreduce, never TF import, data loading, model building,
checkpoint writes or MLflow calls; the first epoch of every configuration is a warm-up that
traces the step function and is left out, the figure is the median of the other epochs):

1. Horovod overhead at np=1: the trainer's own step (``training.loop.Trainer.run_epoch``:
   GradientTape + ``hvd.grouped_allreduce``, under ``horovodrun -np 1``) against the same model,
   optimizer, learning-rate schedule, batches and thread settings without Horovod: a plain
   ``tf.function`` GradientTape step, and Keras ``model.fit``. Target: trainer >= 0.8x.
2. np=1 vs np=2 on this machine's cores for the demo model (``pipelines/demo.yaml``: hidden
   units [32, 16]) and a larger one ([512, 512, 256]) on the same synthetic data
   (``mlplatform.datagen.generate``), at several per-rank batch sizes. ``batch_size`` is per
   rank as in the trainer, so np=2 takes 2x the rows per step; the table gives the ratio at
   the same per-rank batch and, where measured, at the same global batch (np=1 at 2x).
   "Crossover": the smallest per-rank batch from which np=2 is faster than np=1.
3. Horovod tuning at np=2: ``horovodrun --fusion-threshold-mb`` and ``--cycle-time-ms``.
4. (full run) The trainer CLI itself (``python -m training.train`` under ``horovodrun``, its
   ``metrics.json`` ``steady_samples_per_sec``) for the demo model at np=1 and np=2, to check
   that the in-process numbers above are the trainer's.

Every configuration of one launch runs in one process per rank (``--worker``: one
``horovodrun`` launch per np / tuning setting, ``hvd.init`` once, the configurations one after
the other), so launcher and TF start-up are paid once per launch. Other jobs may share the
cores: ratios are measured side by side in one run, and each launch is repeated ``--rounds``
times, interleaved, keeping the best round per configuration.

Default run: under ~8 minutes on 2 cores; ``--quick`` (fewer configurations, one round, no CLI
check): under ~3 minutes. Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
CATEGORICAL = ["contract_type", "region"]
LABEL = "churned"
MODELS = {"demo": [32, 16], "large": [512, 512, 256]}
LEARNING_RATE = 0.002
SEED = 42


@dataclass(frozen=True)
class Config:
    """One measured configuration: a model (key of ``MODELS``), a per-rank batch, epochs."""

    model: str
    batch: int
    epochs: int

    @property
    def key(self) -> str:
        return f"{self.model}/b{self.batch}"


@dataclass
class Launch:
    """One worker launch: ``mode`` ("trainer" under horovodrun, or "plain": the GradientTape
    step and ``model.fit`` without Horovod), ``np``, extra ``horovodrun`` flags, and the
    configurations it runs."""

    name: str
    mode: str
    np: int
    configs: list[Config]
    flags: list[str] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)  # config key -> best samples/s


# ----------------------------------------------------------------------------- worker side


def _spec(data: dict[str, str], cfg: Config) -> dict[str, Any]:
    return {
        "pipeline": "bench",
        "label": LABEL,
        "numeric_features": NUMERIC,
        "categorical_features": CATEGORICAL,
        "model": {
            "kind": "tabular_classifier",
            "hidden_units": MODELS[cfg.model],
            "epochs": cfg.epochs,
            "batch_size": cfg.batch,
            "learning_rate": LEARNING_RATE,
            "seed": SEED,
        },
        "train_uri": data["train"],
        "holdout_uri": data["holdout"],
        "output_dir": data["out"],
    }


def _steady(epoch_seconds: list[float], rows: int) -> float:
    """Median samples/s over the epochs after the first (warm-up, tracing)."""
    return rows / statistics.median(epoch_seconds[1:] or epoch_seconds)


def _trainer_epochs(spec: Any, table: Any, rank: int, size: int) -> tuple[list[float], int]:
    from training.loop import Trainer

    trainer = Trainer(spec, table, rank, size)
    trainer.broadcast_state()
    seconds = [trainer.run_epoch(epoch)[1] for epoch in range(1, spec.model.epochs + 1)]
    return seconds, trainer.global_rows


def _plain_epochs(spec: Any, table: Any, mode: str) -> tuple[list[float], int]:
    """The trainer's model, optimizer, LR schedule and batches without Horovod (world size 1):
    a ``tf.function`` GradientTape step (``tape``) or Keras ``model.fit`` (``fit``)."""
    import keras
    import tensorflow as tf

    from training.data import epoch_order, shard_rows
    from training.loop import LinearWarmup
    from training.model import build_model

    params = spec.model
    keras.utils.set_random_seed(params.seed)
    model = build_model(
        params.kind,
        params.hidden_units,
        spec.numeric_features,
        spec.categorical_features,
        {k: v.reshape(-1, 1) for k, v in table.features.items()},
    )
    shard = table.take(shard_rows(len(table), 0, 1, params.seed))
    rows = len(shard)
    columns = {k: tf.constant(v.reshape(-1, 1)) for k, v in shard.features.items()}
    labels = tf.constant(shard.label.reshape(-1, 1))
    steps = -(-rows // params.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate=LinearWarmup(params.learning_rate, 1, steps))
    loss_fn = keras.losses.BinaryCrossentropy()

    def batches(epoch: int) -> tf.data.Dataset:
        def gather(idx: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
            return {k: tf.gather(v, idx) for k, v in columns.items()}, tf.gather(labels, idx)

        order = epoch_order(rows, params.seed, 0, epoch)
        return (
            tf.data.Dataset.from_tensor_slices(order)
            .batch(params.batch_size)
            .map(gather)
            .prefetch(2)
        )

    seconds: list[float] = []
    if mode == "fit":
        model.compile(optimizer=optimizer, loss=loss_fn, jit_compile=False)
        for epoch in range(1, params.epochs + 1):
            t0 = time.perf_counter()
            model.fit(batches(epoch), epochs=1, verbose=0)
            seconds.append(time.perf_counter() - t0)
        return seconds, rows

    optimizer.build(model.trainable_variables)
    loss_sum = tf.Variable(0.0)

    @tf.function
    def step(x: dict[str, tf.Tensor], y: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        loss_sum.assign_add(loss * tf.cast(tf.shape(y)[0], tf.float32))

    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        loss_sum.assign(0.0)
        for x, y in batches(epoch):
            step(x, y)
        float(loss_sum.read_value())  # wait for the last step, as the trainer does
        seconds.append(time.perf_counter() - t0)
    return seconds, rows


def worker(job_path: str) -> int:
    """``--worker JOB.json``: run the job's configurations; rank 0 writes ``results``
    (``{config key: samples/s}``; mode "plain" runs ``tape:<key>`` and ``fit:<key>``)."""
    from training.data import read_table
    from training.distribution import init_horovod
    from training.spec import parse_spec

    job = json.loads(Path(job_path).read_text())
    configs = [Config(**c) for c in job["configs"]]
    mode = job["mode"]
    if mode == "trainer":
        rank, size, _ = init_horovod()
    else:
        rank, size = 0, 1
    table = None
    results: dict[str, float] = {}
    for cfg in configs:
        spec = parse_spec(_spec(job["data"], cfg))
        if table is None:
            table = read_table(spec.paths().train, spec, "train")
        for variant in ["trainer"] if mode == "trainer" else ["tape", "fit"]:
            if variant == "trainer":
                seconds, rows = _trainer_epochs(spec, table, rank, size)
            else:
                seconds, rows = _plain_epochs(spec, table, variant)
            key = cfg.key if variant == "trainer" else f"{variant}:{cfg.key}"
            results[key] = _steady(seconds, rows)
            if rank == 0:
                print(f"  {variant} np={size} {cfg.key}: {results[key]:.0f} samples/s", flush=True)
    if rank == 0:
        Path(job["results"]).write_text(json.dumps(results))
    return 0


# ----------------------------------------------------------------------------- driver side


def _env() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def _horovodrun(np_: int, flags: list[str]) -> list[str]:
    exe = Path(sys.executable).parent / "horovodrun"
    return [str(exe), "-np", str(np_), "--gloo", "-H", f"localhost:{np_}", *flags]


def run_launch(launch: Launch, data: dict[str, str], work: Path) -> None:
    """Run one launch once; keep the best samples/s per configuration in ``launch.results``."""
    job = work / f"{launch.name}.job.json"
    out = work / f"{launch.name}.results.json"
    out.unlink(missing_ok=True)
    job.write_text(
        json.dumps(
            {
                "mode": launch.mode,
                "configs": [asdict(c) for c in launch.configs],
                "data": data,
                "results": str(out),
            }
        )
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(job)]
    if launch.mode == "trainer":
        cmd = _horovodrun(launch.np, launch.flags) + cmd
    print(f"{launch.name}: {' '.join(launch.flags) or '(defaults)'}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if "samples/s" in line:
            print(line.split(">:", 1)[-1], flush=True)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"bench_training: launch {launch.name} failed:\n{tail}")
    for key, value in json.loads(out.read_text()).items():
        launch.results[key] = max(value, launch.results.get(key, 0.0))
    print(f"  ({wall:.0f} s wall, start-up included)", flush=True)


def run_cli(np_: int, data: dict[str, str], cfg: Config, work: Path) -> float:
    """The trainer CLI under ``horovodrun -np np_``: its ``steady_samples_per_sec``."""
    spec = _spec({**data, "out": str(work / f"cli_np{np_}")}, cfg)
    path = work / f"cli_np{np_}.spec.json"
    path.write_text(json.dumps(spec))
    cmd = _horovodrun(np_, []) + [sys.executable, "-m", "training.train", "--spec", str(path)]
    print(f"cli np={np_}: python -m training.train {cfg.key}", flush=True)
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"bench_training: trainer CLI failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    metrics = json.loads((Path(spec["output_dir"]) / "metrics.json").read_text())
    print(f"  cli np={np_} {cfg.key}: {metrics['steady_samples_per_sec']:.0f} samples/s")
    return float(metrics["steady_samples_per_sec"])


def make_data(work: Path, rows: int) -> dict[str, str]:
    """``rows`` synthetic demo rows (``mlplatform.datagen.generate``) as train/holdout parquet."""
    from mlplatform.datagen import generate

    df = generate(n_rows=rows + 1000, seed=0)
    train, holdout = work / "train.parquet", work / "holdout.parquet"
    df.iloc[:rows].to_parquet(train, index=False)
    df.iloc[rows:].to_parquet(holdout, index=False)
    return {"train": str(train), "holdout": str(holdout), "out": str(work / "out")}


def machine() -> str:
    """CPU model, cores, and the library versions, for the table header."""
    from importlib.metadata import version

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"TensorFlow {version('tensorflow')}, Horovod {version('horovod')} (Gloo), CPU only"
    )


def load() -> str:
    """The 1-minute load average (other jobs on the machine skew the numbers)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def plan(quick: bool) -> dict[str, Any]:
    """The configurations of a run (quick: fewer, one round, no CLI check)."""
    if quick:
        rows, epochs, rounds = 12_000, 3, 1
        sweep = {"demo": [128, 2048], "large": [256, 2048]}
        tuning = [("np2 fusion=0", ["--fusion-threshold-mb", "0"])]
    else:
        rows, epochs, rounds = 16_000, 4, 2
        sweep = {"demo": [128, 512, 2048], "large": [256, 1024, 2048]}
        tuning = [
            ("np2 fusion=0", ["--fusion-threshold-mb", "0"]),
            ("np2 cycle=0.1ms", ["--cycle-time-ms", "0.1"]),
            ("np2 cycle=5ms", ["--cycle-time-ms", "5"]),
        ]
    np2 = [Config(m, b, epochs) for m, bs in sweep.items() for b in bs]
    # np=1 also at twice the largest per-rank batch: np=2's global batch there.
    np1 = np2 + [Config(m, 2 * max(bs), epochs) for m, bs in sweep.items()]
    base = [Config("demo", sweep["demo"][0], epochs), Config("large", sweep["large"][0], epochs)]
    launches = [
        Launch("plain", "plain", 1, base),
        Launch("np1", "trainer", 1, np1),
        Launch("np2", "trainer", 2, np2),
        *[Launch(name, "trainer", 2, base, flags) for name, flags in tuning],
    ]
    return {
        "rows": rows,
        "epochs": epochs,
        "sweep": sweep,
        "launches": launches,
        "base": base,
        "rounds": rounds,
        "cli": None if quick else Config("demo", sweep["demo"][0], epochs),
    }


def render(
    p: dict[str, Any], cli: dict[int, float], header: str, seconds: float, loads: str
) -> str:
    """The markdown report."""
    by_name = {launch.name: launch for launch in p["launches"]}
    np1, np2 = by_name["np1"].results, by_name["np2"].results
    lines = [
        "# Trainer throughput (samples/s)",
        "",
        f"Machine: {header}.  ",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s, load average {loads}; "
        f"{p['rows']:,} rows of `mlplatform.datagen` data (4 numeric + 2 categorical features), "
        f"{p['epochs']} epochs per configuration (the first is a warm-up), median epoch, "
        f"best of {p['rounds']} interleaved round(s). Samples/s = global rows / training-loop "
        "second (no start-up, loading, checkpoints or MLflow).",
        "",
        "## Horovod overhead at np=1 (same model, optimizer, batches, threads)",
        "",
        "| model | batch | Keras `fit` | GradientTape, no Horovod | trainer np=1 | trainer / fit "
        "| trainer / tape |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    plain = by_name["plain"].results
    for cfg in p["base"]:
        k = cfg.key
        fit, tape = plain.get(f"fit:{k}"), plain.get(f"tape:{k}")
        lines.append(
            f"| {cfg.model} {MODELS[cfg.model]} | {cfg.batch} | {_fmt(fit)} | {_fmt(tape)} "
            f"| {_fmt(np1.get(k))} | {_ratio(np1.get(k), fit)} | {_ratio(np1.get(k), tape)} |"
        )
    lines += [
        "",
        "## np=1 vs np=2 (batch per rank; np=2's global batch is twice that)",
        "",
        "| model | batch/rank | np=1 | np=2 | np=2 / np=1, same batch/rank "
        "| np=1 at 2× batch | np=2 / np=1, same global batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    crossover: dict[str, int | None] = {}
    for model, batches in p["sweep"].items():
        crossover[model] = None
        for b in batches:
            k, k2 = f"{model}/b{b}", f"{model}/b{2 * b}"
            lines.append(
                f"| {model} {MODELS[model]} | {b} | {_fmt(np1.get(k))} | {_fmt(np2.get(k))} "
                f"| {_ratio(np2.get(k), np1.get(k))} | {_fmt(np1.get(k2))} "
                f"| {_ratio(np2.get(k), np1.get(k2))} |"
            )
            if crossover[model] is None and np2.get(k, 0) > np1.get(k, float("inf")):
                crossover[model] = b
    lines += [
        "",
        "Crossover (smallest batch/rank from which np=2 beats np=1 at the same batch/rank): "
        + "; ".join(
            f"{m}: {'b=' + str(b) if b else 'none up to b=' + str(max(p['sweep'][m]))}"
            for m, b in crossover.items()
        )
        + ".",
        "",
        "## Horovod tuning at np=2",
        "",
        "| setting | model | batch/rank | samples/s | vs np=2 defaults | vs np=1 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    tuned = [launch for launch in p["launches"] if launch.name.startswith("np2 ")]
    for cfg in p["base"]:
        k = cfg.key
        lines.append(
            f"| defaults (fusion 128 MB, cycle 1 ms) | {cfg.model} | {cfg.batch} "
            f"| {_fmt(np2.get(k))} | 1.00× | {_ratio(np2.get(k), np1.get(k))} |"
        )
        for launch in tuned:
            value = launch.results.get(k)
            lines.append(
                f"| `{' '.join(launch.flags)}` | {cfg.model} | {cfg.batch} | {_fmt(value)} "
                f"| {_ratio(value, np2.get(k))} | {_ratio(value, np1.get(k))} |"
            )
    if cli:
        cfg = p["cli"]
        lines += [
            "",
            "## Cross-check: the trainer CLI (`python -m training.train`, metrics.json "
            "`steady_samples_per_sec`, mean of epochs 2..N)",
            "",
            "| np | model | batch/rank | CLI samples/s | in-process (above) |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for np_, value in sorted(cli.items()):
            inproc = (np1 if np_ == 1 else np2).get(f"{cfg.model}/b{cfg.batch}")
            lines.append(f"| {np_} | {cfg.model} | {cfg.batch} | {_fmt(value)} | {_fmt(inproc)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations (< ~3 min)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training.md")
    parser.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if not (Path(sys.executable).parent / "horovodrun").exists():
        raise SystemExit("bench_training: horovodrun not found: run scripts/install_horovod.sh")

    started = time.perf_counter()
    p = plan(args.quick)
    header = machine()
    load_before = load()
    print(f"machine: {header}; load average {load_before}", flush=True)
    cli: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_training.") as tmp:
        work = Path(tmp)
        data = make_data(work, p["rows"])
        for round_ in range(1, p["rounds"] + 1):
            print(f"-- round {round_}/{p['rounds']}", flush=True)
            # Alternate the order, so that a busy spell on the machine hits different launches.
            order = p["launches"] if round_ % 2 else p["launches"][::-1]
            for launch in order:
                run_launch(launch, data, work)
        if p["cli"] is not None:
            for np_ in (1, 2):
                cli[np_] = run_cli(np_, data, p["cli"], work)
    loads = f"{load_before} at start, {load()} at end"
    report = render(p, cli, header, time.perf_counter() - started, loads)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
