"""One leaderboard per dataset: every model against RecBole's built-ins, several seeds, with
confidence intervals from a paired bootstrap over test users.

    python benchmarks/leaderboard.py --dataset=amazon-beauty --data_path=DATA --seeds 2020 2021 2022
    python benchmarks/leaderboard.py --dataset=cloth-sport --data_path=DATA --seeds 2020 2021 2022
    python benchmarks/leaderboard.py --dataset=amazon-beauty --render     # the page again, no training

Each (model, seed) run goes through ``benchmarks/run.py``'s worker (its own process, early
stopping on valid, test of the best checkpoint) and is stored, as soon as it ends, as
``benchmarks/results/leaderboard/<dataset>/<label>-seed<seed>.json``: metrics, per-epoch
times, best epoch, the settings, the commit, and every test user's rank of its target. A rerun
skips a run stored with the same settings and the same code (a hash of the files that define
what a run does: the package without the other plugin models' files, the YAMLs, the worker), so
an interrupted leaderboard goes on where it stopped. A run stored by other code is kept too when
the code still computes the same thing: each run stores a behaviour fingerprint
(``benchmarks/fingerprint.py``: a short seeded run of the same model and settings on synthetic
data, hashed), and a stored run whose fingerprint equals the current code's is not redone.
``--redo`` reruns anyway, and ``--reuse_other_code`` keeps runs stored by other code whatever
they compute (the page then names their code).

After every run the page ``benchmarks/results/<dataset>.md`` and its chart
``benchmarks/results/<dataset>-leaderboard-ndcg10.png`` are rewritten from the stored runs
alone (``--render`` does only that): the protocol and dataset statistics, one table (mean ± std
over seeds of HR/NDCG@5/10/20, time per epoch and its ratio to SASRec's, evaluation seconds, peak
memory, and the NDCG@10 difference to SASRec with a 95% interval from a paired bootstrap), then
the user groups (``sparse_users`` on a single-domain dataset; cold-start and long-tailed users
per domain on a cross-domain one). See ``benchmarks/README.md``.

The bootstrap pairs each user's NDCG@10 under a model with the same user's under the reference
of the same seed, and resamples both the users and the seeds (a two-level bootstrap), so the
interval holds the test users' sampling and the seed-to-seed variation together.

Exit code 0 when every run is stored ok, 1 when one failed (the others still ran), 2 on bad
arguments (nothing written).
"""

import argparse
import glob
import hashlib
import json
import os
import shlex
import signal
import statistics
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script (python benchmarks/leaderboard.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402
from benchmarks import fingerprint as behaviour  # noqa: E402
from benchmarks import worker  # noqa: E402

UsageError = bench.UsageError
REPO = bench.REPO
PLUGIN_MODEL_DIR = os.path.join("recbole_diffusion", "model", "sequential_recommender")
DEFAULT_SEEDS = (2020, 2021, 2022)
# the same budget for every model: up to 50 epochs, early stopping after 5 valid evaluations
# (one per epoch) without a better valid NDCG@10
COMMON = {"epochs": "50", "stopping_step": "5", "eval_step": "1"}
# a setting whose value is "checkpoint:<label>" takes the checkpoint kept by that label's run of the
# same seed (stored before it in the leaderboard's order); the run is part of what makes this one
CHECKPOINT_OF = "checkpoint:"
SEQUENCE_TRAINING = {"train_mode": "sequence", "train_batch_size": "256"}

# (label, model, settings): what a dataset's leaderboard runs when --models is not given
SINGLE_DOMAIN = (
    # RecBole's most-popular: the floor (a general model: no sparse_users); without RecBole's default
    # negative sample, which Pop would count as an interaction, so that it ranks by true popularity
    ("Pop", "Pop", {"sparse_users": "[]", "train_neg_sample_args": "None"}),
    ("SASRec", "SASRec", SEQUENCE_TRAINING),
    ("GRU4Rec", "GRU4Rec", SEQUENCE_TRAINING),
    ("BERT4Rec", "BERT4Rec", SEQUENCE_TRAINING),
    ("DiffRec", "DiffRec", {}),
    # DiffRec's network read at the last item's output as SASRec reads it, no diffusion (not the
    # paper's method; docs/models/DiffRec.md, the ablation): what its gap to SASRec is made of
    ("DiffRec@last-position", "DiffRec", {"readout": "last_position"}),
    ("DreamRec", "DreamRec", {}),
    # DreamRec's opt-in fix (docs/models/DreamRec.md): the rounding term and an item table that
    # starts from the same seed's SASRec run above (its kept checkpoint), trained on
    ("DreamRec@SASRec-table", "DreamRec", {"rounding_loss_weight": "1.0", "item_embedding_checkpoint": CHECKPOINT_OF + "SASRec"}),
    ("ADARec", "ADARec", {}),
    ("AsarRec", "AsarRec", {}),
)
PRESETS = {
    "cloth-sport": {
        "entries": (
            ("SASRec@cloth", "SASRec", {**SEQUENCE_TRAINING, "dataset": "cloth-sport-cloth"}),
            ("SASRec@sport", "SASRec", {**SEQUENCE_TRAINING, "dataset": "cloth-sport-sport"}),
            ("i2VAE", "i2VAE", {}),
        ),
        "common": {},
    },
}
DEFAULT_PRESET = {"entries": SINGLE_DOMAIN, "common": {"sparse_users": "[3,5]"}}
METRICS = tuple(f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20))
COMPARED = "ndcg@10"
# runs whose best checkpoint stays in the work folder (others are deleted after their test):
# SASRec's, so that a model can start from its item table (DreamRec's item_embedding_checkpoint), and
# DreamRec@SASRec-table's, for benchmarks/sampling_steps.py's table of strided sampling
KEEP_CHECKPOINT = {"SASRec", "DreamRec@SASRec-table"}


# ============================================================================ arguments
def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/leaderboard.py",
        description="Train and test every model on one dataset for several seeds, store each run, and write "
        "benchmarks/results/<dataset>.md with intervals against SASRec (see benchmarks/README.md).",
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. amazon-beauty")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="seeds, run one after another (default: 2020 2021 2022)")
    parser.add_argument("--models", nargs="+", default=None, metavar="LABEL", help="a subset of the dataset's leaderboard labels (default: all)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every model")
    parser.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs=N (default 50)")
    parser.add_argument("--set", dest="settings", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config values for every model")
    parser.add_argument(
        "--model_args", nargs="+", action="extend", default=[], metavar="TARGET:KEY=VALUE[,KEY=VALUE]",
        help="config values for some models, as in benchmarks/run.py (TARGET: a model name or a label)",
    )
    parser.add_argument("--redo", action="store_true", help="rerun runs that are stored already")
    parser.add_argument("--reuse_other_code", action="store_true", help="keep stored runs whose code differs from the current code")
    parser.add_argument("--render", action="store_true", help="only rewrite the page from the stored runs; train nothing")
    parser.add_argument(
        "--fingerprint_stored", action="store_true",
        help="only give the stored runs of the current code that have no behaviour fingerprint one; train nothing",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--results_dir", default=os.path.join(REPO, "benchmarks", "results"), help="where <dataset>.md and leaderboard/<dataset>/ go")
    parser.add_argument("--work_dir", default=None, help="logs and checkpoints (default: benchmarks/logs/leaderboard-<dataset>)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop a run that takes longer (stored as failed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--memory_limit_gb", type=float, default=None, help="cap each worker's address space")
    parser.add_argument("--keep_checkpoints", action="store_true",
                        help="keep every run's best checkpoint in the work dir (default: only those other runs start from)")
    return parser


def leaderboard_entries(dataset, labels=None):
    """The dataset's entries ``(label, model, settings)`` and its common settings; ``labels``
    picks a subset, in the leaderboard's order."""
    preset = PRESETS.get(dataset, DEFAULT_PRESET)
    entries = [{"label": label, "model": model, "settings": dict(settings)} for label, model, settings in preset["entries"]]
    if labels:
        known = [entry["label"] for entry in entries]
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise UsageError(f"--models: {', '.join(unknown)} not on the {dataset} leaderboard ({', '.join(known)})")
        entries = [entry for entry in entries if entry["label"] in labels]
    return entries, dict(preset["common"])


def resolve(args):
    entries, preset_common = leaderboard_entries(args.dataset, args.models)
    common = {**COMMON, **preset_common, **bench.parse_settings(args.settings, "--set")}
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        common["epochs"] = str(args.epochs)
    for reserved in ("model", "dataset", "data_path", "seed"):
        if reserved in bench.parse_settings(args.settings, "--set"):
            raise UsageError(f"--set: give {reserved} with --models / --dataset / --data_path / --seeds")
    per_label = bench.parse_model_args(args.model_args, entries)
    for entry in entries:
        entry["overrides"] = {**common, **entry["settings"], **per_label[entry["label"]]}
        entry["dataset"] = entry["overrides"].pop("dataset", args.dataset)
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError("--seeds: a seed is given twice")
    if args.bootstrap < 100:
        raise UsageError("--bootstrap must be at least 100")
    config_files = [os.path.abspath(f) for f in shlex.split(args.config_files)] if args.config_files else []
    for path in config_files:
        if not os.path.isfile(path):
            raise UsageError(f"--config_files: {path} not found")
    if args.data_path and not args.render and not os.path.isdir(args.data_path):
        raise UsageError(f"--data_path: {args.data_path} is not a folder")
    return {"entries": entries, "config_files": config_files, "common": common}


# ============================================================================ stored runs
def code_files(model):
    """The files whose content decides what a run of ``model`` does, relative to the repository:
    the package, except the plugin's other model files and, for a plugin model, the adapters of
    RecBole's built-ins; the overall, dataset and own model YAMLs; the worker."""
    plugin_model = os.path.isfile(os.path.join(REPO, PLUGIN_MODEL_DIR, f"{model.lower()}.py"))
    skip = {os.path.join("recbole_diffusion", "model", "sequence_adapters.py")} if plugin_model else set()
    files = []
    for root, dirs, names in os.walk(os.path.join(REPO, "recbole_diffusion")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = os.path.relpath(os.path.join(root, name), REPO)
            if not name.endswith(".py") or path in skip:
                continue
            if os.path.dirname(path) == PLUGIN_MODEL_DIR and name not in ("__init__.py", f"{model.lower()}.py"):
                continue
            files.append(path)
    files.append(os.path.join("properties", "overall.yaml"))
    files += sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "properties", "dataset", "*.yaml")))
    own_yaml = os.path.join("properties", "model", f"{model}.yaml")
    if os.path.isfile(os.path.join(REPO, own_yaml)):
        files.append(own_yaml)
    files.append(os.path.join("benchmarks", "worker.py"))
    return files


def code_hash(model):
    digest = hashlib.sha256()
    for path in code_files(model):
        digest.update(path.encode("utf-8") + b"\0")
        with open(os.path.join(REPO, path), "rb") as handle:
            digest.update(handle.read() + b"\0")
    return digest.hexdigest()[:16]


def run_settings(entry, seed, config_files):
    """What makes two runs the same run (besides the code): model, dataset, settings, seed and
    the content of the config files."""
    contents = []
    for path in config_files:
        with open(path, encoding="utf-8") as handle:
            contents.append(handle.read())
    return {
        "model": entry["model"], "dataset": entry["dataset"],
        "overrides": {**entry["overrides"], "seed": str(seed)}, "config_files": contents,
    }


def checkpoint_references(entry, seed, results_dir, dataset, need_files=True):
    """Resolve the entry's ``checkpoint:<label>`` settings for ``seed``: ``({key: checkpoint path},
    {label: what identifies that stored run})``. The source run must be stored ok; with
    ``need_files`` (the entry is about to train) its checkpoint must still be on disk too
    (:data:`KEEP_CHECKPOINT`); a rerun of it changes this run's key."""
    paths, sources = {}, {}
    for key, value in entry["overrides"].items():
        if not (isinstance(value, str) and value.startswith(CHECKPOINT_OF)):
            continue
        label = value[len(CHECKPOINT_OF):]
        source = read_run(run_path(results_dir, dataset, label, seed))
        checkpoint = source and source.get("status") == "ok" and source.get("checkpoint")
        if not checkpoint or need_files and not os.path.isfile(os.path.join(REPO, checkpoint)):
            raise UsageError(f"{key}={value} needs {label}'s run of seed {seed} stored with its checkpoint (run {label} first)")
        paths[key] = os.path.join(REPO, checkpoint)
        sources[label] = [source["settings_key"], source["code_hash"], source["finished"]]
    return paths, sources


def checkpoint_needed(entry, seed, entries, results_dir, dataset):
    """Whether ``entry``'s run of ``seed`` must be (re)run to provide its checkpoint: a later entry
    of the plan starts from it, is not stored ok yet, and the stored run's checkpoint is not on
    disk (checkpoints stay in the work folder, outside what is committed)."""
    if entry["label"] not in KEEP_CHECKPOINT:
        return False
    stored = read_run(run_path(results_dir, dataset, entry["label"], seed)) or {}
    if stored.get("checkpoint") and os.path.isfile(os.path.join(REPO, stored["checkpoint"])):
        return False
    for other in entries:
        if CHECKPOINT_OF + entry["label"] in other["overrides"].values():
            dependent = read_run(run_path(results_dir, dataset, other["label"], seed))
            if not (dependent and dependent.get("status") == "ok"):
                return True
    return False


def settings_key(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def runs_dir(results_dir, dataset):
    return os.path.join(results_dir, "leaderboard", dataset)


def run_path(results_dir, dataset, label, seed):
    return os.path.join(runs_dir(results_dir, dataset), f"{bench.slug(label)}-seed{seed}.json")


def read_run(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        print(f"warning: {path}: unreadable ({exc}); it will be rerun", file=sys.stderr)
        return None


def is_current(stored, key, code, reuse_other_code, fingerprint=lambda: None):
    """Whether ``stored`` is this run: ok, the same settings, and the same code, or other code
    whose behaviour fingerprint (``fingerprint()``, computed only when needed) is the stored one."""
    if stored is None or stored.get("status") != "ok" or stored.get("settings_key") != key:
        return False
    if reuse_other_code or stored.get("code_hash") == code:
        return True
    return bool(stored.get("fingerprint")) and behaviour.upgraded(stored["fingerprint"]) == fingerprint()


class Fingerprints:
    """Behaviour fingerprints (``benchmarks/fingerprint.py``) of the current code, one synthetic run
    per (model, dataset, code hash, settings without the seed), kept in ``<work_dir>/fingerprints.json`` so that a
    resumed leaderboard does not compute them again."""

    def __init__(self, work_dir):
        self.path = os.path.join(work_dir, "fingerprints.json")
        self.known = read_run(self.path) or {}
        self.work_dir = work_dir

    def of(self, entry, overrides, code):
        """The fingerprint, or None (with a warning) when its synthetic run fails."""
        settings = {k: v for k, v in overrides.items() if k != "seed"}
        key = f"{behaviour.DEFINITION}:{entry['model']}:{entry['dataset']}:{code}:{settings_key(settings)}"
        if key not in self.known:
            try:
                self.known[key] = behaviour.fingerprint(entry["model"], entry["dataset"], settings, self.work_dir)
            except RuntimeError as exc:
                print(f"warning: {entry['label']}: no fingerprint ({exc})", file=sys.stderr)
                return None
            bench.atomic_write(self.path, json.dumps(self.known, indent=1) + "\n")
        return self.known[key]


def stored_runs(results_dir, dataset):
    """Every stored run of the dataset's leaderboard, by (label, seed)."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(runs_dir(results_dir, dataset), "*.json"))):
        stored = read_run(path)
        if stored is not None and "label" in stored and "seed" in stored:
            runs[(stored["label"], int(stored["seed"]))] = stored
    return runs


# ============================================================================ statistics
def user_metric(ranks, metric):
    """Per-user value of ``hit@k`` or ``ndcg@k`` from 1-based target ranks."""
    name, _, k = metric.partition("@")
    k = int(k)
    if name == "hit":
        return (ranks <= k).astype(np.float64)
    if name == "ndcg":
        return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
    raise ValueError(f"no per-user formula for {metric}")


def paired_differences(model_rows, reference_rows, metric=COMPARED, domain=None):
    """Per-user ``metric`` under the model minus under the reference, on the users both ranked
    (rows are ``(keys, ranks)`` from worker.decode_rows; ``domain`` keeps one domain's rows)."""
    (model_keys, model_ranks), (ref_keys, ref_ranks) = model_rows, reference_rows
    if domain is not None:
        suffix = "\t" + domain
        keep = [i for i, key in enumerate(model_keys) if key.endswith(suffix)]
        model_keys, model_ranks = [model_keys[i] for i in keep], model_ranks[keep]
        keep = [i for i, key in enumerate(ref_keys) if key.endswith(suffix)]
        ref_keys, ref_ranks = [ref_keys[i] for i in keep], ref_ranks[keep]
    if model_keys == ref_keys:
        a, b = model_ranks, ref_ranks
    else:
        _, ia, ib = np.intersect1d(np.array(model_keys), np.array(ref_keys), assume_unique=True, return_indices=True)
        a, b = model_ranks[ia], ref_ranks[ib]
    return user_metric(a, metric) - user_metric(b, metric)


def paired_bootstrap(differences, resamples=1000, seed=0, level=0.95, chunk=50):
    """Mean paired difference and its percentile interval, resampling the seeds and, within
    them, the users. ``differences``: one array of per-user differences per seed, all over the
    same users in the same order. Returns ``(mean, low, high)``."""
    table = np.stack([np.asarray(d, dtype=np.float64) for d in differences])  # seeds x users
    n_seeds, n_users = table.shape
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        users = rng.integers(0, n_users, size=(size, n_users))
        per_seed = table[:, users].mean(axis=2)  # seeds x size
        seeds = rng.integers(0, n_seeds, size=(size, n_seeds)) if n_seeds > 1 else np.zeros((size, 1), dtype=np.int64)
        means.append(per_seed[seeds, np.arange(size)[:, None]].mean(axis=1))
    means = np.concatenate(means)
    alpha = (1 - level) / 2
    return float(table.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt_mean_std(values, digits=4):
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


# ============================================================================ the page
def domains_of(runs):
    """Target domains of a cross-domain leaderboard (from the stored test rows), else []."""
    names = []
    for stored in runs.values():
        for key in (stored.get("test_result") or {}):
            group = bench.split_group_key(key)[1]
            if group and ", " in group:
                domain = group.split(", ")[0]
                if domain not in names:
                    names.append(domain)
    return names


def metric_key(metric, domain=None, group="all"):
    return metric if domain is None else f"{metric} ({domain}, {group})"


class Board:
    """The stored runs of one leaderboard, arranged for the page."""

    def __init__(self, dataset, runs, labels, seeds, resamples):
        self.dataset, self.runs, self.resamples = dataset, runs, resamples
        self.labels = labels or list(dict.fromkeys(label for label, _ in runs))
        self.seeds = seeds or sorted({seed for _, seed in runs})
        self.domains = domains_of(runs)
        self._comparisons = {}  # (label, reference, domain) -> comparison: the page and headlines ask again

    def ok(self, label):
        return [self.runs[(label, s)] for s in self.seeds if self.runs.get((label, s), {}).get("status") == "ok"]

    def has_domain(self, label, domain):
        return any(metric_key(COMPARED, domain) in (r.get("test_result") or {}) for r in self.ok(label))

    def reference(self, domain=None):
        """The first SASRec label (ranked on ``domain``): every other model is compared with it."""
        for label in self.labels:
            runs = self.ok(label)
            if runs and runs[0]["model"] == "SASRec" and (domain is None or self.has_domain(label, domain)):
                return label
        return None

    def comparison(self, label, reference, domain=None):
        """``(mean, low, high, seeds)`` of the model's NDCG@10 minus the reference's, over the
        seeds both have, or None."""
        key = (label, reference, domain)
        if key not in self._comparisons:
            self._comparisons[key] = self._compare(label, reference, domain)
        return self._comparisons[key]

    def _compare(self, label, reference, domain):
        pairs = []
        for seed in self.seeds:
            a, b = self.runs.get((label, seed)), self.runs.get((reference, seed))
            if not (a and b and a.get("status") == b.get("status") == "ok" and "test_rows" in a and "test_rows" in b):
                continue
            pairs.append(paired_differences(worker.decode_rows(a["test_rows"]), worker.decode_rows(b["test_rows"]), COMPARED, domain))
        if not pairs or len({len(p) for p in pairs}) != 1 or len(pairs[0]) == 0:
            return None
        return (*paired_bootstrap(pairs, self.resamples), len(pairs))

    def delta(self, label, domain=None):
        """The ΔNDCG@10 cell of ``label`` against the reference: the interval, ``(reference)``, or –."""
        reference = self.reference(domain)
        if label == reference:
            return "(reference)"
        if reference is None:
            return "–"
        ref_value = mean_std([r["test_result"].get(metric_key(COMPARED, domain)) for r in self.ok(reference)])[0]
        return fmt_interval(self.comparison(label, reference, domain), ref_value)

    def seconds(self, label):
        return mean_std([(r.get("summary") or bench.summarise(r))["sec_per_epoch"] for r in self.ok(label)])[0]


def fmt_interval(comparison, reference_value):
    if comparison is None:
        return "–"
    mean, low, high, _ = comparison
    relative = f" ({mean / reference_value:+.0%})" if reference_value else ""
    return f"{mean:+.4f}{relative} [{low:+.4f}, {high:+.4f}]"


def main_table(board, domain=None):
    reference = board.reference(domain)
    ref_seconds = board.seconds(reference) if reference else None
    header = ["Model", "Seeds", *[bench.metric_title(m) for m in METRICS], f"ΔNDCG@10 vs {reference or 'SASRec'} [95% CI]",
              "Best epoch", "s/epoch", f"× {reference or 'SASRec'}", "Valid eval s", "Test eval s", "Peak RSS MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label in board.labels:
        runs = board.ok(label)
        if domain is not None and not board.has_domain(label, domain):
            continue
        if not runs:
            missing = [str(s) for s in board.seeds]
            lines.append("| " + " | ".join([f"`{label}`", "0"] + ["–"] * (len(header) - 3) + [f"not run (seeds {', '.join(missing)})"]) + " |")
            continue
        summaries = [r.get("summary") or bench.summarise(r) for r in runs]
        seconds = board.seconds(label)
        row = [f"`{label}`", str(len(runs))]
        row += [fmt_mean_std([r["test_result"].get(metric_key(m, domain)) for r in runs]) for m in METRICS]
        row.append(board.delta(label, domain))
        row += [
            fmt_mean_std([r.get("best_epoch") for r in runs], 1),
            bench.fmt_seconds(seconds),
            bench.fmt(seconds / ref_seconds, 2) if seconds and ref_seconds else "–",
            bench.fmt_seconds(mean_std([s["valid_eval_sec"] for s in summaries])[0]),
            bench.fmt_seconds(mean_std([s["test_eval_sec"] for s in summaries])[0]),
            bench.fmt(mean_std([r.get("peak_rss_mb") for r in runs])[0], 0),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def group_table(board, groups):
    """NDCG@10 and HR@10 (mean ± std over seeds) per user group: ``groups`` is a list of
    ``(title, group key)``."""
    header = ["Model", *[f"{title}: {name}" for title, _ in groups for name in ("users", "HR@10", "NDCG@10")]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    any_row = False
    for label in board.labels:
        runs = board.ok(label)
        if not runs:
            continue
        row, has = [f"`{label}`"], False
        for _, group in groups:
            users = runs[0]["test_result"].get(f"users ({group})")
            has = has or users is not None
            row += ["–" if users is None else str(users)]
            row += [fmt_mean_std([r["test_result"].get(f"{m} ({group})") for r in runs]) for m in ("hit@10", "ndcg@10")]
        if has:
            lines.append("| " + " | ".join(row) + " |")
            any_row = True
    return lines if any_row else []


# a group whose every model hits fewer targets than this at 10 (mean over seeds) is too small to compare
FEW_HITS = 20


def small_group_notes(board, groups):
    """A line for each group in which no model hits ``FEW_HITS`` targets at 10 (HR@10 × users, mean
    over seeds): its means move by a whole user's hit, so the table cannot rank the models there."""
    notes = []
    for title, group in groups:
        hits = {}
        for label in board.labels:
            runs = board.ok(label)
            users = runs[0]["test_result"].get(f"users ({group})") if runs else None
            values = [r["test_result"].get(f"hit@10 ({group})") for r in runs]
            if users and None not in values:
                hits[label] = statistics.fmean(values) * users
        if hits and max(hits.values()) < FEW_HITS:
            counts = ", ".join(f"`{label}` {value:.1f}" for label, value in hits.items())
            notes.append(f"- {title}: too few hits to compare the models (targets in the top 10 per seed: {counts}; "
                         "one user more or less moves HR@10 by 1 / users).")
    return notes


def sparse_groups(board):
    groups = []
    for label in board.labels:
        for run_ in board.ok(label):
            for key in run_.get("test_result") or {}:
                group = bench.split_group_key(key)[1]
                if group and group.startswith("history<=") and group not in groups:
                    groups.append(group)
    return sorted(groups, key=lambda g: int(g[len("history<="):]))


def verdict(comparison):
    """``beats`` / ``trails`` / ``cannot be told from``: where the interval lies against 0."""
    _, low, high, _ = comparison
    return "beats" if low > 0 else "trails" if high < 0 else "cannot be told from"


def evidence(board, label):
    """Links, relative to the page, to the label's stored runs and, for a plugin model, to its notes."""
    runs = board.ok(label)
    links = [f"[{r['seed']}](leaderboard/{board.dataset}/{bench.slug(label)}-seed{r['seed']}.json)" for r in runs]
    text = "runs " + ", ".join(links)
    model = runs[0]["model"] if runs else None
    if model and os.path.isfile(os.path.join(REPO, "docs", "models", f"{model}.md")):
        text += f"; notes [docs/models/{model}.md](../../docs/models/{model}.md)"
    return text


def budget_cut(runs):
    """How many of ``runs`` the epoch budget ended while valid NDCG@10 still improved within the
    early-stopping patience (best epochs count from 0), so that a longer budget might help them."""
    cut = 0
    for r in runs:
        overrides = r.get("overrides") or {}
        try:
            budget, patience = int(overrides["epochs"]), int(overrides["stopping_step"])
        except (KeyError, TypeError, ValueError):
            continue
        if r.get("epochs_run") == budget and r.get("best_epoch") is not None and r["best_epoch"] > budget - 1 - patience:
            cut += 1
    return cut


def findings(board, domain=None):
    """What the table says, in words, from the stored numbers only, each line linking to its
    runs: every model against the reference, the models that do not clear the most-popular floor,
    and the runs that the epoch budget cut short."""
    reference = board.reference(domain)
    if reference is None:
        return ["- No SASRec run is stored yet, so nothing is compared."]
    floor = "Pop" if board.ok("Pop") and (domain is None or board.has_domain("Pop", domain)) else None
    lines = []
    for label in board.labels:
        if label == reference or (domain and not board.has_domain(label, domain)) or not board.ok(label):
            continue
        comparison = board.comparison(label, reference, domain)
        if comparison is None:
            continue
        mean, low, high, seeds = comparison
        line = f"- `{label}` {verdict(comparison)} `{reference}` on NDCG@10 ({mean:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}], {seeds} seed(s))"
        if floor and label != floor:
            against_floor = board.comparison(label, floor, domain)
            if against_floor is not None and verdict(against_floor) != "beats":
                f_mean, f_low, f_high, _ = against_floor
                line += f"; it does not clear the most-popular floor `{floor}` ({f_mean:+.4f}, [{f_low:+.4f}, {f_high:+.4f}])"
        cut = budget_cut(board.ok(label))
        if cut:
            line += f"; {cut} of {len(board.ok(label))} run(s) used the whole epoch budget, so a longer one may still help it"
        lines.append(line + f" ({evidence(board, label)}).")
    return lines


def headline(board, label, domain=None):
    """The label's result as the README states it: ``(NDCG@10 mean ± std (n seeds), Δ against the
    reference [95% CI])``, both rendered as on the page."""
    runs = board.ok(label)
    if not runs:
        return None
    value = fmt_mean_std([r["test_result"].get(metric_key(COMPARED, domain)) for r in runs]) + f" ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
    return value, board.delta(label, domain)


def load_board(dataset, results_dir, resamples):
    """The page's :class:`Board` of a dataset, from its stored runs."""
    runs = stored_runs(results_dir, dataset)
    preset = [entry["label"] for entry in leaderboard_entries(dataset)[0]]
    labels = preset + [label for label in dict.fromkeys(label for label, _ in runs) if label not in preset]
    return Board(dataset, runs, labels, None, resamples)


def chart(board, path, domain=None):
    """Bar chart of mean NDCG@10 with one-std error bars, written atomically; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, means, stds = [], [], []
    for label in board.labels:
        runs = board.ok(label)
        if domain is not None and not board.has_domain(label, domain):
            continue
        mean, std = mean_std([r["test_result"].get(metric_key(COMPARED, domain)) for r in runs])
        if mean is None:
            continue
        labels.append(label)
        means.append(mean)
        stds.append(std or 0.0)
    if not labels:
        return False
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 3.2))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("test NDCG@10")
    ax.set_title(f"{board.dataset}" + (f", {domain}" if domain else "") + ": mean ± std over seeds")
    fig.tight_layout()
    with bench.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def describe_protocol(board, command):
    any_run = next((r for label in board.labels for r in board.ok(label)), None)
    lines = [
        "Command (from the repository root; a rerun skips the runs stored for the same settings and code, or code with "
        "the same behaviour fingerprint):", "",
        "    " + command, "",
    ]
    if "--data_path=DATA" in command:
        lines += ["`DATA` is the folder that holds the dataset's atomic files (`dataset/README.md` says how to get them).", ""]
    if any_run is None:
        return lines + ["No run is stored yet.", ""]
    stats = [(r["dataset"], r.get("dataset_statistics")) for label in board.labels for r in board.ok(label)[:1]]
    stats = list({name: s for name, s in stats if s}.items())
    common = any_run.get("overrides", {})
    yaml_name = bench.dataset_yaml(board.dataset)
    lines += [
        f"- Protocol: `{yaml_name}`" if yaml_name else "- Protocol: RecBole's defaults and the given config",
        "  (the split, the filtering, full ranking over all items), the project's CPU protocol (hidden size 64"
        + (", where the command's settings give no other" if any("hidden_size" in s for s in given_settings(board.dataset, board.runs).values()) else "")
        + "), "
        f"at most {common.get('epochs', '?')} epochs with early stopping after {common.get('stopping_step', '?')} "
        "valid evaluations (one per epoch) without a better valid NDCG@10, then the test of the best checkpoint. "
        "RecBole's SASRec, GRU4Rec and BERT4Rec train on whole sequences (`train_mode=sequence`, 256 sequences a "
        "batch); every other model at its YAML defaults. Settings of each run are in its JSON.",
        f"- Seeds: {', '.join(str(s) for s in board.seeds)} (the config's `seed`: initialisation, sampling, dropout).",
        "- Δ: the paired difference of per-user NDCG@10 to the reference on the same seed and users; the interval is "
        f"the 2.5–97.5% percentiles of {board.resamples} bootstrap means that resample the seeds and, within them, "
        "the test users. An interval that holds 0 is no evidence of a difference.",
        "- Time: mean s/epoch of training over the seeds; the ratio divides it by the reference's. Runs that shared the "
        "machine's cores with another job are slower, so read times as rough ratios.",
    ]
    for name, s in stats:
        density = s["interactions"] / (s["users"] * s["items"]) if s["users"] and s["items"] else None
        lines.append(
            f"- Data `{name}`: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions"
            + (f" (density {density:.4%})" if density else "") + "."
        )
    machines = {(r["machine"]["cpu"], r["machine"]["cores"], r["machine"]["versions"]["torch"], r["machine"]["versions"]["recbole"])
                for label in board.labels for r in board.ok(label) if r.get("machine")}
    for cpu, cores, torch_version, recbole_version in sorted(machines):
        lines.append(f"- Machine: {cpu}, {cores} cores; torch {torch_version}, recbole {recbole_version}; each run one torch thread unless its JSON says otherwise.")
    commits = sorted({(r.get("machine") or {}).get("git", {}).get("commit") or "unknown" for label in board.labels for r in board.ok(label)})
    codes = sorted({r.get("code_hash") for label in board.labels for r in board.ok(label)})
    lines.append(
        f"- Code: commit(s) {', '.join(commits)}; code hash(es) {', '.join(codes)}. A run is kept across a change of the code "
        "when its behaviour fingerprint stays the same (see `benchmarks/leaderboard.py` and `benchmarks/fingerprint.py`)."
    )
    lines.append("")
    return lines


def given_settings(dataset, runs):
    """{label: settings} its stored runs were given beyond the leaderboard's own for that label
    (``--set``, ``--epochs``, ``--model_args``), in the leaderboard's order of labels."""
    entries, preset_common = leaderboard_entries(dataset)
    first = {}  # a label's runs differ in their seed only
    for (label, _), run in sorted(runs.items()):
        first.setdefault(label, run)
    given = {}
    for entry in (e for e in entries if e["label"] in first):
        own = {k: v for k, v in {**COMMON, **preset_common, **entry["settings"]}.items() if k != "dataset"}
        extra = {k: v for k, v in (first[entry["label"]].get("overrides") or {}).items() if k != "seed" and own.get(k) != v}
        if extra:
            given[entry["label"]] = extra
    return given


def page_command(dataset, runs, seeds, results_dir=None):
    """The command that (re)makes the whole page: the dataset, its data folder as the runs
    name it (``run.shown_data_path``), the labels and settings when runs were given settings of
    their own, the results folder when it is not the default, and the stored seeds."""
    data_paths = sorted({r.get("data_path") for r in runs.values() if r.get("data_path")})
    parts = ["python", "benchmarks/leaderboard.py", f"--dataset={dataset}"]
    parts += [f"--data_path={data_paths[0]}"] if data_paths else []
    given = given_settings(dataset, runs)
    if given:
        labels = [entry["label"] for entry in leaderboard_entries(dataset)[0] if entry["label"] in {label for label, _ in runs}]
        parts += ["--models", *labels, "--model_args",
                  *(f"{label}:{','.join(f'{k}={v}' for k, v in settings.items())}" for label, settings in given.items())]
    default_dir = os.path.join(REPO, "benchmarks", "results")
    if results_dir and os.path.abspath(results_dir) != default_dir:
        inside = os.path.abspath(results_dir).startswith(REPO + os.sep)
        parts += ["--results_dir", os.path.relpath(results_dir, REPO) if inside else "RESULTS_DIR"]
    return shlex.join(parts + ["--seeds", *[str(s) for s in seeds or DEFAULT_SEEDS]])


def render(dataset, results_dir, resamples):
    """Rewrite ``<dataset>.md`` and its chart(s) from the stored runs alone; return the page's path."""
    return write_page(load_board(dataset, results_dir, resamples), results_dir)


def write_page(board, results_dir):
    """Write ``board``'s page and chart(s) into ``results_dir``; return the page's path."""
    dataset, runs = board.dataset, board.runs
    command = page_command(dataset, runs, board.seeds, results_dir)
    lines = [f"# Leaderboard: {dataset}", "", "Written by `benchmarks/leaderboard.py` from the runs stored in "
             f"[`leaderboard/{dataset}/`](leaderboard/{dataset}/); one-off experiments (ablations, curves, diagnostics) "
             f"are in [`runs/`](runs/).", ""]
    lines += describe_protocol(board, command)
    for domain in board.domains or [None]:
        title = "All test users" if domain is None else f"Target domain `{domain}`"
        lines += [f"## {title}", ""]
        lines += main_table(board, domain)
        lines.append("")
        png = f"{dataset}-leaderboard-ndcg10" + (f"-{domain}" if domain else "") + ".png"
        if chart(board, os.path.join(results_dir, png), domain):
            lines += [f"![test NDCG@10, mean ± std over seeds]({png})", ""]
        lines += ["Findings:", "", *findings(board, domain), ""]
        if domain is not None:
            groups = [(g, f"{domain}, {g}") for g in ("cold-start", "long-tailed")]
            table = group_table(board, groups)
            if table:
                lines += [f"User groups in `{domain}` (cold-start: no earlier item of the domain; long-tailed: a few):", "", *table, ""]
                notes = small_group_notes(board, groups)
                lines += [*notes, ""] if notes else []
    if not board.domains:
        groups = [(f"≤ {g[len('history<='):]} train interactions", g) for g in sparse_groups(board)]
        table = group_table(board, groups) if groups else []
        if table:
            lines += ["## Sparse users", "", "The same checkpoints on the users with few training interactions (option `sparse_users`):", "", *table, ""]
            notes = small_group_notes(board, groups)
            lines += [*notes, ""] if notes else []
    failed = [(label, seed, r.get("error")) for (label, seed), r in sorted(runs.items()) if r.get("status") != "ok"]
    if failed:
        lines += ["Failed runs (rerun by the next invocation):", ""]
        lines += [f"- `{label}` seed {seed}: {bench.cell(error or 'unknown error')}" for label, seed, error in failed]
        lines.append("")
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{dataset}.md")
    with bench.locked(results_dir):
        bench.atomic_write(path, "\n".join(lines).rstrip() + "\n")
    return path


# ============================================================================ main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        bench.check_name(args.dataset, "--dataset", "dataset")
        plan = resolve(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_dir = os.path.abspath(args.results_dir)
    if args.render:
        board = load_board(args.dataset, results_dir, args.bootstrap)
        print(f"wrote {write_page(board, results_dir)}")
        for domain in board.domains or [None]:
            for label in board.labels:
                if (domain is None or board.has_domain(label, domain)) and board.ok(label):
                    print(f"{label}" + (f" ({domain})" if domain else "") + ": NDCG@10 " + " | Δ ".join(headline(board, label, domain)))
        return 0
    work_dir = os.path.abspath(args.work_dir or os.path.join(REPO, "benchmarks", "logs", f"leaderboard-{args.dataset}"))
    os.makedirs(runs_dir(results_dir, args.dataset), exist_ok=True)
    os.makedirs(work_dir, exist_ok=True)
    fingerprints = Fingerprints(work_dir)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, bench.request_stop)
    machine = bench.machine_info()
    failed = []
    bench_plan = {"config_files": plan["config_files"]}
    total = len(args.seeds) * len(plan["entries"])
    done = 0
    for seed in args.seeds:
        for entry in plan["entries"]:
            done += 1
            if bench._STOP["signal"] is not None:
                print(f"stopped by {signal.Signals(bench._STOP['signal']).name}; stored runs are kept", flush=True)
                return 128 + bench._STOP["signal"]
            settings = run_settings(entry, seed, plan["config_files"])
            path = run_path(results_dir, args.dataset, entry["label"], seed)
            try:
                # a stored run that is current needs only the source's record, not its checkpoint file
                checkpoints, sources = checkpoint_references(entry, seed, results_dir, args.dataset, need_files=False)
            except UsageError as exc:
                failed.append(f"{entry['label']} seed {seed}")
                print(f"[{done}/{total}] {entry['label']} seed {seed}: not run: {exc}", flush=True)
                continue
            settings["sources"] = sources
            key, code = settings_key(settings), code_hash(entry["model"])
            stored = read_run(path)
            if stored is not None and not args.fingerprint_stored and checkpoint_needed(entry, seed, plan["entries"], results_dir, args.dataset):
                stored = None  # a run to come starts from its checkpoint, which this checkout does not have
            def current_fingerprint(entry=entry, settings=settings, code=code):
                return fingerprints.of(entry, settings["overrides"], code)

            if not args.redo and is_current(stored, key, code, args.reuse_other_code, current_fingerprint):
                how = "" if stored.get("code_hash") == code else ", other code with the same fingerprint"
                if stored.get("code_hash") == code and not stored.get("fingerprint"):
                    # a run stored before fingerprints: this code made it, so its fingerprint is this code's
                    stored["fingerprint"] = current_fingerprint()
                    if stored["fingerprint"]:
                        bench.atomic_write(path, json.dumps(stored, indent=1, default=str) + "\n")
                print(f"[{done}/{total}] {entry['label']} seed {seed}: stored ({os.path.relpath(path, REPO)}{how})", flush=True)
                continue
            if args.fingerprint_stored:
                print(f"[{done}/{total}] {entry['label']} seed {seed}: not stored for this code (not run: --fingerprint_stored)", flush=True)
                continue
            try:
                checkpoints, _ = checkpoint_references(entry, seed, results_dir, args.dataset)
            except UsageError as exc:
                failed.append(f"{entry['label']} seed {seed}")
                print(f"[{done}/{total}] {entry['label']} seed {seed}: not run: {exc}", flush=True)
                continue
            print(f"[{done}/{total}] {entry['label']} seed {seed}: running", flush=True)
            # the fingerprint of the code this run starts with (the tree may change while it trains)
            fingerprint = current_fingerprint()
            job_entry = {
                "label": entry["label"], "model": entry["model"], "dataset": entry["dataset"],
                "overrides": settings["overrides"],
                "config_dict": {
                    **({"data_path": os.path.abspath(args.data_path)} if args.data_path else {}),
                    **settings["overrides"], **checkpoints,
                },
            }
            record = bench.run_model(
                job_entry, bench_plan, entry["dataset"], os.path.join(work_dir, f"seed{seed}"), args.timeout,
                args.keep_checkpoints or entry["label"] in KEEP_CHECKPOINT, args.threads, args.memory_limit_gb, keep_test_rows=True,
                # a run stopped part-way (a timeout, a stop, the machine) goes on from its last epoch
                # when run again with the same settings and code of the same behaviour fingerprint
                resume_key=f"{fingerprint or code}/{key}/seed{seed}",
            )
            if bench._STOP["signal"] is not None:
                print(f"stopped by {signal.Signals(bench._STOP['signal']).name}; this run is not stored", flush=True)
                return 128 + bench._STOP["signal"]
            if record["status"] == "ok":
                record["summary"] = bench.summarise(record)
            if record.get("saved_model_file"):
                record["checkpoint"] = os.path.relpath(record["saved_model_file"], REPO)
            for private in ("log_file", "saved_model_file", "traceback"):
                record.pop(private, None)
            record.update(
                seed=seed, settings_key=key, code_hash=code, machine=machine, finished=bench.now_utc(),
                fingerprint=fingerprint if record["status"] == "ok" else None,
                data_path=bench.shown_data_path(args.data_path) if args.data_path else None,
            )
            bench.atomic_write(path, json.dumps(record, indent=1, default=str) + "\n")
            if record["status"] == "ok":
                test = record["test_result"]
                print(f"    ok: best epoch {record['best_epoch']}, test NDCG@10 {test.get('ndcg@10', float('nan')):.4f}", flush=True)
            else:
                failed.append(f"{entry['label']} seed {seed}")
                print(f"    FAILED: {record['error']}", flush=True)
            render(args.dataset, results_dir, args.bootstrap)
    page = render(args.dataset, results_dir, args.bootstrap)
    print(f"wrote {page}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
