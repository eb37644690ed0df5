"""Command line: `run_search.py [options]` searches; `report` and `export` reuse a finished run.

Parsing and validation import no TensorFlow, so --help and bad values answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import fields
from pathlib import Path

from search.backends import ALGORITHMS, BACKENDS, PRUNERS, SAMPLERS
from search.config import SearchConfig, config_defaults
from search.errors import (
    WRITE_FAULT_STATUS,
    Restart,
    SearchStopped,
    UsageError,
    find_write_fault,
    write_fault_message,
)
from search.schema import ALL_OBJECTIVES, OBJECTIVES
from search.workers import RUN_SEARCH
from spaces import SPACES
from spaces.user import is_user_space

EXPORT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")  # search.export.FORMATS
DEFAULT_MEMORY_GROWTH_MB = 256
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


# --weights NAME=VALUE: a backbone's name (search/weights.py checks it) before the first "=".
NAMED_WEIGHTS = re.compile(r"^[a-z][a-z0-9_]*=")
# Options given once per value (--fix A=1 --fix B=2); the other list options take A,B,...
REPEATED_OPTIONS = frozenset({"fix", "weights"})


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad value as one line and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class RaisingParser(OneLineParser):
    """The same options for the Python API (search.run), whose bad values raise UsageError."""

    def error(self, message: str):
        raise UsageError(message)


def _bounded_int(low: int, high: int | None, wording: str):
    """An argparse type: an integer in [low, high], with a one-line message that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wording}, got {text!r}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


_positive = _bounded_int(1, None, "a positive integer")


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


_non_negative = _bounded_int(0, None, "0 or more")


def _seconds_or_off(text: str) -> float | None:
    if text == "off":
        return None
    try:
        return _non_negative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be seconds >= 0 or off, got {text!r}") from None


_image_size = _bounded_int(
    MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, f"between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels"
)


def _objective_list(text: str) -> list[str]:
    """--objectives: two or more of schema.ALL_OBJECTIVES, comma-separated."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_OBJECTIVES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown objective {unknown[0]!r}; choose from {', '.join(ALL_OBJECTIVES)}"
        )
    if len(set(names)) != len(names) or len(names) < 2:
        raise argparse.ArgumentTypeError(
            f"give two or more different objectives, comma-separated, got {text!r}"
        )
    return names


def _name_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated names, e.g. a,b")
    return names


class _WeightsAction(argparse.Action):
    """--weights VALUE for MobileNetV2's file (or imagenet or random for every backbone);
    --weights NAME=VALUE, repeatable, for one backbone's."""

    def __call__(self, parser, namespace, value, *_option_string):
        if NAMED_WEIGHTS.match(value):
            namespace.backbone_weights = [*namespace.backbone_weights, value]
        else:
            namespace.weights = value


def _image_size_list(text: str) -> list[int]:
    """--image-sizes: two or more different sizes, comma-separated, in increasing order."""
    sizes = sorted({_image_size(part.strip()) for part in text.split(",") if part.strip()})
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(
            f"give two or more different sizes, comma-separated (one size is --image-size), "
            f"got {text!r}"
        )
    return sizes


class SpaceChoices(list):
    """--space's choices: the built-in spaces, listed by --help, and any user space spec
    (FILE.py[:FUNCTION], module:FUNCTION), loaded and checked once the run starts."""

    def __contains__(self, value: object) -> bool:
        return super().__contains__(value) or (isinstance(value, str) and is_user_space(value))


KERAS_BACKEND_OPTION = ("--keras-backend",)
# Not choices: an unknown name gets search.keras_backend's one line, which says what exists.
KERAS_BACKEND_HELP = {
    "metavar": "{tensorflow,torch,jax}",
    "help": "the Keras backend that trains the models, not to be confused with the search back "
    "end (--backend); sets KERAS_BACKEND (default: KERAS_BACKEND, else ~/.keras/keras.json, "
    "else tensorflow)",
}


def search_parser(parser_class: type[OneLineParser] = OneLineParser) -> OneLineParser:
    spaces = "\n".join(f"  {name:<11} {about}" for name, about in SPACES.items())
    parser = parser_class(
        prog="run_search.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search Keras image classifiers on a folder of labelled images.",
        epilog=f"spaces:\n{spaces}\n\nother commands:\n"
        f"  run_search.py report RUNDIR          rebuild a run's report from its store\n"
        f"  run_search.py export RUNDIR --format {{{','.join(EXPORT_FORMATS)}}} "
        f"[--output PATH]\n"
        f"  run_search.py predict TARGET IMAGE...  classify images with a run or any export",
    )
    add = parser.add_argument
    add(
        "--space",
        choices=SpaceChoices(SPACES),
        help="search space: a built-in one, or your own model as FILE.py:FUNCTION, "
        "package.module:FUNCTION or FILE.py (its build): a build(hp, ctx), a Keras Tuner "
        "build_model(hp) or a keras_tuner.HyperModel (default: %(default)s)",
    )
    add(
        "--data",
        help="image folder: train/ + validation/ (+ test/) of class folders, or class folders; "
        "the default is found in the Keras cache or downloaded (default: %(default)s)",
    )
    add(
        "--labels",
        metavar="FILE.csv",
        help="classes from a CSV with the columns filename,label (names relative to --data) "
        "instead of class folders; an optional split column (train, validation, test) "
        "overrides the seeded split",
    )
    add(
        "--backend",
        choices=list(BACKENDS),
        help="the search back end, which proposes the trials (default: %(default)s)",
    )
    add(*KERAS_BACKEND_OPTION, **KERAS_BACKEND_HELP)
    add(
        "--algorithm",
        choices=ALGORITHMS,
        help="Keras Tuner oracle (default: %(default)s)",
    )
    add(
        "--max-trials",
        type=_positive,
        help="trials in the whole run, resumed trials included; hyperband sizes its brackets "
        "from --epochs instead (default: %(default)s)",
    )
    add(
        "--startup-trials",
        type=_positive,
        metavar="N",
        help="random trials, pruned ones included, before the sampler models the results: "
        "Optuna's tpe, gp and cmaes (n_startup_trials; their defaults 10, 10 and 1) and Keras "
        "Tuner's bayesian (num_initial_points; its default 3 per hyperparameter). With a budget "
        "of a few slow trials, fewer leave trials for the model (default: the library's)",
    )
    add(
        "--epochs",
        type=_positive,
        help="epochs per trial; per phase for fine-tuning (default: %(default)s)",
    )
    add(
        "--patience",
        type=_non_negative,
        help="EarlyStopping patience on val_loss (default: %(default)s)",
    )
    add(
        "--warmup-epochs",
        type=_non_negative,
        help="first epochs of each trial that early stopping and the pruner do not judge and "
        "whose weights are never kept (Keras's start_from_epoch): batch-norm models trained from "
        "scratch can sit at chance on validation for their first epochs (default: %(default)s)",
    )
    add(
        "--checkpoint-every",
        type=_seconds_or_off,
        metavar="SECONDS",
        help="save the state of a trial training on images (weights, optimizer, early "
        "stopping, epochs) at the end of an epoch once this long has passed since its last "
        "save, so that a resumed run goes on with a trial cut off by Ctrl-C or a crash from "
        "there instead of from its first epoch; 0: every epoch; off: never "
        "(default: %(default)s)",
    )
    add(
        "--objective",
        choices=list(OBJECTIVES),
        help="what ranks the trials, prunes them and picks the exported model: validation "
        "accuracy, loss (lower is better), ROC AUC (one-vs-rest, macro) or macro F1, all read "
        "at each trial's kept epoch (default: %(default)s)",
    )
    add(
        "--objectives",
        type=_objective_list,
        metavar="A,B[,...]",
        help="a multi-objective search (--backend optuna) of any of "
        f"{', '.join(ALL_OBJECTIVES)}: trials.csv marks the Pareto front (pareto), the report "
        "plots it, and its models are kept for export --trial N. The first validation "
        "objective listed ranks the leaderboard and picks best_model.keras. Pruning is off: "
        "Optuna does not prune multi-objective studies",
    )
    add(
        "--measure-deploy",
        action="store_true",
        help="convert every complete trial's model to float32 TFLite (ONNX in onnxruntime "
        "where TensorFlow is not installed: deploy_format) and record its size (tflite_kb) and "
        "its median latency on this CPU, one thread, batch 1, over 30 runs (latency_ms, "
        "latency_iqr_ms) in trials.csv",
    )
    deploy = parser.add_argument_group(
        "deployment limits: a trial over one is recorded as infeasible and never ranked; "
        "Optuna's TPE, NSGA-II and GP samplers learn from them (Trial.set_constraint)"
    )
    deploy.add_argument(
        "--max-latency-ms",
        type=_positive_float,
        metavar="MS",
        help="median TFLite latency, one thread, batch 1 (turns on --measure-deploy)",
    )
    deploy.add_argument(
        "--max-size-kb",
        type=_positive_float,
        metavar="KB",
        help="float32 TFLite file size (turns on --measure-deploy)",
    )
    deploy.add_argument("--max-params", type=_positive, metavar="N", help="model parameters")
    add(
        "--class-weight",
        choices=("none", "balanced"),
        help="balanced: weigh each class in the loss by n / (classes x its training images), "
        "for folders where one class has far more images (default: %(default)s)",
    )
    add(
        "--clean-train-eval",
        choices=("every", "best", "off"),
        help="measure training accuracy and loss in inference mode (no augmentation, no dropout) "
        "on a fixed sample of training images the size of the validation split: after every "
        "epoch, only for the kept weights (best), or never (off); the verdicts judge the gap "
        "between it and validation accuracy (default: %(default)s)",
    )
    add(
        "--image-size",
        type=_image_size,
        help="square side in pixels (default: %(default)s)",
    )
    add(
        "--image-sizes",
        type=_image_size_list,
        metavar="S1,S2[,...]",
        help="search the input size too, as the hyperparameter image_size (e.g. 96,128,160): "
        "latency grows about with the pixels; images are decoded, and frozen-base features "
        "cached, once per size",
    )
    add("--batch-size", type=_positive, help="(default: %(default)s)")
    add("--seed", type=int, help="search and training seed (default: %(default)s)")
    add(
        "--split-seed",
        type=int,
        help="seed of the validation/test split; keep it to compare runs (default: %(default)s)",
    )
    add(
        "--backbones",
        type=_name_list,
        metavar="A,B,...",
        help="the pretrained networks the transfer space chooses among: mobilenet_v2, "
        "mobilenet_v3_small, mobilenet_v3_large, efficientnet_v2_b0, resnet50_v2, "
        "convnext_tiny, or all (default: mobilenet_v2, the documents' network)",
    )
    add(
        "--weights",
        action=_WeightsAction,
        metavar="[NAME=]VALUE",
        help="backbone weights: imagenet (Keras's cache, downloaded if absent), random "
        "(untrained: for latency studies), or a no_top weights file; a bare file is "
        "MobileNetV2's, NAME=VALUE one backbone's (repeatable) (default: %(default)s)",
    )
    add("--name", help="run name (default: SPACE-TIMESTAMP); an existing run of that name resumes")
    add(
        "--allow-changed-space",
        action="store_true",
        help="resume a run of your own --space FILE.py although the file changed since the run "
        "started (its sha256 is in run.json); trials already run keep their results",
    )
    add("--runs-dir", help="where run directories go (default: %(default)s)")
    add(
        "--resume",
        action="store_true",
        help="continue run --name with its stored settings; finished trials are kept",
    )
    add(
        "--max-consecutive-failures",
        type=_positive,
        help="stop the search after this many failed trials in a row (default: %(default)s)",
    )
    add("--tensorboard", action="store_true", help="write TensorBoard logs with HParams to RUN/tb")
    add(
        "--verbose",
        action="store_true",
        help="show Keras progress bars and TensorFlow's start-up lines",
    )
    add(
        "--quiet",
        action="store_true",
        help="print only warnings, errors and the final result line (the package logs through "
        "Python's logging, as the 'search' logger)",
    )
    add(
        "--with-baselines",
        action="store_true",
        help="run the documents' models that belong to --space first (spaces/baselines.py)",
    )
    add(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pin a hyperparameter of the space, e.g. --fix mode=frozen; repeatable",
    )
    confirm = parser.add_argument_group("after the search")
    confirm.add_argument(
        "--confirm-top",
        type=_non_negative,
        metavar="K",
        help="train the K best trials again with --confirm-seeds fresh seeds each; the ranking "
        "and the exported model follow the mean validation accuracy of their runs "
        "(default: %(default)s, off)",
    )
    confirm.add_argument(
        "--confirm-seeds",
        type=_positive,
        metavar="S",
        help="fresh seeds per --confirm-top finalist (default: %(default)s)",
    )
    confirm.add_argument(
        "--refit",
        action="store_true",
        help="train the best configuration again on training + validation images for the "
        "epochs its trial kept, score it on the test split and save RUN/refit_model.keras",
    )
    speed = parser.add_argument_group("speed")
    speed.add_argument(
        "--cache-dir",
        help="where decoded images and frozen-backbone features are cached; share it between "
        "runs on the same data (default: RUN/cache)",
    )
    speed.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="train frozen-backbone trials on images instead of cached backbone features",
    )
    speed.add_argument(
        "--max-memory-growth",
        type=_non_negative,
        metavar="MIB",
        help="restart the process between trials (and resume) before it grows more than this "
        "since its first trial; TensorFlow keeps memory from every model built; 0: never "
        "(default: %(default)s)",
    )
    speed.add_argument(
        "--mixed-precision",
        choices=("auto", "on", "off"),
        help="float16 compute with float32 weights and output; auto: on for GPUs of compute "
        "capability 7.0 or higher (default: %(default)s)",
    )
    speed.add_argument(
        "--jit",
        choices=("auto", "on", "off"),
        help="compile the training step: XLA on TensorFlow and JAX (where it is always on: "
        "off is refused), torch.compile on PyTorch; auto: Keras's choice, XLA where every "
        "layer supports it, never torch.compile (default: %(default)s)",
    )
    speed.add_argument(
        "--gpu-memory-mb",
        type=_positive,
        metavar="MIB",
        help="GPU memory limit of each process (each of --workers), in MiB, on each GPU it "
        "sees; memory grows as needed up to it. With more --workers than GPUs the workers "
        "share them in turn, and a limit keeps one from starving the others; ignored, with a "
        "note, without a GPU (default: no limit)",
    )
    optuna = parser.add_argument_group("Optuna back end (--backend optuna)")
    optuna.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="auto: the sampler the installed Optuna creates by default for the number of "
        "objectives (TPE for one and, since Optuna 5, for several); nsga2's first generation, "
        "50 trials, is random: with a smaller budget, tpe learns sooner (default: %(default)s)",
    )
    optuna.add_argument(
        "--pruner",
        choices=PRUNERS,
        help="prunes on val_accuracy after each epoch (default: %(default)s)",
    )
    optuna.add_argument(
        "--storage",
        help="SQLAlchemy URL of the study database (default: sqlite:///RUN/study.db); "
        "postgresql://USER@HOST/DB for --workers and several machines",
    )
    optuna.add_argument(
        "--workers",
        type=_positive,
        help="worker processes sharing the study; they take the visible GPUs in turn, so more "
        "workers than GPUs share them "
        "(default: %(default)s)",
    )
    optuna.add_argument(
        "--heartbeat",
        type=_positive,
        help="seconds between a trial's heartbeats; a trial silent for twice that is failed "
        "and retried once (default: %(default)s)",
    )
    optuna.add_argument(
        "--enqueue",
        metavar="FILE.json",
        help="hyperparameter sets (a JSON list of objects) to run as the first trials",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    # Defaults come from SearchConfig, so the command line and the Python API agree; --fix
    # and --weights NAME=VALUE keep lists (appended to) and --max-memory-growth the command's
    # own default.
    parser.set_defaults(
        **config_defaults()
        | {"fix": [], "backbone_weights": [], "max_memory_growth": DEFAULT_MEMORY_GROWTH_MB}
    )
    return parser


def _stored_settings(argv: list[str], parser: OneLineParser) -> dict:
    """With --resume, a run's stored settings become the defaults of this command."""
    first, _ = parser.parse_known_args(argv)
    if not first.resume or not first.name:
        return {}
    run_json = Path(first.runs_dir) / first.name / "run.json"
    if not run_json.exists():
        return {}
    stored = json.loads(run_json.read_text(encoding="utf-8"))
    per_process = {
        "keras_backend",  # this process's choice; steps refuses another than the run's
        "data",
        "resume",
        "verbose",
        "worker",
        "worker_index",
        "allow_changed_space",
        "quiet",
    }
    keys = {f.name for f in fields(SearchConfig)} - per_process
    settings = {k: stored[k] for k in keys if k in stored}
    settings["data"] = stored.get("data")
    return settings


def parse_search(
    argv: list[str], parser_class: type[OneLineParser] = OneLineParser
) -> SearchConfig:
    parser = search_parser(parser_class)
    parser.set_defaults(**_stored_settings(argv, search_parser(parser_class)))
    args = parser.parse_args(argv)
    return SearchConfig(**{f.name: getattr(args, f.name) for f in fields(SearchConfig)})


def report_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="run_search.py report", description="Rebuild a run's report.html and leaderboard.csv."
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--rank-by",
        choices=("val_accuracy", "penalised"),
        default="val_accuracy",
        help="penalised: val_accuracy - PENALTY * max(gap, 0) (default: %(default)s)",
    )
    parser.add_argument(
        "--penalty",
        type=_non_negative_float,
        default=1.0,
        help="the penalty's weight (default: %(default)s)",
    )
    parser.add_argument(
        "--onset-k",
        type=_positive,
        default=2,
        help="rising val_loss epochs that mark overfitting (default: %(default)s)",
    )
    return parser


def run_report(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    if not (args.run_dir / "run.json").exists():
        raise UsageError(f"{args.run_dir} is not a run directory (no run.json); pass runs/<name>")
    from reports.html import write_report

    print(
        write_report(args.run_dir, rank_by=args.rank_by, penalty=args.penalty, onset_k=args.onset_k)
    )
    return 0


def export_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="run_search.py export",
        description="Export a run's best model (or, with --trial, another kept trial's) for "
        "inference: its random augmentation layers "
        "are left out, every other layer keeps its trained weights (RUNDIR/best_model.keras "
        "stays as trained). MODEL_CARD.md and labels.json (class names and image size, read "
        "by predict) are written beside the model.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="keras")
    parser.add_argument(
        *KERAS_BACKEND_OPTION,
        metavar=KERAS_BACKEND_HELP["metavar"],
        help="the Keras backend that loads and exports the model (default: KERAS_BACKEND, else "
        "the one the run trained on)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="the model file (the folder, for savedmodel); default: RUNDIR/export/"
        "{model.keras,saved_model,model.tflite,model.onnx}",
    )
    parser.add_argument(
        "--trial",
        type=int,
        metavar="N",
        help="export trial N's model instead of the best one's: the best trial or, with "
        "--objectives, a Pareto-front trial, whose models are kept (default: the best trial)",
    )
    parser.add_argument(
        "--quantize",
        choices=("dynamic", "float16", "int8"),  # search.export.QUANTIZE, without Keras
        help="with --format tflite: post-training quantization (dynamic: int8 weights; "
        "float16: float16 weights; int8: int8 kernels throughout, float32 only in and out, "
        "calibrated on up to 100 seeded training images); the card and quantized.json give "
        "its and the float32 model's test accuracy, size and latency on this machine "
        "(default: float32)",
    )
    return parser


def run_export(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    if not (args.run_dir / "run.json").exists():
        raise UsageError(f"{args.run_dir} is not a run directory (no run.json); pass runs/<name>")
    from search.console import start_keras_backend
    from search.keras_backend import choose_backend

    run_backend = json.loads((args.run_dir / "run.json").read_text(encoding="utf-8"))
    # Explicit choices first; else the backend the run trained on, whose model this is.
    choose_backend(
        args.keras_backend or os.environ.get("KERAS_BACKEND") or run_backend.get("keras_backend")
    )
    start_keras_backend()  # before anything imports it: its start-up lines stay off the terminal
    from reports.model_card import write_model_card
    from search.export import export_best

    exported = export_best(
        args.run_dir,
        args.format,
        args.output,
        document=write_model_card,
        trial=args.trial,
        quantize=args.quantize,
    )
    print(exported)
    return 0


def predict_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="run_search.py predict",
        description="Classify image files with a run's best model or any export of it. Class "
        "names and image size come from the labels.json that export writes beside the model, "
        "or from the run's run.json beside it or one folder up.",
    )
    parser.add_argument(
        "target",
        type=Path,
        help="a run directory, a .keras, .tflite or .onnx file, or a SavedModel folder "
        "(saved_model.pb)",
    )
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument(*KERAS_BACKEND_OPTION, **KERAS_BACKEND_HELP)
    return parser


def run_predict(argv: list[str]) -> int:
    args = predict_parser().parse_args(argv)
    # An ONNX file runs in onnxruntime: no Keras backend, so none need be installed.
    if args.keras_backend or args.target.suffix != ".onnx":
        from search.console import start_keras_backend
        from search.keras_backend import choose_backend

        choose_backend(args.keras_backend)
        start_keras_backend()
    from search.predict import describe, predict_target

    for prediction in predict_target(args.target, args.images):
        print(f"{prediction['path']}: {describe(prediction)}")
    return 0


def run(argv: list[str]) -> int:
    if argv and argv[0] == "report":
        return run_report(argv[1:])
    if argv and argv[0] == "export":
        return run_export(argv[1:])
    if argv and argv[0] == "predict":
        return run_predict(argv[1:])
    config = parse_search(argv)
    from reports.html import write_report
    from search.console import quiet
    from search.steps import run_search

    try:
        with quiet(config.quiet):
            store = run_search(config, report=write_report)
    except Restart as restart:
        print(f"{restart}; restarting to give the memory back, then resuming", flush=True)
        sys.stderr.flush()
        # The same command, named, resumes the run; exec keeps the pid a --workers parent waits on.
        os.execv(sys.executable, [sys.executable, str(RUN_SEARCH), *argv, "--name", config.name])
    except SearchStopped as error:
        run_dir = Path(config.runs_dir) / config.run_name()
        print(f"run_search.py: {error}; see {run_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished trials are kept. Resume with: python run_search.py "
            f"--resume --name {config.run_name()} --runs-dir {config.runs_dir}",
            file=sys.stderr,
        )
        return 130
    if config.worker:  # the process that started the workers sums up
        return 0
    import pandas as pd

    best = store.best_trial()
    if best is None:
        infeasible = (store.trials()["status"] == "infeasible").sum()
        within = f" within the limits ({infeasible} over them)" if infeasible else ""
        print(f"no trial completed{within}; see {store.trials_csv}")
        return 1
    test = best["test_accuracy"]
    # A run directory copied without its models (a committed store) has no best model file.
    model = store.best_model_path if store.best_model_path.exists() else "- (no file)"
    print(
        f"best trial {best['trial_id']}: val_acc={best['val_accuracy']:.4f} "
        f"test_acc={'-' if pd.isna(test) else f'{test:.4f}'} model={model} "
        f"report={store.run_dir / 'report.html'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"run_search.py: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        fault = find_write_fault(error)
        if fault is None:
            raise
        advice = "free space or make it writable, then run the same command again"
        print(f"run_search.py: error: {write_fault_message(fault, advice)}", file=sys.stderr)
        return WRITE_FAULT_STATUS
