"""What a leaderboard run computes, as a short hash: its model trained for two epochs on a small
synthetic dataset (seeded, one thread, through the same worker as the real run), and every test
user's rank of its target hashed together with the metrics and the parsed YAMLs (for the model's
own YAML, the values of the sizes the synthetic run overrides; see below).

``benchmarks/leaderboard.py`` stores this fingerprint beside each run's code hash. A change of the
code that leaves what a model computes as it was (a module moved, a docstring cut, a helper shared
by two models) changes the code hash but not the fingerprint, so the stored runs stay valid; a change
of what it computes (a loss, a default, the order of random draws) moves the ranks, so the
fingerprint changes and the runs are redone.

Limits, and why they fall on the safe side:

- the synthetic run takes the path that the entry's own settings select (``train_mode``, the model's
  options, ``sparse_users``, the cross-domain options), not the real dataset's data path: the
  dataset's YAML enters as parsed values (its comments do not count), so a change of a value redoes
  the runs;
- the model's YAML enters through what the synthetic run does with it, and as parsed values only
  for the options the synthetic run cannot show: the keys it overrides (``RUN``, ``CROSS_DOMAIN``:
  sizes, epochs, batches) and the options listed in ``UNSEEN``, whose effect needs more data or
  epochs than it has. So renaming an option, or moving it to another file, keeps the fingerprint
  when the behaviour stays, while a changed default moves the ranks or the parsed values. An
  option added whose effect two small epochs cannot show belongs in ``UNSEEN``;
- the CPU protocol that every benchmark run gets (``common.CPU_PROTOCOL``) is hashed as it is;
- settings that point at another run's checkpoint (``checkpoint:<label>``) are left out of the
  synthetic run; the run they point at has a fingerprint of its own, and the settings key of the
  dependent run names it;
- settings that name files of the real dataset or read them (``DATA_FILE_OPTIONS``: the i2VAE
  authors' row files of ``row_split``, and ``eval_negative_pool``, whose ``rows`` needs them) are left
  out of the synthetic run, which has no such files, and hashed as values: the synthetic run then
  checks the model's code path on the leave-one-out samples, not the row reader
  (``tests/test_cross_domain_rows.py`` tests that);
- on a per-domain dataset (``dataset_domain``), whose synthetic stand-in is a plain dataset, the
  cross-domain evaluation options (``CROSS_DOMAIN_ONLY``) are left out of the synthetic run, which
  refuses them (they never acted there);
- floating point may differ between CPUs or library builds, so another machine can see another
  fingerprint for the same code: its runs are then redone, never wrongly kept.

    python benchmarks/fingerprint.py --model=SASRec --set train_mode=sequence   # print one
"""

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile

import yaml

if __package__ in (None, ""):  # run as a script (python benchmarks/fingerprint.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402

REPO = bench.REPO
# the definition of the fingerprint (what is hashed). 1: the whole model YAML and the run's recorded
# settings; 2: the model YAML only for the RUN keys; 3: also for the UNSEEN options, and the CPU protocol
DEFINITION = 3
NAME = "fingerprint"
USERS, ITEMS = 120, 40
# the synthetic run: two epochs, each evaluated, a fixed seed and small sizes so that a fingerprint
# takes seconds; the entry's settings go under these
RUN = {
    "epochs": 2, "eval_step": 1, "stopping_step": 2, "seed": 7, "train_batch_size": 32,
    "eval_batch_size": 512, "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "inner_size": 32,
    "embedding_size": 16,
}
# model options whose effect the synthetic run is too small to show, hashed as parsed values
UNSEEN = {
    # DiffRec's importance sampler draws uniformly until each of the N steps has loss_history_size
    # losses, which two synthetic epochs never reach
    "DiffRec": ("step_sampling", "loss_history_size", "importance_uniform_prob"),
    # the pseudo-sequence LightGCN's batch is larger than the synthetic data
    "i2VAE": ("psg_batch_size",),
}
# settings that name files of the real dataset (the i2VAE authors' row files), which the synthetic
# dataset does not have: left out of the synthetic run, hashed as values
DATA_FILE_OPTIONS = ("row_split", "eval_negative_pool")
# options a plain synthetic dataset refuses: left out when the real dataset is a per-domain file
CROSS_DOMAIN_ONLY = ("eval_negatives",)
# options of properties/overall.yaml that decide only which files a run writes or what it reports
# besides, not what it trains or selects: left out of the hashed YAML, so adding one keeps every stored run
OUTPUT_ONLY = ("save_last_checkpoint", "eval_test_every_epoch")
CROSS_DOMAIN = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp", "domain"]},
    "domain_field": "domain", "domain_names": {"0": "first", "1": "second"}, "long_tail_length": 3,
}


def walks(seed, offset=0):
    """{user: [item]}: each user follows the rule next = (7 * item + 3) mod ITEMS from a random
    start for 6 to 12 steps, one step in five replaced by a random item."""
    rng = random.Random(seed)
    out = {}
    for user in range(1, USERS + 1):
        item, items = rng.randrange(ITEMS), []
        for _ in range(rng.randint(6, 12)):
            items.append(offset + 1 + (item if rng.random() > 0.2 else rng.randrange(ITEMS)))
            item = (7 * item + 3) % ITEMS
        out[user] = items
    return out


def write_dataset(folder, cross_domain):
    """The synthetic atomic file under ``folder/fingerprint``; two domains when ``cross_domain``."""
    target = os.path.join(folder, NAME)
    os.makedirs(target, exist_ok=True)
    domains = [walks(1), walks(2, offset=ITEMS)] if cross_domain else [walks(1)]
    with open(os.path.join(target, f"{NAME}.inter"), "w", encoding="utf-8") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float" + ("\tdomain:token\n" if cross_domain else "\n"))
        for user in range(1, USERS + 1):
            for domain, history in enumerate(domains):
                for position, item in enumerate(history[user]):
                    extra = f"\t{domain}" if cross_domain else ""
                    out.write(f"{user}\t{item}\t{len(domains) * position + domain}{extra}\n")


def parsed_yaml(relative):
    path = os.path.join(REPO, relative)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def fingerprint(model, dataset, settings, work_dir=None):
    """The fingerprint of ``model`` run with ``settings`` (a dict of config values, as strings or
    values) for the leaderboard of ``dataset``; raises RuntimeError when the synthetic run fails."""
    settings = {k: v for k, v in settings.items() if not (isinstance(v, str) and v.startswith("checkpoint:"))}
    data_files = {k: settings.pop(k) for k in DATA_FILE_OPTIONS if k in settings}
    dataset_values = parsed_yaml(os.path.join("properties", "dataset", f"{settings.pop('dataset', dataset)}.yaml"))
    cross_domain = bool(dataset_values and dataset_values.get("domain_field"))
    if not cross_domain:
        settings = {k: v for k, v in settings.items() if k not in CROSS_DOMAIN_ONLY}
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        write_dataset(folder, cross_domain)
        entry = {
            "label": model, "model": model, "dataset": NAME, "overrides": {},
            "config_dict": {
                **settings, **RUN, **(CROSS_DOMAIN if cross_domain else {}),
                "data_path": folder, "checkpoint_dir": os.path.join(folder, "saved"),
            },
        }
        record = bench.run_model(entry, {"config_files": []}, NAME, folder, timeout=600, keep_checkpoints=False, threads=1, keep_test_rows=True)
    if record["status"] != "ok":
        raise RuntimeError(f"fingerprint run of {model} failed: {record.get('error')}")
    content = {
        key: record.get(key)
        for key in ("test_result", "best_valid_result", "best_epoch", "epochs_run", "dataset_statistics", "test_rows")
    }
    model_values = parsed_yaml(os.path.join("properties", "model", f"{model}.yaml")) or {}
    content["yaml"] = [
        {key: value for key, value in parsed_yaml(os.path.join("properties", "overall.yaml")).items() if key not in OUTPUT_ONLY},
        {key: value for key, value in model_values.items() if key in RUN or key in CROSS_DOMAIN or key in UNSEEN.get(model, ())},
        dataset_values,
    ]
    content["cpu_protocol"] = bench.CPU_PROTOCOL
    if data_files:  # only then: the fingerprints of runs without such settings stay as they were
        content["data_file_options"] = data_files
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


# Fingerprints of an earlier definition, mapped to this one's: each pair was computed from the
# same code and settings with both definitions (the file says where and how), so a run stored
# with the earlier value is that run under this definition.
UPGRADES_FILE = os.path.join(REPO, "benchmarks", "fingerprint_upgrades.json")


def upgraded(value):
    """``value`` under the current definition: followed through the pairs of :data:`UPGRADES_FILE`
    (1 -> 2 -> 3 ...), else itself."""
    try:
        with open(UPGRADES_FILE, encoding="utf-8") as handle:
            pairs = json.load(handle)["pairs"]
    except FileNotFoundError:
        return value
    seen = set()
    while value in pairs and value not in seen:
        seen.add(value)
        value = pairs[value]
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="benchmarks/fingerprint.py", description="Print the behaviour fingerprint of one model's leaderboard run.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="amazon-beauty", help="whose dataset YAML counts (default amazon-beauty)")
    parser.add_argument("--set", dest="settings", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        settings = bench.parse_settings(args.settings, "--set")
        print(fingerprint(args.model, args.dataset, settings))
    except (bench.UsageError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, bench.UsageError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
