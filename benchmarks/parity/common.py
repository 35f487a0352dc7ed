"""What the parity scripts share: the authors' checkout (its files, their git blob ids), the split,
fixed user samples, the per-user ranks, the stored runs, the run's own process and the loop over
(side, seed) runs that stores each as it ends and rewrites the page's section.

Each script (``dreamrec.py``, ``adarec.py``, ``i2vae.py``) is a command line over these, with its own
data conversion, its own adjustments to the authors' code and its own table.
"""

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import common as bench  # noqa: E402
from benchmarks import worker  # noqa: E402

UsageError = bench.UsageError
RANK_METRICS = tuple(f"{name}@{k}" for name in ("hit", "ndcg") for k in (5, 10, 20))
USERS_SEED = 0
SIDES = ("authors", "ours")
PAGE_HEADER = (
    "# Parity with the authors' code\n\n"
    "Written by the scripts in `benchmarks/parity/`: a model of this plugin next to its authors' own code, "
    "run from a checkout of theirs on our split, with their settings. Each section is one configuration, "
    "rewritten from its stored runs; see the script's docstring for what runs and every adjustment made "
    "to the authors' code at run time.\n"
)


# ============================================================================ the authors' checkout
def git_blob_id(path):
    """The id git gives the file's content (``git hash-object``)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_authors_repo(path, files, repository, commit, sides_hint="--sides ours"):
    """UsageError unless ``path`` is a folder holding every one of ``files`` (relative paths)."""
    if not path:
        raise UsageError(f"--authors_repo: give a checkout of {repository} (or {sides_hint})")
    if not os.path.isdir(path):
        raise UsageError(f"--authors_repo {path}: not a folder (a checkout of {repository})")
    missing = [name for name in files if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise UsageError(
            f"--authors_repo {path}: {', '.join(missing)} missing (a checkout of {repository}, "
            f"commit {commit[:7]}, has {', '.join(files)})"
        )


def authors_code(path, files, pinned_commit, pinned_blobs):
    """What identifies the authors' code of ``path``: each file's blob id, whether all are those of
    ``pinned_commit``, and the checkout's commit when it is a git checkout."""
    blobs = {name: git_blob_id(os.path.join(path, name)) for name in files}
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        commit = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"blobs": blobs, "pinned_commit": pinned_commit, "files_of_pinned_commit": blobs == pinned_blobs, "checkout_commit": commit}


# ============================================================================ data
def build_split(model, dataset, config_dict):
    """``(config, train_data, valid_data, test_data)``: the plugin's split of ``dataset`` for ``model``."""
    from recbole.utils import init_seed

    from recbole_diffusion.config import Config
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model=model, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return config, train_data, valid_data, test_data


def choose_users(user_ids, count, seed=USERS_SEED, option="--eval_users", where="the test split"):
    """``count`` of the distinct ``user_ids``, a uniform sample without replacement, sorted."""
    import numpy as np

    users = np.unique(user_ids)
    if count > len(users):
        raise UsageError(f"{option} {count}: {where} has only {len(users)} users")
    return np.sort(np.random.default_rng(seed).choice(users, size=count, replace=False))


def rank_metrics(test_rows, users=None, metrics=RANK_METRICS):
    """HR and NDCG at 5, 10, 20 from the stored per-user ranks (of ``users`` tokens when given)."""
    import numpy as np

    keys, ranks = worker.decode_rows(test_rows)
    if users is not None:
        position = {key: index for index, key in enumerate(keys)}
        missing = [user for user in users if user not in position]
        if missing:
            raise ValueError(f"{len(missing)} of the evaluation users have no stored rank (e.g. {missing[0]})")
        ranks = ranks[[position[user] for user in users]]
    result = {"users": int(len(ranks))}
    for key in metrics:
        name, k = key.split("@")
        k = int(k)
        values = (ranks <= k).astype(np.float64) if name == "hit" else np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
        result[key] = float(values.mean()) if len(values) else None
    return result


# ============================================================================ stored runs
def settings_key(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def read_run(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_section(section, body, results_dir):
    """Replace ``section`` of ``results_dir/parity.md`` by ``body`` (atomically, under the folder's lock)."""
    path = os.path.join(results_dir, "parity.md")
    with bench.locked(results_dir):
        text = bench.read_proc(path) if os.path.exists(path) else PAGE_HEADER
        bench.atomic_write(path, bench.replace_section(text, section, body))
    return path


# ============================================================================ the runs' processes
def job_main(job_file, jobs):
    """``--run_job JOB.json``: one side's run in this process (``jobs[side](job)`` gives its record);
    writes ``result.json`` beside the job. This folder leaves ``sys.path`` first, so that the
    authors' modules, copied into the run folder, are the ones their code imports."""
    import traceback

    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
    with open(job_file, encoding="utf-8") as handle:
        job = json.load(handle)
    result_file = os.path.join(os.path.dirname(os.path.abspath(job_file)), "result.json")
    start = time.perf_counter()
    try:
        record = jobs[job["side"]](job)
        code = 0
    except BaseException as exc:  # noqa: BLE001 -- every failure is reported in the result, then by the exit code
        record = {"status": "failed", "error": worker.last_line(f"{type(exc).__name__}: {exc}"), "traceback": traceback.format_exc()}
        code = 1
    record["run_seconds"] = time.perf_counter() - start
    record["peak_rss_mb"] = worker.peak_rss_mb()
    with open(result_file, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, default=str)
    print(f"[parity] {job['side']}: {record['status']}" + (f": {record['error']}" if code else ""), flush=True)
    return code


def run_process(job, run_dir, timeout, script, env=None):
    """Run ``script --run_job`` on ``job`` in its own process in ``run_dir``; return its record
    (never raises for a failure)."""
    job_file = os.path.join(run_dir, "job.json")
    with open(job_file, "w", encoding="utf-8") as handle:
        json.dump(job, handle, indent=1)
    log_file = os.path.join(run_dir, "output.log")
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    with open(log_file, "a", encoding="utf-8") as log:  # a resumed run adds to its first output
        process = subprocess.Popen([sys.executable, script, "--run_job", job_file], cwd=run_dir, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        bench._STOP["process"] = process
        if bench._STOP["signal"] is not None:
            bench.kill_group(process)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            bench.kill_group(process)
            process.wait()
            returncode = None
        finally:
            bench._STOP["process"] = None
    record = {"process_seconds": time.perf_counter() - start}
    result_file = os.path.join(run_dir, "result.json")
    if os.path.exists(result_file):
        with open(result_file, encoding="utf-8") as handle:
            record.update(json.load(handle))
    if bench._STOP["signal"] is not None:
        record.update(status="failed", error=f"interrupted by {signal.Signals(bench._STOP['signal']).name}")
    elif returncode is None:
        record.update(status="failed", error=f"timed out after {timeout:g} s (--timeout)")
    elif record.get("status") != "ok" or returncode != 0:
        record["status"] = "failed"
        record.setdefault("error", f"exited with code {returncode}; last output line: {bench.last_log_line(log_file)}")
    return record


def plan_runs(args, results_dir, side_settings, run_path):
    """One item per (seed, side): its settings, its JSON's path, and whether a stored run of the same
    settings (``settings_key``) can stand for it (not with ``--redo``)."""
    plan = []
    for seed in args.seeds:
        for side in args.sides:
            settings = side_settings(side, seed)
            path = run_path(side, seed)
            stored = read_run(path)
            current = stored is not None and stored.get("status") == "ok" and stored.get("settings_key") == settings_key(settings)
            plan.append({"side": side, "seed": seed, "settings": settings, "path": path, "stored": current and not args.redo})
    return plan


def execute_plan(plan, state, *, script, work_dir, temporary, timeout, results_dir, make_job, finish_record, render, env=None,
                 resumable=None, runs_folder=None):
    """Run every plan item not stored, each in its own process in ``work_dir/[runs_folder/]<side>-seed<seed>``:
    ``make_job(item, run_dir)`` fills the run folder and gives the job; the record is completed by
    ``finish_record(item, record)``, stored atomically as soon as the run ends, and the section
    (``render(state)``) rewritten after every run. A run folder is emptied first, unless
    ``resumable(item, run_dir)`` says an interrupted run of the same settings left in it what its
    process resumes from. Returns the exit code (1 when a run failed, 128 + the signal when stopped)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, bench.request_stop)
    os.makedirs(work_dir, exist_ok=True)
    failed = []
    for item in plan:
        side, seed = item["side"], item["seed"]
        if item["stored"]:
            state["records"][(side, seed)] = read_run(item["path"])
            print(f"{side} seed {seed}: stored ({os.path.relpath(item['path'], REPO)})", flush=True)
            continue
        run_dir = os.path.join(work_dir, *([runs_folder] if runs_folder else []), f"{side}-seed{seed}")
        resuming = resumable is not None and resumable(item, run_dir)
        if resuming:  # the interrupted process's result, if it wrote one, is not this run's
            if os.path.exists(os.path.join(run_dir, "result.json")):
                os.remove(os.path.join(run_dir, "result.json"))
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
        job = make_job(item, run_dir)
        print(f"{side} seed {seed}: {'resuming' if resuming else 'running'} in {run_dir}", flush=True)
        record = run_process(job, run_dir, timeout, script, env=env)
        if bench._STOP["signal"] is not None:
            print(f"stopped by {signal.Signals(bench._STOP['signal']).name}; this run is not stored", flush=True)
            return 128 + bench._STOP["signal"]
        record.pop("traceback", None)
        record.update(side=side, seed=seed, settings=item["settings"], settings_key=settings_key(item["settings"]),
                      finished=bench.now_utc(), machine=state["machine"])
        finish_record(item, record)
        bench.atomic_write(item["path"], json.dumps(bench.repo_relative(record), indent=1, default=str) + "\n")
        state["records"][(side, seed)] = record
        if record["status"] == "ok":
            print(f"    ok: {record['process_seconds']:.0f} s", flush=True)
            shutil.rmtree(os.path.join(run_dir, "data"), ignore_errors=True)
        else:
            failed.append(f"{side} seed {seed}")
            print(f"    FAILED: {record['error']} (output: {os.path.join(run_dir, 'output.log')})", flush=True)
        write_section(state["section"], render(state), results_dir)
    state["finished"] = bench.now_utc()
    page = write_section(state["section"], render(state), results_dir)
    body = render(state)
    print("\n" + body[body.index("| side"):])
    print(f"wrote {page}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    if temporary and not failed:
        shutil.rmtree(work_dir, ignore_errors=True)
    elif failed:
        print(f"run folders kept in {work_dir}", flush=True)
    return 1 if failed else 0


# ============================================================================ names and commands
# A parity script names itself by two constants: ``NAME`` (its file's name, which names its runs and
# sections) and ``USERS_OPTION`` (its option for a sample of users, whose value names them too; what
# it counts is ``USERS_UNIT``, "users" unless the script says otherwise). Options of its own that the
# shown command must repeat come from its ``command_options(args)`` when it has one.
def users_of(script, args):
    """The script's user-sample size (None: every user)."""
    return getattr(args, script.USERS_OPTION.lstrip("-"))


def sample_label(script, args):
    """``"<N><unit>"`` for a sample of N users (rows, ...), None for all of them."""
    users = users_of(script, args)
    return None if users is None else f"{users}{getattr(script, 'USERS_UNIT', 'users')}"


def run_path(results_dir, script, args, side, seed):
    """Where one (side, seed) run of the script's comparison is stored."""
    label = sample_label(script, args) or "all"
    return os.path.join(results_dir, "parity", f"{script.NAME}-{args.dataset}-{args.epochs}epochs-{label}-{side}-seed{seed}.json")


def section_name(script, args):
    label = sample_label(script, args)
    return f"{script.NAME}-{args.dataset}-{args.epochs}epochs" + (f"-{label}" if label else "")


def shown_command(script, args):
    """The command as one would type it again: the authors' checkout as PATH, the data as DATA."""
    parts = ["python", f"benchmarks/parity/{script.NAME}.py"]
    if "authors" in args.sides:
        parts.append("--authors_repo=PATH")
    if args.data_path:
        parts.append(f"--data_path={bench.shown_data_path(args.data_path)}")
    parts += [f"--dataset={args.dataset}", f"--epochs={args.epochs}", "--seeds", *map(str, args.seeds)]
    users = users_of(script, args)
    if users:
        parts.append(f"{script.USERS_OPTION}={users}")
    if hasattr(script, "command_options"):
        parts += script.command_options(args)
    if list(args.sides) != list(getattr(script, "SIDES", SIDES)):
        parts += ["--sides", *args.sides]
    if args.threads != 1:
        parts.append(f"--threads={args.threads}")
    return shlex.join(parts)


# ============================================================================ the opening of a script
def start(argv, script):
    """What every parity script does first: run a worker's job (``--run_job FILE``), or parse and
    check the arguments, check the page's section, read the authors' code and plan the runs.
    ``script`` is the script's module (its ``NAME``, ``USERS_OPTION``, ``build_parser``,
    ``job_main``, ``check_args``, ``authors_code`` and ``side_settings``); ``argv`` None: the
    command line's. Returns ``(exit code, None)`` to stop with, or ``(None, (args, results_dir,
    code, plan))``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--run_job"]:
        return script.job_main(argv[1]), None
    args = script.build_parser().parse_args(argv)
    results_dir = os.path.abspath(args.results_dir)
    try:
        script.check_args(args)
        os.makedirs(os.path.join(results_dir, "parity"), exist_ok=True)
        bench.check_section_writable(os.path.join(results_dir, "parity.md"), section_name(script, args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    code = script.authors_code(args.authors_repo) if "authors" in args.sides else None
    plan = plan_runs(args, results_dir, lambda side, seed: script.side_settings(args, side, seed, code),
                     lambda side, seed: run_path(results_dir, script, args, side, seed))
    return None, (args, results_dir, code, plan)


def work_folder(args, script):
    """``(work_dir, temporary)``: ``--work_dir`` (kept), or a new temporary folder named after the
    script (removed by ``execute_plan`` after a run without failures)."""
    if args.work_dir is None:
        return tempfile.mkdtemp(prefix=f"parity-{script.NAME}-"), True
    os.makedirs(args.work_dir, exist_ok=True)
    return os.path.abspath(args.work_dir), False


# ============================================================================ options
def add_data_options(parser, repository, files, epochs, epochs_help, seed, seeds_help, dataset="amazon-beauty",
                     dataset_help="dataset (default amazon-beauty)", data_path=True):
    """The options every parity script takes before its own: the checkout, the data (``--data_path``
    unless ``data_path`` is False: the data is then the authors' own), epochs, seeds (``seed``: one
    seed or a list of them by default)."""
    parser.add_argument("--authors_repo", metavar="PATH", help=f"a checkout of {repository} (needs {', '.join(files)})")
    if data_path:
        parser.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    else:
        parser.set_defaults(data_path=None)
    parser.add_argument("--dataset", default=dataset, help=dataset_help)
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(seed) if isinstance(seed, (list, tuple)) else [seed], help=seeds_help)


def add_run_options(parser, sides):
    """The options every parity script takes after its own: sides, reruns, threads, folders."""
    parser.add_argument("--sides", nargs="+", choices=sides, default=list(sides), help="which sides run (default: all of them)")
    parser.add_argument("--redo", action="store_true", help="rerun runs that are stored already")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop a run that takes longer (stored as failed)")
    parser.add_argument("--results_dir", default=os.path.join(REPO, "benchmarks", "results"), help="where parity.md and parity/ go")
    parser.add_argument("--work_dir", default=None, help="run folders, kept (default: a temporary folder, removed after success)")


def check_common_args(args):
    """UsageError for the shared options' values that cannot run; reads no data."""
    bench.check_name(args.dataset, "--dataset", "dataset")
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError("--seeds: a seed is given twice")
    if args.data_path is not None and not os.path.isdir(args.data_path):
        raise UsageError(f"--data_path {args.data_path}: not a folder")


# ============================================================================ sections
def section_head(state):
    """A section's title and command, and the records of its runs stored so far."""
    lines = [f"## {state['section']}", "", "Command (run from the repository root):", "", "    " + state["command"], ""]
    return lines, [record for record in state["records"].values() if record is not None]


def machine_lines(state, done, packages=("torch", "recbole")):
    """The bullets of the machine, the versions of ``packages``, the commit and the dates of the
    stored runs (a rerun may show runs stored before it), then a blank line."""
    machine = next((record["machine"] for record in done if record.get("machine")), state["machine"])
    versions = ", ".join(f"{name} {machine['versions'][name]}" for name in packages)
    finished = sorted(record["finished"] for record in done if record.get("finished"))
    git = machine.get("git")
    git_text = "unknown commit" if not git else f"commit {git['commit']}" + (" with uncommitted changes" if git["uncommitted_changes"] else "")
    return [
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM; Python {machine['python']}, "
        f"{versions}; {git_text}.",
        f"- Runs finished: {finished[0] + ' to ' + finished[-1] if finished else 'none yet'}"
        + ("" if state["finished"] else " (**incomplete: still running**)") + ".",
        "",
    ]


def authors_code_line(script, code, extra=""):
    """The bullet naming the authors' files that ran and whether they are the pinned commit's."""
    same = "the files of" if code["files_of_pinned_commit"] else "**not** the files of"
    checkout = f"; the checkout is at commit {code['checkout_commit'][:7]}" if code.get("checkout_commit") else ""
    return (f"- Authors' code: `{'`, `'.join(script.AUTHORS_FILES)}` are {same} commit {script.AUTHORS_COMMIT[:7]} "
            f"(git blob ids in the JSON){checkout}; run with the adjustments in `benchmarks/parity/{script.NAME}.py`'s docstring{extra}.")
