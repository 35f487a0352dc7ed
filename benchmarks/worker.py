"""One benchmark model run, in a process of its own: ``python benchmarks/worker.py JOB.json``.

``benchmarks/run.py`` starts one worker per model so that the peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that model alone. The job file names the
model, dataset, config files and config dict, and the file to write the result to. The worker
trains and tests through ``recbole_diffusion.quick_start.run(saved=True)`` (early stopping on
the valid split, test of the best checkpoint) and writes one JSON object:

- ``status``: ``ok`` or ``failed`` (then ``error``, the exception's last line, and ``traceback``);
- ``test_result`` and ``best_valid_result`` (metric -> value), ``best_valid_score``;
- ``epochs_run``, ``best_epoch`` (1-based, the epoch whose checkpoint was tested; RecBole's own
  formula), ``eval_step``;
- ``epoch_seconds`` (one per training epoch), ``valid_eval_seconds`` (one per valid
  evaluation), ``test_eval_seconds``;
- ``run_seconds`` (wall time of ``run()``: data preparation, training, evaluations) and
  ``run_cpu_seconds`` (CPU time of this process over the same span, all threads),
  ``peak_rss_mb`` and ``rss_after_imports_mb`` (the interpreter, torch and RecBole alone);
- ``settings``: the values the model actually ran with, for the keys in ``SETTINGS_KEYS``;
- ``torch_threads`` (``job["threads"]`` when given, else torch's default) and ``device``;
- ``dataset_statistics``: users, items and interactions of the dataset after filtering;
- with ``job["keep_test_rows"]``, ``test_rows``: every test user's rank of its target
  (:func:`encode_rows`), which ``benchmarks/leaderboard.py`` pairs between models;
- with ``job["resume_key"]``, ``resumed_after_epochs``: the run writes its state after every
  evaluated epoch (option ``save_last_checkpoint``) into its checkpoint folder, beside a note of
  the key; a worker started again with the same key and folder (the run was killed, or a session
  ended) resumes from that epoch instead of starting over (:func:`resumable_checkpoint`), unless
  that state was trained on another data folder than the job's. The times then cover the resumed
  part only; ``epochs_run`` and ``best_epoch`` count every epoch.

With ``job["measure"]`` (``benchmarks/speed.py``) the worker trains nothing to the end: it times
``measure["train_steps"]`` training steps after ``measure["warmup_steps"]`` through the trainer's
own epoch loop, one full valid evaluation, the floating-point operations of one training step
(``torch.utils.flop_counter``), and a short ``torch.profiler`` trace of training and of evaluation
(:func:`measure_job` says what it writes).

Exit code 0 when the run succeeded, 1 otherwise; the result file is written either way.
"""

import base64
import glob
import json
import os
import resource
import sys
import time
import traceback
import zlib

# What the results table prints under each model, so two rows never differ in a hidden way.
SETTINGS_KEYS = (
    "train_mode",
    "epochs",
    "train_batch_size",
    "learning_rate",
    "hidden_size",
    "embedding_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "dropout_prob",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "loss_type",
    "MAX_ITEM_LIST_LENGTH",
    "eval_step",
    "stopping_step",
    "valid_metric",
    "seed",
    # what tells one plugin model's variants apart in a curve or an ablation
    "train_noise_ratio",
    "augmentation",
    "backbone",
)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def best_epoch(epochs_run, eval_step, evals_since_best):
    """1-based epoch of the best valid evaluation, as RecBole's ``Trainer.fit`` computes it
    (``last evaluated epoch - cur_step * eval_step``); None when no valid evaluation ran."""
    if eval_step is None or eval_step <= 0 or epochs_run // eval_step == 0:
        return None
    last_evaluated = (epochs_run // eval_step) * eval_step  # 1-based
    return last_evaluated - evals_since_best * eval_step


def plain(value):
    """JSON-safe copy of a metric dict / number / config value."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _pack(data):
    return base64.b64encode(zlib.compress(data, 9)).decode("ascii")


def _unpack(text):
    return zlib.decompress(base64.b64decode(text))


def encode_rows(rows):
    """The test rows of one run (``recbole_diffusion.evaluation.evaluated_rows``) as JSON-safe
    text: the rows sorted by key (the raw user token, plus a tab and the target domain on a
    cross-domain dataset), the keys newline-joined and the ranks as little-endian int32, each
    zlib-compressed and base64-encoded (about 60 KB for the 22,363 users of amazon-beauty)."""
    import numpy as np

    users = [str(u) for u in rows["user"]]
    keys = [f"{u}\t{d}" for u, d in zip(users, rows["domain"])] if "domain" in rows else users
    order = sorted(range(len(keys)), key=keys.__getitem__)
    ranks = np.asarray(rows["rank"], dtype="<i4")[order]
    return {
        "rows": len(keys),
        "keys": _pack("\n".join(keys[i] for i in order).encode("utf-8")),
        "ranks": _pack(ranks.tobytes()),
    }


def decode_rows(stored):
    """``(keys, ranks)`` of :func:`encode_rows`'s output: a list of str and an int array."""
    import numpy as np

    keys = _unpack(stored["keys"]).decode("utf-8").split("\n") if stored["rows"] else []
    ranks = np.frombuffer(_unpack(stored["ranks"]), dtype="<i4").astype(np.int64)
    if len(keys) != stored["rows"] or len(ranks) != stored["rows"]:
        raise ValueError(f"stored test rows are inconsistent: {stored['rows']} rows, {len(keys)} keys, {len(ranks)} ranks")
    return keys, ranks


RESUME_NOTE = "resume-key.txt"


def resumable_checkpoint(checkpoint_dir, key):
    """The last-epoch checkpoint (``*-last.pth``) an interrupted run of the same ``key`` left in
    ``checkpoint_dir``, or None; a file left by a run of another key is removed. Notes ``key`` in
    the folder for the run about to start."""
    from recbole_diffusion.trainer import last_model_file_of

    note = os.path.join(checkpoint_dir, RESUME_NOTE)
    found = sorted(glob.glob(os.path.join(glob.escape(checkpoint_dir), last_model_file_of("*.pth"))), key=os.path.getmtime)
    noted = None
    if os.path.exists(note):
        with open(note, encoding="utf-8") as handle:
            noted = handle.read().strip()
    keep = found[-1] if found and noted == key else None
    for path in found:
        if path != keep:
            remove_run_state(path)
    os.makedirs(checkpoint_dir, exist_ok=True)
    with open(note, "w", encoding="utf-8") as handle:
        handle.write(f"{key}\n")
    return keep


def remove_run_state(last_file):
    """Remove what an unfinished run left: its last-epoch checkpoint ``last_file`` and the best
    checkpoint beside it (the trainer names the two ``<root>.pth`` and ``<root>-last.pth``)."""
    from recbole_diffusion.trainer import named_model_file_of

    for path in (last_file, named_model_file_of(last_file)):
        if path and os.path.exists(path):
            os.remove(path)


def read_from_elsewhere(resume_file, data_path):
    """The data folder ``resume_file`` was trained on when it is not ``data_path`` (the job's), else
    None (also when either is unknown)."""
    if resume_file is None or not data_path:
        return None
    from recbole_diffusion.compat import load_checkpoint

    try:
        stored = json.loads(load_checkpoint(resume_file)["config"]).get("data_path")
    except (ValueError, KeyError, TypeError):  # unreadable: the run's own check refuses it, and the run starts over
        return None
    if stored and os.path.realpath(stored) != os.path.realpath(data_path):
        return stored
    return None


def run_job(job):
    import torch

    from recbole_diffusion.errors import ConfigError
    from recbole_diffusion.quick_start import run

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    rss_after_imports = peak_rss_mb()
    config_dict, resume_file = job["config_dict"], None
    if job.get("resume_key"):
        config_dict = {**config_dict, "save_last_checkpoint": True}
        resume_file = resumable_checkpoint(config_dict["checkpoint_dir"], job["resume_key"])
        elsewhere = read_from_elsewhere(resume_file, config_dict.get("data_path"))
        if elsewhere:  # the same settings on other data (the key names no data path): start over
            print(f"not resuming {resume_file}: it trained on {elsewhere}; starting over", flush=True)
            remove_run_state(resume_file)
            resume_file = None
        if resume_file:
            print(f"resuming from {resume_file}", flush=True)
    start = time.perf_counter()
    cpu_start = time.process_time()
    arguments = dict(model=job["model"], dataset=job["dataset"], config_file_list=job["config_file_list"],
                     config_dict=config_dict, saved=True, verbose=True, return_trainer=True)
    try:
        result = run(**arguments, resume_file=resume_file)
    except ConfigError as exc:  # the stored run's options are not this job's: start over
        if resume_file is None or not str(exc).startswith("--checkpoint:"):
            raise
        print(f"not resuming ({exc}); starting over", flush=True)
        remove_run_state(resume_file)
        result = run(**arguments)
    except Exception:
        # a resumed run that fails leaves nothing to resume: the next attempt starts over instead of
        # failing the same way again
        if resume_file is not None:
            remove_run_state(resume_file)
        raise
    run_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    trainer = result.pop("trainer")
    if os.path.exists(trainer.last_model_file):  # the run is over: nothing left to resume
        os.remove(trainer.last_model_file)
    # start_epoch is past the budget when a stopped run was resumed: count the epochs it had trained
    epochs_before = int(trainer.epochs_before_resume)
    epochs_run = epochs_before + len(result["epoch_seconds"])
    config = trainer.config
    epoch_seconds = list(result["epoch_seconds"])
    eval_seconds = list(result["eval_seconds"])
    # every evaluate() call is timed; the last one is the test evaluation, the others are valid
    valid_eval_seconds, test_eval_seconds = eval_seconds[:-1], (eval_seconds[-1] if eval_seconds else None)
    eval_step = trainer.eval_step if result["best_valid_result"] is not None else None
    # the trainer's last evaluation is the test one
    test_rows = trainer.last_eval_rows if job.get("keep_test_rows") else None
    if job.get("keep_test_rows") and test_rows is None:
        raise RuntimeError("keep_test_rows: the test evaluation kept no per-user ranks (it needs full-sort evaluation)")
    saved_model_file = result.get("saved_model_file")
    if saved_model_file and not job.get("keep_checkpoint") and os.path.exists(saved_model_file):
        os.remove(saved_model_file)
        saved_model_file = None
    return {
        "status": "ok",
        "model": result["model"],
        "test_result": plain(result["test_result"]),
        "best_valid_result": plain(result["best_valid_result"]),
        "best_valid_score": plain(result["best_valid_score"]),
        "valid_metric": config["valid_metric"],
        "epochs_run": epochs_run,
        "eval_step": eval_step,
        "best_epoch": best_epoch(epochs_run, eval_step, trainer.cur_step),
        **({"resumed_after_epochs": epochs_before} if epochs_before else {}),
        # option eval_test_every_epoch: the test metrics after every validation (reported, never selected on)
        **({"test_results_per_epoch": result["test_results_per_epoch"]} if "test_results_per_epoch" in result else {}),
        "epoch_seconds": epoch_seconds,
        "valid_eval_seconds": valid_eval_seconds,
        "test_eval_seconds": test_eval_seconds,
        "run_seconds": run_seconds,
        "run_cpu_seconds": cpu_seconds,
        "rss_after_imports_mb": rss_after_imports,
        "settings": {k: plain(config.final_config_dict[k]) for k in SETTINGS_KEYS if config.final_config_dict.get(k) is not None},
        "torch_threads": torch.get_num_threads(),
        "device": str(config["device"]),
        "saved_model_file": saved_model_file,
        "dataset_statistics": result["dataset_statistics"],
        **({"test_rows": encode_rows(test_rows)} if test_rows is not None else {}),
    }


class FirstBatches:
    """The first ``count`` batches of a training loader, with the time each was handed out and the
    time the last one was done with (``stamps``: ``count + 1`` values)."""

    def __init__(self, loader, count):
        self.loader, self.count, self.stamps = loader, count, []

    def __len__(self):
        return self.count

    def __iter__(self):
        self.stamps = []
        for index, batch in enumerate(self.loader):
            if index == self.count:
                break
            self.stamps.append(time.perf_counter())
            yield batch
        self.stamps.append(time.perf_counter())

    def __getattr__(self, name):  # shuffle, sampler, ...: the loader's
        return getattr(self.loader, name)


def top_operators(profiler, steps, rows=8):
    """The operators of a ``torch.profiler`` trace with the most self CPU time: name, milliseconds
    per step and share of the trace's self CPU time."""
    events = list(profiler.key_averages())
    total = sum(event.self_cpu_time_total for event in events) or 1.0
    events.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    return {
        "total_ms_per_step": total / 1000.0 / steps,
        "operators": [
            {"name": event.key, "ms_per_step": event.self_cpu_time_total / 1000.0 / steps,
             "share": event.self_cpu_time_total / total, "calls_per_step": event.count / steps}
            for event in events[:rows]
        ],
    }


def measure_job(job):
    """Speed of one model at its settings, for ``benchmarks/speed.py``. Writes ``train_batches``
    (per epoch), ``step_seconds`` (mean of the timed steps), ``epoch_seconds_estimate`` (their mean
    times the batches of an epoch), ``setup_seconds`` (work done once before the first epoch, such
    as i2VAE's pseudo-sequence fit; 0 when none), ``valid_eval_seconds`` and ``valid_users``,
    ``flops_per_step`` (forward and backward of one batch, as torch's flop counter counts them:
    matrix products and attention), ``train_profile`` and ``eval_profile``
    (:func:`top_operators`)."""
    import torch
    from recbole.utils import init_seed
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    measure = job["measure"]
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    config = Config(model=job["model"], dataset=job["dataset"], config_file_list=job["config_file_list"], config_dict=job["config_dict"])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.perf_counter()
    if hasattr(model, "fit_pseudo_sequences") and not bool(model.pseudo_items_fitted):
        model.fit_pseudo_sequences()  # what i2VAE's trainer does once before its first epoch
    setup_seconds = time.perf_counter() - start

    batches = len(train_data)
    warmup = min(int(measure["warmup_steps"]), batches - 1)
    steps = min(int(measure["train_steps"]), batches - warmup)
    timed = FirstBatches(train_data, warmup + steps)
    trainer._train_epoch(timed, 0)
    step_seconds = (timed.stamps[-1] - timed.stamps[warmup]) / steps

    batch = next(iter(train_data)).to(trainer.device)
    model.train()
    with FlopCounterMode(display=False) as counter:
        losses = model.calculate_loss(batch)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        loss.backward()
    trainer.optimizer.zero_grad()

    start = time.perf_counter()
    trainer.evaluate(valid_data, load_best_model=False)
    valid_eval_seconds = time.perf_counter() - start

    profile_steps = int(measure["profile_steps"])
    with profile(activities=[ProfilerActivity.CPU]) as train_trace:
        trainer._train_epoch(FirstBatches(train_data, profile_steps), 1)
    model.eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as eval_trace:
        done = 0
        for batched in valid_data:
            trainer._full_sort_batch_eval(batched)
            done += 1
            if done == profile_steps:
                break
    return {
        "status": "ok",
        "model": config["model"],
        "train_batches": batches,
        "train_batch_size": config["train_batch_size"],
        "timed_steps": steps,
        "warmup_steps": warmup,
        "step_seconds": step_seconds,
        "epoch_seconds_estimate": step_seconds * batches,
        "setup_seconds": setup_seconds,
        "valid_eval_seconds": valid_eval_seconds,
        "valid_batches": len(valid_data),
        "flops_per_step": counter.get_total_flops(),
        "train_profile": top_operators(train_trace, profile_steps),
        "eval_profile": top_operators(eval_trace, done),
        "eval_profile_batches": done,
        "torch_threads": torch.get_num_threads(),
        "device": str(config["device"]),
    }


def last_line(text):
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main(argv):
    if len(argv) != 1:
        print("usage: python benchmarks/worker.py JOB.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        job = json.load(handle)
    if job.get("memory_limit_bytes"):
        limit = int(job["memory_limit_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        record = measure_job(job) if job.get("measure") else run_job(job)
        code = 0
    except BaseException as exc:  # noqa: BLE001 -- every failure is reported, then re-signalled by the exit code
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        message = last_line(exc) or type(exc).__name__
        record = {"status": "failed", "error": f"{type(exc).__name__}: {message}", "traceback": traceback.format_exc()}
        code = 1
    record["peak_rss_mb"] = peak_rss_mb()
    tmp = job["result_file"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(tmp, job["result_file"])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
