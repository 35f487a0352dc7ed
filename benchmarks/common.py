"""What the benchmark scripts share: running one model in its own worker process, the records and
their summaries, the sections of ``benchmarks/results/runs/<dataset>.md``, machine facts, atomic
and locked writes, and the parsing of ``--set`` / ``--model_args`` settings.

The command-line scripts (``run.py``, ``leaderboard.py``, ``fingerprint.py``, ...) are thin layers
over this module; ``worker.py`` is the process one model runs in and imports none of them.
"""

import contextlib
import datetime
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata

from recbole_diffusion.files import atomic_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "benchmarks", "worker.py")
# one-off runs (ablations, curves, diagnostics); benchmarks/leaderboard.py writes benchmarks/results/runs/<dataset>.md
RUNS_DIR = os.path.join(REPO, "benchmarks", "results", "runs")

# The project's CPU benchmark protocol, laid under every config (the user's files and values win).
CPU_PROTOCOL = {"hidden_size": 64}
# Benchmark plumbing, also under the user's values.
BENCHMARK_DEFAULTS = {"show_progress": False}

SPEC_RE = re.compile(r"^(?P<model>[A-Za-z][A-Za-z0-9_]*)(?:@(?P<tag>[A-Za-z0-9_.+-]+))?$")
SECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# a comma splits two settings only where the next one starts with ``key=``, so list values such
# as ``topk=[5,10,20]`` stay whole
SETTING_SPLIT_RE = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_.]*=)")

METRIC_NAMES = {"hit": "HR", "ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "precision": "Precision"}


class UsageError(ValueError):
    """Bad command-line input; reported as ``error: ...`` with exit code 2."""


def check_name(value, option, what="section"):
    """``value`` if it can name a section or dataset (a file name part); else UsageError naming ``option``."""
    if not isinstance(value, str) or not SECTION_RE.match(value):
        raise UsageError(f"{option}: {value!r} is not a {what} name (letters, digits and _ . @ + -, starting with a letter or digit)")
    return value


def read_checkpoint(path):
    """``(checkpoint, stored)`` of a checkpoint this plugin's Trainer wrote: the dict read with the
    project's weights_only loader and the configuration stored in it (with ``model`` and
    ``dataset``); UsageError naming ``--checkpoint`` when it is missing, unreadable or incomplete."""
    from recbole_diffusion.compat import load_checkpoint

    try:
        checkpoint = load_checkpoint(os.path.abspath(path))
        stored = json.loads(checkpoint["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(stored, dict) or not {"model", "dataset"} <= stored.keys() or "state_dict" not in checkpoint:
        raise UsageError(f"--checkpoint {path}: no model, dataset or state_dict in it (not written by this plugin's Trainer?)")
    from recbole_diffusion.config import stored_options

    return checkpoint, stored_options(stored)


def checkpoint_config(stored, data_path=None, **settings):
    """The Config a checkpoint was trained with (``stored``, from :func:`read_checkpoint`, is left
    as it is): its data read from ``data_path`` when given, progress bars off, ``settings`` on top."""
    from recbole_diffusion.config import Config

    config_dict = {key: value for key, value in stored.items() if key not in ("model", "dataset")}
    if data_path:
        config_dict["data_path"] = os.path.abspath(data_path)
    return Config(model=stored["model"], dataset=stored["dataset"], config_dict={**config_dict, "show_progress": False, **settings})


def fail(message):
    """``error: message`` on stderr and exit code 2 (the print-only diagnostics)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def checkpoint_or_exit(path):
    """:func:`read_checkpoint` for the print-only diagnostics: :func:`fail` instead of UsageError."""
    try:
        return read_checkpoint(path)
    except UsageError as exc:
        fail(exc)


# ============================================================================ arguments
def parse_settings(items, where):
    """``["k=v", ...]`` -> ordered dict of strings (RecBole's Config converts the types)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not KEY_RE.match(key):
            raise UsageError(f"{where}: expected KEY=VALUE, got {item!r}")
        if key in settings and settings[key] != value:
            raise UsageError(f"{where}: {key} given twice with different values")
        settings[key] = value
    return settings


def parse_model_spec(spec):
    match = SPEC_RE.match(spec)
    if not match:
        raise UsageError(f"--models: {spec!r} is not MODEL or MODEL@TAG (letters, digits, _ in MODEL; also . + - in TAG)")
    return {"label": spec, "model": match.group("model"), "tag": match.group("tag")}


def parse_model_args(items, entries):
    """``["TARGET:k=v,k=v", ...]`` -> ``{label: settings}`` for every entry, bare model names
    first, full labels over them."""
    by_model, by_label = {}, {}
    labels = {entry["label"] for entry in entries}
    models = {entry["model"] for entry in entries}
    for item in items:
        target, sep, rest = item.partition(":")
        if not sep or not rest.strip():
            raise UsageError(f"--model_args: expected TARGET:KEY=VALUE[,KEY=VALUE...], got {item!r}")
        settings = parse_settings([part.strip() for part in SETTING_SPLIT_RE.split(rest)], f"--model_args {target}")
        if "@" in target:
            if target not in labels:
                raise UsageError(f"--model_args: {target!r} is not one of the labels in --models ({', '.join(sorted(labels))})")
            by_label.setdefault(target, {}).update(settings)
        else:
            if target not in models:
                raise UsageError(f"--model_args: {target!r} is not a model in --models ({', '.join(sorted(models))})")
            by_model.setdefault(target, {}).update(settings)
    return {
        entry["label"]: {**by_model.get(entry["model"], {}), **by_label.get(entry["label"], {})}
        for entry in entries
    }


# ============================================================================ machine
def read_proc(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def machine_info():
    cpu = re.search(r"^model name\s*:\s*(.+)$", read_proc("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)\s*kB", read_proc("/proc/meminfo"), re.M)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {}
    for package in ("torch", "recbole", "numpy", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu.group(1).strip() if cpu else (platform.processor() or "unknown"),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": round(int(mem.group(1)) / 1024 ** 2, 1) if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git": git_state(),
    }


def git_state():
    def git(*args):
        out = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if commit is None:
        return None
    return {"commit": commit, "uncommitted_changes": bool(dirty)}


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def dataset_yaml(dataset):
    """This plugin's YAML for ``dataset``, relative to the repository, or None."""
    path = os.path.join(REPO, "properties", "dataset", f"{dataset}.yaml")
    return os.path.relpath(path, REPO) if os.path.isfile(path) else None


# ============================================================================ one model
def slug(label):
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", label)


def run_model(entry, plan, dataset, work_dir, timeout, keep_checkpoints, threads=None, memory_limit_gb=None, keep_test_rows=False,
              measure=None, resume_key=None):
    """Run one model in a worker process; return its record (never raises for a model failure).
    ``keep_test_rows``: the record also holds every test user's rank (worker.py's ``test_rows``);
    ``measure``: time steps and an evaluation instead of a run (worker.py's ``measure_job``);
    ``resume_key``: the run saves its state every epoch and, started again with the same key and
    ``work_dir``, resumes from its last epoch (worker.py's ``resume_key``)."""
    model_dir = os.path.join(work_dir, slug(entry["label"]))
    os.makedirs(model_dir, exist_ok=True)
    protocol_file = os.path.join(model_dir, "benchmark-defaults.yaml")
    with open(protocol_file, "w", encoding="utf-8") as handle:
        handle.write("# written by the benchmarks (benchmarks/common.py): the CPU protocol and plumbing, under the user's config\n")
        for key, value in {**CPU_PROTOCOL, **BENCHMARK_DEFAULTS}.items():
            handle.write(f"{key}: {json.dumps(value)}\n")
    config_dict = {"checkpoint_dir": os.path.join(model_dir, "saved"), **entry["config_dict"]}
    result_file = os.path.join(model_dir, "result.json")
    if os.path.exists(result_file):
        os.remove(result_file)
    job = {
        "model": entry["model"],
        "dataset": entry.get("dataset", dataset),
        "config_file_list": [protocol_file, *plan["config_files"]],
        "config_dict": config_dict,
        "result_file": result_file,
        "keep_checkpoint": keep_checkpoints,
        "keep_test_rows": keep_test_rows,
        "threads": threads,
        "measure": measure,
        "resume_key": resume_key,
        "memory_limit_bytes": int(memory_limit_gb * 1024 ** 3) if memory_limit_gb else None,
    }
    job_file = os.path.join(model_dir, "job.json")
    with open(job_file, "w", encoding="utf-8") as handle:
        json.dump(job, handle, indent=1)
    log_file = os.path.join(model_dir, "output.log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    record = {
        "label": entry["label"], "model": entry["model"], "dataset": job["dataset"],
        "overrides": entry["overrides"], "log_file": log_file,
        "started": now_utc(), "load_start": load_average(),
    }
    start = time.perf_counter()
    with open(log_file, "w", encoding="utf-8") as log:
        # a process group of its own, so a timeout or a stop ends the worker and anything it started
        process = subprocess.Popen(
            [sys.executable, WORKER, job_file], cwd=model_dir, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        _STOP["process"] = process
        if _STOP["signal"] is not None:  # the stop came while the worker was starting
            kill_group(process)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            process.wait()
            returncode = None
        finally:
            _STOP["process"] = None
    if _STOP["signal"] is not None:
        record.update(status="failed", error=f"interrupted by {signal.Signals(_STOP['signal']).name}")
        return record
    record["process_seconds"] = time.perf_counter() - start
    record["load_end"] = load_average()
    if os.path.exists(result_file):
        with open(result_file, encoding="utf-8") as handle:
            record.update(json.load(handle))
    if returncode is None:
        record["status"] = "failed"
        record["error"] = f"timed out after {timeout:g} s (--timeout)"
    elif record.get("status") != "ok" or returncode != 0:
        record["status"] = "failed"
        if not record.get("error"):
            # the worker died before writing its result (killed, out of memory, crashed)
            if returncode < 0:
                name = signal.Signals(-returncode).name
                why = " (the kernel's out-of-memory killer sends this)" if name == "SIGKILL" else ""
                cause = f"worker killed by {name}{why}"
            else:
                cause = f"worker exited with code {returncode}"
            record["error"] = f"{cause}; last output line: {last_log_line(log_file)}"
    return record


# The worker being waited for, and the signal that asked this run to stop (SIGTERM, Ctrl-C).
_STOP = {"process": None, "signal": None}


def kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def request_stop(signum, frame):
    """Signal handler: stop the current worker; ``main`` then reports it and exits."""
    _STOP["signal"] = signum
    if _STOP["process"] is not None:
        kill_group(_STOP["process"])


def last_log_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


# ============================================================================ summary
def summarise(record):
    """Derived numbers of one successful record (means, in seconds)."""
    epochs = record.get("epoch_seconds") or []
    valid = record.get("valid_eval_seconds") or []
    return {
        "sec_per_epoch": statistics.fmean(epochs) if epochs else None,
        "valid_eval_sec": statistics.fmean(valid) if valid else None,
        "test_eval_sec": record.get("test_eval_seconds"),
    }


def add_ratios(records, reference):
    """Set ``ratio_to_reference`` (s/epoch over the reference's s/epoch) on each ok record."""
    ref = next((r for r in records if r["label"] == reference and r.get("status") == "ok"), None)
    ref_time = ref["summary"]["sec_per_epoch"] if ref else None
    for record in records:
        if record.get("status") == "ok" and ref_time and record["summary"]["sec_per_epoch"] is not None:
            record["ratio_to_reference"] = record["summary"]["sec_per_epoch"] / ref_time
        else:
            record["ratio_to_reference"] = None
    return ref_time


def split_group_key(key):
    """``("ndcg@10", "history<=3")`` for a user-group key ``ndcg@10 (history<=3)``, else ``(key, None)``."""
    if key.endswith(")") and " (" in key:
        metric, _, group = key[:-1].partition(" (")
        return metric, group
    return key, None


def group_title(group):
    """Words for a user-group key: ``history<=3`` (option ``sparse_users``) or ``cloth, cold-start``
    (cross-domain groups, recbole_diffusion/evaluation.py)."""
    if group.startswith("history<="):
        return f"users with at most {group[len('history<='):]} training interactions (option `sparse_users`)"
    return f"group `{group}` (cross-domain dataset: domain, user group)"


def metric_columns(records, group=None):
    """Test-metric keys (of user group ``group``, or of all users) present in the ok records,
    ordered HR, NDCG, others; each by k."""
    keys = []
    for record in records:
        for key in record.get("test_result") or {}:
            metric, key_group = split_group_key(key)
            if key_group == group and metric != "users" and metric not in keys:
                keys.append(metric)
    family_order = list(METRIC_NAMES)

    def order(key):
        name, _, k = key.partition("@")
        family = family_order.index(name) if name in family_order else len(family_order)
        return (family, name, int(k) if k.isdigit() else 0)

    return sorted(keys, key=order)


def metric_title(key):
    name, sep, k = key.partition("@")
    return METRIC_NAMES.get(name, name) + sep + k


def fmt(value, digits):
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_seconds(value):
    if value is None:
        return "–"
    for limit, digits in ((1, 3), (10, 2), (1000, 1)):
        if value < limit:
            return f"{value:.{digits}f}"
    return f"{value:.0f}"


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_section(state):
    """Markdown of one section, without its marker comments."""
    records = state["records"]
    reference = state["reference"]
    machine = state["machine"]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") == "failed"]
    pending = [label for label in state["labels"] if label not in {r["label"] for r in records}]
    metrics = metric_columns(ok)
    valid_metric = next((r["valid_metric"] for r in ok if r.get("valid_metric")), None)
    ref_title = f"× {reference}" if reference else "× reference"

    lines = [f"## {state['section']}", ""]
    if pending:
        lines.append(f"**Incomplete run: {len(records)} of {len(state['labels'])} models done; still to run: {', '.join(pending)}.**")
        lines.append("")
    where = "the repository root" if state["cwd"] in (REPO, ".") else f"`{state['cwd']}`"
    lines += [f"Command (run from {where}):", "", "    " + state["command"], ""]
    git = machine.get("git")
    git_text = "unknown commit" if not git else f"commit {git['commit']}" + (" with uncommitted changes" if git["uncommitted_changes"] else "")
    versions = machine["versions"]
    protocol = ", ".join(f"{k}={v}" for k, v in CPU_PROTOCOL.items())
    if state["dataset_yaml"]:
        protocol_source = f"the protocol of `{state['dataset_yaml']}`"
    else:
        protocol_source = "no dataset YAML in this plugin, so RecBole's defaults and the given config"
    lines += [
        f"- Dataset: `{state['dataset']}` ({protocol_source}); test metrics (full ranking) are of the checkpoint "
        f"with the best valid {valid_metric or 'score'}.",
        f"- CPU protocol: {protocol} (the project's CPU benchmark protocol), laid over each model's and the dataset's "
        "YAML; `--config_files`, `--set` and `--model_args` win over it. The settings under the table are the values "
        "each model ran with.",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['ram_gib']} GiB RAM; {machine['os']}; Python {machine['python']}, torch {versions['torch']}, "
        f"recbole {versions['recbole']}, numpy {versions['numpy']}, pandas {versions['pandas']}; {git_text}.",
        f"- Date: {state['started']} to {state['finished'] or 'still running'}; load average (1 min) "
        f"{state['load_start']} at start, {state['load_end'] if state['load_end'] is not None else '–'} at end "
        "(other jobs on the machine slow every timing).",
    ]
    other_datasets = [(r["label"], r["dataset"]) for r in records if r.get("dataset", state["dataset"]) != state["dataset"]]
    if other_datasets:
        lines.append(
            "- Datasets: every model on `" + state["dataset"] + "` except "
            + ", ".join(f"{label} on `{name}`" + (f" (`{dataset_yaml(name)}`)" if dataset_yaml(name) else "") for label, name in other_datasets)
            + " (`--model_args LABEL:dataset=NAME`); compare them only where the datasets share users, split and candidates."
        )
    if reference is None:
        lines.append("- Time ratios: no SASRec in this run and no `--reference`, so no ratios.")
    elif reference in pending:
        lines.append(f"- Time ratios: the reference {reference} has not run yet.")
    elif state["reference_seconds"] is None:
        lines.append(f"- Time ratios: the reference {reference} did not run successfully, so no ratios.")
    else:
        lines.append(f"- Time ratios: s/epoch divided by {reference}'s ({fmt_seconds(state['reference_seconds'])} s/epoch) in this run.")
    lines.append("")

    header = ["Model", *[metric_title(k) for k in metrics]]
    header += [f"valid {valid_metric}" if valid_metric else "valid score", "Epochs", "Best epoch", "s/epoch", ref_title,
               "Valid eval s", "Test eval s", "Total s", "Peak RSS MB", "Status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|")
    for record in records:
        row = [f"`{cell(record['label'])}`"]
        if record.get("status") == "ok":
            summary = record["summary"]
            test = record.get("test_result") or {}
            row += [fmt(test.get(k), 4) for k in metrics]
            row += [
                fmt(record.get("best_valid_score"), 4),
                str(record.get("epochs_run", "–")),
                str(record["best_epoch"]) if record.get("best_epoch") is not None else "–",
                fmt_seconds(summary["sec_per_epoch"]),
                fmt(record.get("ratio_to_reference"), 2),
                fmt_seconds(summary["valid_eval_sec"]),
                fmt_seconds(summary["test_eval_sec"]),
                fmt_seconds(record.get("process_seconds")),
                fmt(record.get("peak_rss_mb"), 0),
                "ok",
            ]
        else:
            row += ["–"] * (len(header) - 4)
            row += [fmt_seconds(record.get("process_seconds")), fmt(record.get("peak_rss_mb"), 0), "failed"]
        lines.append("| " + " | ".join(row) + " |")
    for position, label in enumerate(pending):
        status = "running" if position == 0 and state["running"] else "not run yet"
        lines.append("| " + " | ".join([f"`{cell(label)}`"] + ["–"] * (len(header) - 2) + [status]) + " |")
    lines.append("")

    groups = []
    for record in ok:
        for key in record.get("test_result") or {}:
            group = split_group_key(key)[1]
            if group is not None and group not in groups:
                groups.append(group)
    for group in groups:
        group_metrics = metric_columns(ok, group)
        lines.append(f"Test metrics of the users: {group_title(group)} (same checkpoints as above):")
        lines.append("")
        group_header = ["Model", "Users", *[metric_title(k) for k in group_metrics]]
        lines.append("| " + " | ".join(group_header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(group_header) - 1)) + "|")
        for record in ok:
            test = record.get("test_result") or {}
            users = test.get(f"users ({group})")
            row = [f"`{cell(record['label'])}`", "–" if users is None else str(users)]
            row += [fmt(test.get(f"{k} ({group})"), 4) for k in group_metrics]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    if failed:
        lines.append("Failed:")
        lines.append("")
        for record in failed:
            lines.append(f"- `{record['label']}`: {cell(record.get('error', 'unknown error'))}")
        lines.append("")
    if ok:
        lines.append("Settings used (from each model's final config):")
        lines.append("")
        for record in ok:
            settings = ", ".join(f"{k}={v}" for k, v in record.get("settings", {}).items())
            extra = (
                f"; torch threads {record.get('torch_threads')}, device {record.get('device')}; "
                f"load average {record.get('load_start')} at start, {record.get('load_end')} at end"
            )
            lines.append(f"- `{record['label']}` ({record['model']}): {settings}{extra}")
        lines.append("")
    return "\n".join(lines)


# ============================================================================ results file
FILE_HEADER = (
    "# Benchmarks: {dataset}\n\n"
    "Written by `benchmarks/run.py`. Each section is one run, replaced only by a rerun with the same "
    "`--section`; its numbers hold only for the command, settings and machine stated in it. "
    "Columns are explained in `benchmarks/README.md`.\n"
)


def markers(section):
    return f"<!-- section: {section} -->", f"<!-- end section: {section} -->"


def replace_section(text, section, body):
    """``text`` with section ``section`` replaced by ``body`` (appended if absent).

    Raises ValueError when the file's markers for this section are unbalanced, rather than
    guess and overwrite someone else's table."""
    begin, end = markers(section)
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    starts = [m.start() for m in re.finditer(re.escape(begin) + r"\n", text)]
    ends = [m.end() for m in re.finditer(re.escape(end) + r"\n?", text)]
    if not starts and not ends:
        return text.rstrip("\n") + "\n\n" + block
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"the markers of section {section!r} are unbalanced or repeated; fix the file by hand")
    return text[: starts[0]] + block + text[ends[0]:]


def check_section_writable(md_path, section):
    """UsageError now, before any work, when ``md_path`` exists with markers that cannot take
    ``section`` (unbalanced or repeated)."""
    if os.path.exists(md_path):
        try:
            replace_section(read_proc(md_path), section, "")
        except ValueError as exc:
            raise UsageError(f"{md_path}: {exc}") from None


@contextlib.contextmanager
def locked(folder):
    """An exclusive lock on ``folder`` (two runs may write the same results file)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write(path, text):
    """Write ``text`` to ``path`` through the package's atomic rename (never half a file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def repo_relative(value):
    """``value`` with every path inside the repository written relative to it (``.`` for the
    root), so that stored results carry no machine path."""
    if isinstance(value, dict):
        return {k: repo_relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repo_relative(v) for v in value]
    if isinstance(value, str):
        if value == REPO:
            return "."
        return value.replace(REPO + os.sep, "")
    return value


def write_results(state, results_dir):
    """Write the section into ``<dataset>.md`` and the raw records into ``<dataset>-<section>.json``."""
    os.makedirs(results_dir, exist_ok=True)
    md_path = os.path.join(results_dir, f"{state['dataset']}.md")
    json_path = os.path.join(results_dir, f"{state['dataset']}-{state['section']}.json")
    body = render_section(state)
    with locked(results_dir):
        raw = repo_relative({k: v for k, v in state.items() if k != "labels"})
        atomic_write(json_path, json.dumps(raw, indent=1, default=str) + "\n")
        text = read_proc(md_path) if os.path.exists(md_path) else FILE_HEADER.format(dataset=state["dataset"])
        atomic_write(md_path, replace_section(text, state["section"], body))
    return md_path, json_path


# ============================================================================ main
def shown_data_path(path):
    """A data folder as results name it: relative to the repository when it is inside it, else
    ``DATA`` (the folder that holds the datasets, wherever a reader keeps it)."""
    shown = os.path.relpath(os.path.abspath(path), REPO)
    return "DATA" if shown == os.pardir or shown.startswith(os.pardir + os.sep) else shown


def display_command(argv, script):
    """The command of ``script`` as one would type it again from the current folder, its data
    folder as :func:`shown_data_path` names it."""
    shown = [f"--data_path={shown_data_path(a.split('=', 1)[1])}" if a.startswith("--data_path=") else a for a in argv]
    return shlex.join(["python", os.path.relpath(os.path.abspath(script)), *shown])


