"""Compress a ResNet-18 at 224 x 224 on a JPEG folder, through the server's Jobs RPCs, and serve it.

    python examples/compress_resnet18.py [--json result.json] [--threads 2]

1. Builds a JPEG folder of random crops of six photos that scikit-image ships (one class
   per photo, `augserve.server.jobs.resnet18_case.write_crops`) and starts a server (in
   this process) that registers it as the dataset "crops".
2. Over JobService, with the specs of `resnet18_case.case_specs` (the same ones
   `augserve compress report --resnet18` runs in-process): trains a fresh ResNet-18 (zoo
   `resnet18`, 3 x 224 x 224); then prunes 50% of its channels, fine-tunes and int8-quantizes
   it (PT2E static, calibrated on evaluation-preprocessed training crops) behind the jobs'
   default accuracy gate, 1 point on the held-out half of the crops.
3. The server loads both versions; tritonclient calls each at batch 1 and 32, interleaved,
   and the script prints top-1 (fp32, pruned float, pruned int8), the gate, size, MACs and
   median latency, fp32 against pruned int8.

Nothing is downloaded. The ResNet-18 has no pretrained weights, so the task is one it can
learn in a few dozen small steps on CPUs. Figures: docs/jobs.md ("The ResNet-18 case").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from augserve.server.jobs.resnet18_case import FP32, SMALL, CaseSettings, case_specs, summary


def run_job(address: str, spec: dict, stages: dict, phases: dict) -> dict:
    """Submit `spec`; print its stages with the time since submission.

    Records each training stage's last held-out top-1 in `stages` and each stage's
    seconds (from its first event to the next stage's) in `phases`.
    """
    from augserve.clients.jobs import JobClient

    started = time.perf_counter()
    with JobClient(address) as client:
        job = client.submit(spec)
        stage, since = None, started
        for event in client.watch(job):
            if event.stage != stage:
                now = time.perf_counter()
                if stage is not None:
                    phases[f"{spec['output_name']}: {stage}"] = round(now - since, 1)
                stage, since = event.stage, now
                print(f"  {now - started:6.1f}s {spec['output_name']}: {stage} {event.message}",
                      flush=True)
            if event.accuracy >= 0 and "finetune" in event.stage:
                stages[f"{spec['output_name']}: {event.stage}"] = round(event.accuracy, 4)
        result = client.result(job)
    return {"version": result.version, "card": result.card,
            "seconds": round(time.perf_counter() - started, 1)}


def latency_ms(address: str, models: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Median tritonclient latency of each model at batch 1 and 32, over interleaved rounds."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, 3, 224, 224)).astype(np.float32) for b in (1, 32)}
    times: dict[str, dict[str, list[float]]] = {m: {"batch_1": [], "batch_32": []}
                                                for m in models}
    for round_ in range(rounds + 1):
        for model in models:
            for batch, x in inputs.items():
                tensor = triton.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                t0 = time.perf_counter()
                client.infer(model, [tensor])
                if round_:  # round 0 warms up
                    times[model][f"batch_{batch}"].append(1000 * (time.perf_counter() - t0))
    return {m: {b: round(statistics.median(v), 2) for b, v in t.items()}
            for m, t in times.items()}


async def main(args: argparse.Namespace) -> dict:
    """Run the case end to end; returns the report ({"error": ...} if the gate refuses)."""
    import grpc

    from augserve.server.app import start_server
    from augserve.server.config import ServerConfig
    from augserve.server.jobs.resnet18_case import write_crops
    from augserve.server.jobs.settings import JobSettings
    from augserve.server.stream.settings import StreamSettings

    start = time.perf_counter()
    settings = CaseSettings(per_class=args.per_class, epochs=args.epochs,
                            finetune_epochs=args.finetune_epochs,
                            max_accuracy_drop=args.max_accuracy_drop)
    work = Path(tempfile.mkdtemp(prefix="augserve-resnet18-"))
    root, crops = work / "models", work / "crops"
    root.mkdir()
    began = time.perf_counter()
    write_crops(crops, settings.per_class, settings.seed)
    phases: dict[str, float] = {"write crops": round(time.perf_counter() - began, 1)}
    config = ServerConfig(
        port=0, metrics_port=0, model_repository=root, shutdown_grace_s=1.0,
        jobs=JobSettings(torch_threads=args.threads, state_dir=str(work / "journal")),
        stream=StreamSettings(datasets={"crops": {"kind": "folder", "path": str(crops)}}))
    server = await start_server(config)
    address = f"127.0.0.1:{server.port}"
    train, small = case_specs(str(root), "crops", settings)
    stages: dict[str, float] = {}
    try:
        print(f"crops in {crops}; server at {address}", flush=True)
        fp32 = await asyncio.to_thread(run_job, address, train, stages, phases)
        try:
            compressed = await asyncio.to_thread(run_job, address, small, stages, phases)
        except grpc.RpcError as error:  # the gate refused it: FAILED_PRECONDITION, nothing written
            return {"error": f"{error.code().name}: {error.details()}", "finetune_top1": stages,
                    "fp32_top1": fp32["card"]["accuracy"]["after"]}
        began = time.perf_counter()
        for name in (FP32, SMALL):  # what the reload after a job does, awaited here
            await server.repository.load(name)
        phases["server load"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        served = await asyncio.to_thread(latency_ms, address, [FP32, SMALL], args.rounds)
        phases["tritonclient latency"] = round(time.perf_counter() - began, 1)
    finally:
        await server.stop()
    seconds = {"train_fp32": fp32["seconds"], "prune_finetune_int8": compressed["seconds"],
               "phases": phases, "total": round(time.perf_counter() - start, 1)}
    out = summary(fp32["card"], compressed["card"],
                  {"fp32": served[FP32], "pruned_int8": served[SMALL]}, seconds, settings, stages)
    return {**out, "latency": "tritonclient gRPC, median ms"}


if __name__ == "__main__":
    defaults = CaseSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=defaults.per_class,
                        help="JPEG crops per photo (60%% held out)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="fp32 training")
    parser.add_argument("--finetune-epochs", type=int, default=defaults.finetune_epochs,
                        help="after pruning")
    parser.add_argument("--max-accuracy-drop", type=float, default=defaults.max_accuracy_drop,
                        help="the gate (0.01 = 1 point, the jobs' default)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each job")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds per model")
    parser.add_argument("--json", type=Path, help="also write the report here")
    options = parser.parse_args()
    outcome = asyncio.run(main(options))
    text = json.dumps(outcome, indent=2)
    print(text)
    if options.json:
        options.json.write_text(text + "\n")
    raise SystemExit(1 if "error" in outcome else 0)
