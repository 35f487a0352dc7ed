"""Evaluate one trained checkpoint at several numbers of sampling steps S (or other inference
variants) and write a section.

    python benchmarks/sampling_steps.py --checkpoint=benchmarks/logs/amazon-beauty-dreamrec/DreamRec/saved/X.pth \\
        --steps 500 50 10 --section=dreamrec-sampling-steps --threads=1
    python benchmarks/sampling_steps.py --checkpoint=benchmarks/logs/<dataset>-<section>/DiffRec/saved/X.pth \\
        --steps 1000 1 --users 200 --section=diffrec-inference --threads=1

For a model with the option ``n_sample_steps`` (DiffRec and DreamRec: S < T runs the shared strided sampler),
this restores the checkpoint (read with ``weights_only=True``; its stored configuration rebuilds
the data, ``--data_path`` tells where the data lies now) and evaluates the same weights once per
S, with ``n_sample_steps=S`` in the model's configuration and the project's Trainer: the full-sort
evaluation that training and the benchmarks use, with the metrics of the dataset's YAML.
Every S draws its noise from the model's evaluation generator, seeded alike at every scoring call.

It writes (replaces) the section ``--section`` of ``benchmarks/results/runs/<dataset>.md`` and the raw
numbers in ``benchmarks/results/runs/<dataset>-<section>.json`` with ``benchmarks/common.py``'s markers, lock and
atomic writes; ``<dataset>`` is the checkpoint's dataset unless ``--dataset_name_for_results``
names another file. The table has one row per S, in the order given: HR@10, NDCG@10, NDCG@20 of
the split, the wall seconds of one whole evaluation (the median of ``--repeats`` runs; rounds go
over every S in turn, after one untimed warm-up evaluation at the smallest S), those seconds over
the first S's, and NDCG@10 relative to the first S's. The first S is the reference (normally
S = T, the full chain). RecBole's log and tensorboard folders go to ``--work_dir`` (default
``benchmarks/logs/<dataset>-<section>/``).

Every S must be one the model's ``check_config`` accepts (DreamRec: an integer in 1..T); a bad
S, a checkpoint that does not load or whose model has no ``n_sample_steps``, or a results file
whose markers are broken ends with ``error: ...`` and exit code 2 before any data is read.
Exit code 0 on success.

``--variants KEY=VALUE[,KEY=VALUE] ...`` replaces ``--steps`` (exactly one of the two): one row
per variant, labelled by its text, its settings set over the checkpoint's configuration (values
as strings, converted by RecBole's Config like ``run.py``'s ``--set`` / ``--model_args``, parsed by
``benchmarks/common.py``'s ``parse_settings``) and checked by the model's ``check_config``; the first variant is
the reference, the warm-up evaluation runs the last one (put the cheapest last). A key that the
model's configuration lacks, a data or evaluation option (RecBole's Dataset and Evaluation
arguments: every row shares one split and one dataloader), ``model``/``dataset``/``data_path``, a
variant given twice, or a value the model refuses ends with exit code 2 naming ``--variants``.

``--users K`` evaluates K users of the split instead of all N: a uniform sample without
replacement (``torch.randperm`` seeded with the checkpoint's ``seed``) of the split's users in id
order, not the loader's first rows (the trimmed loader orders users by history length). Every
row and the warm-up use the same users, through a dataloader of the split's own class over just
their rows, so the evaluation is still the Trainer's full-sort one with the same metrics code.
The section then says, in bold, "metrics and seconds on K of the N users of the split", adds a
column of milliseconds per user, and the JSON lists the users' tokens. K > N is exit code 2.
Each row records ``users_evaluated``, the rows the metrics saw, and ``seconds_per_user``.
"""

import argparse
import json
import os
import statistics
import sys

# the machine record, section markers, lock and atomic writes every results section shares (benchmarks/common.py)
if __package__ in (None, ""):  # run as a script (python benchmarks/sampling_steps.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402

UsageError = bench.UsageError

STEPS_OPTION = "n_sample_steps"
TABLE_METRICS = ("hit@10", "ndcg@10", "ndcg@20")
REFERENCE_METRIC = "ndcg@10"
# RecBole rounds every metric to metric_decimal_place (4 by default), too coarse for a relative
# difference of NDCG@10 ~ 0.03; the table still shows 4 places
METRIC_DECIMALS = 8
# what the section states about the checkpoint's configuration, when the model has the option
SETTINGS_KEYS = (
    "n_diffusion_steps", "noise_schedule", "sample_eta", "sample_seed", "n_sample_draws", "guidance_weight", "hidden_size",
    "MAX_ITEM_LIST_LENGTH", "train_mode", "eval_batch_size", "seed",
)
MINUS = "\u2212"
# --variants vary the model only: these choose the model, the data or where they lie
VARIANT_RESERVED = {
    "model": "the checkpoint's model is evaluated",
    "dataset": "the checkpoint's dataset is evaluated; --dataset_name_for_results names the results file",
    "data_path": "use --data_path",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/sampling_steps.py",
        description="Evaluate one checkpoint at several numbers of sampling steps S and write a section "
        "of benchmarks/results/runs/<dataset>.md (S, metrics, evaluation seconds).",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by this project's Trainer (.pth)")
    rows = parser.add_mutually_exclusive_group(required=True)
    rows.add_argument("--steps", type=int, nargs="+", metavar="S", help="sampling steps, in row order; the first is the reference (normally T)")
    rows.add_argument(
        "--variants", nargs="+", metavar="KEY=VALUE[,KEY=VALUE]",
        help="instead of --steps: one row per variant, its model options set over the checkpoint's "
        "(e.g. sample_eta=1 sample_eta=0); the first is the reference",
    )
    parser.add_argument("--section", required=True, help="section name in the results file")
    parser.add_argument("--dataset_name_for_results", default=None, help="results file <NAME>.md (default: the checkpoint's dataset)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter (default: the checkpoint's)")
    parser.add_argument("--split", choices=("test", "valid"), default="test", help="the split to evaluate (default: test)")
    parser.add_argument(
        "--users", type=int, default=None, metavar="K",
        help="evaluate only K users of the split, a seeded uniform sample (the checkpoint's seed), the same for every row (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed evaluations per S; the table shows the median (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, usually one per core)")
    parser.add_argument("--results_dir", default=bench.RUNS_DIR, help="where <dataset>.md and the JSON go")
    parser.add_argument("--work_dir", default=None, help="RecBole's log folders (default: benchmarks/logs/<dataset>-<section>)")
    return parser


# ============================================================================ plan
def parse_variants(texts):
    """``["k=v,k=v", ...]`` -> one settings dict (strings; RecBole's Config converts the types,
    as for ``run.py``'s ``--set`` and ``--model_args``) per variant."""
    variants = []
    for text in texts:
        parts = [part.strip() for part in bench.SETTING_SPLIT_RE.split(text)]
        settings = bench.parse_settings(parts, f"--variants {text}")
        for key in settings:
            if key in VARIANT_RESERVED:
                raise UsageError(f"--variants {text}: {key} is not a model option ({VARIANT_RESERVED[key]})")
        if settings in variants:
            raise UsageError(f"--variants: {text!r} sets what an earlier variant sets")
        variants.append(settings)
    return variants


def resolve(args):
    """Check the arguments and the checkpoint, and build one configuration per row; reads no data."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import RecBoleDiffusionError

    bench.check_name(args.section, "--section")
    if args.steps is not None:
        repeated = sorted({s for s in args.steps if args.steps.count(s) > 1})
        if repeated:
            raise UsageError(f"--steps: {', '.join(map(str, repeated))} given twice")
        variants = None
    else:
        variants = parse_variants(args.variants)
    if args.repeats < 1:
        raise UsageError("--repeats must be at least 1")
    if args.users is not None and args.users < 1:
        raise UsageError("--users must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    checkpoint_file = os.path.abspath(args.checkpoint)
    checkpoint, stored = bench.read_checkpoint(checkpoint_file)
    model_name, dataset = stored.pop("model"), stored.pop("dataset")
    state = {"state_dict": checkpoint["state_dict"], "other_parameter": checkpoint.get("other_parameter")}
    results_name = args.dataset_name_for_results or dataset
    bench.check_name(results_name, "--dataset_name_for_results", "dataset")
    # nothing is saved, but RecBole's Trainer creates checkpoint_dir: let that be in the work dir
    overrides = {"metric_decimal_place": METRIC_DECIMALS, "show_progress": False, "checkpoint_dir": "saved"}
    if args.data_path:
        overrides["data_path"] = os.path.abspath(args.data_path)
    try:
        config = Config(model=model_name, dataset=dataset, config_dict={**stored, **overrides})
    except RecBoleDiffusionError as exc:
        raise UsageError(f"--checkpoint: its configuration no longer loads: {exc}") from None
    # every row shares one split, one dataloader and one evaluator, built from the first row's config
    shared = set(config.parameters.get("Dataset", [])) | set(config.parameters.get("Evaluation", []))
    configs, rows = [], []
    if variants is None:
        if STEPS_OPTION not in config:
            raise UsageError(f"--checkpoint: model {model_name} has no {STEPS_OPTION} (no strided sampling to compare)")
        for steps in args.steps:
            # the model's own check_config decides which S it can sample with
            try:
                configs.append(Config(model=model_name, dataset=dataset, config_dict={**stored, **overrides, STEPS_OPTION: steps}))
            except RecBoleDiffusionError as exc:
                raise UsageError(f"--steps {steps}: {exc}") from None
            rows.append({"label": str(steps), "steps": steps, "where": f"--steps {steps}"})
        settings_keys = SETTINGS_KEYS
    else:
        for text, settings in zip(args.variants, variants):
            for key in settings:
                if key not in config:
                    raise UsageError(f"--variants {text}: {key} is not an option of {model_name}'s configuration")
                if key in shared:
                    raise UsageError(f"--variants {text}: {key} is a data or evaluation option, which every row shares; vary model options only")
            try:
                configs.append(Config(model=model_name, dataset=dataset, config_dict={**stored, **overrides, **settings}))
            except RecBoleDiffusionError as exc:
                raise UsageError(f"--variants {text}: {exc}") from None
            # as the model sees them, after RecBole's conversion of the strings
            seen = {key: configs[-1][key] for key in settings}
            rows.append({"label": text, "config": seen, "where": f"--variants {text}"})
        varied = [key for settings in variants for key in settings]
        settings_keys = [*SETTINGS_KEYS, *[key for key in dict.fromkeys(varied) if key not in SETTINGS_KEYS]]
    epoch = checkpoint.get("epoch")
    return {
        "checkpoint": {
            "path": checkpoint_file,
            "model": model_name,
            "dataset": dataset,
            # RecBole's trainer stores the 0-based index of the epoch whose weights it saved
            "epoch": epoch + 1 if isinstance(epoch, int) and epoch >= 0 else None,
            "best_valid_score": checkpoint.get("best_valid_score"),
        },
        "state": state,
        "results_name": results_name,
        "configs": configs,
        "rows": rows,
        "mode": "steps" if variants is None else "variants",
        "settings": {key: config[key] for key in settings_keys if key in config},
    }


# ============================================================================ evaluation
def user_subset(eval_data, config, k):
    """A loader of ``eval_data``'s class over ``k`` of the split's users, and what it holds.

    The users are a uniform sample without replacement (``torch.randperm`` from a generator seeded
    with the configuration's ``seed``) of the split's distinct users in id order, so the subset
    does not depend on the loader's order (the trimmed loader sorts users by history length:
    its first rows are the shortest histories). Every row of a chosen user is kept.
    """
    import torch

    dataset = eval_data._dataset
    uid_field = dataset.uid_field
    uids = dataset.inter_feat[uid_field]
    users = torch.unique(uids)  # sorted
    if k > len(users):
        raise UsageError(f"--users {k}: the split has only {len(users)} users")
    generator = torch.Generator().manual_seed(int(config["seed"]))
    chosen = users[torch.randperm(len(users), generator=generator)[:k]].sort().values
    subset = dataset.copy(dataset.inter_feat[torch.isin(uids, chosen)])
    loader = type(eval_data)(config, subset, eval_data._sampler, shuffle=False)
    if hasattr(eval_data, "train_history_length"):  # what data_preparation adds to the loader
        loader.train_history_length = eval_data.train_history_length
    tokens = dataset.id2token(uid_field, chosen.numpy())
    info = {"evaluated": k, "of": len(users), "seed": int(config["seed"]), "user_tokens": [str(t) for t in tokens]}
    return loader, info


def count_ranked_users(trainer):
    """Record in ``trainer.ranked_users`` how many users each evaluation's metrics saw: the rows
    of the top-k structure the collector hands to the evaluator (None without one). One entry per
    ``trainer.evaluate`` call: option ``sparse_users`` (and a cross-domain dataset) call the
    evaluator again on subsets of those rows, so an entry is the largest count of its call."""
    trainer.ranked_users = []
    evaluate, evaluate_rows = trainer.evaluate, trainer.evaluator.evaluate

    def counted_evaluation(*args, **kwargs):
        trainer.ranked_users.append(None)
        return evaluate(*args, **kwargs)

    def counted_rows(struct):
        if "rec.topk" in struct:
            rows, seen = len(struct.get("rec.topk")), trainer.ranked_users[-1]
            trainer.ranked_users[-1] = rows if seen is None else max(seen, rows)
        return evaluate_rows(struct)

    trainer.evaluate, trainer.evaluator.evaluate = counted_evaluation, counted_rows


def evaluate_all(plan, split, repeats, users=None, log=print):
    """Evaluate the checkpoint's weights once per row per round; return (warm-up record, rows, users).

    ``users``: evaluate only that many users of the split (``user_subset``); ``users`` returned
    is then what ``user_subset`` says about them, otherwise ``None``.
    """
    from recbole.utils import init_seed

    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    configs, labels = plan["configs"], [row["label"] for row in plan["rows"]]
    # how the log names a row
    shown = [("S=" if plan["mode"] == "steps" else "") + label for label in labels]
    first = configs[0]
    init_seed(first["seed"], first["reproducibility"])
    dataset = create_dataset(first)
    train_data, valid_data, test_data = data_preparation(first, dataset)
    eval_data = test_data if split == "test" else valid_data
    subset = None
    if users is not None:
        eval_data, subset = user_subset(eval_data, first, users)
        log(f"evaluating {subset['evaluated']} of the {subset['of']} users of the {split} split (seed {subset['seed']})")
    trainers = []
    for config, row in zip(configs, plan["rows"]):
        model = build_model(config, train_data)
        try:
            model.load_state_dict(plan["state"]["state_dict"])
        except RuntimeError as exc:  # a variant that changes the model's shapes
            raise UsageError(f"{row['where']}: the checkpoint's weights do not fit this configuration: {exc}") from None
        model.load_other_parameter(plan["state"]["other_parameter"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        # as Trainer.fit does before any evaluation (metrics that need the training data)
        trainer.eval_collector.data_collect(train_data)
        count_ranked_users(trainer)
        trainers.append(trainer)

    def evaluate(trainer):
        result = trainer.evaluate(eval_data, load_best_model=False, show_progress=False)
        return {key: float(value) for key, value in result.items()}, trainer.eval_seconds[-1], trainer.ranked_users[-1]

    if plan["mode"] == "steps":
        steps = [config[STEPS_OPTION] for config in configs]
        warm = steps.index(min(steps))
    else:  # no order of cost is known: the last variant (put the cheapest last)
        warm = len(configs) - 1
    _, warmup_seconds, _ = evaluate(trainers[warm])
    log(f"warm-up evaluation at {shown[warm]}: {warmup_seconds:.2f} s")
    runs = [[] for _ in configs]
    for round_index in range(repeats):
        for index, trainer in enumerate(trainers):
            metrics, seconds, evaluated = evaluate(trainer)
            runs[index].append((metrics, seconds, evaluated))
            per_user = f", {1000 * seconds / evaluated:.2f} ms per user ({evaluated} users)" if evaluated else ""
            log(f"[round {round_index + 1}/{repeats}] {shown[index]}: {REFERENCE_METRIC} {metrics.get(REFERENCE_METRIC, float('nan')):.4f}, {seconds:.2f} s{per_user}")
    rows = []
    for index, done in enumerate(runs):
        seconds = [s for _, s, _ in done]
        evaluated = done[0][2]
        row = {key: value for key, value in plan["rows"][index].items() if key != "where"}
        row.update({
            "metrics": done[0][0],
            # the generator is seeded at every scoring call, so repeats must agree
            "metrics_identical_across_repeats": all(m == done[0][0] for m, _, _ in done),
            "seconds_each": seconds,
            "seconds": statistics.median(seconds),
            "users_evaluated": evaluated,
            "seconds_per_user": statistics.median(seconds) / evaluated if evaluated else None,
        })
        rows.append(row)
    add_comparisons(rows)
    return {"label": labels[warm], "seconds": warmup_seconds, **({"steps": steps[warm]} if plan["mode"] == "steps" else {})}, rows, subset


def add_comparisons(rows):
    """Seconds and NDCG@10 of every row relative to the first row's."""
    reference = rows[0]
    ref_seconds, ref_metric = reference["seconds"], reference["metrics"].get(REFERENCE_METRIC)
    for row in rows:
        row["seconds_ratio"] = row["seconds"] / ref_seconds if ref_seconds else None
        value = row["metrics"].get(REFERENCE_METRIC)
        row["relative_" + REFERENCE_METRIC] = (value - ref_metric) / ref_metric if value is not None and ref_metric else None


# ============================================================================ section
def percent(relative):
    if relative is None:
        return "–"
    text = f"{100 * relative:+.1f}%"
    return text.replace("-", MINUS)


def shown_path(path):
    """``path`` relative to the repository when it lies inside it."""
    inside = os.path.commonpath([path, bench.REPO]) == bench.REPO
    return os.path.relpath(path, bench.REPO) if inside else path


def render_section(state):
    """Markdown of the section, without its marker comments."""
    rows, split, checkpoint, settings = state["rows"], state["split"], state["checkpoint"], state["settings"]
    machine, versions = state["machine"], state["machine"]["versions"]
    variants = state.get("mode") == "variants"
    # how a row is named in the headers and the text
    reference = f"`{bench.cell(rows[0]['label'])}`" if variants else f"S={rows[0]['steps']}"
    users = state.get("users")
    where = "the repository root" if state["cwd"] == bench.REPO else f"`{state['cwd']}`"
    epoch = f"weights of epoch {checkpoint['epoch']}" if checkpoint["epoch"] is not None else "epoch not recorded"
    best = checkpoint["best_valid_score"]
    yaml_file = bench.dataset_yaml(checkpoint["dataset"])
    protocol = f"the protocol of `{yaml_file}`" if yaml_file else "no dataset YAML in this plugin, so RecBole's defaults and the checkpoint's config"
    git = machine.get("git")
    git_text = "unknown commit" if not git else f"commit {git['commit']}" + (" with uncommitted changes" if git["uncommitted_changes"] else "")
    hidden = settings.get("hidden_size")
    cpu_hidden = bench.CPU_PROTOCOL["hidden_size"]
    hidden_text = (
        f"hidden_size={hidden} in the checkpoint's config, the project's CPU benchmark protocol"
        if hidden == cpu_hidden else
        f"hidden_size={hidden} in the checkpoint's config, not the project's CPU benchmark protocol (hidden_size={cpu_hidden})"
    )
    lines = [
        f"## {state['section']}", "",
        f"Command (run from {where}):", "", "    " + state["command"], "",
        f"- Checkpoint: `{shown_path(checkpoint['path'])}`: {checkpoint['model']} on `{checkpoint['dataset']}`, {epoch} "
        "(the trainer rewrites its checkpoint at every new best valid score)"
        + (f", best valid score {best:.4f}" if isinstance(best, (int, float)) else "") + ".",
        "- Its settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ("; each row's variant (KEY=VALUE, as RecBole converts it) is set over them in the model's configuration "
           "and passes the model's option check." if variants else f"; S = {STEPS_OPTION}, set in the model's configuration for each row."),
    ]
    if users:
        lines.append(
            f"- **Users: metrics and seconds on {users['evaluated']} of the {users['of']} users of the {split} split**, "
            "not full-split numbers: a uniform sample without replacement (torch.randperm seeded with the checkpoint's "
            f"seed {users['seed']}, over the users in id order), the same users for every row; their tokens are in the JSON."
        )
    if variants:
        evaluation = (
            "; the model's evaluation noise from its own generator, seeded alike at every scoring call (batch), "
            "the same seed for every row unless a variant sets it."
        )
        timing = "model inference for every user, scoring every item, top-k, metrics"
        per = "row"
        warmup = f"the last variant, `{bench.cell(state['warmup']['label'])}`"
    else:
        evaluation = "; one generated sample per user, its noise from the model's seeded evaluation generator, the same seed for every S."
        timing = "history encoder, the S sampling steps, scoring every item, top-k, metrics; only the sampling shrinks with S"
        per = "S"
        warmup = f"S={state['warmup']['steps']}"
    lines += [
        f"- Evaluation: the {split} split ({protocol}), full ranking over all items, through the project's Trainer "
        f"(the path of training and `benchmarks/run.py`){evaluation} Metrics with "
        f"metric_decimal_place={METRIC_DECIMALS}, shown to 4 places; the relative column uses the unrounded values.",
        f"- Timing: eval seconds = wall seconds of one whole evaluation ({timing}), median of {state['repeats']} run(s) per {per}, "
        f"rounds over every {per} in turn after one untimed warm-up evaluation at {warmup}"
        + (", on the same users; ms per user = eval seconds / users evaluated" if users else "")
        + f"; torch threads {state['torch_threads']}, device {state['device']}.",
        f"- CPU protocol: {hidden_text}.",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['ram_gib']} GiB RAM; {machine['os']}; Python {machine['python']}, torch {versions['torch']}, "
        f"recbole {versions['recbole']}, numpy {versions['numpy']}, pandas {versions['pandas']}; {git_text}.",
        f"- Date: {state['started']} to {state['finished']}; load average (1 min) {state['load_start']} at start, "
        f"{state['load_end']} at end (other jobs on the machine slow every timing).",
    ]
    if not all(row["metrics_identical_across_repeats"] for row in rows):
        lines.append(f"- **The metrics differed between repeats of one {'row' if variants else 'S'}** (the table shows the first run; the JSON has every run).")
    lines.append("")
    header = ["variant" if variants else "S", *[f"{split} {bench.metric_title(k)}" for k in TABLE_METRICS], "eval seconds",
              f"× {reference} seconds", f"{bench.metric_title(REFERENCE_METRIC)} vs {reference}"]
    if users:
        header.append("ms per user")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:"] * len(header)) + "|")
    for index, row in enumerate(rows):
        cells = [f"`{bench.cell(row['label'])}`" if variants else str(row["steps"])]
        cells += [bench.fmt(row["metrics"].get(k), 4) for k in TABLE_METRICS]
        cells += [bench.fmt_seconds(row["seconds"]), bench.fmt(row["seconds_ratio"], 2)]
        cells.append("reference" if index == 0 else percent(row["relative_" + REFERENCE_METRIC]))
        if users:
            cells.append(bench.fmt(1000 * row["seconds_per_user"], 2) if row["seconds_per_user"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def write_section(state, results_dir):
    """Write the section into ``<name>.md`` and the raw numbers into ``<name>-<section>.json``."""
    md_path = os.path.join(results_dir, f"{state['results_name']}.md")
    json_path = os.path.join(results_dir, f"{state['results_name']}-{state['section']}.json")
    body = render_section(state)
    os.makedirs(results_dir, exist_ok=True)
    with bench.locked(results_dir):
        bench.atomic_write(json_path, json.dumps(bench.repo_relative(state), indent=1, default=str) + "\n")
        text = bench.read_proc(md_path) if os.path.exists(md_path) else bench.FILE_HEADER.format(dataset=state["results_name"])
        bench.atomic_write(md_path, bench.replace_section(text, state["section"], body))
    return md_path, json_path


# ============================================================================ main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    results_dir = os.path.abspath(args.results_dir)
    try:
        plan = resolve(args)
        bench.check_section_writable(os.path.join(results_dir, f"{plan['results_name']}.md"), args.section)  # fail before the evaluations
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from recbole_diffusion.errors import RecBoleDiffusionError

    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = os.path.abspath(args.work_dir or os.path.join(bench.REPO, "benchmarks", "logs", f"{plan['results_name']}-{args.section}"))
    os.makedirs(work_dir, exist_ok=True)
    cwd = os.getcwd()
    state = {
        "section": args.section,
        "results_name": plan["results_name"],
        "command": bench.display_command(argv, __file__),
        "cwd": cwd,
        "checkpoint": plan["checkpoint"],
        "settings": plan["settings"],
        "split": args.split,
        "mode": plan["mode"],
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "device": str(plan["configs"][0]["device"]),
        "machine": bench.machine_info(),
        "cpu_protocol": bench.CPU_PROTOCOL,
        "started": bench.now_utc(),
        "load_start": bench.load_average(),
    }
    shown = f"S = {', '.join(map(str, args.steps))}" if args.steps is not None else f"variants {', '.join(args.variants)}"
    print(f"evaluating {plan['checkpoint']['path']} at {shown}; logs in {work_dir}", flush=True)
    # RecBole's trainer writes log/ and log_tensorboard/ into the current folder
    os.chdir(work_dir)
    try:
        state["warmup"], state["rows"], state["users"] = evaluate_all(
            plan, args.split, args.repeats, users=args.users, log=lambda text: print(text, flush=True))
    except (RecBoleDiffusionError, UsageError) as exc:  # the data moved or changed since training; --users too many
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        os.chdir(cwd)
    state["finished"] = bench.now_utc()
    state["load_end"] = bench.load_average()
    md_path, json_path = write_section(state, results_dir)
    print(f"wrote section {args.section!r} of {md_path} and {json_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
