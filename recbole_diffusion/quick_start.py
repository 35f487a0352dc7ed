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

from recbole.utils import init_logger, init_seed, set_color

from recbole_diffusion.compat import check_hyperopt, load_checkpoint
from recbole_diffusion.config import Config
from recbole_diffusion.errors import ConfigError
from recbole_diffusion.utils import create_dataset, data_preparation, get_model, get_sequence_model, get_trainer


def build_model(config, train_data):
    """Instantiate the configured model on ``train_data``'s dataset, seeded as RecBole does."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
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


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, verbose=True, return_trainer=False, resume_file=None):
    """Train ``model`` on ``dataset`` with early stopping on the valid split, then test.

    ``resume_file``: a checkpoint of an interrupted run with the same settings (``epochs`` may be
    larger); training goes on after its epoch, with its weights, optimizer, early-stopping counters
    and random streams, so it ends where the uninterrupted run would have.

    Returns a dict: ``model``, ``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result``, ``saved_model_file`` (None when ``saved`` is False),
    ``log_file`` (RecBole's log of the run),
    ``epoch_seconds``, ``eval_seconds``, ``dataset_statistics`` (users, items and interactions
    after filtering); with ``return_trainer`` also ``trainer``.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    if resume_file is not None and not os.path.isfile(resume_file):  # before any data is read or log written
        raise ConfigError(f"--checkpoint: {resume_file} is not a file (a checkpoint written by this plugin's trainer)")
    init_seed(config["seed"], config["reproducibility"])
    # the dataset is checked and built before logging starts, so bad input ends in one paragraph
    dataset = create_dataset(config)
    init_logger(config)
    logger = getLogger()
    if not verbose:
        logger.setLevel(logging.ERROR)
    logger.info(sys.argv)
    logger.info(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    model = build_model(config, train_data)
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if resume_file is not None:
        trainer.resume_checkpoint(resume_file)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=verbose, saved=saved, show_progress=config["show_progress"]
    )
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
        # RecBole counts the padding id 0 among users and items
        "dataset_statistics": {"users": dataset.user_num - 1, "items": dataset.item_num - 1, "interactions": dataset.inter_num},
    }
    if return_trainer:
        result["trainer"] = trainer
    return result


def objective_function(config_dict=None, config_file_list=None, saved=True, keep_checkpoint=False):
    """One trial of ``recbole.trainer.HyperTuning``: train, validate, test, quietly.

    Works for this plugin's models and RecBole's built-ins alike; the model and dataset come
    from ``config_dict`` or the fixed config files, as in RecBole. With ``saved`` the test is of
    the best valid checkpoint, as in RecBole; that checkpoint is deleted after the test unless
    ``keep_checkpoint`` (a search of many trials would otherwise leave one file per trial).
    """
    check_hyperopt()
    result = run(config_file_list=config_file_list, config_dict=config_dict, saved=saved, verbose=False)
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
    stored = json.loads(checkpoint["config"])
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
