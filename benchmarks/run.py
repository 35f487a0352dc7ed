"""Run several models on one dataset under one config and write a results section.

    python benchmarks/run.py --dataset=amazon-beauty --data_path=DATA \\
        --models SASRec SASRec@seq GRU4Rec --section=foundation \\
        --model_args "SASRec:epochs=1" "SASRec@seq:train_mode=sequence,epochs=20"

Models run one after another, each in its own process (``benchmarks/worker.py``), so peak
memory is per model. The section ``NAME`` of ``benchmarks/results/runs/<dataset>.md`` is written (or
replaced, other sections untouched) after every model, together with the raw records in
``benchmarks/results/runs/<dataset>-<NAME>.json``. See ``benchmarks/README.md`` for the columns and
conventions. Exit code: 0 when every model ran, 1 when one failed, 2 on bad arguments.
"""

import argparse
import os
import shlex
import signal
import sys

if __package__ in (None, ""):  # run as a script (python benchmarks/run.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (  # noqa: E402
    CPU_PROTOCOL,
    REPO,
    RUNS_DIR,
    UsageError,
    _STOP,
    add_ratios,
    check_name,
    dataset_yaml,
    display_command,
    fmt_seconds,
    load_average,
    machine_info,
    metric_title,
    now_utc,
    parse_model_args,
    parse_model_spec,
    parse_settings,
    request_stop,
    run_model,
    slug,
    summarise,
    write_results,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run models one after another on one dataset and write a section of "
        "benchmarks/results/runs/<dataset>.md (see benchmarks/README.md).",
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. amazon-beauty")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument(
        "--models", nargs="+", required=True, metavar="MODEL[@TAG]",
        help="models in run order; MODEL@TAG runs MODEL under the label MODEL@TAG, so one model "
        "can appear several times with different --model_args",
    )
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every model")
    parser.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs=N")
    parser.add_argument(
        "--set", dest="settings", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="config values for every model",
    )
    parser.add_argument(
        "--model_args", nargs="+", action="extend", default=[], metavar="TARGET:KEY=VALUE[,KEY=VALUE]",
        help="config values for some models: TARGET is a bare model name (every entry of that "
        "model) or a full label MODEL@TAG (that entry only, winning over the bare name)",
    )
    parser.add_argument("--section", default=None, help="section name in the results file (default: the labels joined by '-')")
    parser.add_argument("--reference", default=None, metavar="LABEL", help="label whose s/epoch the ratios divide by (default: the first SASRec entry)")
    parser.add_argument("--results_dir", default=RUNS_DIR, help="where <dataset>.md and the JSON go")
    parser.add_argument("--work_dir", default=None, help="per-model logs and checkpoints (default: benchmarks/logs/<dataset>-<section>)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop a model that runs longer (reported as failed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per model (default: torch's choice, usually one per core)")
    parser.add_argument(
        "--memory_limit_gb", type=float, default=None,
        help="cap each worker's address space (RLIMIT_AS); a model that needs more fails instead of pushing the machine out of memory",
    )
    parser.add_argument("--keep_checkpoints", action="store_true", help="keep each model's best checkpoint in the work dir")
    return parser


def resolve(args):
    """Validate the arguments and turn them into the run plan."""
    entries = [parse_model_spec(spec) for spec in args.models]
    labels = [entry["label"] for entry in entries]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"--models: {', '.join(duplicates)} listed twice; give repeats a tag, e.g. SASRec@seq")
    common = parse_settings(args.settings, "--set")
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        if "epochs" in common and common["epochs"] != str(args.epochs):
            raise UsageError("--epochs and --set epochs=... disagree")
        common["epochs"] = str(args.epochs)
    for reserved in ("model", "dataset", "data_path"):
        if reserved in common:
            raise UsageError(f"--set: give {reserved} with --models / --dataset / --data_path")
    per_model = parse_model_args(args.model_args, entries)
    for label, settings in per_model.items():
        for reserved in ("model", "data_path"):
            if reserved in settings:
                raise UsageError(f"--model_args {label}: {reserved} cannot differ between models of one run")
        if "dataset" in settings:
            check_name(settings["dataset"], f"--model_args {label}: dataset", "dataset")
    section = check_name(args.section or "-".join(labels), "--section")
    if args.reference is not None:
        if args.reference not in labels:
            raise UsageError(f"--reference: {args.reference!r} is not one of the labels in --models ({', '.join(labels)})")
        reference = args.reference
    else:
        reference = next((entry["label"] for entry in entries if entry["model"] == "SASRec"), None)
    config_files = [os.path.abspath(f) for f in shlex.split(args.config_files)] if args.config_files else []
    for path in config_files:
        if not os.path.isfile(path):
            raise UsageError(f"--config_files: {path} not found")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.memory_limit_gb is not None and args.memory_limit_gb <= 0:
        raise UsageError("--memory_limit_gb must be positive")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    data_path = os.path.abspath(args.data_path) if args.data_path else None
    for entry in entries:
        entry["overrides"] = {**common, **per_model[entry["label"]]}
        # a model may run on another dataset of the same protocol (a one-domain view of a
        # cross-domain dataset, say); the results still go to the run's --dataset file
        entry["dataset"] = entry["overrides"].get("dataset", args.dataset)
        settings = {k: v for k, v in entry["overrides"].items() if k != "dataset"}
        entry["config_dict"] = {**({"data_path": data_path} if data_path else {}), **settings}
    return {
        "entries": entries,
        "section": section,
        "reference": reference,
        "config_files": config_files,
        "data_path": data_path,
        "common": common,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        plan = resolve(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results_dir = os.path.abspath(args.results_dir)
    work_dir = os.path.abspath(args.work_dir or os.path.join(REPO, "benchmarks", "logs", f"{args.dataset}-{plan['section']}"))
    os.makedirs(work_dir, exist_ok=True)
    cwd = os.getcwd()
    state = {
        "section": plan["section"],
        "dataset": args.dataset,
        "command": display_command(argv, script=__file__),
        "cwd": cwd,
        "machine": machine_info(),
        "cpu_protocol": CPU_PROTOCOL,
        "dataset_yaml": dataset_yaml(args.dataset),
        "config_files": plan["config_files"],
        "common_settings": plan["common"],
        "reference": plan["reference"],
        "reference_seconds": None,
        "started": now_utc(),
        "finished": None,
        "load_start": load_average(),
        "load_end": None,
        "labels": [entry["label"] for entry in plan["entries"]],
        "records": [],
        "running": False,
    }
    try:
        md_path, json_path = write_results(state, results_dir)
    except (OSError, ValueError) as exc:
        print(f"error: cannot write the results: {exc}", file=sys.stderr)
        return 2
    print(f"writing section {plan['section']!r} of {md_path}; logs in {work_dir}", flush=True)
    # SIGTERM (kill, a CI timeout) or Ctrl-C ends the current worker too, and leaves the section
    # marked incomplete, the stopped model reported as failed
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    for index, entry in enumerate(plan["entries"], 1):
        if _STOP["signal"] is not None:  # stopped between two models
            print(f"stopped by {signal.Signals(_STOP['signal']).name}; the section is marked incomplete", flush=True)
            return 128 + _STOP["signal"]
        state["running"] = True
        write_results(state, results_dir)
        print(f"[{index}/{len(plan['entries'])}] {entry['label']}: running ({os.path.join(work_dir, slug(entry['label']), 'output.log')})", flush=True)
        record = run_model(entry, plan, args.dataset, work_dir, args.timeout, args.keep_checkpoints, args.threads, args.memory_limit_gb)
        if record["status"] == "ok":
            record["summary"] = summarise(record)
            summary = record["summary"]
            print(
                f"    ok: {record['epochs_run']} epoch(s), {fmt_seconds(summary['sec_per_epoch'])} s/epoch, "
                f"test {', '.join(f'{metric_title(k)} {v:.4f}' for k, v in (record['test_result'] or {}).items() if k.endswith('@10'))}, "
                f"peak RSS {record['peak_rss_mb']:.0f} MB", flush=True,
            )
        else:
            print(f"    FAILED: {record['error']}", flush=True)
        state["records"].append(record)
        state["running"] = False
        state["reference_seconds"] = add_ratios(state["records"], state["reference"])
        state["load_end"] = load_average()
        if index == len(plan["entries"]):
            state["finished"] = now_utc()
        write_results(state, results_dir)
        if _STOP["signal"] is not None:
            print(f"stopped by {signal.Signals(_STOP['signal']).name}; the section is marked incomplete", flush=True)
            return 128 + _STOP["signal"]
    failed = [r["label"] for r in state["records"] if r["status"] != "ok"]
    print(f"wrote {md_path} and {json_path}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0




if __name__ == "__main__":
    sys.exit(main())
