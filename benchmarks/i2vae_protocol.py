"""i2VAE under its authors' protocol, beside single-domain SASRec: the rows of the authors' train and
test files of cloth-sport (``row_split``, docs/cross-domain.md, "The authors' row protocol"), a
validation part drawn from the train rows, and the test rows' metrics per domain and per user group
(cold-start, long-tailed, all).

    python benchmarks/i2vae_protocol.py --data_path=DATA --seeds 2020 2021 2022 2023 2024
    python benchmarks/i2vae_protocol.py --data_path=DATA --seeds 2020 --ranking sampled
    python benchmarks/i2vae_protocol.py --data_path=DATA --seeds 2020 --ranking sampled_rows --settings authors
    python benchmarks/i2vae_protocol.py --data_path=DATA --seeds 2020 --ranking sampled_rows --popularity
    python benchmarks/i2vae_protocol.py --render          # the table from the stored runs only

Each (model, seed) is a leaderboard run (``benchmarks/leaderboard.py``: stored per run, resumable
per epoch) of the cloth-sport preset's i2VAE, SASRec@cloth and SASRec@sport with ``row_split`` set
(the per-domain files take the rows of their domain) and ``eval_test_every_epoch``, under
``benchmarks/results/i2vae-protocol/<ranking>/``. ``--ranking full`` (default) ranks every item of
the target domain; ``sampled`` ranks the positive among 999 sampled negatives of that domain (the
authors' metric: sampled metrics are biased, and can reorder models; full ranking is the reference),
drawn from the domain's items the user never interacted with; ``sampled_rows`` draws them only from
those that occur in the evaluated part's rows (``eval_negative_pool: rows``), as the authors' code
draws from the items of its test file, the more popular ones: harder negatives.

``--settings authors`` runs i2VAE alone at the authors' settings where this plugin's defaults depart
from them (``AUTHORS_SETTINGS``: their width 128 instead of the benchmarks' CPU protocol's 64, their
KL weight 1 instead of 0.001, their bounded posterior scale with learnable priors, no explicit
disentangling term, which their code lacks, and 100 epochs of the pseudo-sequences' LightGCN, as
the authors' code is run beside it), stored apart, under ``<ranking>-authors-settings/``; the
budget stays the leaderboard's (up to 50 epochs, early stopping), where theirs is 100 epochs.

``--popularity`` adds the floor, most-popular, and trains nothing: every test row of a domain ranks
the domain's items by how often each is the target of that domain's training rows (the train part,
not the validation part), the same for every row, scored by the same evaluation as SASRec of that
domain and seed (the same sampled negatives: they are drawn from the seed and each batch's position,
with the dataset's ``eval_batch_size`` and order on both routes; the record stores them). Counts tie
more often than a trained model's scores: ties are broken as RecBole's ``torch.topk`` breaks them,
for the floor as for every model. RecBole's ``Pop`` is a general model, which the row protocol does
not serve. Stored per seed under ``<ranking>/popularity/``.

The table (``benchmarks/results/i2vae-protocol.md``) gives, per model, domain and group, test HR@10
and NDCG@10 (mean ± std over seeds) of the checkpoint chosen on the validation rows, and beside it
the authors' selection rule, labelled: for each metric its maximum over the epochs **on the test
rows** (what their code reports), which shows how much that rule inflates the figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import leaderboard as board  # noqa: E402

REPO, DATASET = board.REPO, "cloth-sport"
# the runs of each ranking in its own leaderboard results folder, the table beside them
PROTOCOL_DIR, PAGE = (os.path.join(REPO, "benchmarks", "results", name) for name in ("i2vae-protocol", "i2vae-protocol.md"))
RANKINGS = {"full": {}, "sampled": {"eval_negatives": "999"}, "sampled_rows": {"eval_negatives": "999", "eval_negative_pool": "rows"}}
RANKING_TITLES = {
    "full": "full ranking over the target domain's items",
    "sampled": "the positive among 999 sampled negatives of the domain (the authors' metric)",
    "sampled_rows": "the positive among 999 sampled negatives of the domain drawn from the items of the test rows (the authors' metric and pool)",
}
ROWS = {"train": "raw/cloth_sport_train.csv", "test": "raw/cloth_sport_test_csu.csv"}
# label -> (its dataset's folder relative to the two-domain one, its rows' domain_id or None)
ENTRIES = {"i2VAE": ("", None), "SASRec@cloth": ("../cloth-sport/", 0), "SASRec@sport": ("../cloth-sport/", 1)}
POPULARITY = "most-popular"  # the floor's label (--popularity)
DOMAINS = {"cloth": ("i2VAE", "SASRec@cloth", POPULARITY), "sport": ("i2VAE", "SASRec@sport", POPULARITY)}
GROUPS = ("all", "cold-start", "long-tailed")
METRICS = ("hit@10", "ndcg@10")
# i2VAE at the authors' settings where this plugin's defaults (and the benchmarks' CPU width) depart from
# their code's (docs/models/i2VAE.md): --settings authors
AUTHORS_SETTINGS = {"hidden_size": "128", "kl_weight": "1.0", "posterior_scale": "authors", "disentangle_weight": "0.0",
                    "psg_epochs": "100"}
SETTINGS_TITLES = {"ours": "", "authors": ", i2VAE at the authors' settings (`--settings authors`)"}
# what the paper claims on cloth-sport (relative HR@10 gains over the second-best method)
PAPER = "+5.95% HR@10 for cold-start users and +5.00% for long-tailed users over the second-best method"


def rows_of(label):
    """The entry's ``row_split`` value: its dataset's paths to the rows, and its domain's id."""
    prefix, domain_id = ENTRIES[label]
    value = {part: prefix + path for part, path in ROWS.items()}
    if domain_id is not None:
        value["domain_id"] = domain_id
    return value


def row_split(label):
    """The entry's settings: its rows, and one training sample per train row (prefix samples; the
    leaderboard's SASRec otherwise trains whole sequences)."""
    return f"row_split={rows_of(label)!r},train_mode=prefix"


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/i2vae_protocol.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", help="folder holding cloth-sport/ (with raw/) and the per-domain folders")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020], help="seeds (the authors report 5)")
    parser.add_argument("--ranking", choices=sorted(RANKINGS), default="full",
                        help="full (default), sampled (1 + 999) or sampled_rows (1 + 999 from the items of the evaluated rows)")
    parser.add_argument("--settings", choices=sorted(SETTINGS_TITLES), default="ours",
                        help="ours (default: the model's YAML at the benchmarks' protocol) or authors (i2VAE alone at the authors' settings)")
    parser.add_argument("--models", nargs="+", choices=list(ENTRIES), default=None,
                        help="labels to run (default: all three; i2VAE alone with --settings authors)")
    parser.add_argument("--popularity", action="store_true", help="store the most-popular floor of the seeds (no training)")
    parser.add_argument("--render", action="store_true", help="only write the table from the stored runs")
    return parser


def folder_name(ranking, settings="ours"):
    """The runs' folder under ``PROTOCOL_DIR`` (and their work folder's suffix)."""
    return ranking if settings == "ours" else f"{ranking}-{settings}-settings"


def model_args(label, settings="ours"):
    """The entry's ``--model_args`` value: its rows, and the authors' settings when asked for."""
    extra = AUTHORS_SETTINGS if settings == "authors" and label == "i2VAE" else {}
    return f"{label}:{row_split(label)}" + "".join(f",{key}={value}" for key, value in extra.items())


def run(args):
    """The leaderboard's command for the protocol's runs, stored under the ranking's (and settings') folder."""
    settings = ["eval_test_every_epoch=True", *(f"{k}={v}" for k, v in RANKINGS[args.ranking].items())]
    folder = folder_name(args.ranking, args.settings)
    command = [sys.executable, os.path.join(REPO, "benchmarks", "leaderboard.py"), f"--dataset={DATASET}",
               f"--data_path={args.data_path}", "--models", *args.models, "--set", *settings,
               "--model_args", *(model_args(label, args.settings) for label in args.models),
               "--results_dir", os.path.join(PROTOCOL_DIR, folder),
               "--work_dir", os.path.join(REPO, "benchmarks", "logs", f"i2vae-protocol-{folder}"),
               "--seeds", *map(str, args.seeds)]
    return subprocess.run(command, cwd=REPO).returncode


def popularity_folder(ranking):
    return os.path.join(PROTOCOL_DIR, ranking, "popularity")


def popularity_file(ranking, seed):
    return os.path.join(popularity_folder(ranking), f"seed{seed}.json")


def popularity_counts(train_data):
    """Per item id, how often it is the target of a training sample (the train part's rows; the
    padding id scores -inf)."""
    import torch

    dataset = train_data._dataset
    counts = torch.bincount(dataset.inter_feat[dataset.iid_field], minlength=dataset.item_num).float()
    counts[0] = float("-inf")
    return counts


def popularity_result(config, train_data, test_data):
    """The Trainer's evaluation of ``test_data`` (its candidates, negatives and groups), every row
    scored by ``popularity_counts``: ``(result, rows)``, rows as the Trainer's ``last_eval_rows``."""
    import torch

    from recbole_diffusion.trainer import Trainer

    class Popularity(torch.nn.Module):
        """The same scores, the training targets' counts, for every row."""

        def __init__(self, counts):
            super().__init__()
            self.register_buffer("counts", counts)
            self.unused = torch.nn.Parameter(torch.zeros(1))  # the Trainer builds an optimizer; nothing trains

        def full_sort_predict(self, interaction):
            return self.counts.unsqueeze(0).repeat(len(interaction), 1)

    trainer = Trainer(config, Popularity(popularity_counts(train_data)))
    trainer.eval_collector.data_collect(train_data)
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return result, trainer.last_eval_rows


def popularity_record(data_path, ranking, seed):
    """Most-popular on the protocol's rows (``--popularity``): per domain, the split of its SASRec entry
    (the same rows, validation part, evaluation and seed) scored by ``popularity_result``. A record in
    the runs' shape: ``status``, ``test_result``."""
    import time

    from benchmarks.parity.common import build_split

    start, test_result, settings = time.perf_counter(), {}, {}
    for domain, labels in DOMAINS.items():
        config_dict = {"data_path": data_path, "row_split": rows_of(labels[1]), "train_mode": "prefix", "seed": seed,
                       "show_progress": False, **RANKINGS[ranking]}  # strings, as the leaderboard gives them: RecBole's Config converts
        config, train_data, _, test_data = build_split("SASRec", f"{DATASET}-{domain}", config_dict)
        result, _ = popularity_result(config, train_data, test_data)
        test_result.update({key: float(value) for key, value in result.items() if f"({domain}," in key})
        # what the negatives and the split depend on, to tell a stale record from a current one
        settings[domain] = {key: config[key] for key in ("eval_batch_size", "MAX_ITEM_LIST_LENGTH", "row_split", "seed",
                                                         *RANKINGS[ranking])}
    return {"status": "ok", "label": POPULARITY, "seed": seed, "ranking": ranking, "test_result": test_result,
            "test_results_per_epoch": [], "settings": settings, "data_path": board.bench.shown_data_path(data_path), "machine": board.bench.machine_info(),
            "process_seconds": time.perf_counter() - start}


def store_popularity(args):
    for seed in args.seeds:
        record = popularity_record(args.data_path, args.ranking, seed)
        path = popularity_file(args.ranking, seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        board.bench.atomic_write(path, json.dumps(record, indent=1))  # nothing half-written
        print(f"{POPULARITY} seed {seed}: stored ({os.path.relpath(path, REPO)})")


def popularity_runs(ranking):
    """{(POPULARITY, seed): record} of the ranking's stored floor."""
    folder = popularity_folder(ranking)
    runs = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.startswith("seed") and name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                record = json.load(handle)
            runs[(POPULARITY, record["seed"])] = record
    return runs


def mean_std(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def max_over_epochs(per_epoch, key):
    """The authors' number: the metric's maximum over the epochs' test evaluations ``per_epoch`` (a
    run's ``test_results_per_epoch``); None without one."""
    values = [result[key] for result in per_epoch if key in result]
    return max(values) if values else None


def table(runs):
    """Rows ``| domain | group | model | seeds | HR@10 | NDCG@10 | HR@10 max | NDCG@10 max |`` of ``runs``
    ({(label, seed): stored run})."""
    lines = ["| domain | group | model | seeds | HR@10 | NDCG@10 | HR@10, max over epochs on test | NDCG@10, max over epochs on test |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for domain, labels in DOMAINS.items():
        for group in GROUPS:
            for label in labels:
                ok = [run for (lab, _), run in sorted(runs.items()) if lab == label and run.get("status") == "ok"]
                if label == POPULARITY and not ok:
                    continue  # the floor is shown once stored
                key = f"{{}} ({domain}, {group})"
                cells = [mean_std([run["test_result"][key.format(m)] for run in ok if key.format(m) in run["test_result"]]) for m in METRICS]
                best = [mean_std([v for v in (max_over_epochs(run.get("test_results_per_epoch") or [], key.format(m)) for run in ok) if v is not None]) for m in METRICS]
                lines.append(f"| {domain} | {group} | {label} | {len(ok)} | {' | '.join(cells)} | {' | '.join(best)} |")
    return lines


def render():
    lines = [
        "# i2VAE under its authors' protocol (cloth-sport rows)", "",
        "The authors' rows of cloth-sport (their random 80/20 split into train and test rows; 20% of the overlapping test "
        "rows cut to the target: cold-start), a validation part of 10% of the train rows drawn with the run's seed, "
        "the checkpoint chosen on valid NDCG@10 (up to 50 epochs, patience 5, the leaderboard's budget); SASRec@cloth and "
        "SASRec@sport see their domain's rows only. Test metrics per target domain and user group; the last two columns "
        "are the authors' selection rule, each metric's maximum over the epochs on the **test** rows, for comparison "
        "only. most-popular is the floor: every test row of a domain ranks its items by how often each is the target "
        "of the domain's training rows (nothing trains, no epochs; `--popularity`), under the same evaluation and "
        f"negatives as SASRec of that seed. The paper reports, on this data, {PAPER}. Written by "
        "`python benchmarks/i2vae_protocol.py --render`; runs with `--data_path=DATA --seeds S ... "
        "[--ranking sampled|sampled_rows] [--settings authors] [--popularity]`.", "",
    ]
    for ranking, what in RANKING_TITLES.items():
        default = board.stored_runs(os.path.join(PROTOCOL_DIR, ranking), DATASET)
        for settings, title in SETTINGS_TITLES.items():
            runs = default if settings == "ours" else board.stored_runs(os.path.join(PROTOCOL_DIR, folder_name(ranking, settings)), DATASET)
            if settings != "ours" and not runs:
                continue  # shown once run
            lines += [f"## {what.capitalize()}{title}", ""]
            if settings != "ours":
                lines += ["SASRec@cloth and SASRec@sport: the same runs as in the table above. i2VAE: " + ", ".join(
                    f"`{key}: {value}`" for key, value in AUTHORS_SETTINGS.items()) + ".", ""]
                runs = {**{key: run for key, run in default.items() if key[0] != "i2VAE"}, **runs}
            if settings == "ours" and runs:
                runs = {**runs, **popularity_runs(ranking)}
            lines += (table(runs) if runs else ["Not run yet."]) + [""]
    board.bench.atomic_write(PAGE, "\n".join(lines).rstrip("\n") + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.popularity and (args.settings != "ours" or args.models is not None):
        raise SystemExit("error: --popularity trains no model: give it without --settings authors and --models")
    if args.models is None:
        args.models = ["i2VAE"] if args.settings == "authors" else list(ENTRIES)
    if not args.render:
        if not args.data_path:
            raise SystemExit("error: give --data_path (or --render)")
        if args.popularity:
            missing = [name for name in (f"{DATASET}-{domain}" for domain in DOMAINS) if not os.path.isdir(os.path.join(args.data_path, name))]
            if missing:
                raise SystemExit(f"error: --data_path {args.data_path} has no {' or '.join(missing)} folder (the per-domain files)")
            store_popularity(args)
        elif run(args) != 0:
            print("a leaderboard run failed (see its output above)", file=sys.stderr)
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
