"""The ``run_recbole_diff.py`` command: argument parsing and one-paragraph errors."""

import argparse
import os
import sys

from recbole_diffusion.compat import IncompatibleEnvironment
from recbole_diffusion.config import Config, refuse_unread
from recbole_diffusion.distributed import DEFAULT_IP, DEFAULT_PORT
from recbole_diffusion.errors import RecBoleDiffusionError
from recbole_diffusion.quick_start import run
from recbole_diffusion.utils import plugin_model_names


EPILOG = """\
models: this plugin's {plugin},
  then every RecBole built-in (SASRec, GRU4Rec, BERT4Rec, Pop, ...).

common options (any config key works as --key=value, as in RecBole):
  --epochs=N --learning_rate=X --train_batch_size=N --hidden_size=N --seed=N
  --train_mode=sequence     whole-sequence training (RecBole's SASRec, GRU4Rec, BERT4Rec; most of ours)
  --stopping_step=N --eval_step=N --valid_metric=NDCG@10 --gpu_id=0 (the GPU; --gpu_id= with nothing after it: the CPU)
  --checkpoint_dir=DIR      where the best checkpoint goes (default saved/)

distributed training (RecBole's multi-process route; docs/distributed.md):
  --nproc=N                 N processes on this machine: one per GPU (NCCL) or per CPU core (gloo)
  --world_size=W --ip=HOST --port=P --group_offset=K   one group over several machines

examples:
  run_recbole_diff.py --model=ADARec --dataset=ml-100k --epochs=5
  run_recbole_diff.py --model=DiffRec --dataset=beauty --data_path=dataset --config_files=properties/dataset/amazon-beauty.yaml
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="run_recbole_diff.py",
        description="Train and test a recbole-diffusion model or a RecBole built-in. "
        "Any further --key=value overrides a config option, as in RecBole.",
        epilog=EPILOG.format(plugin=", ".join(plugin_model_names())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", default="SASRec", help="model name (plugin models first, then RecBole's)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (ml-100k is embedded in RecBole)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML config files")
    parser.add_argument("--data_path", default=None, help="folder that holds <dataset>/<dataset>.inter")
    parser.add_argument(
        "--checkpoint", default=None, metavar="PATH",
        help="resume an interrupted run from its checkpoint (saved/<file>.pth), with the same options",
    )
    group = parser.add_argument_group("distributed training (as RecBole's run_recbole.py)")
    group.add_argument("--nproc", type=int, default=1, help="processes on this machine (default 1)")
    group.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: --nproc)")
    group.add_argument("--ip", default=DEFAULT_IP, help="address of the machine of rank 0 (default localhost)")
    group.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"free TCP port on it (default {DEFAULT_PORT})")
    group.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process (default 0)")
    args, unknown = parser.parse_known_args(argv)
    overrides = {}
    for arg in unknown:
        if not arg.startswith("--") or "=" not in arg:
            parser.error(f"unrecognised argument {arg!r}: options are --key=value")
        key, value = arg[2:].split("=", 1)
        if key in overrides and overrides[key] != value:
            parser.error(f"option --{key} given twice with different values")
        overrides[key] = value
    if args.data_path is not None:
        overrides["data_path"] = args.data_path
    files = args.config_files.split() if args.config_files else None
    launch = {key: getattr(args, key) for key in ("nproc", "world_size", "ip", "port", "group_offset")}
    return args.model, args.dataset, files, overrides, args.checkpoint, launch


def main(argv=None):
    model, dataset, files, overrides, checkpoint, launch = parse_args(sys.argv[1:] if argv is None else argv)
    if "show_progress" not in overrides and not sys.stderr.isatty():
        overrides["show_progress"] = "False"  # progress bars redrawn into a file or a pipe: RecBole's epoch lines only
    try:
        # an option typed here that the run would not read (a typo) is refused before anything runs
        refuse_unread(Config(model=model, dataset=dataset, config_file_list=files, config_dict=overrides), overrides)
        result = run(model=model, dataset=dataset, config_file_list=files, config_dict=overrides, resume_file=checkpoint, **launch)
    except (RecBoleDiffusionError, IncompatibleEnvironment, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_result("best valid", result["best_valid_result"]))
    print(format_result("test result", result["test_result"]))
    if result.get("saved_model_file"):
        print(f"checkpoint: {os.path.abspath(result['saved_model_file'])}")
    if result.get("log_file"):
        print(f"log: {os.path.abspath(result['log_file'])}")
    return 0


def format_result(title, result):
    """One line for plain metrics (RecBole's dict); a table, one row per user group (``sparse_users``'
    ``(history<=N)``, a cross-domain run's ``(domain, group)``) and one column per metric, when the
    result holds groups."""
    result = dict(result or {})
    rows = {}
    for key, value in result.items():
        metric, _, group = key.partition(" (")
        rows.setdefault(group.rstrip(")") or "all", {})[metric] = value
    if len(rows) <= 1:
        return f"{title}: {result}"
    columns = list(dict.fromkeys(metric for row in rows.values() for metric in row))
    width = max(len(name) for name in rows)
    lines = [f"{title}:", "  " + " " * width + "".join(f"{column:>10}" for column in columns)]
    for name, row in rows.items():
        cells = "".join(f"{_cell(row.get(column)):>10}" for column in columns)
        lines.append(f"  {name:<{width}}{cells}")
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "-"
    return f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
