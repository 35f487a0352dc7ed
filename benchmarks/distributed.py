"""One process against several on the same machine: seconds per epoch and test NDCG@10 after the
same epochs, for each model, through RecBole's multi-process route (``quick_start.run(nproc=N)``).

    python benchmarks/distributed.py --dataset=amazon-beauty --data_path=DATA --models SASRec ADARec --nproc 1 2

Every process count uses the whole machine: one process runs ``cores`` torch threads, N processes
``cores / N`` threads each, so the comparison is of the two ways of spending the same cores. The
global batch is the same (RecBole's ``train_batch_size`` is split over the ranks). Each run is
stored as ``benchmarks/results/distributed/<dataset>-<model>-nproc<N>.json`` when it ends and
skipped when stored (``--redo`` reruns); ``benchmarks/results/distributed.md`` is rewritten from the
stored runs. Timings are comparable only within one machine and one sitting.
"""

import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "benchmarks", "results")

# the leaderboard's settings for each model (whole-sequence training for RecBole's SASRec)
MODEL_SETTINGS = {"SASRec": {"train_mode": "sequence", "train_batch_size": 256}}


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/distributed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--models", nargs="+", default=["SASRec", "ADARec"])
    parser.add_argument("--nproc", nargs="+", type=int, default=[1, 2], help="process counts to compare")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every run (one valid evaluation, at the end)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--port", type=int, default=29517)
    parser.add_argument("--redo", action="store_true", help="rerun stored runs")
    parser.add_argument("--render", action="store_true", help="only rewrite the page from the stored runs")
    parser.add_argument("--results_dir", default=RESULTS_DIR, help="where distributed.md and distributed/ go")
    parser.add_argument("--work_dir", default=os.path.join(REPO, "benchmarks", "logs", "distributed"),
                        help="checkpoints and logs")
    return parser


def run_file(results, dataset, model, nproc):
    return os.path.join(results, f"{dataset}-{model}-nproc{nproc}.json")


def one_run(args, model, nproc):
    import torch

    from recbole_diffusion.quick_start import run

    cores = os.cpu_count() or 1
    threads = max(1, cores // nproc)
    config = {
        "data_path": os.path.abspath(args.data_path), "epochs": args.epochs, "eval_step": args.epochs,
        "stopping_step": args.epochs, "seed": args.seed, "show_progress": False,
        "checkpoint_dir": os.path.join(os.path.abspath(args.work_dir), "saved"),
        **MODEL_SETTINGS.get(model, {}),
    }
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by every spawned process
    torch.set_num_threads(threads)
    start, cwd = time.perf_counter(), os.getcwd()
    os.makedirs(args.work_dir, exist_ok=True)
    os.chdir(args.work_dir)  # RecBole's log folder
    try:
        if nproc == 1:
            result = run(model=model, dataset=args.dataset, config_dict=config, verbose=False)
        else:
            result = run(model=model, dataset=args.dataset, config_dict=config, verbose=False, nproc=nproc, port=args.port)
    finally:
        os.chdir(cwd)
    wall = time.perf_counter() - start
    return {
        "model": model, "dataset": args.dataset, "nproc": nproc, "threads_per_process": threads, "cores": cores,
        "epochs": args.epochs, "seed": args.seed, "settings": config | {"data_path": "DATA", "checkpoint_dir": None},
        "epoch_seconds": result["epoch_seconds"], "eval_seconds": result["eval_seconds"], "wall_seconds": wall,
        "test_ndcg10": result["test_result"]["ndcg@10"], "valid_ndcg10": result["best_valid_result"]["ndcg@10"],
        "test_result": dict(result["test_result"]),
        "state_digests": [r.get("state_digest") for r in result["ranks"]],
        "machine": f"{platform.machine()}, {cores} cores, torch threads {threads} per process",
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def render(dataset_runs):
    lines = [
        "# One process against several",
        "",
        "Written by `benchmarks/distributed.py` from the runs stored in `benchmarks/results/distributed/`.",
        "Each row trains the model for the same epochs with the same global batch, then tests the last",
        "checkpoint; N processes share the machine's cores (`cores / N` torch threads each). The metrics of",
        "a multi-process run are gathered over every test user, as one process computes them.",
        "",
    ]
    for dataset in sorted(dataset_runs):
        runs = dataset_runs[dataset]
        lines += [f"## {dataset}", "", f"    python benchmarks/distributed.py --dataset={dataset} --data_path=DATA "
                  f"--models {' '.join(sorted({r['model'] for r in runs}))} --nproc {' '.join(str(n) for n in sorted({r['nproc'] for r in runs}))}", ""]
        lines += ["| model | processes | threads each | epochs | s/epoch | speed-up | eval s (valid, test) | test NDCG@10 | machine |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for model in sorted({r["model"] for r in runs}):
            rows = sorted((r for r in runs if r["model"] == model), key=lambda r: r["nproc"])
            base = next((r for r in rows if r["nproc"] == 1), None)
            for r in rows:
                per_epoch = sum(r["epoch_seconds"]) / len(r["epoch_seconds"])
                speed = ""
                if base is not None:
                    speed = f"{(sum(base['epoch_seconds']) / len(base['epoch_seconds'])) / per_epoch:.2f}×"
                evals = ", ".join(f"{s:.1f}" for s in r["eval_seconds"])
                lines.append(f"| `{model}` | {r['nproc']} | {r['threads_per_process']} | {r['epochs']} | {per_epoch:.1f} | {speed} | "
                             f"{evals} | {r['test_ndcg10']:.4f} | {r['machine']}, {r['finished'][:10]} |")
        lines.append("")
    return "\n".join(lines)


def stored_runs(results):
    runs = {}
    if os.path.isdir(results):
        for name in sorted(os.listdir(results)):
            if name.endswith(".json"):
                with open(os.path.join(results, name), encoding="utf-8") as handle:
                    record = json.load(handle)
                runs.setdefault(record["dataset"], []).append(record)
    return runs


def main(argv=None):
    args = build_parser().parse_args(argv)
    from recbole_diffusion.files import atomic_path

    results, page = os.path.join(args.results_dir, "distributed"), os.path.join(args.results_dir, "distributed.md")
    os.makedirs(results, exist_ok=True)
    if not args.render:
        for model in args.models:
            for nproc in args.nproc:
                path = run_file(results, args.dataset, model, nproc)
                if os.path.exists(path) and not args.redo:
                    print(f"{model} nproc={nproc}: stored")
                    continue
                print(f"{model} nproc={nproc}: running", flush=True)
                record = one_run(args, model, nproc)
                with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
                    json.dump(record, handle, indent=1)
                print(f"    {sum(record['epoch_seconds']) / args.epochs:.1f} s/epoch, test NDCG@10 {record['test_ndcg10']:.4f}", flush=True)
    with atomic_path(page) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(render(stored_runs(results)))
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
