"""Entry points: ``run`` (train and test one model), ``objective_function`` (what RecBole's
``HyperTuning`` calls) and ``load_data_and_model`` (restore a trained model for inference).

They mirror ``recbole.quick_start`` without importing it (it imports ray, which breaks on
today's numpy), and go through this plugin's name resolution and safe checkpoints.
"""

import json
import logging
import os
import sys
from logging import getLogger

import torch

from recbole.utils import init_logger, init_seed, set_color

from recbole_diffusion import distributed
from recbole_diffusion.compat import check_hyperopt, load_checkpoint
from recbole_diffusion.config import Config, stored_options
from recbole_diffusion.data.atomic import resolve_dataset
from recbole_diffusion.errors import ConfigError
from recbole_diffusion.trainer import LAUNCH_KEYS, best_model_file_of
from recbole_diffusion.utils import create_dataset, data_preparation, get_model, get_sequence_model, get_trainer


def build_model(config, train_data):
    """Instantiate the configured model on ``train_data``'s dataset, seeded as RecBole does."""
    init_seed(config["seed"] + distributed.rank_and_world()[0], config["reproducibility"])  # RecBole: + local_rank
    model_class = get_sequence_model(config, get_model(config["model"]))
    return model_class(config, train_data._dataset).to(config["device"])


def restore_model(config, train_data, checkpoint):
    """The configured model with the weights of ``checkpoint`` (a dict read by
    ``compat.load_checkpoint``), in eval mode."""
    model = build_model(config, train_data)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return model


def run(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, verbose=True, return_trainer=False,
    resume_file=None, nproc=1, world_size=-1, ip=distributed.DEFAULT_IP, port=distributed.DEFAULT_PORT, group_offset=0,
):
    """Train ``model`` on ``dataset`` with early stopping on the valid split, then test.

    ``resume_file``: a checkpoint of an interrupted run with the same settings (``epochs`` may be
    larger); training goes on after its epoch, with its weights, optimizer, early-stopping counters
    and random streams, so it ends where the uninterrupted run would have.

    ``nproc`` > 1 (or ``world_size`` >= 1) trains in ``nproc`` processes on this machine under
    ``DistributedDataParallel``, as RecBole's ``run(..., nproc=N)`` does: one per GPU with NCCL, or
    one per CPU core with gloo; ``world_size``, ``ip``, ``port`` and ``group_offset`` place them in a
    group spanning several machines (docs/distributed.md). The result is rank 0's, with metrics
    over every rank's users; ``return_trainer`` is for one process only.

    Returns a dict: ``model``, ``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result``, ``saved_model_file`` (None when ``saved`` is False),
    ``log_file`` (RecBole's log of the run),
    ``epoch_seconds``, ``eval_seconds``, ``dataset_statistics`` (users, items and interactions
    after filtering), ``ranks`` (one dict per process: its rank, pid, device, training batches
    per epoch, the seed of its torch stream and the digest of its model state after training);
    with ``return_trainer`` also
    ``trainer``.
    """
    if nproc == 1 and world_size <= 0:  # RecBole's test for one process
        config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
        _check_resume_file(resume_file, config)  # before any data is read or log written
        return _run_process(config, saved, verbose, return_trainer, resume_file)
    nproc, world_size, ip, port, group_offset = distributed.launch_settings(nproc, world_size, ip, port, group_offset)
    if return_trainer:
        raise ConfigError("return_trainer: the trainers of a multi-process run live in their own processes; run one process (nproc=1)")
    # every option is checked, and a missing dataset downloaded, once, before any process starts
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    _check_resume_file(resume_file, config)
    distributed.check_process_count(nproc, config)
    distributed.check_port_free(ip, port, group_offset)
    resolve_dataset(config)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)  # every rank's RecBole trainer would race to make it
    launch = {"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset}
    payload = {
        "model": model, "dataset": dataset, "config_file_list": config_file_list,
        "config_dict": {**(config_dict or {}), **launch}, "saved": saved, "verbose": verbose, "resume_file": resume_file,
        "threads": None if os.environ.get("OMP_NUM_THREADS") else max(1, (os.cpu_count() or 1) // nproc),
    }
    return distributed.spawn_ranks(_rank_main, nproc, payload)


def _rank_main(local_rank, payload, queue):
    """One process of a multi-process run (``torch.multiprocessing.spawn`` calls it)."""
    try:
        if payload["threads"]:
            torch.set_num_threads(payload["threads"])  # one core each, unless OMP_NUM_THREADS says otherwise
        config = Config(
            model=payload["model"], dataset=payload["dataset"], config_file_list=payload["config_file_list"],
            config_dict={**payload["config_dict"], "local_rank": local_rank},
        )
        result = _run_process(config, payload["saved"], payload["verbose"], False, payload["resume_file"])
        if distributed.rank_and_world()[0] == 0:
            queue.put({"result": result})
    except BaseException as exc:
        distributed.report_error(queue, local_rank, exc)
        raise
    finally:
        distributed.end_process_group()


def _run_process(config, saved, verbose, return_trainer, resume_file):
    """``run`` in this process: the whole run, or this rank's part of a multi-process one (``run``
    has checked ``resume_file`` before, once for all ranks)."""
    init_seed(config["seed"], config["reproducibility"])
    # the dataset is checked and built before logging starts, so bad input ends in one paragraph
    dataset = create_dataset(config)
    if distributed.rank_and_world()[0] == 0:
        init_logger(config)  # ranks other than 0 write no log file; their errors reach the console
    logger = getLogger()
    if config.unread_options:  # recorded in the log even of a quiet run
        logger.warning(f"options that no part of this run reads (ignored): {', '.join(config.unread_options)}")
    if not verbose:
        logger.setLevel(logging.ERROR)
    logger.info(sys.argv)
    logger.info(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    model = build_model(config, train_data)
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if config["eval_test_every_epoch"]:
        trainer.report_test_data = test_data
    if resume_file is not None:
        trainer.resume_checkpoint(resume_file)
    ranks = distributed.all_gather_objects(_rank_report(config, train_data))
    if len(ranks) > 1:
        for report in ranks:
            logger.info(
                f"rank {report['rank']} of {len(ranks)}: pid {report['pid']}, device {report['device']}, "
                f"{report['train_batches']} training batches per epoch"
            )
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=verbose, saved=saved, show_progress=config["show_progress"]
    )
    digests = distributed.all_gather_objects(distributed.state_digest(trainer.model))
    for report, digest in zip(ranks, digests):
        report["state_digest"] = digest
    if config["device"].type == "cuda":  # the seed of this rank's GPU stream after training (nothing reseeded it)
        for report, seed in zip(ranks, distributed.all_gather_objects(torch.cuda.initial_seed())):
            report["cuda_seed"] = seed
    if len(ranks) > 1:
        if len(set(digests)) == 1:
            logger.info(f"model state after training: the same on all {len(ranks)} ranks (digest {digests[0]})")
        else:
            logger.warning(f"model state after training differs between ranks: {digests}")
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "log_file": next((h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)), None),
        "epoch_seconds": list(getattr(trainer, "epoch_seconds", [])),
        "eval_seconds": list(getattr(trainer, "eval_seconds", [])),
        **({"test_results_per_epoch": trainer.test_results_per_epoch} if config["eval_test_every_epoch"] else {}),
        # RecBole counts the padding id 0 among users and items
        "dataset_statistics": {"users": dataset.user_num - 1, "items": dataset.item_num - 1, "interactions": dataset.inter_num},
        "ranks": ranks,
    }
    if return_trainer:
        result["trainer"] = trainer
    return result


# options a resume may change: where things are read and written, what is printed, the device and
# the launch, and ``epochs`` (a larger budget continues the run)
RESUME_MAY_CHANGE = frozenset({
    "model", "dataset", "data_path", "epochs", "checkpoint_dir", "show_progress", "state", "gpu_id", "use_gpu",
    "log_wandb", "wandb_project", "save_last_checkpoint", *LAUNCH_KEYS,
})


def _check_resume_file(resume_file, config):
    """Refuse, before any data is read or log written, a ``--checkpoint`` that cannot continue this
    run: not a file, not readable as one of this plugin's checkpoints, of another model or dataset,
    or trained with other options (a resume continues the stored run; it cannot change it)."""
    if resume_file is None:
        return
    if not os.path.isfile(resume_file):
        raise ConfigError(f"--checkpoint: {resume_file} is not a file (a checkpoint written by this plugin's trainer)")
    try:
        checkpoint = load_checkpoint(resume_file)
        stored = json.loads(checkpoint["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--checkpoint: {exc}" if isinstance(exc, ValueError) else
                          f"--checkpoint: {resume_file} holds no recbole-diffusion run (no stored configuration)") from None
    best_file = best_model_file_of(resume_file, checkpoint) if checkpoint.get("best_model_file") else None
    if best_file is not None and not os.path.isfile(best_file):
        raise ConfigError(
            f"--checkpoint: {resume_file} is a last-epoch checkpoint, and the run's best checkpoint "
            f"{best_file} is not beside it; keep the two files in one folder"
        )
    stored = stored_options(stored)
    for key in ("model", "dataset"):
        if str(stored.get(key)) != str(config[key]):
            raise ConfigError(
                f"--checkpoint: {resume_file} is a run of {key} {stored.get(key)!r}, not {config[key]!r}; "
                f"resume it with --{key}={stored.get(key)}"
            )
    given = {k: v for k, v in config.external_config_dict.items() if k not in RESUME_MAY_CHANGE}
    stored = {k: v for k, v in stored.items() if k not in RESUME_MAY_CHANGE}
    changed = sorted(k for k in set(given) | set(stored) if _plain(given.get(k)) != _plain(stored.get(k)))
    if changed:
        shown = "; ".join(
            f"{key}: trained with {_shown(stored, key)}, given {_shown(given, key)}" for key in changed
        )
        raise ConfigError(
            f"--checkpoint: a resume continues the stored run with its own options, and these differ: {shown}. "
            "Give the run's options (only epochs, data_path, checkpoint_dir, the device and the launch may change), "
            "or start a new run without --checkpoint"
        )


def _plain(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _shown(options, key):
    return f"{key}={options[key]!r}" if key in options else "the default"


def _rank_report(config, train_data):
    return {
        "rank": distributed.rank_and_world()[0],
        "pid": os.getpid(),
        "device": str(config["device"]),
        "train_batches": len(train_data),
        # each rank's own random streams (dropout, noise): RecBole seeds them with seed + rank
        "torch_seed": torch.initial_seed(),
    }


def objective_function(config_dict=None, config_file_list=None, saved=True, keep_checkpoint=False, **launch):
    """One trial of ``recbole.trainer.HyperTuning``: train, validate, test, quietly.

    Works for this plugin's models and RecBole's built-ins alike; the model and dataset come
    from ``config_dict`` or the fixed config files, as in RecBole. With ``saved`` the test is of
    the best valid checkpoint, as in RecBole; that checkpoint is deleted after the test unless
    ``keep_checkpoint`` (a search of many trials would otherwise leave one file per trial).
    ``launch`` (``nproc``, ``world_size``, ``ip``, ``port``, ``group_offset``) trains each trial in
    several processes, as :func:`run`; give it to ``HyperTuning`` with ``functools.partial``.
    """
    check_hyperopt()
    result = run(config_file_list=config_file_list, config_dict=config_dict, saved=saved, verbose=False, **launch)
    if saved and not keep_checkpoint and result["saved_model_file"] and os.path.exists(result["saved_model_file"]):
        os.remove(result["saved_model_file"])
    return {key: result[key] for key in ("model", "best_valid_score", "valid_score_bigger", "best_valid_result", "test_result")}


def load_data_and_model(model_file, data_path=None):
    """Restore a model trained by this plugin, with its data, for inference.

    The checkpoint is read with ``weights_only=True``; the configuration is rebuilt from the
    JSON stored in it. The data is read from the folder the run read it from (stored absolute),
    or from ``data_path`` (the folder holding ``<dataset>/``) when given, e.g. on another machine.
    Returns ``(config, model, dataset, train_data, valid_data, test_data)``, with the model in
    eval mode.
    """
    checkpoint = load_checkpoint(model_file)
    stored = stored_options(json.loads(checkpoint["config"]))
    model_name, dataset_name = stored.pop("model"), stored.pop("dataset")
    if data_path is not None:
        stored["data_path"] = os.path.abspath(data_path)
    config = Config(model=model_name, dataset=dataset_name, config_dict=stored)
    init_seed(config["seed"], config["reproducibility"])
    # the data is checked before logging starts: a missing folder writes no empty log file
    dataset = create_dataset(config)
    init_logger(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = restore_model(config, train_data, checkpoint)
    return config, model, dataset, train_data, valid_data, test_data
