"""`augserve compress {train,prune,quantize,distill,report}` and `augserve transfer {run,report}`.

Jobs run as Ray tasks (an embedded Ray, or `--ray-address`) with a progress bar showing the
stage, epoch, loss and held-out accuracy; Ctrl-C cancels the job (nothing is written).
`--local` runs the job in this process instead. The reports always run in this process,
so every model's latency is measured in the same one.

Examples:
    augserve compress train --repository models --name digits_fp32 --epochs 12
    augserve compress prune --repository models --source digits_fp32 --name digits_pruned \
        --sparsity 0.5 --stages 2 --finetune-epochs 4
    augserve compress quantize --repository models --source digits_pruned --name digits_q
    augserve compress train --repository models --name crops_fp32 --zoo resnet20 \
        --dataset-folder crops/ --epochs 4
    augserve compress distill --repository models --source digits_fp32 --name digits_student
    augserve compress report --out report/
    augserve transfer run --repository models --source digits_0_4 \
        --method feature_extraction --name digits_5_9 --dataset digits_5_9_few
    augserve transfer report --json report/transfer_report.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

COMMANDS = ("compress", "transfer")
#: `specs.TRANSFER_METHODS`, spelled out so that building the parser does not import torch
#: (tests/server/jobs/test_cli.py checks that the two agree).
TRANSFER_METHODS = ("feature_extraction", "gap_transfer", "fc_transfer", "full_finetune",
                    "scratch")


def _common(parser: argparse.ArgumentParser, needs_source: bool = True) -> None:
    parser.add_argument("--repository", type=Path, required=True, help="model repository folder")
    parser.add_argument("--name", required=True, help="output model (gets a new version)")
    if needs_source:
        parser.add_argument("--source", help="source model in --repository (newest version)")
        parser.add_argument("--source-version", type=int, default=0, help="source version")
        parser.add_argument("--source-state-dict", type=Path, help="or: a state_dict file")
    parser.add_argument(
        "--architecture", default="augserve.server.jobs.models:digits_net",
        help="factory of a state_dict source or a fresh model (module:function)",
    )
    parser.add_argument("--architecture-kwargs", default="{}", help="JSON kwargs of the factory")
    parser.add_argument("--zoo", default="",
                        help="a zoo model: resnet18 | resnet20 | digits_net | digits_cnn | "
                             "faces_cnn (fresh, or the architecture of --source-state-dict)")
    parser.add_argument("--input-shape", default="",
                        help="the source's input C,H,W (e.g. 3,64,64; default: its config or "
                             "zoo entry)")
    parser.add_argument("--dataset", default="digits",
                        help="digits | digits_0_4 | digits_5_9_few | photos | lfw_subset")
    parser.add_argument("--dataset-folder", type=Path,
                        help="or: an image folder (root/<class>/<image>), decoded here")
    parser.add_argument("--validation-folder", type=Path,
                        help="a separate validation folder (default: split the dataset)")
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="share of each class held out for validation")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01,
                        help="the gate of prune / quantize / distill (0.01 = 1 point)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    parser.add_argument("--local", action="store_true", help="run in this process, not Ray")
    parser.add_argument("--ray-address", help="existing Ray cluster (default: embedded)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the job")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray Train workers (DDP) for the training loops, 1 CPU each")
    parser.add_argument("--json", type=Path, help="write the result (version, card) here")


def add_commands(commands: Any) -> None:
    """Add `compress` and `transfer` with their sub-commands to the top-level parser."""
    compress = commands.add_parser("compress", help="prune, quantize, distill; the report")
    sub = compress.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="train a fresh fp32 model (a baseline)")
    _common(train, needs_source=False)
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--lr", type=float, default=3e-3)
    prune = sub.add_parser("prune", help="channel or magnitude pruning with fine-tuning")
    _common(prune)
    prune.add_argument("--method", choices=("channel", "global", "layer"), default="channel")
    prune.add_argument("--sparsity", type=float, default=0.5)
    prune.add_argument("--target-flops", type=float, default=0.0, help="MAC fraction to keep")
    prune.add_argument("--stages", type=int, default=2)
    prune.add_argument("--finetune-epochs", type=int, default=4)
    prune.add_argument("--then-quantize", action="store_true", help="prune -> int8")
    prune.add_argument("--then-distill", action="store_true", help="prune -> distill")
    quantize = sub.add_parser("quantize", help="post-training int8 with calibration")
    _common(quantize)
    quantize.add_argument("--method", choices=("static", "dynamic"), default="static")
    quantize.add_argument("--calibration-batches", type=int, default=4)
    quantize.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune -> quantize")
    distill = sub.add_parser("distill", help="train a smaller student from the source")
    _common(distill)
    distill.add_argument("--student-width", type=int, default=12)
    distill.add_argument("--temperature", type=float, default=4.0)
    distill.add_argument("--alpha", type=float, default=0.7)
    distill.add_argument("--epochs", type=int, default=20)
    distill.add_argument("--no-augment", action="store_true")
    report = sub.add_parser("report", help="the five-model report (table, JSON, PNG)")
    _report_args(report)
    report.add_argument("--resnet18", action="store_true",
                        help="add the ResNet-18 rows: a fresh ResNet-18 at 224 trained on photo "
                             "crops, pruned 50%% + int8 behind the 1-point gate (minutes; give "
                             "--threads 2 or more)")

    transfer = commands.add_parser("transfer", help="build a model for a new task")
    tsub = transfer.add_subparsers(dest="action", required=True)
    run = tsub.add_parser("run", help="one transfer method (or scratch)")
    _common(run)
    run.add_argument("--method", choices=TRANSFER_METHODS, default="feature_extraction")
    run.add_argument("--epochs", type=int, default=300)
    run.add_argument("--lr", type=float, default=3e-2, help="head learning rate")
    run.add_argument("--backbone-lr-scale", type=float, default=0.1)
    run.add_argument("--augment", action="store_true", help="augmented training batches")
    study = tsub.add_parser("report", help="the learning curve: five methods, two pairs")
    study.add_argument("--json", type=Path, required=True, help="write the curves here")
    study.add_argument("--out", type=Path, help="folder of the PNG (default: the JSON's)")
    study.add_argument("--ks", default="1,2,5,10,20", help="labelled images per class")
    study.add_argument("--seeds", type=int, default=5, help="runs per method and k")
    study.add_argument("--steps", type=int, default=100, help="Adam steps per run")
    study.add_argument("--source-epochs", type=int, default=15, help="epochs of each source")
    study.add_argument("--threads", type=int, default=1, help="torch threads")


def _report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON and PNG")
    parser.add_argument("--repository", type=Path, help="write the models here (default: temp)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def build_spec(args: argparse.Namespace) -> Any:
    """The JobSpec a `compress` / `transfer run` command line describes."""
    from augserve.server.jobs import specs

    source = specs.ModelRef(
        repository=str(args.repository) if getattr(args, "source", None) else "",
        name=getattr(args, "source", None) or "",
        version=getattr(args, "source_version", 0),
        state_dict=str(args.source_state_dict) if getattr(args, "source_state_dict", None) else "",
        architecture=args.architecture,
        architecture_kwargs=json.loads(args.architecture_kwargs),
        zoo=args.zoo,
        input_shape=tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else (),
    )
    action = args.action
    steps: list[Any] = []
    if action == "train":
        steps = [specs.Finetune(args.epochs, args.lr)]
    elif action == "prune":
        steps = [specs.Prune(args.method, args.sparsity, args.target_flops, args.stages,
                             args.finetune_epochs)]
        steps += [specs.Distill(student_width=0)] if args.then_distill else []
        steps += [specs.Quantize()] if args.then_quantize else []
    elif action == "quantize":
        steps = [specs.Finetune(args.finetune_epochs)] if args.finetune_epochs else []
        steps.append(specs.Quantize(args.method, args.calibration_batches))
    elif action == "distill":
        steps = [specs.Distill(args.student_width, args.temperature, args.alpha, args.epochs,
                               augment=not args.no_augment)]
    elif action == "run":
        steps = [specs.Transfer(args.method, args.epochs, args.lr, args.backbone_lr_scale,
                                args.augment)]
    dataset: Any = args.dataset
    if args.dataset_folder:
        dataset = {"kind": "folder", "path": str(args.dataset_folder)}
    validation = ({"kind": "folder", "path": str(args.validation_folder)}
                  if args.validation_folder else "")
    return specs.JobSpec(source, tuple(steps), dataset, str(args.repository), args.name,
                         args.seed, not args.no_latency, validation_dataset=validation,
                         validation_fraction=args.validation_fraction,
                         max_accuracy_drop=args.max_accuracy_drop,
                         workers=args.workers)


class ProgressBar:
    """A rich progress bar per stage: batches done, with epoch, loss and accuracy."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), transient=False,
        )
        self.task: Any = None
        self.stage = ""
        self.progress.start()

    def __call__(self, event: Any) -> bool:
        """Show one event (a ProgressEvent or its dict); returns False (never cancels)."""
        e = event if isinstance(event, dict) else event.as_dict()
        if e.get("message") == "poll":
            return False
        if e["stage"] != self.stage or self.task is None:
            self.stage = e["stage"]
            total = max(e["epochs"] * e["steps"], 1) if e["steps"] else None
            self.task = self.progress.add_task(self.stage, total=total, info="")
        info = [f"epoch {e['epoch']}/{e['epochs']}"] if e["epochs"] else []
        if e["steps"]:
            info.append(f"loss {e['loss']:.4f}")
        if e["accuracy"] >= 0:
            info.append(f"acc {100 * e['accuracy']:.2f}%")
        if e["message"] and not e["steps"]:
            info.append(e["message"][:60])
        done = (e["epoch"] - 1) * e["steps"] + e["step"] if e["steps"] else None
        self.progress.update(self.task, completed=done, info="  ".join(info))
        return False

    def close(self) -> None:
        """Stop drawing."""
        self.progress.stop()


def _run_job(args: argparse.Namespace) -> dict[str, Any]:
    from augserve.server.jobs.progress import FINAL

    spec = build_spec(args)
    bar = ProgressBar()
    try:
        if args.local:
            import torch

            from augserve.server.errors import InvalidArgument

            if spec.workers > 1:
                raise InvalidArgument("--workers > 1 runs on Ray Train: drop --local")

            from augserve.server.jobs.execute import check_spec, execute
            from augserve.server.jobs.progress import Context

            torch.set_num_threads(args.threads)
            check_spec(spec)
            return execute(spec, Context(spec.seed, bar)).as_dict()
        import ray

        from augserve.server.jobs.runner import JobManager
        from augserve.server.jobs.settings import JobSettings

        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        manager = JobManager(JobSettings(torch_threads=args.threads))
        job_id = manager.submit(spec)
        seq = -1
        try:
            while True:
                events = manager.events_sync(job_id, seq, 1.0)
                for event in events:
                    bar(event)
                    seq = event["seq"]
                if events and events[-1]["state"] in FINAL:
                    break
        except KeyboardInterrupt:
            manager.cancel_sync(job_id)
            print("\ncancelling: the job stops at its next check and writes nothing")
        return manager.result_sync(job_id)
    finally:
        bar.close()


def _run_study(args: argparse.Namespace) -> None:
    import torch

    from augserve.server.jobs import transfer_study as study

    torch.set_num_threads(args.threads)
    settings = study.StudySettings(
        ks=tuple(int(k) for k in args.ks.split(",")), seeds=args.seeds, steps=args.steps,
        source_epochs=args.source_epochs)
    result = study.transfer_study(settings, log=print)
    png = (args.out or args.json.parent) / "transfer_report.png"
    study.write_study(result, args.json, png)
    print(study.study_table(result))
    print(f"wrote {args.json} and {png}")


def _run_report(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from augserve.server.jobs import report

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar()
    with tempfile.TemporaryDirectory(prefix="augserve-report-") as tmp:
        repository = args.repository or Path(tmp)
        repository.mkdir(parents=True, exist_ok=True)
        try:
            result = report.compression_report(repository, report=bar,
                                               resnet18=args.resnet18)
            table = report.compression_table(result)
            png = args.out / "compression_report.png"
            report.write_outputs(result, args.out / "compression_report.json", png)
        finally:
            bar.close()
    print(table)
    return result


def main(args: argparse.Namespace) -> int:
    """Run a `compress` or `transfer` command; returns the exit status."""
    from augserve.server.errors import AugserveError

    try:
        if args.action == "report" and args.command == "transfer":
            _run_study(args)
            return 0
        if args.action == "report":
            _run_report(args)
            return 0
        result = _run_job(args)
    except (AugserveError, ValueError) as error:
        print(f"augserve {args.command} {args.action}: {type(error).__name__}: {error}")
        return 2
    card = result["card"]
    print(f"wrote {args.name} version {result['version']}: {card['method']}, top-1 "
          f"{100 * card['accuracy']['before']:.2f}% -> {100 * card['accuracy']['after']:.2f}%, "
          f"params {card['params']['before']:,} -> {card['params']['after']:,}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
