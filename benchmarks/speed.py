"""Where the time goes: every model's training epoch and full valid evaluation, measured one model
after another in one run, as ratios to SASRec of the same run.

    python benchmarks/speed.py --data_path=DATA
    python benchmarks/speed.py --data_path=DATA --models SASRec DiffRec    # a subset
    python benchmarks/speed.py --render                                    # the page from speed.json

Each model runs alone in its own worker process (``benchmarks/worker.py``'s measure mode), at the
leaderboard's settings (the CPU protocol, the model's YAML defaults, whole-sequence training for
RecBole's built-ins), with the same torch thread count: a few warm-up steps, then
``--train_steps`` timed training steps through the trainer's own loop (the epoch's time is their
mean times the epoch's batches), one full valid evaluation, the floating-point operations of one
step, and a short ``torch.profiler`` trace of training and of evaluation (the operators with the
most self time). Single-domain models run on amazon-beauty against SASRec; i2VAE runs on the
cloth-sport pair against the sum of SASRec on each domain. The page also gives SASRec's achieved
GFLOP/s against this core's measured matrix-product peak.

Results: ``benchmarks/results/speed.md`` (the page) and ``benchmarks/results/speed.json`` (the
records), with the machine and the commit.
"""

import argparse
import json
import os
import signal
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import common as bench  # noqa: E402
from benchmarks import leaderboard as board  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results")
SINGLE = "amazon-beauty"
CROSS = "cloth-sport"
# (label, model, settings, dataset, reference labels): the reference of a row is the sum of these
# labels' times; DreamRec@SASRec-table has its rounding term but not SASRec's table (an
# initialisation, which costs nothing per step)
ENTRIES = (
    ("SASRec", "SASRec", board.SEQUENCE_TRAINING, SINGLE, ("SASRec",)),
    ("GRU4Rec", "GRU4Rec", board.SEQUENCE_TRAINING, SINGLE, ("SASRec",)),
    ("BERT4Rec", "BERT4Rec", board.SEQUENCE_TRAINING, SINGLE, ("SASRec",)),
    ("DiffRec", "DiffRec", {}, SINGLE, ("SASRec",)),
    ("DreamRec", "DreamRec", {}, SINGLE, ("SASRec",)),
    ("DreamRec@SASRec-table", "DreamRec", {"rounding_loss_weight": "1.0"}, SINGLE, ("SASRec",)),
    ("ADARec", "ADARec", {}, SINGLE, ("SASRec",)),
    ("ADARecReleased", "ADARecReleased", {}, SINGLE, ("SASRec",)),
    ("AsarRec", "AsarRec", {}, SINGLE, ("SASRec",)),
    ("SASRec@cloth", "SASRec", board.SEQUENCE_TRAINING, "cloth-sport-cloth", ("SASRec@cloth",)),
    ("SASRec@sport", "SASRec", board.SEQUENCE_TRAINING, "cloth-sport-sport", ("SASRec@sport",)),
    ("i2VAE", "i2VAE", {}, CROSS, ("SASRec@cloth", "SASRec@sport")),
)
PLUGIN_MODELS = {"DiffRec", "DreamRec", "ADARec", "ADARecReleased", "AsarRec", "i2VAE"}
# the targets: a plugin model's epoch and evaluation against its reference's (i2VAE: against
# SASRec on both of its domains together, 3x per epoch)
EPOCH_TARGET, EVAL_TARGET, CROSS_EPOCH_TARGET = 1.5, 2.0, 3.0


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", help=f"folder holding {SINGLE}/ and the {CROSS} data")
    parser.add_argument("--render", action="store_true", help="measure nothing: rewrite speed.md from speed.json")
    parser.add_argument("--models", nargs="+", metavar="LABEL", choices=[e[0] for e in ENTRIES], help="a subset of the labels (default: all)")
    parser.add_argument("--train_steps", type=int, default=30, help="timed training steps per model (default 30)")
    parser.add_argument("--warmup_steps", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--profile_steps", type=int, default=3, help="training steps and evaluation batches profiled (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every model (default 1)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one model may take (default 1800)")
    parser.add_argument("--work_dir", help="where the workers run (default benchmarks/logs/speed)")
    parser.add_argument("--results_dir", default=RESULTS, help="where speed.md and speed.json go (default benchmarks/results)")
    return parser


def matmul_peak(threads, size=1024, repeats=20):
    """GFLOP/s of the fastest of ``repeats`` float32 ``size`` x ``size`` matrix products on
    ``threads`` torch threads: this core's practical peak for the operation transformers spend on."""
    torch.set_num_threads(threads)
    left, right = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(left, right)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(left, right)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def reference_time(records, labels, key):
    values = [records.get(label, {}).get(key) for label in labels]
    return sum(values) if values and all(v is not None for v in values) else None


def add_ratios(records):
    for record in records.values():
        if record.get("status") == "ok" and "flops_per_step" in record:
            record["flops_per_epoch"] = record["flops_per_step"] * record["train_batches"]
    for label, _, _, _, reference in ENTRIES:
        record = records.get(label)
        if not record or record.get("status") != "ok":
            continue
        for key, ratio in (("epoch_seconds_estimate", "epoch_ratio"), ("valid_eval_seconds", "eval_ratio"), ("flops_per_epoch", "flop_ratio")):
            ref = reference_time(records, reference, key) if key in record else None
            record[ratio] = record[key] / ref if ref else None
        if label in PLUGIN_MODELS:
            epoch_target = CROSS_EPOCH_TARGET if len(reference) > 1 else EPOCH_TARGET
            record["targets"] = {"epoch": epoch_target, "eval": EVAL_TARGET}
            record["meets_targets"] = (
                record["epoch_ratio"] is not None and record["eval_ratio"] is not None
                and record["epoch_ratio"] <= epoch_target and record["eval_ratio"] <= EVAL_TARGET
            )


# Why a model's time is what it is, where its target is not met: the work its method defines,
# which the profile and the counted work of the same row show (no speedup here changes a result)
WHY = {
    "DiffRec": {
        "eval": "the evaluation averages the item distributions of `n_sample_draws` (10) noise draws per user (Eq. 17): "
        "ten products with the item table and ten softmaxes over the items where SASRec has one of each. The history "
        "is encoded once for all draws (the two-stream encoder) and the draws are scored in cache-sized chunks of "
        "users; the products and softmaxes that remain (the profile's `addmm` and `_softmax`) are the method's. "
        "`n_sample_draws: 1` scores at SASRec's cost, with one draw instead of ten.",
        "epoch": "its counted work per epoch is {flop:.2f}x SASRec's (the full softmax over the items dominates "
        "both); the rest is element-wise: the two-stream encoder's second stream (the noised query at every "
        "position) and the optimizer's update of a second item-sized table (the untied output layer and its bias).",
    },
    "DreamRec": {
        "eval": "the evaluation is the paper's reverse chain: T = 500 steps per user, each with two denoiser products "
        "(with and without the guidance, Eq. 15) and one Gaussian draw (the profile's `addmm`, `normal_` and the "
        "element-wise steps of the posterior). The step's inputs are laid out once per batch; the 1,000 products "
        "and 500 draws per user remain. `n_sample_steps: S` (the strided sampler, beyond the paper) costs S/T of it.",
    },
    "DreamRec@SASRec-table": {
        "eval": "the same reverse chain as DreamRec's (see above).",
    },
    "AsarRec": {
        "epoch": "each step encodes two learned views of every sequence besides the sequence itself, with gradients "
        "(the contrastive and NDCG-preserving terms), runs the augmenter's own encoder, and for each view draws "
        "candidates and a soft NDCG over all items: its counted work per epoch is {flop:.2f}x SASRec's; the rest of "
        "its time is work the counter does not count, the greedy rounding of each view's transport matrix (a "
        "loop over proposals) and the Gumbel candidate draws over all items, once per view.",
    },
    "ADARec": {
        "epoch": "each step encodes the sequence twice through the same encoder (the clean input and its "
        "diffusion-augmented trajectory, pooled by the router) and runs the depth controller and the denoiser "
        "at every position: its counted work per epoch is {flop:.2f}x SASRec's.",
    },
    "ADARecReleased": {
        "epoch": "the released code trains two independent experts, each with its own item table, encoder and intent "
        "prototypes: its counted work per epoch is {flop:.2f}x SASRec's; the rest is table-sized work the flop counter "
        "does not count: each expert's item table takes a dense gradient from its lookup and from each of its two "
        "full-softmax losses (the clean and the noised batch), each zeroed over the whole table (the profile's "
        "`fill_`), and Adam updates two item tables (`sqrt`, `div`). Merging those into fewer table-sized operations "
        "would sum the gradients in another order: not the same numbers.",
    },
    "i2VAE": {
        "eval": "scoring a user encodes both domains' histories and the history with its pseudo-items (three "
        "encoders, where SASRec has one), and each batch masks the other domain's items out of the ranking "
        "(the profile's `index_put_` and `fill_`).",
        "epoch": "i2VAE trains one sample per target (its latents summarise a whole sequence, so it has no "
        "whole-sequence mode as SASRec's): every target re-encodes its history, with three encoders per sample "
        "(the target domain's history, the other domain's, and the target domain's with pseudo-items interleaved, "
        "twice as long); its counted work per epoch is {flop:.2f}x the two SASRecs' together, and the profile "
        "is that work (`mm`, dropout's `bernoulli_`).",
    },
}


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def render(state):
    records = state["records"]
    lines = [
        "# Speed: every model's epoch and evaluation against SASRec's, from one run",
        "",
        f"Written by `{state['command']}` on {state['finished']}: {state['machine']['cpu']}, "
        f"{state['threads']} torch thread(s), torch {state['machine']['versions']['torch']}, commit "
        f"{(state['machine']['git'] or {}).get('commit', 'unknown')}"
        + (" (with uncommitted changes)" if (state["machine"]["git"] or {}).get("uncommitted_changes") else "")
        + f"; load average {state['load_start']} at the start, {state['load_end']} at the end.",
        "",
        f"Each model alone in its own process, one after another, at the leaderboard's settings: {state['warmup_steps']} "
        f"warm-up steps, then {state['train_steps']} timed training steps through the trainer's loop (s/epoch = "
        "their mean × the epoch's batches), one full valid evaluation (every valid user ranked over all items), "
        "the floating-point operations of one step (forward and backward, torch's flop counter: matrix "
        f"products and attention) and a {state['profile_steps']}-step profile. Ratios: to SASRec of this run on "
        "amazon-beauty; i2VAE's to SASRec on cloth plus SASRec on sport. Targets for this plugin's models: "
        f"≤ {EPOCH_TARGET}x per epoch (i2VAE ≤ {CROSS_EPOCH_TARGET}x) and ≤ {EVAL_TARGET}x per evaluation.",
        "",
        *(["A load average above the thread count means other processes shared the machine: rows measured "
           "minutes apart then carry that noise, and a ratio can move by tens of percent from one run to the next.", ""]
          if max(state["load_start"] or 0, state["load_end"] or 0) > state["threads"] else []),
        "| model | dataset | batch | batches/epoch | s/step | s/epoch | x ref | valid eval s | x ref | setup s "
        "| peak RSS MiB | GFLOP/step | GFLOP/epoch x ref | GFLOP/s | targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, _, _, dataset, _ in ENTRIES:
        record = records.get(label)
        if record is None:
            continue
        if record.get("status") != "ok":
            lines.append(f"| {label} | {dataset} | failed: {bench.cell(record.get('error', ''))} |" + " |" * 13)
            continue
        gflop = record["flops_per_step"] / 1e9
        met = "" if "meets_targets" not in record else ("met" if record["meets_targets"] else "**not met**")
        lines.append(
            f"| {label} | {dataset} | {record['train_batch_size']} | {record['train_batches']} | {record['step_seconds']:.3f} "
            f"| {record['epoch_seconds_estimate']:.1f} | {fmt(record.get('epoch_ratio'), '.2f')} "
            f"| {record['valid_eval_seconds']:.1f} | {fmt(record.get('eval_ratio'), '.2f')} | {record['setup_seconds']:.1f} "
            f"| {record['peak_rss_mb']:.0f} | {gflop:.2f} | {fmt(record.get('flop_ratio'), '.2f')} "
            f"| {gflop / record['step_seconds']:.1f} | {met} |"
        )
    missed = []
    for label, _, _, _, _ in ENTRIES:
        record = records.get(label)
        if not record or record.get("status") != "ok" or record.get("meets_targets") is not False:
            continue
        targets = record["targets"]
        for part, ratio, target in (("epoch", record["epoch_ratio"], targets["epoch"]), ("eval", record["eval_ratio"], targets["eval"])):
            if ratio is not None and ratio > target:
                why = WHY.get(label, {}).get(part, "not examined yet.").format(flop=record.get("flop_ratio") or float("nan"))
                what = "epoch" if part == "epoch" else "evaluation"
                missed.append(f"- **{label}**, {what} {ratio:.2f}x (target {target}x): {why}")
    if missed:
        lines += ["", "**Where a target is not met, and why.**", "", *missed]
    sasrec = records.get("SASRec")
    if sasrec and sasrec.get("status") == "ok":
        achieved = sasrec["flops_per_step"] / 1e9 / sasrec["step_seconds"]
        lines += [
            "",
            f"**The reference against the hardware.** SASRec's training steps run at {achieved:.1f} GFLOP/s of counted "
            f"work; a float32 1024 × 1024 matrix product on {state['threads']} thread(s) of this machine runs at "
            f"{state['matmul_gflops']:.1f} GFLOP/s: {100 * achieved / state['matmul_gflops']:.0f}% of that peak. "
            "The rest is the work the flop counter does not count (element-wise operations, softmax, layer "
            "norm, embedding gathers, the optimizer) and the matrix products' smaller shapes.",
        ]
    lines += ["", "## Where the time goes", "",
              "Operators with the most self CPU time in the profile (ms per step or per evaluation batch, share of "
              "the profile's self time).", ""]
    for label, _, _, _, _ in ENTRIES:
        record = records.get(label)
        if not record or record.get("status") != "ok":
            continue
        for kind, title in (("train_profile", "training step"), ("eval_profile", "evaluation batch")):
            profile = record[kind]
            top = ", ".join(
                f"`{op['name']}` {op['ms_per_step']:.1f} ms ({100 * op['share']:.0f}%)" for op in profile["operators"][:6]
            )
            lines.append(f"- **{label}**, {title} ({profile['total_ms_per_step']:.0f} ms): {top}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.train_steps < 1 or args.warmup_steps < 0 or args.profile_steps < 1 or args.threads < 1:
        print("error: --train_steps, --profile_steps and --threads must be at least 1, --warmup_steps at least 0", file=sys.stderr)
        return 2
    page = os.path.join(args.results_dir, "speed.md")
    if args.render:
        with open(os.path.join(args.results_dir, "speed.json"), encoding="utf-8") as handle:
            state = json.load(handle)
        add_ratios(state["records"])
        bench.atomic_write(page, render(state))
        print(f"wrote {os.path.relpath(page, REPO)}")
        return 0
    if not args.data_path or not os.path.isdir(args.data_path):
        print(f"error: --data_path: {args.data_path} is not a folder", file=sys.stderr)
        return 2
    labels = args.models or [entry[0] for entry in ENTRIES]
    work_dir = os.path.abspath(args.work_dir or os.path.join(REPO, "benchmarks", "logs", "speed"))
    os.makedirs(work_dir, exist_ok=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, bench.request_stop)
    measure = {"train_steps": args.train_steps, "warmup_steps": args.warmup_steps, "profile_steps": args.profile_steps}
    state = {
        "command": bench.display_command(argv, "benchmarks/speed.py"),
        "machine": bench.machine_info(), "threads": args.threads, "load_start": bench.load_average(),
        "matmul_gflops": matmul_peak(args.threads), **measure, "records": {},
    }
    overrides = {**board.COMMON, **board.DEFAULT_PRESET["common"]}
    for index, (label, model, settings, dataset, _) in enumerate(ENTRIES, 1):
        if label not in labels:
            continue
        if bench._STOP["signal"] is not None:
            print("stopped; nothing written", file=sys.stderr)
            return 128 + bench._STOP["signal"]
        entry_overrides = {**(overrides if dataset == SINGLE else board.COMMON), **settings}
        entry = {
            "label": label, "model": model, "dataset": dataset, "overrides": entry_overrides,
            "config_dict": {"data_path": os.path.abspath(args.data_path), **entry_overrides},
        }
        print(f"[{index}/{len(ENTRIES)}] {label}: measuring", flush=True)
        record = bench.run_model(entry, {"config_files": []}, dataset, work_dir, args.timeout, False, args.threads, measure=measure)
        state["records"][label] = record
        if record.get("status") == "ok":
            print(f"    {record['epoch_seconds_estimate']:.1f} s/epoch, valid evaluation {record['valid_eval_seconds']:.1f} s", flush=True)
        else:
            print(f"    failed: {record.get('error')}", flush=True)
    add_ratios(state["records"])
    state["load_end"], state["finished"] = bench.load_average(), bench.now_utc()
    os.makedirs(args.results_dir, exist_ok=True)
    state = bench.repo_relative(state)  # no machine path in what is stored
    bench.atomic_write(os.path.join(args.results_dir, "speed.json"), json.dumps(state, indent=1, default=str) + "\n")
    bench.atomic_write(page, render(state))
    print(f"wrote {os.path.relpath(page, REPO)}")
    return 0 if all(r.get("status") == "ok" for r in state["records"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
