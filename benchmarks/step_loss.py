"""What a trained DiffRec checkpoint gets out of the noised target slot, step by step.

    python benchmarks/step_loss.py --checkpoint=PATH.pth [--steps 1 100 500 1000] [--data_path=DATA]

A diagnostic for DiffRec (Du et al. 2023). Training puts the noised target
h^n = sqrt(ᾱ_n) E(v) + sqrt(1 - ᾱ_n) ε in the slot after the clean history, and both losses read
f_θ(h^n, n) there; inference (Algorithm 3) puts pure noise in the slot. If the slot still shows
the target at most training steps, L_Rec can be met by reading the target back from the slot
instead of predicting it from the history, and that skill is useless from pure noise.

For every validation user of the checkpoint's split (the target: the valid item; the history:
the items before it) and every step n of ``--steps`` (1-based, 1..N), the script noises the
target's embedding at step n with seeded noise, runs the checkpoint's denoiser and prints one row:
ᾱ_n; the slot's signal-to-noise ratio sqrt(ᾱ_n)·mean‖E(v)‖ / (sqrt(1 - ᾱ_n)·sqrt(d)); the mean
L_Rec (cross-entropy of softmax(W f + b) against the target) and L_n (‖f - E(v)‖²); and HR@10 /
NDCG@10 of the target ranked by softmax(W f + b) over all items (history items are not masked,
unlike the Trainer's evaluation, so these are not comparable with the benchmark tables). A last
row, "pure noise", is one draw of the model's own inference (the slot holds ε, step N).

Reads the checkpoint with the project's weights_only loader and rebuilds the split from the
configuration stored in it (``--data_path`` overrides where the data lies). Writes nothing.
Exit code 2 with ``error: ...`` for a missing or unreadable checkpoint, a checkpoint of another
model than DiffRec, or a step outside 1..N.
"""

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script (python benchmarks/step_loss.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402

NOISE_SEED = 2023  # noise of the slot, the same for every step and checkpoint


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/step_loss.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a DiffRec checkpoint written by this plugin's Trainer")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 100, 250, 500, 750, 1000], help="1-based diffusion steps n")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    return parser


def load(args):
    """(stored configuration, state dict) of ``--checkpoint``, a DiffRec checkpoint; exit code 2 otherwise."""
    checkpoint, stored = bench.checkpoint_or_exit(args.checkpoint)
    if stored["model"] != "DiffRec":
        bench.fail(f"--checkpoint {args.checkpoint}: a {stored['model']} checkpoint; this diagnostic reads DiffRec's noised slot")
    return stored, checkpoint["state_dict"]


def rank_metrics(logits, target):
    """HR@10 and NDCG@10 sums of ``target`` ranked by ``logits`` over items 1.. (0 is padding)."""
    import torch

    logits = logits.clone()
    logits[:, 0] = -torch.inf
    rank = (logits > logits.gather(1, target.unsqueeze(1))).sum(1)  # 0-based
    hit = rank < 10
    return float(hit.sum()), float((hit.float() / torch.log2(rank.float() + 2)).sum())


def main(argv=None):
    args = build_parser().parse_args(argv)
    stored, state_dict = load(args)
    import torch
    import torch.nn.functional as F
    from recbole.utils import init_seed

    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = bench.checkpoint_config(stored, args.data_path)
    bad = [n for n in args.steps if not 1 <= n <= config["n_diffusion_steps"]]
    if bad:
        bench.fail(f"--steps: {', '.join(map(str, bad))} outside 1..{config['n_diffusion_steps']} (the checkpoint's n_diffusion_steps)")
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    model = build_model(config, train_data)
    model.load_state_dict(state_dict)
    model.eval()

    rows = [(str(n), n - 1) for n in args.steps] + [("pure noise", None)]
    totals = {label: [0.0, 0.0, 0.0, 0.0] for label, _ in rows}  # CE, L_n, hits, ndcg
    users = 0
    norm_sum = 0.0
    generator = torch.Generator().manual_seed(NOISE_SEED)
    with torch.no_grad():
        for batch in valid_data:
            interaction = batch[0].to(config["device"])  # the model is on config["device"]; the loader's batches on the CPU
            item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
            target = interaction[model.POS_ITEM_ID]
            history, slot = model._prefix_inputs(item_seq, item_seq_len)
            clean = model.item_embedding(target)
            noise = torch.randn(clean.shape, generator=generator).to(clean.device)  # the same draws on any device
            users += len(target)
            norm_sum += float(clean.norm(dim=1).sum())
            for label, step in rows:
                if step is None:  # Algorithm 3 with one draw: the slot is ε at step N
                    steps = torch.full_like(target, model.n_diffusion_steps - 1)
                    x_slot = noise
                else:
                    steps = torch.full_like(target, step)
                    x_slot = model.diffusion.q_sample(clean, steps, noise=noise)
                predicted = model.denoise_prefix(history, slot, x_slot, steps)
                logits = model.output_layer(predicted)
                hits, ndcg = rank_metrics(logits, target)
                row = totals[label]
                row[0] += float(F.cross_entropy(logits, target, reduction="sum"))
                row[1] += float((predicted - clean).pow(2).sum())
                row[2] += hits
                row[3] += ndcg

    mean_norm = norm_sum / users
    dim = model.hidden_size
    keys = ("embedding_init_std", "mse_loss_weight", "rec_loss_weight", "use_step_embedding", "use_position_embedding",
            "tie_output_weights", "noise_schedule")
    settings = ", ".join(f"{key}={config[key]}" for key in keys)
    print(f"checkpoint {args.checkpoint}: DiffRec on {stored['dataset']}, hidden {dim}, {settings}")
    print(f"{users} validation users; mean ‖E(v)‖ of their targets {mean_norm:.3f} (noise: sqrt(d) = {dim ** 0.5:.3f})")
    print("| step n | ᾱ_n | slot SNR | L_Rec | L_n | HR@10 | NDCG@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    alphas = model.diffusion.alphas_cumprod
    for label, step in rows:
        ce, mse, hits, ndcg = totals[label]
        if step is None:
            alpha_text, snr_text = "–", "0"
        else:
            alpha = float(alphas[step])
            alpha_text = f"{alpha:.4f}"
            snr_text = f"{alpha ** 0.5 * mean_norm / ((1.0 - alpha) ** 0.5 * dim ** 0.5):.3f}" if alpha < 1 else "inf"
        print(f"| {label} | {alpha_text} | {snr_text} | {ce / users:.3f} | {mse / users:.3f} | {hits / users:.4f} | {ndcg / users:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
