"""Item-embedding norms of a trained checkpoint against how often each item is a training target.

    python benchmarks/embedding_norms.py --checkpoint=PATH.pth [--data_path=DATA]

A diagnostic for models scored by an inner product with their item table (DreamRec's oracle, every
SASRec-style model): it prints, per bucket of training frequency (the number of times the item
occurs in RecBole's training split of the checkpoint's dataset), the number of items, their mean
and median embedding norm, and the share of valid and test targets that fall in the bucket, then
Spearman's correlation between frequency and norm over all real items. A model whose loss shrinks
the embeddings of the items it sees most (DreamRec's x0-MSE) shows a negative correlation,
and an inner-product ranking then pushes the most likely targets down.

Reads the checkpoint with the project's weights_only loader and rebuilds the dataset split from the
configuration stored in it (``--data_path`` overrides where the data lies). Writes nothing.
Exit code 2 with ``error: ...`` for a missing or unreadable checkpoint, or one without an
``item_embedding.weight``.
"""

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script (python benchmarks/embedding_norms.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402

BUCKETS = ((0, 0), (1, 4), (5, 9), (10, 29), (30, 99), (100, None))


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/embedding_norms.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by this plugin's Trainer")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    return parser


def load(args):
    """(stored configuration, item-embedding weight) of ``--checkpoint``; exit code 2 if unreadable."""
    checkpoint, stored = bench.checkpoint_or_exit(args.checkpoint)
    if "item_embedding.weight" not in checkpoint["state_dict"]:
        bench.fail(f"--checkpoint {args.checkpoint}: no item_embedding.weight in its state_dict")
    return stored, checkpoint["state_dict"]["item_embedding.weight"]


def spearman(x, y):
    import torch

    def ranks(values):
        order = values.argsort()
        rank = torch.empty_like(values, dtype=torch.float64)
        rank[order] = torch.arange(len(values), dtype=torch.float64)
        # average the ranks of ties, so a frequency shared by many items counts once
        unique, inverse = torch.unique(values, return_inverse=True)
        sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, rank)
        counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(rank))
        return (sums / counts)[inverse]

    rx, ry = ranks(x.double()), ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def main(argv=None):
    args = build_parser().parse_args(argv)
    stored, weight = load(args)
    import torch
    from recbole_diffusion.utils import create_dataset

    config = bench.checkpoint_config(stored, args.data_path)
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    item = config["ITEM_ID_FIELD"]
    n_items = weight.shape[0]
    frequency = torch.bincount(train.inter_feat[item], minlength=n_items)[1:]  # row 0 is padding
    norms = weight.float().norm(dim=1)[1:]
    targets = {name: torch.bincount(part.inter_feat[item], minlength=n_items)[1:] for name, part in (("valid", valid), ("test", test))}
    print(f"checkpoint {args.checkpoint}: {stored['model']} on {stored['dataset']}, {n_items - 1} items, hidden {weight.shape[1]}")
    print("| training frequency | items | mean norm | median norm | share of valid targets | share of test targets |")
    print("|---|---:|---:|---:|---:|---:|")
    for low, high in BUCKETS:
        selected = (frequency >= low) & (frequency <= high if high is not None else torch.ones_like(frequency, dtype=torch.bool))
        if not selected.any():
            continue
        label = f"{low}" if low == high else (f"{low}-{high}" if high is not None else f">= {low}")
        shares = [float(t[selected].sum()) / max(1, float(t.sum())) for t in targets.values()]
        print(
            f"| {label} | {int(selected.sum())} | {norms[selected].mean():.3f} | {norms[selected].median():.3f} | "
            f"{shares[0]:.3f} | {shares[1]:.3f} |"
        )
    print(f"Spearman correlation of training frequency and embedding norm: {spearman(frequency, norms):+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
