"""DiffRec's gap to SASRec taken apart: DiffRec with one component changed at a time, at the
leaderboard's budget and protocol, each row against DiffRec's default and against SASRec of the
same seeds (paired bootstrap over seeds and test users, as the leaderboard's page).

    python benchmarks/diffrec_ablation.py --data_path=DATA --variants last_position --seeds 2020
    python benchmarks/diffrec_ablation.py --render          # the table from the stored runs only

Each variant is a leaderboard run of ``DiffRec`` with the variant's settings, stored (resumably,
per seed) under ``benchmarks/results/diffrec-ablation/<variant>/``; the references are the
leaderboard's own stored ``DiffRec`` and ``SASRec`` runs of amazon-beauty. The table goes to
``benchmarks/results/diffrec-ablation.md``.
"""

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import leaderboard as board  # noqa: E402
from benchmarks import worker  # noqa: E402

DATASET = "amazon-beauty"
RESULTS = os.path.join(REPO, "benchmarks", "results")
ABLATION_DIR = os.path.join(RESULTS, "diffrec-ablation")
PAGE = os.path.join(RESULTS, "diffrec-ablation.md")
# (name, DiffRec settings, what it changes against the default)
VARIANTS = (
    ("dropout0.5", "hidden_dropout_prob=0.5,attn_dropout_prob=0.5", "dropout 0.5, SASRec's (default 0.3, the paper's)"),
    ("last_position", "readout=last_position", "SASRec's readout: the last item's output, no slot, no diffusion"),
    ("tied_nobias", "tie_output_weights=True,output_bias=False", "output tied to the item table, no bias (SASRec's)"),
    ("constant_slot", "readout=constant_slot", "a learned constant in the slot, no noise: diffusion off"),
    ("active_mse1", "embedding_init_std=1.0,input_layer_norm=False,step_embedding_scale=1.0,mse_loss_weight=1.0",
     "the active-diffusion regime: N(0, 1) embeddings, Eq. 14's bare sum, unit step embedding, L_n weight 1"),
    ("active_mse0.1", "embedding_init_std=1.0,input_layer_norm=False,step_embedding_scale=1.0,mse_loss_weight=0.1",
     "the same, L_n weight 0.1"),
    ("active_mse0.01", "embedding_init_std=1.0,input_layer_norm=False,step_embedding_scale=1.0,mse_loss_weight=0.01",
     "the same, L_n weight 0.01"),
)


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/diffrec_ablation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", help="folder holding amazon-beauty/amazon-beauty.inter")
    parser.add_argument("--variants", nargs="+", choices=[v[0] for v in VARIANTS], default=[], help="variants to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020], help="seeds (default 2020: the screen)")
    parser.add_argument("--render", action="store_true", help="only write the table from the stored runs")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    return parser


def run_variant(name, settings, seeds, data_path):
    """The leaderboard's command for DiffRec with ``settings``, stored under the variant's folder."""
    command = [sys.executable, os.path.join(REPO, "benchmarks", "leaderboard.py"), f"--dataset={DATASET}",
               f"--data_path={data_path}", "--models", "DiffRec", "--model_args", f"DiffRec:{settings}",
               "--results_dir", os.path.join(ABLATION_DIR, name), "--seeds", *map(str, seeds),
               # the best checkpoint stays in the work dir, for benchmarks/step_loss.py and sampling_steps.py
               "--keep_checkpoints"]
    return subprocess.run(command, cwd=REPO).returncode


def compare(rows, reference, resamples):
    seeds = sorted(set(rows) & set(reference))
    if not seeds:
        return None
    differences = [board.paired_differences(rows[s], reference[s]) for s in seeds]
    return board.paired_bootstrap(differences, resamples=resamples)


def interval(result):
    if result is None:
        return "–"
    mean, low, high = result
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def test_rows(stored):
    return worker.decode_rows(stored["test_rows"])


def render(resamples):
    main_runs = board.stored_runs(RESULTS, DATASET)
    reference = {label: {seed: test_rows(run) for (lab, seed), run in main_runs.items() if lab == label and run.get("status") == "ok"}
                 for label in ("DiffRec", "SASRec")}
    lines = [
        "# DiffRec ablation (amazon-beauty)", "",
        "DiffRec with one component changed, at the leaderboard's budget (hidden 64, up to 50 epochs, early stopping after 5 "
        "evaluations without a better valid NDCG@10, the test of the best-valid checkpoint, one torch thread). "
        "Δ: paired difference of per-user test NDCG@10 against the leaderboard's DiffRec (its default) and SASRec of the same "
        "seeds, with a 95% bootstrap interval over seeds and test users. Written by `python benchmarks/diffrec_ablation.py "
        "--render`; each variant runs with `--data_path=DATA --variants NAME --seeds S`.", "",
        "| variant | what changes | seeds | valid NDCG@10 | test NDCG@10 | Δ vs DiffRec | Δ vs SASRec | best epoch | s/epoch |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]

    def row(name, what, runs):
        ok = {seed: run for seed, run in runs.items() if run.get("status") == "ok"}
        if not ok:
            return f"| `{name}` | {what} | 0 | – | – | – | – | – | – |"
        rows = {seed: test_rows(run) for seed, run in ok.items()}
        valid = board.fmt_mean_std([run["best_valid_result"]["ndcg@10"] for run in ok.values()])
        test = board.fmt_mean_std([run["test_result"]["ndcg@10"] for run in ok.values()])
        epochs = board.fmt_mean_std([run["best_epoch"] for run in ok.values()], digits=1)
        seconds = sum(sum(run["epoch_seconds"]) / len(run["epoch_seconds"]) for run in ok.values()) / len(ok)
        return (f"| `{name}` | {what} | {','.join(map(str, sorted(ok)))} | {valid} | {test} | "
                f"{interval(compare(rows, reference['DiffRec'], resamples))} | {interval(compare(rows, reference['SASRec'], resamples))} | "
                f"{epochs} | {seconds:.1f} |")

    lines.append(row("default", "DiffRec's YAML (the leaderboard's run)", {s: r for (lab, s), r in main_runs.items() if lab == "DiffRec"}))
    for name, settings, what in VARIANTS:
        runs = {seed: run for (lab, seed), run in board.stored_runs(os.path.join(ABLATION_DIR, name), DATASET).items() if lab == "DiffRec"}
        lines.append(row(name, f"{what} (`{settings}`)", runs))
    lines.append(row("SASRec", "the leaderboard's SASRec", {s: r for (lab, s), r in main_runs.items() if lab == "SASRec"}))
    lines += ["", "A variant with no seed has not run yet. Times of runs that shared the machine's two cores are slower: "
              "read them as rough."]
    with open(PAGE, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.render:
        if not args.variants or not args.data_path:
            raise SystemExit("error: give --data_path and --variants (or --render)")
        settings = {name: value for name, value, _ in VARIANTS}
        for name in args.variants:
            if run_variant(name, settings[name], args.seeds, args.data_path) != 0:
                print(f"variant {name}: the leaderboard run failed (see its output above)", file=sys.stderr)
    render(args.bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
