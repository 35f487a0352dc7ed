"""What a cross-domain checkpoint gets from each domain's history, per domain and user group.

    python benchmarks/cross_domain_ablation.py --checkpoint=PATH.pth [--data_path=DATA] [--split=test]

A diagnostic for models that read each domain's history separately (i2VAE): it evaluates
the checkpoint on the split of its dataset three times, with RecBole's full ranking over the target
domain's items and the project's cross-domain groups, and prints HR@10 / NDCG@10 per (domain,
group) for each input:

- ``both domains``: the samples as the model was trained on them;
- ``target domain only``: the other domain's history removed from every sample (empty list,
  length 0), so whatever the model takes from the other domain is gone;
- ``other domain only``: the target domain's history removed, so every user looks cold-start
  to the model (i2VAE then routes them all through its single-domain inference network).

Groups stay those of the real sample (``domain_history_length``): a long-tailed user in the
``other domain only`` rows is still reported as long-tailed. The split is rebuilt from the
configuration stored in the checkpoint (``--data_path`` overrides where the data lies); nothing
is trained, the weights are the checkpoint's. Writes nothing. Exit code 2 with ``error: ...``
for a missing or unreadable checkpoint, or one not trained on a two-domain dataset.
"""

import argparse
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a script (python benchmarks/cross_domain_ablation.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402

INPUTS = ("both domains", "target domain only", "other domain only")
METRICS = ("hit@10", "ndcg@10")


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/cross_domain_ablation.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by this plugin's Trainer")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--split", choices=("valid", "test"), default="test", help="which split to evaluate (default: test)")
    return parser


def without_history(interaction, fields, drop_other):
    """A copy of ``interaction`` whose rows lose the other domain's history (``drop_other``) or
    their target domain's; ``fields``: ``domain_list_fields``. The original is left as it is (the
    evaluation collector reads its groups from it)."""
    import torch
    from recbole.data.interaction import Interaction

    from recbole_diffusion.data.cross_domain import TARGET_DOMAIN

    target = interaction[TARGET_DOMAIN]
    data = dict(interaction.interaction)
    for domain, (seq_field, len_field) in enumerate(fields):
        rows = target != domain if drop_other else target == domain
        data[seq_field] = torch.where(rows.unsqueeze(1), torch.zeros_like(interaction[seq_field]), interaction[seq_field])
        data[len_field] = torch.where(rows, torch.zeros_like(interaction[len_field]), interaction[len_field])
    return Interaction(data)


def evaluate(args):
    """{input: {(domain, group): (users, {metric: value})}} for the three inputs of the docstring."""
    import torch
    from recbole.utils import init_seed

    from recbole_diffusion.data.cross_domain import domain_list_fields
    from recbole_diffusion.evaluation import CROSS_DOMAIN_GROUPS, cross_domain_group_key
    from recbole_diffusion.quick_start import restore_model
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    checkpoint, stored = bench.checkpoint_or_exit(args.checkpoint)
    model_name, dataset_name = stored["model"], stored["dataset"]
    # the checkpoint's own folder as checkpoint_dir: RecBole's Trainer creates that folder, which exists
    checkpoint_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    config = bench.checkpoint_config(stored, args.data_path, gpu_id="", checkpoint_dir=checkpoint_dir)  # on the CPU: RecBole picks the device by gpu_id
    if not config["domain_field"]:
        bench.fail(f"--checkpoint {args.checkpoint}: {model_name} on {dataset_name} has no domain_field; this diagnostic "
                   "needs a model trained on a two-domain dataset (e.g. cloth-sport)")
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = restore_model(config, train, checkpoint)
    eval_data = valid if args.split == "valid" else test
    names = dataset.domain_display_names
    fields = domain_list_fields(config)
    predict = model.full_sort_predict
    results = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # RecBole's Trainer opens a TensorBoard folder in the working directory
        try:
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
            for name in INPUTS:
                if name == "both domains":
                    model.full_sort_predict = predict
                else:
                    drop_other = name == "target domain only"
                    model.full_sort_predict = lambda inter, drop_other=drop_other: predict(without_history(inter, fields, drop_other))
                with torch.no_grad():
                    result = trainer.evaluate(eval_data, load_best_model=False)
                results[name] = {
                    (domain, group): (
                        result.get(cross_domain_group_key("users", domain, group), 0),
                        {m: result.get(cross_domain_group_key(m, domain, group)) for m in METRICS},
                    )
                    for domain in names for group in CROSS_DOMAIN_GROUPS
                }
            trainer.tensorboard.close()
        finally:
            model.full_sort_predict = predict
            os.chdir(cwd)
    return model_name, dataset_name, results


def main(argv=None):
    args = build_parser().parse_args(argv)
    model_name, dataset_name, results = evaluate(args)
    print(f"checkpoint {args.checkpoint}: {model_name} on {dataset_name}, {args.split} split, full ranking over the target domain's items")
    print("| domain, group | users | " + " | ".join(f"{m} ({name})" for m in ("HR@10", "NDCG@10") for name in INPUTS) + " |")
    print("|---|---:|" + "---:|" * (len(METRICS) * len(INPUTS)))
    for key, (users, _) in results[INPUTS[0]].items():
        cells = []
        for metric in METRICS:
            for name in INPUTS:
                value = results[name][key][1][metric]
                cells.append("–" if value is None else f"{value:.4f}")
        print(f"| {key[0]}, {key[1]} | {users} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
