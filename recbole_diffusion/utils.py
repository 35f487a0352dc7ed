"""Name resolution (plugin first, then RecBole), dataset creation and dataloaders.

Every place where RecBole chooses something by name -- the model class, its YAML, the dataset
class, the dataloader and the trainer -- looks in this plugin first, then in RecBole. The one
known clash is ``DiffRec``: RecBole's is Wang et al.'s general recommender, ours is Du et al.'s
sequential one; ``--model=DiffRec`` means ours everywhere (model, YAML, dataloader, trainer).
"""

import contextlib
import difflib
import importlib
import os
import pkgutil

import recbole.model
from recbole.data.dataloader import FullSortEvalDataLoader, NegSampleEvalDataLoader, TrainDataLoader
from recbole.data.utils import create_samplers
from recbole.data.utils import get_dataloader as recbole_get_dataloader
from recbole.sampler import KGSampler
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_diffusion import trainer as plugin_trainers
from recbole_diffusion.data.atomic import check_atomic_files
from recbole_diffusion.data.cross_domain import CrossDomainSequentialDataset
from recbole_diffusion.data.noise import inject_train_noise, user_items
from recbole_diffusion.data.sequence import SequenceTrainDataLoader
from recbole_diffusion.errors import ConfigError
from recbole_diffusion.evaluation import (
    TrimmedFullSortEvalDataLoader,
    domain_candidate_loader,
    shard_eval_loader,
    train_history_lengths,
    trims_eval_padding,
)
from recbole_diffusion.model.sequence_adapters import sequence_adapter


_PLUGIN_MODEL_PACKAGE = "recbole_diffusion.model.sequential_recommender"
_RECBOLE_MODEL_PACKAGES = [
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
]


# ---------------------------------------------------------------------------- models
def plugin_model_names():
    """Names of this plugin's models (one module per model, named after the class)."""
    package = importlib.import_module(_PLUGIN_MODEL_PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{_PLUGIN_MODEL_PACKAGE}.{info.name}")
        names += [name for name in getattr(module, "__all__", []) if name.lower() == info.name]
    return sorted(names)


def recbole_model_names():
    """Names of every model RecBole 1.2.1 ships, by the file layout ``get_model`` relies on."""
    root = os.path.dirname(recbole.model.__file__)
    names = []
    for sub in _RECBOLE_MODEL_PACKAGES:
        folder = os.path.join(root, sub)
        names += [f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")]
    return names


def _plugin_model_class(model_name):
    module_path = f"{_PLUGIN_MODEL_PACKAGE}.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is None:
        return None
    module = importlib.import_module(module_path)
    return getattr(module, model_name, None)


def is_plugin_model(model_class):
    return getattr(model_class, "__module__", "").startswith("recbole_diffusion.")


def get_model(model_name):
    """Return the model class for ``model_name``: this plugin's first, then RecBole's."""
    plugin_class = _plugin_model_class(model_name)
    if plugin_class is not None:
        return plugin_class
    if model_name.lower() in recbole_model_names():
        try:
            return recbole_get_model(model_name)
        except ImportError as exc:  # e.g. RecBole's LightGBM / XGBoost wrappers
            raise ConfigError(f"RecBole's {model_name} needs the package {exc.name!r}: pip install {exc.name}") from None
        except AttributeError:
            pass  # right file, wrong capitalisation: fall through to the suggestions
    # a name both projects use (DiffRec) is one suggestion: --model=DiffRec picks ours
    known = list(dict.fromkeys(plugin_model_names() + _recbole_class_names()))
    close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.5)
    close += [k for k in known if k.lower() == model_name.lower() and k not in close]
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"unknown model {model_name!r}: it is neither a recbole-diffusion model "
        f"({', '.join(plugin_model_names())}) nor a RecBole built-in.{hint} Names are case-sensitive."
    )


def _recbole_class_names():
    """RecBole's model class names (file names are lower case; classes are not)."""
    names = []
    for sub in _RECBOLE_MODEL_PACKAGES:
        try:
            package = importlib.import_module(f"recbole.model.{sub}")
        except ImportError:  # exlib_recommender needs lightgbm / xgboost
            continue
        for attr in dir(package):
            if attr[0].isupper():
                names.append(attr)
    return sorted(set(names))


def get_sequence_model(config, model_class):
    """The class to build for this run: in ``train_mode: sequence`` a RecBole built-in is
    swapped for its whole-sequence subclass (same parameters, same state dict)."""
    if config["train_mode"] != "sequence" or is_plugin_model(model_class):
        return model_class
    return sequence_adapter(model_class)


# ---------------------------------------------------------------------------- trainers
def get_trainer(model_type, model_name):
    """This plugin's ``<Model>Trainer`` if it has one, else RecBole's choice; either way a
    trainer that writes and reads ``weights_only`` checkpoints."""
    own = getattr(plugin_trainers, model_name + "Trainer", None)
    if own is not None:
        return own
    if _plugin_model_class(model_name) is not None:
        return plugin_trainers.Trainer  # never RecBole's same-named trainer for a plugin model
    return plugin_trainers.safe_trainer(recbole_get_trainer(model_type, model_name))


# ---------------------------------------------------------------------------- datasets
def create_dataset(config):
    """Build the dataset from atomic files (never from a pickle), after checking them; with
    ``train_noise_ratio`` > 0, random items are injected into the training sequences
    (``recbole_diffusion/data/noise.py``)."""
    if config["save_dataset"] or config["save_dataloaders"] or config["dataset_save_path"] or config["dataloaders_save_path"]:
        raise ConfigError(
            "save_dataset / save_dataloaders / dataset_save_path / dataloaders_save_path are not "
            "supported: RecBole stores them as pickles, which can run code when loaded; "
            "recbole-diffusion always rebuilds from the atomic files"
        )
    check_atomic_files(config)
    dataset = _dataset_class(config)(config)
    # the clean items of each user: noise and augmentations never add one of them to its sequence
    dataset.user_items = user_items(dataset)
    return inject_train_noise(config, dataset)


def _dataset_class(config):
    plugin_data = importlib.import_module("recbole_diffusion.data")
    own = getattr(plugin_data, config["model"] + "Dataset", None)
    if own is not None:
        return own
    if config.plugin_options["cross_domain"] is not None:  # domain_field / dataset_domain: docs/cross-domain.md
        return CrossDomainSequentialDataset
    recbole_datasets = importlib.import_module("recbole.data.dataset")
    if not is_plugin_model(config.model_class) and hasattr(recbole_datasets, config["model"] + "Dataset"):
        return getattr(recbole_datasets, config["model"] + "Dataset")
    type2class = {
        ModelType.GENERAL: "Dataset",
        ModelType.SEQUENTIAL: "SequentialDataset",
        ModelType.CONTEXT: "Dataset",
        ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        ModelType.TRADITIONAL: "Dataset",
        ModelType.DECISIONTREE: "Dataset",
    }
    return getattr(recbole_datasets, type2class[config["MODEL_TYPE"]])


def data_preparation(config, dataset):
    """Split the dataset and build the train / valid / test dataloaders.

    Like RecBole's ``data_preparation`` but: dataloader classes are chosen by this plugin for its
    own models (RecBole's name table would give our sequential ``DiffRec`` the general DiffRec's
    user loader), ``train_mode: sequence`` uses whole-sequence batches, and nothing is pickled.
    """
    built = dataset.build()
    train_dataset, valid_dataset, test_dataset = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    plugin = is_plugin_model(config.model_class)

    if config["train_mode"] == "sequence":
        train_cls = SequenceTrainDataLoader
    elif plugin:
        train_cls = TrainDataLoader
    else:
        train_cls = recbole_get_dataloader(config, "train")
    if train_cls is SequenceTrainDataLoader or config["MODEL_TYPE"] != ModelType.KNOWLEDGE:
        train_data = train_cls(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    else:
        kg_sampler = KGSampler(dataset, config["train_neg_sample_args"]["distribution"], config["train_neg_sample_args"]["alpha"])
        train_data = train_cls(config, train_dataset, train_sampler, kg_sampler, shuffle=True)

    def eval_loader(phase):
        if trims_eval_padding(config, config.model_class, phase):
            return TrimmedFullSortEvalDataLoader
        if not plugin:
            return recbole_get_dataloader(config, phase)
        return FullSortEvalDataLoader if config["eval_args"]["mode"][phase] == "full" else NegSampleEvalDataLoader

    valid_cls, test_cls = eval_loader("valid"), eval_loader("test")
    if getattr(dataset, "cross_domain", None) is not None:  # ranked over the target domain's items
        valid_cls, test_cls = domain_candidate_loader(valid_cls), domain_candidate_loader(test_cls)
    # built in the one-process batch layout, then each rank keeps its whole batches (evaluation.py)
    with _one_process_layout(config):
        valid_data = valid_cls(config, valid_dataset, valid_sampler, shuffle=False)
        test_data = test_cls(config, test_dataset, test_sampler, shuffle=False)
    valid_data, test_data = shard_eval_loader(valid_data), shard_eval_loader(test_data)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        # who counts as a sparse user (option sparse_users) is fixed by the train split
        history = train_history_lengths(train_dataset, dataset.user_num)
        valid_data.train_history_length = test_data.train_history_length = history
    return train_data, valid_data, test_data


@contextlib.contextmanager
def _one_process_layout(config):
    """RecBole's loaders read ``single_spec`` when they are built: under torch.distributed they
    split their samples with a ``DistributedSampler`` and divide the batch size by the world size.
    Inside this block they are built as in one process."""
    single_spec = config["single_spec"]
    config["single_spec"] = True
    try:
        yield
    finally:
        config["single_spec"] = single_spec
