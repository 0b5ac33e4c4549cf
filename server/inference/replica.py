"""A model replica: one loaded model version running inside a Ray actor.

The actor owns everything that cannot cross processes (the module, the thread
pool, autocast state) and is built lazily inside the worker. The batcher sends
it a batch as a list of numpy arrays, over the replica's direct channel
(`inference.channel`) when it runs on the server's node, else through Ray's
object store (read without a copy), and gets the outputs back with the
replica's `BatchTiming` (the model's time, and its preprocessing's).
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import suppress
from pathlib import Path

import numpy as np
import ray
import torch

from augserve.clients.datatypes import numpy_dtype
from augserve.kernels.resolve import AllowList
from augserve.server.inference.channel import ReplicaChannelServer
from augserve.server.inference.image_inputs import pack_images
from augserve.server.inference.loading import load_module
from augserve.server.inference.model_config import ModelSettings, TensorSpec
from augserve.server.inference.preprocess import ImagePreprocessor
from augserve.server.inference.preprocess_config import PreprocessSettings
from augserve.server.inference.settings import InferenceSettings
from augserve.server.inference.timing import BatchTiming

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
}


def to_tensor(array: np.ndarray, datatype: str) -> torch.Tensor:
    """A tensor over `array` (BF16 arrives as uint16 words and is viewed, not converted)."""
    with warnings.catch_warnings():
        # Arrays from the object store or a protobuf buffer are read-only; models
        # never write to their inputs, so sharing the memory is safe.
        warnings.simplefilter("ignore", UserWarning)
        if datatype == "BF16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)


def to_array(tensor: torch.Tensor, spec: TensorSpec) -> np.ndarray:
    """The output tensor as a numpy array of the configured datatype (BF16 as uint16 words)."""
    tensor = tensor.detach().to("cpu", _TORCH_DTYPES[spec.datatype]).contiguous()
    if spec.datatype == "BF16":
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def warmup_images(preprocess: PreprocessSettings) -> list[np.ndarray]:
    """One generated image (a gradient, 48x40), packed as a request of `preprocess` brings it."""
    import cv2

    ramp = np.linspace(0, 255, 48 * 40 * 3).astype(np.uint8).reshape(48, 40, 3)
    if preprocess.input.datatype == "BYTES":
        encoded = np.empty((1, 1), dtype=object)
        encoded[0, 0] = cv2.imencode(".png", ramp)[1].tobytes()
        return pack_images(encoded, preprocess, {}, InferenceSettings())
    return pack_images(ramp[None], preprocess, {}, InferenceSettings())


def lower_priority(nice: int) -> None:
    """Add `nice` to the niceness of every thread of this process, and so of later ones.

    Linux keeps niceness per thread (a new thread starts from its creator's), so each
    thread under /proc/self/task is set; elsewhere `os.nice` applies to the process.
    """
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        os.nice(nice)
        return
    for task in tasks.iterdir():
        with suppress(ProcessLookupError):  # a thread that has just exited
            tid = int(task.name)
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


class ModelReplica:
    """Runs one model version; create with `ray.remote(ModelReplica).options(...).remote(...)`.

    Args:
        settings: the model's parsed configuration.
        version_dir: the numbered version folder to load.
        allow_pickle: whether a pickled whole module may be loaded.
        imports: the modules an architecture may come from (default: augserve's own).

    """

    def __init__(self, settings: ModelSettings, version_dir: str, allow_pickle: bool,
                 imports: AllowList | None = None) -> None:
        self._channel: ReplicaChannelServer | None = None
        self._load_error: Exception | None = None
        try:
            self._load(settings, version_dir, allow_pickle, imports)
        except Exception as error:  # raised by ready(): Ray keeps no cause of an __init__'s error
            self._load_error = error

    def _load(self, settings: ModelSettings, version_dir: str, allow_pickle: bool,
              imports: AllowList | None) -> None:
        group = settings.instance_group
        lower_priority(group.nice)
        self.threads = group.threads
        torch.set_num_threads(self.threads)
        self.settings = settings
        self.device = torch.device("cuda" if group.kind == "gpu" else "cpu")
        module = load_module(settings, Path(version_dir), allow_pickle, imports).to(self.device)
        self.channels_last = settings.precision == "bf16"
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.preprocessor = (
            ImagePreprocessor(settings.preprocess, settings.outputs, self.device)
            if settings.preprocess is not None else None
        )

    def node(self) -> str:
        """The Ray node id this replica runs on."""
        return ray.get_runtime_context().get_node_id()

    def open_channel(self) -> tuple[str, str]:
        """Start the direct batch channel; returns (this replica's Ray node id, socket path)."""
        if self._channel is None:
            self._channel = ReplicaChannelServer(self.infer)
        return ray.get_runtime_context().get_node_id(), self._channel.path

    def ready(self) -> bool:
        """Run the configured warm-up batches; True once the replica can serve.

        A model with `[preprocess]` is warmed with its own tensor, then its preprocessing
        path runs once on a generated image (every view).

        Raises:
            Exception: what loading the model raised (an AugserveError keeps its status).
        """
        if self._load_error is not None:
            raise self._load_error
        for batch_size in self.settings.warmup_batch_sizes:
            inputs = []
            for spec in self.settings.inputs:
                dims = tuple(d if d > 0 else 1 for d in spec.dims)
                shape = (batch_size, *dims) if self.settings.max_batch_size else dims
                inputs.append(np.zeros(shape, dtype=numpy_dtype(spec.datatype)))
            self._infer_model(inputs)
        if self.preprocessor is not None:
            self.infer(warmup_images(self.settings.preprocess))
        return True

    def infer(self, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], BatchTiming]:
        """Run one batch; return the outputs in config order and the replica's timing.

        With `[preprocess]` the inputs are the packed images (`image_inputs`): they are
        decoded and run through every view here, and the views' outputs merged. Their
        wall and CPU time (`time.process_time_ns`: every thread of this process, so
        OpenCV's own threads count too) are timed apart from the model's.
        """
        if self.preprocessor is None:
            return self._infer_model(inputs)
        start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
        tensor, views = self.preprocessor(*inputs)
        preprocess_cpu_ns = time.process_time_ns() - cpu_start
        model_start = time.perf_counter_ns()
        result = self.preprocessor.merge(self._run([tensor]), views)
        outputs = [to_array(t, s) for t, s in zip(result, self.settings.outputs, strict=True)]
        end = time.perf_counter_ns()
        return outputs, BatchTiming(end - model_start, model_start - start, preprocess_cpu_ns,
                                    len(views))

    def _infer_model(self, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], BatchTiming]:
        """Run the model on its own tensors; the outputs in config order and the timing."""
        start = time.perf_counter_ns()
        tensors = [to_tensor(array, spec.datatype)
                   for array, spec in zip(inputs, self.settings.inputs, strict=True)]
        result = self._run(tensors)
        outputs = [to_array(t, s) for t, s in zip(result, self.settings.outputs, strict=True)]
        return outputs, BatchTiming(time.perf_counter_ns() - start)

    def _run(self, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The module on `tensors` (moved to the device): its outputs, in config order."""
        rows = tensors[0].shape[0] if self.settings.max_batch_size else 1  # unbatched: one
        small = rows <= self.settings.instance_group.single_thread_max_rows
        torch.set_num_threads(1 if small else self.threads)
        moved = []
        for tensor in tensors:
            tensor = tensor.to(self.device, non_blocking=True)
            if self.channels_last and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            moved.append(tensor)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16"
            ),
        ):
            result = self.module(*moved)
        if isinstance(result, torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = tuple(result[spec.name] for spec in self.settings.outputs)
        if len(result) != len(self.settings.outputs):
            raise ValueError(
                f"model {self.settings.name!r} returned {len(result)} outputs, its config "
                f"declares {len(self.settings.outputs)}"
            )
        return tuple(result)
