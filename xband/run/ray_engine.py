"""Explaining on Ray: the one batch runner's jobs as a Ray dataset, attributed in `map_batches`
by a pool of actors that each hold the network.

The driver plans the jobs exactly as on one machine (`BatchRunner.jobs`: images in batches,
every method's random draws keyed by the seed, the method and the batch), so a job gives the
same scores on any worker and in any order. Workers read the images themselves, by position,
from the data source (GeoTIFF paths, a memory-mapped .npy, an HDF5 dataset, or an in-memory
array placed once in Ray's object store): the batch's images and the donor images that the
data baseline and permutation importance draw from the whole data set, through the same seeded
`Donors` permutation as on one machine. The network travels once, as the bytes of its prepared
torch module; per-image band scores and the example maps come back, and aggregation, bootstrap,
checks and the report run on the driver.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import re
import socket
import sys
import types
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import converters
import xband
from xband.data.images import ImageSet
from xband.errors import XbandError, option
from xband.methods import Method
from xband.models.load import ExportedProgram
from xband.run.engine import ON_RAY, RayEngine, import_ray
from xband.run.runner import BatchRunner, Job, JobResult, MethodRun, Pairs, RunnerSpec, image_feed
from xband.verbosity import verbose

CONNECT_TIMEOUT_S = 15  # how long a Ray cluster at a given address may take to answer
RETRIES = 3  # restarts of a worker, and tries of a job, before the run stops


@contextmanager
def ray_session(engine: RayEngine) -> Iterator[RayEngine]:
    """Ray connected for one run (a cluster at the address, else a local Ray of at most this
    machine's CPUs), yielding the engine with its worker count fitted to what the cluster has;
    a Ray this started is shut down after. A Ray the caller started is used as it is: its
    workers need this xband (`ray.init(runtime_env=worker_environment(...))`)."""
    ray = import_ray()
    started = not ray.is_initialized()
    address = engine.address or os.environ.get("RAY_ADDRESS") or None
    _refuse_ray_client(address if started else None, ray)
    with _ray_logs_kept_out():
        if started:
            _connect(ray, address, engine)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar of its own
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # xband says what failed
        try:
            yield fitted(engine, ray.cluster_resources())
        finally:
            if started:
                ray.shutdown()


def _refuse_ray_client(address: str | None, ray) -> None:
    """Ray Client (a ray:// address, or a connection already made through one) runs no Ray
    Data, which the engine runs on (ray-project/ray#48682): refused, saying what works."""
    if not (address or "").startswith("ray://") and not ray.util.client.ray.is_connected():
        return
    raise XbandError(
        f"Ray Client ({address or 'a ray:// connection'}) cannot run Ray Data, which "
        f"{ON_RAY} runs on. Run xband on the cluster: submit it as a Ray job (ray job submit "
        "--working-dir . -- xband explain … --engine ray), or start it on a cluster node with "
        "the cluster's address (RAY_ADDRESS=auto, or host:6379).")


@contextmanager
def _ray_logs_kept_out() -> Iterator[None]:
    """Ray's Python log warnings (token authentication) kept out of the terminal while a run
    lasts, unless verbose (`xband.verbosity`): they say nothing a user acts on."""
    logger = logging.getLogger("ray")
    level = logger.level
    if not verbose():
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _start(ray, **settings) -> None:
    """`ray.init`, and unless verbose, the log lines of Ray's C++ core below fatal kept out: an
    error line for every actor that Ray may restart (each of the run's actors; the run needs no
    action), through RAY_BACKEND_LOG_LEVEL (unless the user set it), which Ray reads as it
    starts, saying so on standard error then (kept out too while Ray starts)."""
    if verbose():
        ray.init(**settings)
        return
    variable = "RAY_BACKEND_LOG_LEVEL"
    chosen = os.environ.get(variable)
    os.environ[variable] = chosen or "fatal"
    sys.stderr.flush()
    stderr = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        ray.init(**settings)
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        if chosen is None:
            os.environ.pop(variable)


def _connect(ray, address: str | None, engine: RayEngine) -> None:
    """`ray.init` at `address` (None: a new local Ray), after checking that a cluster answers
    there: Ray itself waits minutes where nothing, or no Ray, listens."""
    if address not in (None, "auto"):
        _check_answers(address)
    local = {} if address else {"num_cpus": min(engine.workers or os.cpu_count() or 1,
                                                os.cpu_count() or 1)}
    try:
        _start(ray, address=address, include_dashboard=False, logging_level=logging.ERROR,
               log_to_driver=False, configure_logging=False,
               runtime_env=worker_environment(remote=bool(address)), **local)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise XbandError(f"cannot start or reach {where} ({str(err).strip()[:300]}). "
                         f"{_NO_CLUSTER}") from None


_NO_CLUSTER = ("Start a cluster (`ray start --head`) and give the address it prints with "
               + option("RayEngine(address=...)", "--ray-address") + ", or leave the address "
               "out (and RAY_ADDRESS unset) to run on a local Ray.")


def _check_answers(address: str) -> None:
    """Something answers as a gRPC server (what Ray's head and client servers are) at
    `address` within CONNECT_TIMEOUT_S."""
    import grpc

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        channel = grpc.insecure_channel(address)
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        finally:
            channel.close()
    except (OSError, ValueError, grpc.FutureTimeoutError) as err:
        why = (getattr(err, "strerror", None) or str(err) or
               f"no answer within {CONNECT_TIMEOUT_S} s")
        raise XbandError(f"no Ray cluster answers at {address} ({why}). {_NO_CLUSTER}") from None


def fitted(engine: RayEngine, resources: dict) -> RayEngine:
    """`engine` with as many workers as asked (default: as many as fit), but never more than
    the cluster's CPUs, or its GPUs by `gpus_per_worker`, can run at once; refused when the
    cluster lacks the GPUs one worker asks for (its workers would wait for them forever)."""
    gpus = engine.gpus_per_worker
    if gpus and resources.get("GPU", 0) < gpus:
        raise XbandError(f"{_GPUS} {gpus:g}: the Ray cluster has {resources.get('GPU', 0):g} "
                         "GPUs, so no worker could start. Run on CPUs (leave "
                         f"{_GPUS} out) or on a cluster with GPUs.")
    fit = int(resources["GPU"] // gpus) if gpus else int(resources.get("CPU", 1))
    return dataclasses.replace(engine, workers=max(1, min(engine.workers or fit, fit)))


_GPUS = option("gpus_per_worker", "--gpus-per-worker")


def worker_environment(remote: bool) -> dict:
    """Ray's runtime environment for the actors, so that they run the driver's own xband: on this
    machine its folder on PYTHONPATH; on a cluster the package folders, uploaded (as paths: Ray
    Client, ray:// addresses, pickles the environment, and modules cannot be pickled)."""
    if remote:
        return {"py_modules": [str(Path(package.__file__).resolve().parent)
                               for package in (xband, converters)]}
    root = str(Path(xband.__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


class SharedArray:
    """An in-memory image array placed once in Ray's object store; workers read it in place."""

    def __init__(self, array: np.ndarray):
        ray = import_ray()
        self.ref, self.shape, self._array = ray.put(array), array.shape, None

    def __getitem__(self, indices):
        if self._array is None:
            self._array = import_ray().get(self.ref)
        return self._array[indices]

    def __getstate__(self) -> dict:
        return {"ref": self.ref, "shape": self.shape, "_array": None}


class NpyFile:
    """A memory-mapped .npy file, opened again where it is read."""

    def __init__(self, path: str, shape: tuple[int, ...]):
        self.path, self.shape, self._array = path, shape, None

    def __getitem__(self, indices):
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._array[indices]

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "_array": None}


class Hdf5Images:
    """An HDF5 dataset of images, opened again where it is read."""

    def __init__(self, path: str, key: str, shape: tuple[int, ...]):
        self.path, self.key, self.shape, self._dataset = path, key, shape, None

    def __getitem__(self, indices):
        if self._dataset is None:
            import h5py

            self._dataset = h5py.File(self.path, "r")[self.key]
        return self._dataset[indices]

    def __getstate__(self) -> dict:
        return {"path": self.path, "key": self.key, "shape": self.shape, "_dataset": None}


def portable(data: ImageSet) -> ImageSet:
    """`data` as workers read it: files by path (GeoTIFF lists as they are, a memory-mapped .npy
    and an HDF5 dataset opened again), arrays from the object store; never the pixels inside."""
    images = data.images
    filename = getattr(images, "filename", None)
    if isinstance(images, np.memmap) and filename and _whole_file(filename, images.shape):
        return dataclasses.replace(data, images=NpyFile(str(filename), images.shape))
    if type(images).__module__.startswith("h5py"):
        return dataclasses.replace(data, images=Hdf5Images(images.file.filename, images.name,
                                                           images.shape))
    if isinstance(images, np.ndarray):
        return dataclasses.replace(data, images=SharedArray(images))
    return data


def _whole_file(filename: str, shape: tuple[int, ...]) -> bool:
    """Whether the .npy at `filename` holds exactly an array of `shape` (not a view of it)."""
    try:
        return np.load(filename, mmap_mode="r", allow_pickle=False).shape == shape
    except (OSError, ValueError):
        return False


class _FilePickler(pickle.Pickler):
    """A pickler that writes TorchScript modules and torch.export programs as the bytes of their
    own files (`torch.jit.save`; the .pt2 archive they were loaded from), which plain pickling
    refuses; workers load them back as such files."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.jit.ScriptModule):
            buffer = io.BytesIO()
            torch.jit.save(obj, buffer)
            return _script_from_bytes, (buffer.getvalue(),)
        if isinstance(obj, ExportedProgram) and obj.archive is not None:
            return ExportedProgram.from_archive, (obj.archive, obj.stripped)
        return NotImplemented


def _script_from_bytes(data: bytes) -> torch.jit.ScriptModule:
    """A TorchScript module from the bytes `torch.jit.save` wrote (on a Ray worker)."""
    return torch.jit.load(io.BytesIO(data), map_location="cpu")


def network_bytes(forward: torch.nn.Module) -> bytes:
    """The prepared network (speed-ups and all) as the bytes of a torch file, written once by
    the driver for its own workers; TorchScript and torch.export parts travel as their files."""
    buffer = io.BytesIO()
    try:
        torch.save(forward, buffer, pickle_module=_FILE_PICKLING)
    except Exception as err:  # pickling fails in many ways (lambdas, C handles)
        raise XbandError(f"the network cannot be sent to Ray workers ({type(err).__name__}: "
                         f"{str(err)[:200]}). Save it as ONNX and explain that file, or run on "
                         f"one machine (without {ON_RAY})."
                         ) from None
    return buffer.getvalue()


_FILE_PICKLING = types.ModuleType("pickle")  # the pickle module torch.save is given
_FILE_PICKLING.__dict__.update(vars(pickle), Pickler=_FilePickler)


@dataclass(frozen=True)
class WorkerPlan:
    """What an actor needs to build the run's batch runner: the data as workers read it, the
    runner's settings (on the actor's device) and the network's bytes."""

    data: ImageSet
    spec: RunnerSpec
    network: bytes


class Attributor:
    """A Ray actor: the network loaded once, the run's batch runner over the data; each call
    attributes one job with every method and says how many images it read."""

    def __init__(self, plan_ref, methods: Sequence[Method]):
        plan: WorkerPlan = import_ray().get(plan_ref)
        # the driver wrote these bytes, for this run, from the network it loaded and checked
        forward = torch.load(io.BytesIO(plan.network), map_location=plan.spec.device,
                             weights_only=False)
        feed = image_feed(plan.data, plan.spec.indices, forward, plan.spec.device,
                          plan.spec.masks)
        self.read = 0

        def take(positions: np.ndarray) -> torch.Tensor:
            self.read += len(positions)
            return feed(positions)

        self.runner = plan.spec.build(forward, take)
        self.methods = tuple(methods)

    def __call__(self, batch: dict) -> dict:
        job = Job(key=int(batch["key"][0]), positions=np.asarray(batch["positions"][0]),
                   target=np.asarray(batch["target"][0]), label=np.asarray(batch["label"][0]),
                   rows=None, items=np.asarray(batch["items"][0]),
                   keep=np.asarray(batch["keep"][0], dtype=bool))
        before = self.read
        x = self.runner.take(job.positions)
        done = self.runner.attribute_job(self.methods, job, x)
        out = {"job": batch["job"], "read": np.array([self.read - before])}
        for name, result in done.items():
            out.update(_columns(name, result))
        return out


def _columns(name: str, result: JobResult) -> dict:
    """One method's answer for a job as one-row columns of a Ray Data batch: its scores per
    feature set (every row answered: a Ray run explains every image)."""
    out = {f"{name}/seconds": np.array([result.seconds]),
           **{f"{name}/scores/{feature_set}": values[None]
              for feature_set, values in result.scores.items()}}
    if result.maps is not None:
        items = np.array(sorted(result.maps), dtype=np.int64)
        out[f"{name}/map_items"] = items[None]
        maps = [result.maps[i] for i in items]
        out[f"{name}/maps"] = (np.stack(maps) if maps else np.zeros((0, 1, 1, 1), np.float32))[None]
    return out


def _job_result(name: str, row: dict) -> JobResult:
    """A method's answer for one job, from a row the actors returned."""
    maps = None
    if f"{name}/map_items" in row:
        items, stacked = np.asarray(row[f"{name}/map_items"]), np.asarray(row[f"{name}/maps"])
        maps = {int(i): stacked[k] for k, i in enumerate(items)}
    head = f"{name}/scores/"
    scores = {key[len(head):]: np.asarray(value) for key, value in row.items()
              if key.startswith(head)}
    return JobResult(scores, maps, float(row[f"{name}/seconds"]),
                     dict.fromkeys(scores))


class RayRunner(BatchRunner):
    """The batch runner whose jobs run on Ray actors: same jobs, same seeds, same collection."""

    def __init__(self, local: BatchRunner, plan: WorkerPlan, engine: RayEngine):
        super().__init__(local.ctx, local.take, seed=local.seed, batch_size=local.batch_size,
                         n_classes=local.n_classes, features=local.features)
        self.ray = import_ray()
        self.plan = self.ray.put(plan)  # once: every actor of every run gets it from the store
        self.engine, self.images_read = engine, 0

    def run_many(self, methods: Sequence[Method], positions: np.ndarray, *, known: np.ndarray,
                 targets: np.ndarray | Pairs | None, keep_maps: np.ndarray, first_batch: int = 0,
                 bar: tqdm | None = None) -> dict[str, MethodRun]:
        """`BatchRunner.run_many` with each job attributed by an actor; rows come back in any
        order and are written where their job says."""
        jobs = list(self.jobs(positions, known, targets, first_batch, keep_maps))
        outputs = self.outputs(methods, len(positions), targets)
        finished: set[int] = set()
        try:
            for row in self._attributed(jobs, methods):
                finished.add(int(row["job"]))
                job = jobs[int(row["job"])]
                for method in methods:
                    outputs[method.name].add(job, _job_result(method.name, row))
                self.images_read += int(row["read"])
                if bar is not None and job.done:
                    bar.update(job.done)
        except self.ray.exceptions.RayError as err:
            unfinished = [i for i in range(len(jobs)) if i not in finished]
            raise _xband_error(err, unfinished, jobs) from None
        return self.finish(methods, outputs)

    def _attributed(self, jobs: list[Job], methods: Sequence[Method]) -> Iterator[dict]:
        """The jobs as a Ray dataset (one block each, so that idle actors take the next one),
        attributed by the actor pool, streamed back row by row."""
        rows = [{"job": i, "key": job.key, "positions": job.positions, "target": job.target,
                 "label": job.label, "items": job.items, "keep": job.keep}
                for i, job in enumerate(jobs)]
        dataset = self.ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        gpus = self.engine.gpus_per_worker
        resources = {"num_gpus": gpus, "num_cpus": 0} if gpus else {"num_cpus": 1}
        with warnings.catch_warnings():  # Ray 2.60 warns that these will be named parameters
            warnings.simplefilter("ignore", DeprecationWarning)
            attributed = dataset.map_batches(
                Attributor, fn_constructor_args=(self.plan, tuple(methods)), batch_size=1,
                concurrency=min(self.engine.workers, len(rows)), max_restarts=RETRIES,
                max_task_retries=RETRIES, **resources)
        yield from attributed.iter_rows()


@contextmanager
def distributed(runner: BatchRunner, data: ImageSet, engine: RayEngine,
                spec: RunnerSpec) -> Iterator[RayRunner]:
    """The run's batch runner on Ray for the length of the `with` block: Ray connected, the
    data made readable by workers, the network's bytes and the plan placed in the store."""
    with ray_session(engine) as engine:
        device = "cuda" if engine.gpus_per_worker else "cpu"
        plan = WorkerPlan(portable(data), dataclasses.replace(spec, device=device),
                          network_bytes(runner.ctx.forward))
        yield RayRunner(runner, plan, engine)


def _xband_error(err: Exception, unfinished: list[int], jobs: list[Job]) -> Exception:
    """The XbandError a worker raised (a bad image, say), else what stopped the run: the jobs
    left unfinished, the first named, and Ray's last error."""
    cause = err
    while cause is not None:
        if isinstance(cause, XbandError):
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # without terminal colours
    detail = re.search(r"Worker exit detail: (.*?\.)", text)
    last = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}" + (
        f" ({detail.group(1)})" if detail else "")
    first = (f"job {unfinished[0] + 1} of {len(jobs)} ({len(jobs[unfinished[0]].positions)} "
             "images)" if unfinished else "the last job")
    others = f" and {len(unfinished) - 1} more" if len(unfinished) > 1 else ""
    return XbandError(f"the Ray run stopped: {first}{others} did not finish, although Ray "
                      f"restarted its worker and tried it again {RETRIES} times. Last error: "
                      f"{last[:500]}. Run on one machine (without {ON_RAY}) to see the error "
                      "plainly.")
