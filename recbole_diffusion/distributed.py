"""RecBole's multi-process training (``--nproc``, ``--world_size``, ``--ip``, ``--port``,
``--group_offset``), for this plugin's models and RecBole's built-ins, on GPUs (NCCL) and on CPUs
(gloo).

The route is RecBole's: :func:`spawn_ranks` starts ``nproc`` processes with
``torch.multiprocessing.spawn``, each builds its ``Config`` with ``local_rank`` set (which joins
the process group, ``compat._patch_distributed``), trains its share of every batch under
``DistributedDataParallel`` and evaluates its share of the users; rank 0 writes the log and the
checkpoint and hands its result back. What this module adds to RecBole's route:

- the launch is checked before any process starts (process counts, a free port), and an error in
  any rank ends every rank and is raised in the caller with the rank's message;
- evaluation gathers every rank's rows (``evaluation.GroupCollector``), so the metrics are those
  of one process scoring every user, not RecBole's average of per-rank averages;
- each rank reports its share and, after training, a digest of its model state, which rank 0
  logs: a rank whose state differs is a bug, and the log says so.
"""

import hashlib
import os
import socket
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_diffusion.compat import uses_cuda
from recbole_diffusion.errors import ConfigError, RecBoleDiffusionError

# what RecBole's run_recbole.py takes as defaults
DEFAULT_IP = "localhost"
DEFAULT_PORT = 5678
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "")


def is_distributed():
    """Whether this process is one rank of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world():
    """``(rank, world_size)``; ``(0, 1)`` in a single process."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def all_gather_objects(value):
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` in one process."""
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value):
    """Rank 0's ``value`` on every rank."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier():
    if is_distributed():
        dist.barrier()


def state_digest(model):
    """A short hash of every parameter and buffer of ``model`` (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        tensor = tensor.detach().cpu().contiguous()
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- the launch
def launch_settings(nproc, world_size, ip, port, group_offset):
    """The launch options, checked; ``world_size`` -1 means ``nproc`` (RecBole's default).
    Returns ``(nproc, world_size, ip, port, group_offset)``."""
    def integer(name, value, minimum):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"--{name}: must be an integer >= {minimum}; got {value!r}")
        return value

    nproc = integer("nproc", nproc, 1)
    if world_size == -1:
        world_size = nproc
    world_size = integer("world_size", world_size, 1)
    group_offset = integer("group_offset", group_offset, 0)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigError(f"--port: must be a TCP port number (1-65535); got {port!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: must be a TCP port number (1-65535); got {port}")
    if group_offset + nproc > world_size:
        raise ConfigError(
            f"--world_size={world_size} is the number of processes on all machines together; this machine's "
            f"ranks {group_offset}..{group_offset + nproc - 1} (--group_offset={group_offset}, --nproc={nproc}) do not fit in it"
        )
    return nproc, world_size, str(ip), port, group_offset


def check_process_count(nproc, config):
    """More processes than this machine can run one each: GPUs on the GPU route, CPU cores on the
    CPU route (two processes sharing a core only slow each other down)."""
    if uses_cuda(config.final_config_dict):
        gpus = [g for g in str(config["gpu_id"]).split(",") if g.strip()]
        available = min(len(gpus), torch.cuda.device_count())
        if nproc > available:
            raise ConfigError(
                f"--nproc={nproc}: the GPU route runs one process per GPU and gpu_id={config['gpu_id']!r} gives "
                f"{available} usable GPU(s); list more with --gpu_id=0,1 or lower --nproc"
            )
        return
    cores = os.cpu_count() or 1
    if nproc > cores:
        raise ConfigError(
            f"--nproc={nproc}: this machine has {cores} CPU core(s), and the CPU route runs one process per core; "
            f"use --nproc={cores} or fewer"
        )


def check_port_free(ip, port, group_offset):
    """Rank 0 listens on ip:port for the others: on this machine that port must be free."""
    if group_offset != 0 or ip not in LOCAL_HOSTS and ip != socket.gethostname():
        return  # rank 0 listens elsewhere
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as torch's store: a port some connection has just left (TIME_WAIT) is free to listen on
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1" if ip in LOCAL_HOSTS else ip, port))
        except OSError as exc:
            raise ConfigError(
                f"--port={port}: {ip}:{port} is already in use ({exc.strerror or exc}); another run may hold it. "
                "Pick a free port with --port=N"
            ) from None


def spawn_ranks(worker, nproc, payload):
    """Run ``worker(rank, payload, queue)`` in ``nproc`` fresh processes and return what rank 0
    put in the queue. If any rank fails, every rank is stopped (``torch.multiprocessing``
    terminates the others) and the error is raised here: with its own type and message for this
    plugin's errors, as a ``RuntimeError`` naming the rank otherwise."""
    queue = mp.get_context("spawn").SimpleQueue()
    reports = []
    context = mp.start_processes(worker, args=(payload, queue), nprocs=nproc, join=False, start_method="spawn")
    try:
        # the queue is read while the processes run: a large result would otherwise block its writer
        while not context.join(timeout=0.5):
            reports += _drain(queue)
    except Exception as exc:  # noqa: BLE001 -- re-raised below with the rank's own message
        reports += _drain(queue)
        raise _rank_error(exc, [r for r in reports if "error" in r]) from None
    reports += _drain(queue)
    results = [r["result"] for r in reports if "result" in r]
    return results[0] if results else None


def _rank_error(exc, errors):
    """The error to raise for a failed launch: a plugin error first (it names its cause), then the
    report of the rank whose failure ended the launch, then the lowest rank's; a process that died
    without a report (killed, out of memory) is named with its exit."""
    if not errors:
        return RuntimeError(f"a training process ended abnormally: {str(exc).strip().splitlines()[0]}")
    plugin_types = {cls.__name__: cls for cls in _plugin_error_types()}
    failed = getattr(exc, "error_index", None)
    first = min(errors, key=lambda r: (r["error"] not in plugin_types, r["rank"] != failed, r["rank"]))
    message = f"rank {first['rank']}: {first['message']}"
    if first["error"] in plugin_types:
        return plugin_types[first["error"]](message)
    if first["error"] == "FileNotFoundError":
        return FileNotFoundError(message)
    return RuntimeError(f"{first['error']} in {message}\n{first['traceback']}")


def _drain(queue):
    items = []
    while not queue.empty():
        items.append(queue.get())
    return items


def _plugin_error_types():
    found, todo = [], [RecBoleDiffusionError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def report_error(queue, rank, exc):
    """What a failing rank sends to the caller before its process ends."""
    queue.put({
        "rank": rank,
        "error": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]),
    })


def end_process_group():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
