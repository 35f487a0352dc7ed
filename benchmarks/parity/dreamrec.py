"""DreamRec against its authors' code: the authors' ``DreamRec.py`` and this plugin's ``DreamRec``
trained on the same RecBole split with the same settings, each scored by its own evaluation and by
ours, side by side.

    python benchmarks/parity/dreamrec.py --authors_repo=PATH --data_path=DATA
    python benchmarks/parity/dreamrec.py --authors_repo=PATH --data_path=DATA --epochs 1 --eval_users 200
    python benchmarks/parity/dreamrec.py --data_path=DATA --sides ours          # our side only

``PATH`` is a checkout of the authors' repository (GitHub YangZhengyi98/DreamRec; written against
commit 454133ca0dba08da09af3ef378acf44eebd2a914, whose ``DreamRec.py``, ``Modules_ori.py`` and
``utility.py`` are all it needs). Nothing of their code or data is part of this repository: for
every run the three files are copied from ``PATH`` into a fresh run folder under ``--work_dir``
(default: a temporary folder, removed after a successful run), next to our data converted to their
format, and run there in a process of their own.

The data: ``--dataset`` (default amazon-beauty) from ``--data_path``, split by this plugin as every
benchmark splits it (the dataset's YAML: chronological leave-one-out, full ranking) with
``MAX_ITEM_LIST_LENGTH: 10``, the authors' ``seq_size``. Converted to their input
(``data/<dataset>/{data_statis,train_data,val_data,test_data}.df``, pickled pandas frames with the
columns ``seq``, ``len_seq``, ``next``; ``data_statis`` with ``seq_size`` 10 and ``item_num``):
every training sample of RecBole's train split (a prefix of a user's training sequence and its next
item) is one row; valid and test hold each user's valid (test) target with its history. ``seq``
is the last 10 history items, oldest first, right-padded; item ids are RecBole's internal ids
1..n-1 shifted to 0..n-2, and the padding id is ``item_num`` = n-1.

Settings, both sides: the authors' README command for YooChoose (T=500, exp schedule, w=2, lr 1e-3,
AdamW, mlp1 denoiser; their defaults: hidden 64, dropout 0.1, p_u 0.1, batch 256, N(0, 1)
embeddings), ``--epochs`` epochs (default 50), seed ``--seeds``. Theirs run as
``DreamRec.py --data <dataset> --timesteps 500 --lr 0.001 --beta_sche exp --w 2 --optimizer adamw
--diffuser_type mlp1 --random_seed <seed> --epoch <epochs>``. Ours: ``DreamRec``'s YAML (the same
values) with ``MAX_ITEM_LIST_LENGTH: 10``, ``train_mode: prefix`` (exactly their training rows:
whole-sequence windows of 10 would give a target early in a window of a long user less history than
its row has), ``eval_step: 0`` (no valid evaluation, no model selection: the model after the last
epoch is tested, as theirs), on the CPU. What still differs: they draw every batch anew
(``train_data.sample(n=256)``, ``int(rows / 256)`` batches an epoch), we shuffle once per epoch;
they evaluate with dropout on, we with it off.

Evaluations, of the model after the last epoch:

- **theirs** (authors' side only): their ``evaluate()`` on their ``test_data.df``, printed by their
  script and parsed here: batches of 100 users (the last partial batch is dropped), no masking of
  the user's history, their padding id among the candidates, the model in training mode (dropout
  on). It runs every 10 epochs; the table shows the last.
- **ours** (both sides): the project's Trainer full-sort evaluation of the test split, the one
  every benchmark uses: every item ranked but RecBole's padding id, eval mode. As RecBole's
  full-sort evaluation of every sequential model, it masks no history item (RecBole's loader gives
  a sequential model no history index). The per-user ranks are stored; HR/NDCG are computed from
  them (on ``--eval_users`` when given).

``--eval_users N`` (at least 100) restricts the evaluations to a fixed random sample of N test
users (numpy's ``default_rng(0)`` over the split's users in id order), the same users on both
sides and for every seed: their ``val_data.df`` and ``test_data.df`` hold only those users (their
evaluation of 500 reverse steps per batch of 100 is the slow part), and the table's ours-protocol
metrics are averaged over them. Our evaluation still scores every test user (4096 a batch, a minute
or two on a CPU), so the JSON has the full-split metrics too. On a busy 2-core CPU,
``--epochs 1 --eval_users 200`` on amazon-beauty takes about 5 minutes, both sides.

Run-time adjustments to the authors' code (all made in the run's process, none to their files):

1. CPU: ``torch.cuda.is_available`` answers False in that process (their script takes CUDA when
   it exists), and ``torch.set_num_threads(--threads)`` (default 1), as on our side.
2. ``DreamRec.py`` is read and ``exec``-uted as ``__main__`` in a dict, with ``sys.argv`` set to
   the command above and the run folder first on ``sys.path``; afterwards ``model``, ``diff``,
   ``evaluate``, ``device`` and ``num_batches`` are taken from that dict.
3. Their ``utility.calculate_hit`` is wrapped so that their ``evaluate()`` does not fail when no
   user of a split has the target in the top k (``ng_purchase[0,0]`` on the float 0): its NDCG
   accumulators start as 1x1 arrays of 0 instead of the integer 0. No value changes.
4. ``torch.nn.functional.mse_loss`` records every value it returns while their script runs (their
   ``p_losses`` loss of each training step), for the mean loss of the last epoch (they print only
   each epoch's last batch's); restored afterwards.
5. When ``--epochs`` is not a multiple of 10 (their evaluation interval), their ``evaluate()`` is
   called once more, on val and test, after the last epoch, as their loop calls it.
6. Our evaluation of their model: a wrapper gives the Trainer their scores. It converts each batch's
   histories to their ids and width (10), calls their ``Tenc.predict(states, len_states, diff)``
   (their encoder and their ``diff.sample`` guided reverse chain), drops the score of their padding
   id and puts RecBole's padding id 0 first (which the Trainer scores -inf). Their model is in eval
   mode there, torch seeded with the run's seed first; a batch of one user is scored as two copies
   (their ``squeeze()`` drops the batch dimension of a single row).

Results: each (side, seed) run is stored as soon as it ends as
``benchmarks/results/parity/dreamrec-<dataset>-<E>epochs-<users>-<side>-seed<seed>.json``
(atomically; metrics, per-user test ranks, losses, seconds, settings, the authors' files' git blob
ids); a rerun skips a run stored ``ok`` with the same settings unless ``--redo``. The section
``dreamrec-<dataset>-<E>epochs[-<N>users]`` of ``benchmarks/results/parity.md`` is rewritten from the
stored runs after every run (``benchmarks/common.py``'s markers, lock and atomic writes), and printed.
``--results_dir`` moves both.

Bad arguments (a missing file in ``--authors_repo``, ``--eval_users`` below 100, a dataset that
cannot be read, ...) end with ``error: ...`` and exit code 2 before anything runs. Exit code 1 when
a run failed (its output is in ``<work_dir>/<side>-seed<seed>/output.log``, kept), else 0.
"""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from benchmarks import common as bench  # noqa: E402
from benchmarks import worker  # noqa: E402
from benchmarks.parity import common as parity  # noqa: E402
from benchmarks.parity.common import PAGE_HEADER, RANK_METRICS, read_run, settings_key  # noqa: E402,F401

UsageError = bench.UsageError
SCRIPT = os.path.abspath(__file__)

AUTHORS_FILES = ("DreamRec.py", "Modules_ori.py", "utility.py")
AUTHORS_COMMIT = "454133ca0dba08da09af3ef378acf44eebd2a914"
# git blob ids of the three files at AUTHORS_COMMIT: tells a run on other versions of them
AUTHORS_BLOBS = {
    "DreamRec.py": "e0ce21f96aeec27ef51214257778b0ba67e8ea43",
    "Modules_ori.py": "be8b008c4a81ae7a94b0f10dcf256be129b350be",
    "utility.py": "e7265414c2e0b958746749714e33aad861e55ab5",
}
SEQ_SIZE = 10  # the authors' seq_size, our MAX_ITEM_LIST_LENGTH
# the authors' README command for YooChoose (their defaults: hidden 64, dropout 0.1, p 0.1, batch 256)
AUTHORS_ARGS = ("--timesteps", "500", "--lr", "0.001", "--beta_sche", "exp", "--w", "2", "--optimizer", "adamw", "--diffuser_type", "mlp1")
AUTHORS_EVAL_EVERY = 10  # their loop evaluates after every 10th epoch
AUTHORS_EVAL_BATCH = 100  # their evaluate() scores whole batches of 100 users
SIDES = parity.SIDES
# what names this script's runs and sections (benchmarks/parity/common.py)
NAME, USERS_OPTION = "dreamrec", "--eval_users"
SIDE_TITLES = {"authors": "authors' `DreamRec.py`", "ours": "our `DreamRec`"}
TABLE_METRICS = ("hit@10", "ndcg@10", "hit@20", "ndcg@20")
EVAL_USERS_SEED = parity.USERS_SEED
# how their script prints (parsed for their own evaluation)
VAL_PHRASE, TEST_PHRASE = "VAL PHRASE", "TEST PHRASE"
EVAL_END = ("Evalution cost", "[parity] end of evaluation")


# ============================================================================ arguments
def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/parity/dreamrec.py",
        description="Run the DreamRec authors' code and our DreamRec on the same split and settings; write "
        "benchmarks/results/parity.md (see the docstring).",
    )
    parity.add_data_options(parser, "YangZhengyi98/DreamRec", AUTHORS_FILES, 50, "training epochs of both sides (default 50)", 2020, "seeds (default 2020)")
    parser.add_argument("--eval_users", type=int, default=None, metavar="N", help="evaluate a fixed random sample of N >= 100 test users (default: all)")
    parity.add_run_options(parser, SIDES)
    return parser


def check_args(args):
    """UsageError for arguments that cannot run; reads no data."""
    parity.check_common_args(args)
    if args.eval_users is not None and args.eval_users < AUTHORS_EVAL_BATCH:
        raise UsageError(f"--eval_users must be at least {AUTHORS_EVAL_BATCH}: the authors' evaluation scores whole batches of {AUTHORS_EVAL_BATCH} users")
    if "authors" in args.sides:
        check_authors_repo(args.authors_repo)


def check_authors_repo(path):
    parity.check_authors_repo(path, AUTHORS_FILES, "YangZhengyi98/DreamRec", AUTHORS_COMMIT)


def authors_code(path):
    """Blob ids of the authors' files and whether they are those of ``AUTHORS_COMMIT``."""
    return parity.authors_code(path, AUTHORS_FILES, AUTHORS_COMMIT, AUTHORS_BLOBS)


# ============================================================================ data
def split_config_dict(data_path=None):
    """The configuration both sides' split is built with (and our side trains with, plus its run settings)."""
    # metric_decimal_place: the full-split results in the JSON to 6 places (RecBole rounds to 4)
    config = {"MAX_ITEM_LIST_LENGTH": SEQ_SIZE, "train_mode": "prefix", "gpu_id": "", "show_progress": False, "metric_decimal_place": 6}
    if data_path:
        config["data_path"] = os.path.abspath(data_path)
    return config


def build_split(dataset, config_dict):
    """``(config, train_data, valid_data, test_data)``: the plugin's split of ``dataset`` for DreamRec."""
    return parity.build_split("DreamRec", dataset, config_dict)


def authors_rows(split, config, seq_size=SEQ_SIZE):
    """The rows of one RecBole split in the authors' format: ``(frame, user ids)``; ``frame`` has
    ``seq`` (the last ``seq_size`` history items, oldest first, right-padded with ``item_num``),
    ``len_seq`` and ``next``, items shifted from RecBole's 1..n-1 to 0..n-2."""
    import pandas as pd

    feat = split.inter_feat
    item_num = split.item_num - 1  # RecBole counts its padding id 0 among the items
    lists = feat[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numpy()
    lengths = feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    targets = feat[split.iid_field].numpy()
    seqs, lens = [], []
    for items, length in zip(lists, lengths):
        history = [int(item) - 1 for item in items[:length]][-seq_size:]
        seqs.append(history + [item_num] * (seq_size - len(history)))
        lens.append(len(history))
    frame = pd.DataFrame({"seq": seqs, "len_seq": lens, "next": [int(t) - 1 for t in targets]})
    return frame, feat[split.uid_field].numpy()


def to_authors_format(train_data, valid_data, test_data, config, seq_size=SEQ_SIZE):
    """The split as the authors' four frames plus the user ids of their rows (RecBole's internal ids):
    ``{"data_statis", "train_data", "val_data", "test_data", "train_users", "val_users", "test_users"}``."""
    import pandas as pd

    train, train_users = authors_rows(train_data._dataset, config, seq_size)
    val, val_users = authors_rows(valid_data._dataset, config, seq_size)
    test, test_users = authors_rows(test_data._dataset, config, seq_size)
    item_num = train_data._dataset.item_num - 1
    statis = pd.DataFrame({"seq_size": [seq_size], "item_num": [item_num]})
    return {"data_statis": statis, "train_data": train, "val_data": val, "test_data": test,
            "train_users": train_users, "val_users": val_users, "test_users": test_users}


def choose_users(user_ids, count, seed=EVAL_USERS_SEED):
    """``count`` of the distinct ``user_ids``, a uniform sample without replacement, sorted."""
    return parity.choose_users(user_ids, count, seed)


def keep_users(frame, user_ids, chosen):
    import numpy as np

    return frame[np.isin(user_ids, chosen)].reset_index(drop=True)


def write_authors_data(folder, dataset, frames):
    """Pickle the four frames where their script reads them: ``folder/data/<dataset>/<name>.df``."""
    target = os.path.join(folder, "data", dataset)
    os.makedirs(target, exist_ok=True)
    for name in ("data_statis", "train_data", "val_data", "test_data"):
        frames[name].to_pickle(os.path.join(target, f"{name}.df"))
    return target


# ============================================================================ the runs' processes
class TimedLines:
    """A stdout that passes everything on and keeps each complete line with the time it ended."""

    def __init__(self, stream):
        self.stream, self.lines, self._partial = stream, [], ""

    def write(self, text):
        self.stream.write(text)
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        now = time.perf_counter()
        self.lines.extend((now, line) for line in done)
        return len(text)

    def flush(self):
        self.stream.flush()


def parse_authors_output(lines):
    """What their script printed: ``{"epochs": [{"epoch", "loss", "time"}], "evaluations":
    [{"epoch", "split", "metrics", "start", "end"}]}``; ``lines`` are ``(time, text)``, epochs
    1-based, an evaluation's epoch the last epoch printed before it."""
    epochs, evaluations = [], []
    epoch, current, header = 0, None, None
    for stamp, text in lines:
        line = text.strip()
        if line.startswith("Epoch ") and "Train loss:" in line:
            epoch = int(line.split()[1].rstrip(";")) + 1
            loss = float(line.split("Train loss:")[1].split(";")[0])
            epochs.append({"epoch": epoch, "loss": loss, "time": stamp})
        elif VAL_PHRASE in line or TEST_PHRASE in line:
            current = {"epoch": epoch, "split": "val" if VAL_PHRASE in line else "test", "start": stamp}
            evaluations.append(current)
        elif line.startswith("HR@"):
            header = [name.replace("HR@", "hit@").replace("NDCG@", "ndcg@") for name in line.split()]
        elif header and current is not None and "metrics" not in current and line:
            values = [float(value) for value in line.split()]
            current["metrics"] = dict(zip(header, values))
            current["end"] = stamp
            header = None
        if line.startswith(EVAL_END):
            current = None
    return {"epochs": epochs, "evaluations": evaluations}


def authors_job(job):
    """One run of the authors' code in this process (cwd: the run folder); returns the record."""
    import numpy as np
    import pandas  # noqa: F401 -- imported before their script, so that their first epoch's time holds no import
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(job["threads"]))
    torch.cuda.is_available = lambda: False  # adjustment 1: the CPU, as our side
    folder = os.getcwd()
    sys.path.insert(0, folder)
    import utility  # the authors' utility.py, copied into the run folder

    original_hit = utility.calculate_hit

    def calculate_hit(sorted_list, topk, true_items, hit_purchase, ndcg_purchase):  # adjustment 3
        for index, value in enumerate(ndcg_purchase):
            if not isinstance(value, np.ndarray):
                ndcg_purchase[index] = np.full((1, 1), float(value))
        return original_hit(sorted_list, topk, true_items, hit_purchase, ndcg_purchase)

    utility.calculate_hit = calculate_hit
    losses, mse_loss = [], F.mse_loss

    def recorded_mse_loss(*args, **kwargs):  # adjustment 4
        loss = mse_loss(*args, **kwargs)
        losses.append(loss.detach())
        return loss

    script = os.path.join(folder, "DreamRec.py")
    with open(script, encoding="utf-8") as handle:
        source = handle.read()
    namespace = {"__name__": "__main__", "__file__": script}
    sys.argv = ["DreamRec.py", *job["argv"]]
    out = TimedLines(sys.stdout)
    start = time.perf_counter()
    F.mse_loss = recorded_mse_loss
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, script, "exec"), namespace)  # adjustment 2
            trained = time.perf_counter()
            if job["epochs"] % AUTHORS_EVAL_EVERY:  # adjustment 5
                model, diff, device, evaluate = (namespace[key] for key in ("model", "diff", "device", "evaluate"))
                print("[parity] their evaluate() after the last epoch")
                print(f"-------------------------- {VAL_PHRASE} --------------------------")
                evaluate(model, "val_data.df", diff, device)
                print(f"-------------------------- {TEST_PHRASE} -------------------------")
                evaluate(model, "test_data.df", diff, device)
                print(EVAL_END[1])
    finally:
        F.mse_loss = mse_loss
    printed = parse_authors_output(out.lines)
    batches = int(namespace["num_batches"])
    losses = [float(loss) for loss in losses]
    if len(losses) != batches * job["epochs"]:
        raise RuntimeError(f"recorded {len(losses)} training losses, expected {batches} batches x {job['epochs']} epochs")
    epoch_losses = [sum(losses[i * batches:(i + 1) * batches]) / batches for i in range(job["epochs"])]
    # what they print per epoch is its last batch's loss: the recorded losses must hold it
    printed_losses = [e["loss"] for e in printed["epochs"]]
    last_batches = [round(losses[(i + 1) * batches - 1], 4) for i in range(job["epochs"])]
    if len(printed_losses) != job["epochs"] or any(abs(a - b) > 1.5e-4 for a, b in zip(printed_losses, last_batches)):
        raise RuntimeError(f"the recorded losses do not hold the printed ones: printed {printed_losses[:5]}, recorded {last_batches[:5]}")
    # each epoch's training seconds: from the end of what came before (the previous epoch or evaluation)
    boundaries = [(start, "start")] + [(e["time"], "epoch") for e in printed["epochs"]] + [(e["end"], "eval") for e in printed["evaluations"] if "end" in e]
    boundaries.sort()
    epoch_seconds = []
    for index, (stamp, kind) in enumerate(boundaries):
        if kind == "epoch":
            epoch_seconds.append(stamp - boundaries[index - 1][0])
    evaluations = [{key: value for key, value in e.items() if key not in ("start", "end")}
                   | {"seconds": e["end"] - e["start"] if "end" in e else None} for e in printed["evaluations"]]
    record = {
        "status": "ok",
        "own_evaluations": evaluations,
        "train_batches": batches,
        "epoch_losses": epoch_losses,
        "printed_epoch_losses": printed_losses,
        "last_epoch_loss": epoch_losses[-1],
        "epoch_seconds": epoch_seconds,
        "train_seconds": sum(epoch_seconds),
        "script_seconds": trained - start,
        "torch_threads": torch.get_num_threads(),
        "device": str(namespace["device"]),
    }
    record.update(score_authors_model(job, namespace["model"], namespace["diff"]))
    return record


def score_authors_model(job, their_model, diff):
    """Our evaluation of their trained model (adjustment 6): the test ranks and the seconds."""
    import torch

    from recbole_diffusion.trainer import Trainer

    config, train_data, _, test_data = build_split(job["dataset"], job["split_config"])

    class AuthorsScorer(torch.nn.Module):
        """Their model as a full-sort scorer over RecBole's item ids, for the Trainer."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.item_num = test_data._dataset.item_num - 1
            self.item_seq = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
            self.item_seq_len = config["ITEM_LIST_LENGTH_FIELD"]

        def full_sort_predict(self, interaction):
            items, lengths = interaction[self.item_seq], interaction[self.item_seq_len]
            states = torch.full((items.size(0), SEQ_SIZE), self.item_num, dtype=torch.long, device=items.device)
            width = min(items.size(1), SEQ_SIZE)
            shifted = items[:, :width] - 1
            states[:, :width] = torch.where(shifted >= 0, shifted, self.item_num)
            rows = states.size(0)
            if rows == 1:  # their squeeze() would drop the batch dimension
                states, lengths = states.repeat(2, 1), lengths.repeat(2)
            scores = self.model.predict(states, lengths, diff)[:rows]
            padding = torch.full((rows, 1), float("-inf"), device=scores.device, dtype=scores.dtype)
            return torch.cat([padding, scores[:, : self.item_num]], dim=1)

    trainer = Trainer(config, AuthorsScorer(their_model))
    trainer.eval_collector.data_collect(train_data)
    torch.manual_seed(int(job["seed"]))
    start = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {
        "protocol_seconds": time.perf_counter() - start,
        "protocol_result": worker.plain(result),
        "test_rows": worker.encode_rows(trainer.last_eval_rows),
    }


def ours_job(job):
    """One run of our DreamRec in this process: train ``epochs`` epochs, test the last model."""
    import torch

    from recbole_diffusion.quick_start import run

    torch.set_num_threads(int(job["threads"]))
    result = run(model="DreamRec", dataset=job["dataset"], config_dict=job["config_dict"], saved=False, verbose=True, return_trainer=True)
    trainer = result["trainer"]
    batches = int(result["ranks"][0]["train_batches"])
    totals = [trainer.train_loss_dict[epoch] for epoch in sorted(trainer.train_loss_dict)]
    epoch_losses = [float(total) / batches for total in totals]
    config = trainer.config
    return {
        "status": "ok",
        "train_batches": batches,
        "epoch_losses": epoch_losses,
        "last_epoch_loss": epoch_losses[-1],
        "epoch_seconds": list(result["epoch_seconds"]),
        "train_seconds": sum(result["epoch_seconds"]),
        "protocol_seconds": result["eval_seconds"][-1],
        "protocol_result": worker.plain(result["test_result"]),
        "test_rows": worker.encode_rows(trainer.last_eval_rows),
        "model_settings": {key: worker.plain(config.final_config_dict[key]) for key in OURS_SETTINGS_SHOWN if config.final_config_dict.get(key) is not None},
        "torch_threads": torch.get_num_threads(),
        "device": str(config["device"]),
        "dataset_statistics": result["dataset_statistics"],
    }


OURS_SETTINGS_SHOWN = (
    "n_diffusion_steps", "noise_schedule", "guidance_weight", "learning_rate", "learner", "weight_decay", "hidden_size",
    "n_layers", "n_heads", "inner_size", "hidden_dropout_prob", "attn_dropout_prob", "embedding_init_std", "unconditional_prob",
    "denoiser", "train_batch_size", "train_mode", "MAX_ITEM_LIST_LENGTH", "epochs", "eval_step", "seed", "rounding_loss_weight",
)


def job_main(job_file):
    """``--run_job JOB.json``: one side's run in this process; writes ``result.json`` beside the job."""
    return parity.job_main(job_file, {"authors": authors_job, "ours": ours_job})


# ============================================================================ plan, records
def side_settings(args, side, seed, code):
    """What a stored run must match to be reused, and what its job needs."""
    settings = {"side": side, "dataset": args.dataset, "epochs": args.epochs, "seed": seed, "eval_users": args.eval_users,
                "eval_users_seed": EVAL_USERS_SEED, "threads": args.threads, "split": split_config_dict()}
    if side == "authors":
        settings["argv"] = ["--data", args.dataset, *AUTHORS_ARGS, "--random_seed", str(seed), "--epoch", str(args.epochs)]
        settings["authors_blobs"] = code["blobs"]
    else:
        settings["config_dict"] = {"epochs": args.epochs, "eval_step": 0, "seed": seed}
    return settings


# ============================================================================ metrics and table
def rank_metrics(test_rows, users=None):
    """HR and NDCG at 5, 10, 20 from the stored per-user ranks (of ``users`` tokens when given)."""
    return parity.rank_metrics(test_rows, users)


def table_rows(record):
    """The table's rows of one stored run: (evaluation, users, metrics, eval seconds)."""
    rows = []
    if record.get("status") != "ok":
        return rows
    if record["side"] == "authors":
        tests = [e for e in record["own_evaluations"] if e["split"] == "test" and e.get("metrics")]
        if tests:
            last = tests[-1]
            scored = record["their_test_users"] // AUTHORS_EVAL_BATCH * AUTHORS_EVAL_BATCH
            rows.append((f"theirs (`evaluate()`, epoch {last['epoch']})", scored, last["metrics"], last.get("seconds")))
    metrics = rank_metrics(record["test_rows"], record.get("eval_user_tokens"))
    rows.append(("ours (full ranking)", metrics["users"], metrics, record.get("protocol_seconds")))
    return rows


def render_section(state):
    args_view, records = state["view"], state["records"]
    lines, done = parity.section_head(state)
    users = args_view["eval_users"]
    yaml_file = bench.dataset_yaml(args_view["dataset"])
    yaml_text = f"`{yaml_file}`" if yaml_file else "RecBole's defaults"
    user_text = (f"**a fixed random sample of {users} test users** (`--eval_users`; numpy `default_rng({EVAL_USERS_SEED})` over the "
                 "split's users), the same on both sides; their evaluation scores the whole batches of 100 among them"
                 if users else "every test user; their evaluation drops the last partial batch of 100")
    lines += [
        f"- Data: `{args_view['dataset']}`, this plugin's split ({yaml_text}, "
        f"chronological leave-one-out) with MAX_ITEM_LIST_LENGTH {SEQ_SIZE}, converted to the authors' format "
        "(every training prefix one row, ids shifted by one, padding id = item_num).",
        f"- Settings: the authors' README command for YooChoose (`{' '.join(AUTHORS_ARGS)}`, their defaults otherwise) with "
        f"`--epoch {args_view['epochs']}`; our `DreamRec` at its YAML (the same values) with `train_mode: prefix`, `eval_step: 0`. "
        "Both: the model after the last epoch, CPU, "
        f"{args_view['threads']} torch thread(s).",
        f"- Users evaluated: {user_text}.",
        "- Evaluations: *theirs* is their `evaluate()` (no history masking, their padding id a candidate, dropout on); "
        "*ours* is the project's full-sort evaluation (every item but RecBole's padding id; like RecBole's evaluation of every "
        "sequential model it masks no history item; eval mode), from the stored per-user ranks.",
        "- Train loss: the mean of the last epoch's batch losses (the x_0 MSE; theirs recorded as their `p_losses` returned it). "
        "Train s: the training epochs' wall seconds (theirs without their evaluations, their first epoch with their reading of the "
        "data and building of the model); eval s: that evaluation's (theirs: their test split's; ours: the whole test split, "
        "every user, whose ranks give the row's users); total s: the run's process.",
    ]
    code = state.get("authors_code")
    if code:
        lines.append(parity.authors_code_line(sys.modules[__name__], code))
    lines += parity.machine_lines(state, done, packages=("torch", "recbole", "pandas"))
    header = ["side", "seed", "evaluation", "users", *[bench.metric_title(k) for k in TABLE_METRICS], "train loss", "train s", "eval s", "total s", "status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", "---:", "---"] + ["---:"] * (len(header) - 4) + ["---"]) + "|")
    failed = []
    for (side, seed), record in records.items():
        title = SIDE_TITLES[side]
        if record is None:
            lines.append("| " + " | ".join([title, str(seed), "–", "–", *["–"] * len(TABLE_METRICS), "–", "–", "–", "–", "not run"]) + " |")
            continue
        if record.get("status") != "ok":
            failed.append((title, seed, record.get("error", "unknown error")))
            lines.append("| " + " | ".join([title, str(seed), "–", "–", *["–"] * len(TABLE_METRICS), "–", "–", "–",
                                            bench.fmt_seconds(record.get("process_seconds")), "failed"]) + " |")
            continue
        for evaluation, scored, metrics, seconds in table_rows(record):
            lines.append("| " + " | ".join([
                title, str(seed), evaluation, str(scored), *[bench.fmt(metrics.get(k), 4) for k in TABLE_METRICS],
                bench.fmt(record.get("last_epoch_loss"), 4), bench.fmt_seconds(record.get("train_seconds")),
                bench.fmt_seconds(seconds), bench.fmt_seconds(record.get("process_seconds")), "ok",
            ]) + " |")
    lines.append("")
    if failed:
        lines += ["Failed:", ""] + [f"- {title}, seed {seed}: {bench.cell(error)}" for title, seed, error in failed] + [""]
    ours = [r for (side, _), r in records.items() if side == "ours" and r and r.get("status") == "ok"]
    if ours:
        settings = ", ".join(f"{k}={v}" for k, v in ours[0].get("model_settings", {}).items())
        lines += [f"Our settings: {settings}.", ""]
    return "\n".join(lines)


def write_section(state, results_dir):
    return parity.write_section(state["section"], render_section(state), results_dir)


# ============================================================================ main
def prepare_data(args):
    """The split, its conversion and the evaluation users (tokens, or None for all)."""
    config, train_data, valid_data, test_data = build_split(args.dataset, split_config_dict(args.data_path))
    frames = to_authors_format(train_data, valid_data, test_data, config)
    tokens = None
    if args.eval_users is not None:
        chosen = choose_users(frames["test_users"], args.eval_users)
        frames["val_data"] = keep_users(frames["val_data"], frames["val_users"], chosen)
        frames["test_data"] = keep_users(frames["test_data"], frames["test_users"], chosen)
        dataset = test_data._dataset
        tokens = [str(t) for t in dataset.id2token(dataset.uid_field, chosen)]
    return frames, tokens


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    this = sys.modules[__name__]
    stop, started = parity.start(argv, this)
    if stop is not None:
        return stop
    args, results_dir, code, plan = started
    frames = tokens = None
    if any(not item["stored"] for item in plan):
        try:
            from recbole_diffusion.errors import RecBoleDiffusionError

            print(f"building the split of {args.dataset} and its conversion to the authors' format", flush=True)
            frames, tokens = prepare_data(args)
        except (UsageError, RecBoleDiffusionError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    temporary = args.work_dir is None
    work_dir = tempfile.mkdtemp(prefix="parity-dreamrec-") if temporary else os.path.abspath(args.work_dir)
    state = {
        "section": parity.section_name(this, args), "command": parity.shown_command(this, args), "machine": bench.machine_info(),
        "started": bench.now_utc(), "finished": None, "authors_code": code,
        "view": {"dataset": args.dataset, "epochs": args.epochs, "eval_users": args.eval_users, "threads": args.threads},
        "records": {(item["side"], item["seed"]): None for item in plan},
    }

    def make_job(item, run_dir):
        side, seed = item["side"], item["seed"]
        job = {"side": side, "seed": seed, "epochs": args.epochs, "dataset": args.dataset, "threads": args.threads,
               "split_config": split_config_dict(args.data_path)}
        if side == "authors":
            for name in AUTHORS_FILES:  # their code, into the run folder only
                shutil.copyfile(os.path.join(args.authors_repo, name), os.path.join(run_dir, name))
            write_authors_data(run_dir, args.dataset, frames)
            job["argv"] = item["settings"]["argv"]
        else:
            job["config_dict"] = {**job["split_config"], **item["settings"]["config_dict"]}
        return job

    def finish_record(item, record):
        record.update(data_path=bench.shown_data_path(args.data_path) if args.data_path else None,
                      eval_user_tokens=tokens, their_test_users=len(frames["test_data"]))
        if item["side"] == "authors":
            record["authors_code"] = code

    return parity.execute_plan(plan, state, script=SCRIPT, work_dir=work_dir, temporary=temporary, timeout=args.timeout,
                               results_dir=results_dir, make_job=make_job, finish_record=finish_record, render=render_section)

if __name__ == "__main__":
    sys.exit(main())
