"""RecBole ``Config`` that knows this plugin's models and YAML files.

Resolution order, everywhere RecBole picks something by name:

1. the model class: this plugin's models first, then RecBole's (``utils.get_model``);
2. the internal YAML, later files winning: RecBole's ``overall.yaml``, RecBole's model YAML
   **only for RecBole's own models** (so that RecBole's general ``DiffRec.yaml`` never leaks
   into our sequential ``DiffRec``), RecBole's dataset defaults (``sample.yaml``), this plugin's
   ``properties/overall.yaml`` and ``properties/model/<Model>.yaml``, RecBole's dataset YAML and
   quick-start presets, then this plugin's ``properties/dataset/<dataset>.yaml``;
3. the user's config files, ``config_dict`` and command-line values, as in RecBole.

Unlike RecBole's ``Config``, this one never reads ``sys.argv``: ``run_recbole_diff.py`` parses
the command line and passes it as ``config_dict``, so a test runner's or a notebook's arguments
cannot leak into a configuration.
"""

import difflib
import os

import recbole
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType, argument_list

from recbole_diffusion.data.cross_domain import cross_domain_options
from recbole_diffusion.data.noise import train_noise_ratio
from recbole_diffusion.errors import ConfigError, OptionChecks
from recbole_diffusion.evaluation import sparse_user_thresholds
from recbole_diffusion.files import properties_dir
from recbole_diffusion.utils import get_model, is_plugin_model

TRAIN_MODES = ("prefix", "sequence")
# keys of properties/overall.yaml for this plugin's models only: RecBole's built-ins keep RecBole's
# value (the evaluation protocol and the plugin's feature options apply to every model, so that
# built-ins and ours sit in one table)
PLUGIN_MODELS_ONLY = ("train_neg_sample_args",)
# options read by this plugin that no YAML may list for a given dataset (the cross-domain ones,
# docs/cross-domain.md), and the launch settings RecBole's multi-process route passes as options
PLUGIN_FEATURE_OPTIONS = frozenset({
    "domain_field", "domain_names", "dataset_domain", "eval_negatives", "eval_negative_pool", "long_tail_length", "row_split",
    "local_rank", "world_size", "nproc", "ip", "port", "offset", "single_spec", "model", "dataset",
})
RECBOLE_ARGUMENTS = frozenset(
    argument_list.general_arguments + argument_list.training_arguments
    + argument_list.evaluation_arguments + argument_list.dataset_arguments
)

# RecBole reads these without checking; a wrong type or value otherwise fails deep inside
# training. (option, type(s), predicate, what is allowed)
_CORE_OPTIONS = [
    ("epochs", int, lambda v: v >= 1, "an integer >= 1 (a run trains at least one epoch)"),
    ("train_batch_size", int, lambda v: v > 0, "an integer > 0"),
    ("eval_batch_size", int, lambda v: v > 0, "an integer > 0"),
    ("learning_rate", (int, float), lambda v: v > 0, "a number > 0"),
    ("weight_decay", (int, float), lambda v: v >= 0, "a number >= 0"),
    ("stopping_step", int, lambda v: v >= 0, "an integer >= 0"),
    ("eval_step", int, lambda v: v >= 0, "an integer >= 0"),
    ("MAX_ITEM_LIST_LENGTH", int, lambda v: v > 0, "an integer > 0"),
    ("seed", int, lambda v: True, "an integer"),
]


class Config(RecBoleConfig):
    """RecBole configuration with this plugin's names and YAML first.

    ``plugin_options`` holds the plugin's feature options, parsed and checked once:
    ``sparse_users`` (a sorted list of thresholds), ``train_noise_ratio`` (a float) and
    ``cross_domain`` (the dict of ``data.cross_domain.cross_domain_options``, or None).

    Args are RecBole's: ``model`` (name or class), ``dataset``, ``config_file_list``,
    ``config_dict``. Every plugin model may define a ``check_config(config)`` classmethod;
    it runs here, before any data is read, so impossible hyperparameters fail at start.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise ConfigError(f"config file not found: {path}")
        super().__init__(model, dataset, config_file_list, config_dict)
        self._check_plugin_options()

    # ------------------------------------------------------------------ RecBole hooks
    def _load_cmd_line(self):
        return dict()

    def _load_config_files(self, file_list):
        loaded = {}
        for path in file_list or []:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            try:
                values = yaml.load(text, Loader=self.yaml_loader)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: {yaml_problem(exc)}") from None
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: a config file holds `key: value` lines; this one holds a {type(values).__name__}")
            loaded.update(values)
        return loaded

    def _get_model_and_dataset(self, model, dataset):
        if model is None and "model" not in self.external_config_dict:
            raise ConfigError("no model given: pass --model=NAME (e.g. --model=SASRec)")
        if dataset is None and "dataset" not in self.external_config_dict:
            raise ConfigError("no dataset given: pass --dataset=NAME (e.g. --dataset=ml-100k)")
        if isinstance(model, str) or model is None:
            name = model if model is not None else self.external_config_dict["model"]
            model = get_model(name)  # plugin first; raises with close names if unknown
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        self._plugin_model = is_plugin_model(model_class)
        self._model_name = model
        super()._load_internal_config_dict(model, model_class, dataset)
        # last, as RecBole's quick-start presets are: the dataset's protocol wins over defaults
        dataset_file = os.path.join(properties_dir(), "dataset", dataset + ".yaml")
        if os.path.isfile(dataset_file):
            loaded = super()._update_internal_config_dict(dataset_file) or {}
            self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _update_internal_config_dict(self, file):
        # RecBole loads ``properties/model/<name>.yaml`` of its own package by name; for a
        # plugin model that file belongs to a different model that happens to share the name.
        if self._plugin_model and _is_recbole_file(file, "model"):
            return {}
        loaded = super()._update_internal_config_dict(file)
        if _is_recbole_file(file, "dataset") and os.path.basename(file) == "sample.yaml":
            # right after RecBole's general and dataset defaults: our defaults, then our model's
            # YAML; RecBole's own dataset YAML (e.g. ml-100k's load_col) still overrides them
            recbole_values = {key: self.internal_config_dict[key] for key in PLUGIN_MODELS_ONLY if key in self.internal_config_dict}
            super()._update_internal_config_dict(os.path.join(properties_dir(), "overall.yaml"))
            if not self._plugin_model:  # a built-in trains as in RecBole (e.g. BPR with its negative samples)
                for key in PLUGIN_MODELS_ONLY:
                    self.internal_config_dict.pop(key, None)
                self.internal_config_dict.update(recbole_values)
            model_file = os.path.join(properties_dir(), "model", self._model_name + ".yaml")
            if self._plugin_model and os.path.isfile(model_file):
                super()._update_internal_config_dict(model_file)
        return loaded

    def _set_default_parameters(self):
        # RecBole refuses negative samples for a sequential model trained with loss_type CE (its own
        # SASRec, GRU4Rec, ... by default) while its overall default draws one: a built-in given no
        # train_neg_sample_args gets the one setting RecBole accepts for its loss
        final = self.final_config_dict
        if (
            not self._plugin_model and "train_neg_sample_args" not in self.external_config_dict
            and final.get("MODEL_TYPE") == ModelType.SEQUENTIAL and final.get("loss_type") == "CE"
            and not hasattr(self.model_class, "input_type")
        ):
            final["train_neg_sample_args"] = None
        super()._set_default_parameters()
        # RecBole reads ml-100k from its embedded copy whatever data_path says: a data_path given
        # for it is either used (it holds ml-100k/) or refused, never silently ignored
        if self.dataset == "ml-100k" and self.external_config_dict.get("data_path") is not None:
            given = str(self.external_config_dict["data_path"])
            folder = os.path.join(given, "ml-100k")
            if not os.path.isdir(folder):
                problem = "does not exist" if not os.path.exists(given) else "holds no ml-100k/ folder"
                raise ConfigError(
                    f"data_path: {os.path.abspath(given)} {problem}; leave --data_path out to use RecBole's "
                    "embedded ml-100k, or point it at the folder that holds ml-100k/ml-100k.inter"
                )
            final["data_path"] = folder

    # ------------------------------------------------------------------ plugin checks
    def _find_unread_options(self):
        """The given options that no part of this run reads (``unread_options``, sorted): not
        RecBole's documented arguments, nor a key of the YAML files this run loaded (RecBole's and
        ours, for this model and dataset), nor this plugin's feature options or launch settings.
        A typo such as ``hiden_size`` is one; so is a shared config file's key that this model
        lacks (``n_layers`` for GRU4Rec). The command line refuses them (:func:`refuse_unread`);
        a run logs them."""
        self.known_options = set(self.internal_config_dict) | RECBOLE_ARGUMENTS | PLUGIN_FEATURE_OPTIONS
        self.unread_options = sorted(key for key in self.external_config_dict if key not in self.known_options)

    def _check_plugin_options(self):
        # RecBole starts processes from its run(..., nproc=N), never from a config value: a value here
        # without a launch (one process, single_spec) would train one process silently
        if self.final_config_dict.get("single_spec", True):
            for key in ("nproc", "world_size"):
                value = self.final_config_dict.get(key)
                if value is not None and value not in (1, -1):
                    raise ConfigError(
                        f"{key}: a config value does not start processes; pass --{key}={value} to run_recbole_diff.py "
                        f"or {key}={value} to recbole_diffusion.quick_start.run (docs/distributed.md); got {value!r}"
                    )
        for key, types, valid, allowed in _CORE_OPTIONS:
            if key not in self.final_config_dict or self.final_config_dict[key] is None:
                continue
            value = self.final_config_dict[key]
            if isinstance(value, bool) or not isinstance(value, types) or not valid(value):
                raise ConfigError(f"{key} must be {allowed}, got {value!r}")
        mode = self.final_config_dict.get("train_mode", "prefix")
        if mode not in TRAIN_MODES:
            raise ConfigError(
                f"train_mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}"
            )
        if mode == "sequence" and self.final_config_dict["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            raise ConfigError("train_mode=sequence is only for sequential models")
        # the feature options, parsed and checked once here; everything else reads plugin_options
        self.plugin_options = {
            "sparse_users": sparse_user_thresholds(self),
            "train_noise_ratio": train_noise_ratio(self),
            "cross_domain": cross_domain_options(self),
        }
        for key in ("save_last_checkpoint", "eval_test_every_epoch"):
            OptionChecks(self).boolean(key)
        if self.plugin_options["sparse_users"] and self.final_config_dict["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            raise ConfigError("sparse_users is only for sequential models (it groups users by training-sequence length)")
        check = getattr(self.model_class, "check_config", None)
        if check is not None:
            check(self)
        elif not self._plugin_model:
            check_builtin_options(self)
        # last: a model's own check names a renamed option with its new name
        self._find_unread_options()


def refuse_unread(config, given):
    """Raise :class:`ConfigError` for the first of ``given`` (option names typed for this run, e.g.
    the command line's) that ``config`` reads nowhere, with the close names it does read."""
    unknown = [key for key in config.unread_options if key in set(given)]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(key, sorted(config.known_options), n=3, cutoff=0.75)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    others = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    raise ConfigError(
        f"{key}: unknown option for {config['model']} on {config['dataset']}{others}: no part of this run reads it.{hint} "
        "An option belongs to RecBole's configuration, this plugin's, the model's YAML or the dataset's YAML"
    )


# A RecBole built-in's options that RecBole takes unchecked: a zero width trains a model of nothing,
# a head count that does not divide the width ends in a traceback after the log file is opened.
_BUILTIN_SIZES = ("hidden_size", "embedding_size", "inner_size", "n_layers", "n_heads")
_BUILTIN_PROBABILITIES = ("dropout_prob", "hidden_dropout_prob", "attn_dropout_prob")


def check_builtin_options(config):
    """The checks of this plugin's models, on the same options of a RecBole built-in, where it has them."""
    checks = OptionChecks(config)
    present = [key for key in _BUILTIN_SIZES if checks.get(key) is not None]
    for key in present:
        checks.integer(key, 1)
    if "n_heads" in present and "hidden_size" in present:
        checks.divides_hidden_size("n_heads")
    for key in _BUILTIN_PROBABILITIES:
        if checks.get(key) is not None:
            checks.number(key, 0.0, 1.0, high_open=True)


def yaml_problem(exc):
    """A YAML parse error in one line: where (1-based line and column) and what."""
    def at(mark):
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark, context, context_mark = (getattr(exc, name, None) for name in ("problem_mark", "context", "context_mark"))
    text = f"{at(mark)}: " if mark is not None else ""
    text += f"YAML syntax error: {getattr(exc, 'problem', None) or exc}"
    if context:
        text += f" ({context}" + (f" from {at(context_mark)})" if context_mark is not None else ")")
    return text


def _is_recbole_file(file, subfolder):
    """Whether ``file`` lies directly in RecBole's ``properties/<subfolder>``."""
    folder = os.path.join(os.path.dirname(os.path.realpath(recbole.__file__)), "properties", subfolder)
    return os.path.dirname(os.path.realpath(file)) == os.path.realpath(folder)


def stored_options(stored):
    """A checkpoint's stored configuration (a dict with ``model`` and ``dataset``) in today's model
    and option names, so that a checkpoint written before a rename restores as it ran:
    ADARec's ``adarec_mode: released`` is the model ``ADARecReleased`` (``released_depths`` its
    ``expert_depths``), and DiffRec's ``inference`` / ``n_inference_draws`` / ``inference_seed``
    are ``n_sample_steps`` / ``n_sample_draws`` / ``sample_seed``. Returns a new dict."""
    stored = dict(stored)  # the options the run was given; the YAML defaults come from today's files
    if stored.get("model") == "ADARec" and ("adarec_mode" in stored or "released_depths" in stored):
        released = stored.pop("adarec_mode", "paper") == "released"
        depths = stored.pop("released_depths", None)
        if released:
            stored["model"] = "ADARecReleased"
            if depths is not None:
                stored["expert_depths"] = depths
        if "rec_loss" in stored and stored["rec_loss"] is None:  # ~ was the mode's default
            stored["rec_loss"] = "bce" if released else "ce"
    if stored.get("model") == "DiffRec" and "inference" in stored:
        stored["n_sample_steps"] = 1 if stored.pop("inference") == "one_step" else None
        for old, new in (("n_inference_draws", "n_sample_draws"), ("inference_seed", "sample_seed")):
            if old in stored:
                stored[new] = stored.pop(old)
    return stored
