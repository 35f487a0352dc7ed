"""Every workaround that recbole 1.2.1 needs on today's Python stack, in one place.

recbole 1.2.1 (the last release) was written against numpy 1, pandas 1/2, scipy < 1.12 and
torch < 2.6. ``pyproject.toml`` pins what cannot be patched safely (numpy < 2, pandas < 3,
setuptools < 82, hyperopt == 0.2.5); this module patches the rest, once, at import of
``recbole_diffusion``. Nothing here edits RecBole's files, and nothing here switches
``torch.load``'s ``weights_only`` off: checkpoints are loaded through :func:`load_checkpoint`,
which always passes ``weights_only=True``.

Workarounds, each with the upstream break it answers:

- numpy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_`` and ``np.bool8``;
  ``recbole.config.Config.compatibility_settings`` reads the first three. Aliases are added
  only when missing (a no-op under the pinned numpy 1.26).
- scipy >= 1.12 removed ``dok_matrix._update``, which RecBole's graph models (LightGCN, NGCF,
  used by i2VAE's pseudo-sequence generator) call to fill their adjacency matrix.
- torch >= 2.6 loads with ``weights_only=True`` by default, which refuses RecBole's pickled
  ``Config`` inside checkpoints. Our trainer writes plain-data checkpoints instead (see
  ``recbole_diffusion.trainer``); :func:`load_checkpoint` is the one loader.
- ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
  at import, and importing any RecBole sequential model imports it: every backward pass of every
  model then checks every gradient for NaN (measured: a quarter of a SASRec training step on
  amazon-beauty). The module is imported here once and the anomaly mode put back as it was.
- Known, harmless warnings that RecBole triggers on every run on this stack (the deprecated
  ``torch.cuda.amp.GradScaler``, pandas' chained-assignment notice, ``pkg_resources``) are
  silenced so that real warnings stay visible.
- Versions that are known to break silently are refused at import with an actionable message
  (pandas 3 stops filling missing values; hyperopt >= 0.2.7 breaks the exhaustive search).
- RecBole's multi-process route is GPU-only: ``Config._init_device`` always joins the process
  group with NCCL and pins ``cuda:<local_rank>``, and ``AbstractTrainer`` wraps the model in
  ``DistributedDataParallel(model, device_ids=[local_rank])``, which torch refuses for a CPU
  module (and converts BatchNorm layers to ``SyncBatchNorm``, which runs on CUDA only). A
  process that has no GPU to use (``gpu_id`` empty or CUDA unavailable) joins with gloo on the
  CPU instead, and its model is wrapped without ``device_ids`` or ``SyncBatchNorm``; with a GPU,
  RecBole's own code runs unchanged (:func:`_patch_distributed`). Ranks other than 0 open no
  TensorBoard event file (RecBole's trainer opens one in every process).
"""

import warnings

import numpy as np

_NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
}


class IncompatibleEnvironment(ImportError):
    """A package version that recbole 1.2.1 is known to mis-handle silently."""


def _major_minor_patch(version):
    parts = []
    for token in version.split(".")[:3]:
        digits = "".join(ch for ch in token if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def check_versions():
    """Refuse the package versions that make recbole 1.2.1 wrong without an error."""
    import pandas

    if _major_minor_patch(pandas.__version__) >= (3, 0, 0):
        raise IncompatibleEnvironment(
            f"pandas {pandas.__version__} is installed, but recbole 1.2.1 relies on in-place "
            "fillna, which pandas 3 silently ignores (missing feature values would stay NaN). "
            "Install the pinned stack with `pip install -e .` (pandas<3)."
        )


def check_hyperopt():
    """hyperopt >= 0.2.7 changed the internals that RecBole's exhaustive search uses."""
    import hyperopt

    version = getattr(hyperopt, "__version__", "0")
    if _major_minor_patch(version) >= (0, 2, 7):
        raise IncompatibleEnvironment(
            f"hyperopt {version} is installed, but RecBole's HyperTuning exhaustive search only "
            "works with hyperopt 0.2.5. Install it with `pip install hyperopt==0.2.5 "
            "'setuptools<82'`."
        )


def _patch_numpy():
    for name, target in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, target)


def _patch_scipy():
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        return

    def _update(self, data):
        # RecBole fills a whole adjacency matrix in one call; item assignment per key is slow
        # but correct, and only the graph models' one-off set-up uses it.
        for key, value in data.items():
            self[key] = value

    sp.dok_matrix._update = _update


def _undo_sine_anomaly_mode():
    import sys

    import torch

    if "recbole.model.sequential_recommender.sine" in sys.modules:
        # imported before us: the mode we find is SINE's, not the user's
        torch.autograd.set_detect_anomaly(False)
        return
    was_enabled = torch.is_anomaly_enabled()
    import recbole.model.sequential_recommender.sine  # noqa: F401  (switches anomaly mode on)

    torch.autograd.set_detect_anomaly(was_enabled)


# warnings of RecBole 1.2.1 and its dependencies on today's stack that say nothing a user can act on:
# (category, message pattern, why it is harmless); silenced here for users and, by tests/conftest.py,
# for the test suite
KNOWN_WARNINGS = (
    (FutureWarning, r"(?s).*torch\.cuda\.amp\.GradScaler.*", "RecBole's trainer builds its scaler with the old name"),
    (FutureWarning, r"(?s).*inplace method will never work.*", "pandas chained assignment inside RecBole's dataset code"),
    (Warning, r"(?s).*Series\.__getitem__ treating keys as positions.*", "pandas 2 deprecation inside RecBole's dataset code"),
    (Warning, r"(?s).*pkg_resources is deprecated.*", "hyperopt and ray import pkg_resources"),
    (Warning, r"(?s).*Detected pickle protocol 4 in the checkpoint.*", "torch reading RecBole's own format note"),
    (FutureWarning, r"(?s).*in Series\.agg cannot aggregate.*", "pandas deprecation inside RecBole's feature-file code"),
    (UserWarning, r"(?s).*Sparse CSR tensor support is in beta state.*", "torch's notice on first use of CSR (i2VAE, LightGCN)"),
    (UserWarning, r"(?s).*Sparse invariant checks are implicitly disabled.*", "torch's notice; the indices are built valid"),
)


def _quiet_known_warnings():
    for category, message, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def uses_cuda(config_dict):
    """Whether RecBole puts a run with these (final) settings on a GPU: ``gpu_id`` non-empty and
    CUDA available, RecBole's own test."""
    import torch

    gpu_id = config_dict.get("gpu_id")
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id if gpu_id is not None else "")
    return len(gpu_id) > 0 and torch.cuda.is_available()


def _init_cpu_process_group(config):
    """RecBole's ``_init_device`` for a rank without a GPU: gloo on the CPU, the rest as RecBole
    sets it (rank = local_rank + offset, a TCP rendezvous at ip:port, quiet ranks other than 0)."""
    import torch
    import torch.distributed as dist

    values = config.final_config_dict
    gpu_id = values["gpu_id"]
    values["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    dist.init_process_group(
        backend="gloo",
        rank=values["local_rank"] + values["offset"],
        world_size=values["world_size"],
        init_method=f"tcp://{values['ip']}:{values['port']}",
    )
    values["device"] = torch.device("cpu")
    values["single_spec"] = False
    if values["local_rank"] != 0:
        values["state"] = "error"
        values["show_progress"] = False
        values["verbose"] = False


def _patch_distributed():
    from recbole.config import configurator
    from recbole.trainer import trainer as recbole_trainer

    original_init_device = configurator.Config._init_device
    if getattr(original_init_device, "_recbole_diffusion_patch", False):
        return

    def _init_device(self):
        if "local_rank" in self.final_config_dict and not uses_cuda(self.final_config_dict):
            _init_cpu_process_group(self)
        else:
            original_init_device(self)

    _init_device._recbole_diffusion_patch = True
    configurator.Config._init_device = _init_device

    original_trainer_init = recbole_trainer.AbstractTrainer.__init__

    def trainer_init(self, config, model):
        if config["single_spec"] or any(p.device.type != "cpu" for p in model.parameters()):
            return original_trainer_init(self, config, model)
        # RecBole's four lines for a model on the CPU: no device_ids (they name GPUs), and no
        # SyncBatchNorm (CUDA only; each rank keeps plain BatchNorm statistics, and DDP hands
        # rank 0's buffers to every rank at each step)
        self.config = config
        self.model = model
        self.distributed_model = recbole_trainer.DistributedDataParallel(model)

    recbole_trainer.AbstractTrainer.__init__ = trainer_init

    # RecBole's Trainer opens a TensorBoard event file in every process; only rank 0 writes files
    original_get_tensorboard = recbole_trainer.get_tensorboard

    def get_tensorboard(logger):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return _NoWriter()
        return original_get_tensorboard(logger)

    recbole_trainer.get_tensorboard = get_tensorboard


class _NoWriter:
    """A TensorBoard ``SummaryWriter`` that writes nothing (ranks other than 0)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def load_checkpoint(path, map_location="cpu"):
    """Load one of this project's checkpoints without ever executing pickled code.

    Our checkpoints hold only state dicts and plain data (see ``trainer.SafeCheckpointMixin``),
    so ``weights_only=True`` always suffices. A file written by RecBole's own trainer (with a
    pickled ``Config`` inside) is refused with a message instead of being unpickled.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, (EOFError, OSError)) or "central directory" in detail or "zip archive" in detail:
            raise ValueError(f"{path} is truncated or not a torch checkpoint file ({detail})") from None
        raise ValueError(
            f"{path} is not a recbole-diffusion checkpoint that loads with weights_only=True "
            f"(it may have been written by RecBole's own Trainer, which pickles objects; "
            f"such files can run code and are not loaded). Detail: {detail}"
        ) from None


PLUGIN_CHECKPOINT_FORMAT = "recbole-diffusion/"


def _guard_recbole_loader(module):
    """Make ``recbole.quick_start``'s ``load_data_and_model`` refuse this plugin's checkpoints with
    a message naming ours: RecBole's reads them as its own and dies on the JSON config with a bare
    ``TypeError``. RecBole's own checkpoints go to RecBole's loader as before."""
    import torch

    inner = getattr(module, "quick_start", None)
    original = getattr(module, "load_data_and_model", None)
    if original is None or getattr(original, "_recbole_diffusion_guard", False):
        return

    def load_data_and_model(model_file, *args, **kwargs):
        try:
            checkpoint = torch.load(model_file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 -- not ours (e.g. RecBole's pickled checkpoint): RecBole decides
            checkpoint = None
        if isinstance(checkpoint, dict) and str(checkpoint.get("format", "")).startswith(PLUGIN_CHECKPOINT_FORMAT):
            raise ValueError(
                f"{model_file} is a recbole-diffusion checkpoint: open it with "
                "recbole_diffusion.quick_start.load_data_and_model, not RecBole's"
            )
        return original(model_file, *args, **kwargs)

    load_data_and_model._recbole_diffusion_guard = True
    module.load_data_and_model = load_data_and_model
    if inner is not None and hasattr(inner, "load_data_and_model"):
        inner.load_data_and_model = load_data_and_model


class _RecBoleQuickStartHook:
    """Applies :func:`_guard_recbole_loader` when ``recbole.quick_start`` is imported after us."""

    name = "recbole.quick_start"

    def find_spec(self, fullname, path, target=None):
        import importlib.util
        import sys

        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_guard(module):
            exec_module(module)
            _guard_recbole_loader(module)

        spec.loader.exec_module = exec_then_guard
        return spec


def _install_recbole_loader_guard():
    import sys

    if "recbole.quick_start" in sys.modules:
        _guard_recbole_loader(sys.modules["recbole.quick_start"])
    elif not any(isinstance(finder, _RecBoleQuickStartHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RecBoleQuickStartHook())


def apply():
    """Apply every workaround; idempotent."""
    check_versions()
    _patch_numpy()
    _patch_scipy()
    _quiet_known_warnings()
    _undo_sine_anomaly_mode()
    _install_recbole_loader_guard()
    _patch_distributed()
