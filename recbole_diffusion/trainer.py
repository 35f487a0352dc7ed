"""Trainers: RecBole's, with checkpoints that load under ``torch.load(weights_only=True)``.

RecBole's ``Trainer`` pickles its ``Config`` object into every checkpoint, which torch >= 2.6
refuses to load by default (and which could run code if someone sends you a checkpoint). Here a
checkpoint holds only tensors and plain data: the state dicts, counters, and the configuration as
a JSON string. Files are written to a temporary name and renamed, so a crash never leaves a
half-written checkpoint.

``safe_trainer(cls)`` gives any RecBole trainer class these checkpoints; ``Trainer`` is the
plain one used by this plugin's models. A model that needs its own loop gets a
``<Model>Trainer`` here.
"""

import inspect
import json
import os
import random
from time import perf_counter

import numpy as np
import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

from recbole_diffusion.compat import load_checkpoint
from recbole_diffusion.distributed import all_gather_objects, barrier, broadcast_object, is_distributed, rank_and_world
from recbole_diffusion.errors import ConfigError
from recbole_diffusion.files import atomic_path
from recbole_diffusion.evaluation import (
    CrossDomainCollector,
    GroupCollector,
    cross_domain_long_tail,
    cross_domain_results,
    evaluated_rows,
    group_results,
)

CHECKPOINT_FORMAT = "recbole-diffusion/1"
# the settings of one multi-process launch (RecBole's names), never part of a run's configuration
LAUNCH_KEYS = ("local_rank", "world_size", "nproc", "ip", "port", "offset")


def config_to_json(config):
    """The user-given part of a ``Config`` (what rebuilds it) as a JSON string."""
    plain = {}
    for key, value in config.external_config_dict.items():
        if key in LAUNCH_KEYS:
            continue  # a checkpoint of a multi-process run loads in one process (or in several)
        try:
            json.dumps(value)
        except TypeError:
            continue
        plain[key] = value
    plain["model"] = config["model"]
    plain["dataset"] = config["dataset"]
    # the folder the data was read from, absolute, so that the checkpoint loads from any working
    # directory (RecBole's data_path is <data_path>/<dataset> once the config is built)
    plain["data_path"] = os.path.dirname(os.path.abspath(config["data_path"]))
    return json.dumps(plain, sort_keys=True)


def random_state(train_data):
    """Every random stream a training epoch draws from, as plain data: torch's (CPU and CUDA),
    numpy's and Python's global generators, and the train loader's own (RecBole's torch
    generator of the shuffle; the whole-sequence loader's, which plans an epoch ahead)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": json.dumps([np_state[0], np_state[1].tolist(), *np_state[2:]]),
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        state["loader_generator"] = generator.get_state()
    if hasattr(train_data, "random_state"):  # the whole-sequence loader's own stream
        state["loader"] = train_data.random_state()
    return state


def restore_random_state(state, train_data, process_state=None):
    """Put back what :func:`random_state` recorded. The loader's streams plan the epoch of every
    rank alike and come from ``state``; the process's own (torch, numpy, Python) come from
    ``process_state`` when given, else from ``state``; ``process_state=False`` keeps them as they
    are (a rank the checkpoint has no streams for)."""
    if process_state is None:
        process_state = state
    if process_state:
        torch.set_rng_state(process_state["torch"])
        kind, keys, *rest = json.loads(process_state["numpy"])
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = json.loads(process_state["python"])
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in process_state and torch.cuda.is_available():
            # one state per GPU the writing process saw; a process that sees fewer takes the first
            for device, cuda_state in enumerate(process_state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, device)
    if "loader_generator" in state:
        train_data.generator.set_state(state["loader_generator"])
    if "loader" in state:
        train_data.set_random_state(state["loader"])


def atomic_torch_save(obj, path):
    """``torch.save`` through a temporary file in the same folder, then an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


LAST_SUFFIX = "-last"


def last_model_file_of(model_file):
    """The last-epoch checkpoint written beside the best one ``model_file``: ``<root>-last<ext>``."""
    root, extension = os.path.splitext(model_file)
    return f"{root}{LAST_SUFFIX}{extension}"


def named_model_file_of(last_file):
    """The inverse of :func:`last_model_file_of` by name alone (a file that may be unreadable), or
    None for a name it does not make."""
    root, extension = os.path.splitext(last_file)
    return f"{root[: -len(LAST_SUFFIX)]}{extension}" if root.endswith(LAST_SUFFIX) else None


def best_model_file_of(last_file, checkpoint):
    """The best checkpoint of the run whose last-epoch checkpoint ``checkpoint`` was read from
    ``last_file``: the file of that name beside it (both are written to the run's checkpoint folder,
    which may have moved since)."""
    return os.path.join(os.path.dirname(last_file), os.path.basename(checkpoint["best_model_file"]))


class EvalHeadLogger:
    """RecBole's W&B logger with the evaluation results logged under ``head`` (RecBole's evaluate()
    always names them "eval")."""

    def __init__(self, logger, head):
        self._logger, self._head = logger, head

    def log_eval_metrics(self, metrics, head="eval"):
        self._logger.log_eval_metrics(metrics, head=self._head)

    def __getattr__(self, name):
        return getattr(self._logger, name)


class SafeCheckpointMixin:
    """Checkpoint save / resume / best-model loading with plain-data files.

    Also records wall-clock seconds of every training epoch and every evaluation
    (``epoch_seconds``, ``eval_seconds``), which ``benchmarks/run.py`` reports, and adds the
    sparse-user metrics of option ``sparse_users`` (``recbole_diffusion/evaluation.py``) to
    every evaluation result, and on a cross-domain dataset the per-domain, per-group metrics
    (``docs/cross-domain.md``). After a full-sort evaluation, ``last_eval_rows`` holds each
    evaluated user's rank of its target (``recbole_diffusion.evaluation.evaluated_rows``), which
    ``benchmarks/leaderboard.py`` stores for its paired bootstrap.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        # under torch.distributed every rank reads the checkpoint rank 0 writes: one name for all
        self.saved_model_file = broadcast_object(self.saved_model_file)
        # option save_last_checkpoint: the state after every evaluated epoch, beside the best one
        self.save_last_checkpoint = bool(config["save_last_checkpoint"])
        self.last_model_file = last_model_file_of(self.saved_model_file)
        # option eval_test_every_epoch: the test split's metrics after every validation, for reporting
        # what a selection on the test split (some papers' protocol) would give; never for selection
        self.report_test_data, self.test_results_per_epoch = None, []
        self.epoch_seconds, self.eval_seconds = [], []
        self.last_eval_rows = None
        # what a checkpoint records beyond RecBole's (see _checkpoint_state) and what a resume restores
        self._train_data = self._last_valid_result = self._resumed_random_state = None
        self._resumed_rank_states = None
        self._resumed_from_last = False
        self.epochs_before_resume = 0  # epochs the resumed run had trained (0: not resumed)
        self.sparse_users = config.plugin_options["sparse_users"]
        # a cross-domain dataset (docs/cross-domain.md): metrics per target domain and user group too
        self.cross_domain_long_tail = cross_domain_long_tail(config)
        if self.cross_domain_long_tail is not None:
            self.eval_collector = CrossDomainCollector(config)
        else:
            # RecBole's collector plus each row's user and target rank (a topk per batch more)
            self.eval_collector = GroupCollector(config)

    def fit(self, train_data, valid_data=None, *args, **kwargs):
        # a resumed run draws the random numbers the interrupted one would have drawn next
        self._train_data = train_data
        if self.save_last_checkpoint and kwargs.get("saved", True):
            kwargs["callback_fn"] = self._last_checkpoint_callback(kwargs.get("callback_fn"))
        if self._resumed_random_state is not None:
            rank, world = rank_and_world()
            process_state = None
            if world > 1:  # this rank's own streams, when the checkpoint was written by as many ranks
                states = self._resumed_rank_states
                process_state = states[rank] if states is not None and len(states) == world else (None if rank == 0 else False)
            restore_random_state(self._resumed_random_state, train_data, process_state)
            self._resumed_random_state = self._resumed_rank_states = None
        return super().fit(train_data, valid_data, *args, **kwargs)

    def _last_checkpoint_callback(self, callback_fn):
        """``callback_fn`` followed by writing the last-epoch checkpoint: RecBole's trainer calls it
        after every evaluated epoch, once the best score, the patience count and the best
        checkpoint are up to date."""
        if "callback_fn" not in inspect.signature(super().fit).parameters:
            raise ConfigError(f"save_last_checkpoint: {type(self).__name__}'s training loop has no per-epoch hook")

        def callback(epoch_idx, valid_score):
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)
            self._save_checkpoint(epoch_idx, verbose=False, saved_model_file=self.last_model_file, last=True)

        return callback

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._last_valid_result = valid_result
        if self.report_test_data is not None:
            # evaluate() records its seconds and rows as the run's own evaluations: keep them apart
            seconds, rows, logger = list(self.eval_seconds), self.last_eval_rows, self.wandblogger
            # evaluate() logs under W&B's "eval" head, as the valid results: these go under their own
            self.wandblogger = EvalHeadLogger(logger, "test_each_epoch")
            try:
                result = self.evaluate(self.report_test_data, load_best_model=False, show_progress=show_progress)
            finally:
                self.wandblogger = logger
            self.test_results_per_epoch.append({k: float(v) for k, v in result.items()})
            self.eval_seconds, self.last_eval_rows = seconds, rows
        return valid_score, valid_result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(perf_counter() - start)
        return loss

    def _checkpoint_state(self, epoch, last=False):
        # RecBole saves the best checkpoint before it records the new best result: the result of the
        # valid epoch just run; the last-epoch checkpoint is written after it is recorded
        best_result = self.best_valid_result if last else self._last_valid_result
        return {
            "format": CHECKPOINT_FORMAT,
            "config": config_to_json(self.config),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": json.dumps({k: float(v) for k, v in (best_result or {}).items()}),
            **({"best_model_file": self.saved_model_file} if last else {}),
            "test_results_per_epoch": json.dumps(self.test_results_per_epoch),
            "random_state": random_state(self._train_data),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if epoch == -1 and self._resumed_from_last:
            # RecBole saves "the model as it is" when a resume has no epoch left to train; after a
            # last-epoch resume that is the last epoch's weights, not the best ones the file holds
            return
        # every rank calls this at the same point; under torch.distributed rank 0 writes, with the
        # random streams of every rank, so that a resumed run gives each rank its own again
        rank_states = all_gather_objects(random_state(self._train_data)) if is_distributed() else None
        if rank_and_world()[0] != 0:  # the global rank: a second machine's first process writes nothing
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = self._checkpoint_state(epoch, last=kwargs.pop("last", False))
        if rank_states is not None:
            state["rank_random_states"] = rank_states
        atomic_torch_save(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_model_state(self, checkpoint):
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        # read on the CPU: the random-number states must stay CPU byte tensors (torch.set_rng_state,
        # torch.cuda.set_rng_state and Generator.set_state take no other); load_state_dict puts the
        # weights and the optimizer's state on the model's device
        checkpoint = load_checkpoint(resume_file, map_location="cpu")
        self.saved_model_file = resume_file
        if checkpoint.get("best_model_file"):  # a last-epoch checkpoint: new bests go to the run's best file
            self.saved_model_file, self.last_model_file = best_model_file_of(resume_file, checkpoint), resume_file
            self._resumed_from_last = True
        self.start_epoch = self.epochs_before_resume = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint.get("best_valid_result"):
            self.best_valid_result = json.loads(checkpoint["best_valid_result"]) or None
        self._resumed_random_state = checkpoint.get("random_state")
        self.test_results_per_epoch = json.loads(checkpoint.get("test_results_per_epoch") or "[]")
        self._resumed_rank_states = checkpoint.get("rank_random_states")
        saved_model = json.loads(checkpoint["config"])["model"]
        if saved_model.lower() != self.config["model"].lower():
            self.logger.warning(f"checkpoint {resume_file} was trained as {saved_model}, not {self.config['model']}")
        self._load_model_state(checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self._resumed_from_last and self.cur_step > self.stopping_step:
            self.start_epoch = self.epochs  # the run had stopped early: nothing left to train
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _map_reduce(self, result, num_sample):
        # RecBole averages the ranks' metrics here; the collector has gathered every rank's rows
        # already (evaluation.py), so ``result`` is over every user on each rank
        return result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            barrier()  # under torch.distributed: rank 0 has written the checkpoint
            checkpoint_file = model_file or self.saved_model_file
            self._load_model_state(load_checkpoint(checkpoint_file, map_location=self.device))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        start = perf_counter()
        result = super().evaluate(eval_data, load_best_model=False, model_file=model_file, show_progress=show_progress)
        self.eval_seconds.append(perf_counter() - start)
        self.last_eval_rows = evaluated_rows(self.eval_collector, eval_data) if result is not None else None
        if self.sparse_users and result is not None:
            history = getattr(eval_data, "train_history_length", None)
            if history is None:
                raise ValueError("sparse_users: this evaluation dataloader was not built by recbole_diffusion.utils.data_preparation")
            collector = self.eval_collector
            result.update(group_results(self.evaluator, collector.last_struct, collector.last_users, history, self.sparse_users))
        if self.cross_domain_long_tail is not None and result is not None:
            names = eval_data._dataset.domain_display_names
            result.update(cross_domain_results(self.evaluator, self.eval_collector, names, self.cross_domain_long_tail))
        return result


def safe_trainer(trainer_class):
    """``trainer_class`` with plain-data checkpoints (idempotent)."""
    if issubclass(trainer_class, SafeCheckpointMixin):
        return trainer_class
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {"__module__": __name__})


class Trainer(SafeCheckpointMixin, RecBoleTrainer):
    """RecBole's trainer with safe checkpoints; the default for this plugin's models."""


class i2VAETrainer(Trainer):
    """Fits i2VAE's pseudo-sequence generator (a LightGCN on the training interactions) once,
    before the first epoch, unless the model has its items already (a resumed checkpoint)."""

    def fit(self, train_data, *args, **kwargs):
        if not bool(self.model.pseudo_items_fitted):
            self.model.fit_pseudo_sequences()
        return super().fit(train_data, *args, **kwargs)
