"""i2VAE against its authors' code: the authors' ``train_our.py`` (IM-VAE, the code the i2VAE paper
links) run on their own rows with their README's settings, its per-epoch test metrics parsed from
their log files and reported as they report them. This plugin's i2VAE on the same rows is run by
``benchmarks/i2vae_protocol.py`` (the dataset option ``row_split``; ``--ranking sampled`` for their
1 + 999 metric, the maximum over epochs on the test rows beside the valid choice); this script's
section shows its stored sampled-metric runs below the authors', in their columns.

    python benchmarks/parity/i2vae.py --authors_repo=PATH
    python benchmarks/parity/i2vae.py --authors_repo=PATH --seeds 0 --epochs 1 --rows 300 --lightgcn_epochs 1 --results_dir=OUT   # a smoke run

``PATH`` is a checkout of the authors' repository (GitHub WujiangXu/IM-VAE; written against commit
a9ec2faf7b0a5e10146899d276e47e36c15b6098, whose ``train_our.py``, ``model.py``, ``dataset.py``,
``utils.py``, ``callback.py``, ``LightGCN/code/*.py``, ``LightGCN/data/cloth_sport/`` and
``dataset/cloth_sport_{train,test_csu_updated}.csv`` are all it needs; the git blob ids of these
files at that commit are in ``AUTHORS_BLOBS``). Nothing of their code or data is part of this
repository: every run copies what it needs from ``PATH`` into a folder of its own under ``--work_dir``
(default: a temporary folder, removed after a successful run; the folder is fresh unless the run
resumes, adjustment 10) and runs it there in a process of its own; their checkout is only read.

The data are their own: ``--dataset`` cloth_sport (the README's ``-dm``; the only dataset whose
training rows this script regenerates), one row per (user, target domain):
``dataset/cloth_sport_train.csv`` (18,537 rows) for training and
``dataset/cloth_sport_test_csu_updated.csv`` (4,635 rows, their 20% split, part of its overlapping
users cut to one target-domain item: the cold-start rows) for the test, with the pseudo-sequences
(``corr_d1``, ``corr_d2``: 20 items per domain) their ``train_our.py`` reads. The test file ships them (made by their LightGCN checkpoint,
which is not in the repository); the training file with them (``cloth_sport_train_updated.csv``) is
not in the repository either, so it is regenerated the way their code makes it, once per command
(not per seed), in ``<work_dir>/psg``:

1. their LightGCN (``LightGCN/code/main.py``: 3 layers, 64-d, their defaults otherwise: BPR batch
   2048, lr 1e-3, decay 1e-4; their test on ``test.txt`` every 10 epochs) trained on
   ``LightGCN/data/cloth_sport/train.txt`` (the training users' items of both domains, an item-level
   split of those users) for ``--lightgcn_epochs`` epochs (default 1000, theirs) from seed
   ``--lightgcn_seed`` (default 2020, theirs): ``main.py --dataset cloth_sport --layer 3 --recdim 64
   --epochs <E> --seed <S> --tensorboard 0``;
2. their ``callback.generate_corr_seq`` on the training file: the 20 highest-scored items of each
   domain that are not in the user's list of that domain, written as
   ``dataset/cloth_sport_train_updated.csv``.

Seconds on this machine's 2-core CPU, busy with other runs, one torch thread, measured once by the
smoke run below: one LightGCN epoch (36 batches of 2048 of the 72,859 pairs) 16 s, and their test of
it (every 10 epochs, the first before training) 97 s: the default 1000 epochs are about 4.5 hours of
training plus 2.7 hours of their 100 tests. ``callback.py`` took 17 s for its one batch of the
smoke's 300 rows; the whole file is 19 batches of up to 1024 rows, some 5 to 10 minutes. Measured on
the whole files (``--epochs 10 --lightgcn_epochs 100 --lightgcn_tests last``, the same machine, the
other core busy): LightGCN 12.4 s an epoch, its one test 50 s, ``callback.py`` 48 s; then 160 s an
epoch of ``train_our.py`` over the training rows and 56 s for its test, 10 epochs in 36 minutes: the
README's 100 epochs are about 6 hours a seed, its 5 seeds 30 hours, on one core (a run resumes
across sittings, adjustment 10).

``--rows N`` (a smoke run) keeps a fixed random sample of N rows of each of the two files (numpy
``default_rng(0)`` over the row numbers, rows unchanged); the pseudo-sequences are generated for the
N training rows only (LightGCN still trains on its whole ``train.txt``). Their test draws 999
negatives a row from the test file's items of the target domain, which a few hundred rows do not
hold, so under ``--rows`` each file's item pools are those of the whole file (adjustment 7); the
groups' tail lengths are those of the cut files. A sample whose test rows hold no cold-start row of
a domain is refused (their ``test()`` fails on an empty group). The smoke run in the usage lines
(``--rows 300``, one epoch, one LightGCN epoch) takes about 4 minutes: the LightGCN step above
(3 minutes), then one epoch of ``train_our.py``, 4.4 to 6.9 s over the 300 training rows (one
batch) and 5.6 to 8.9 s for their test of 300 rows (two runs, the same metrics, the machine's load
differing); the whole files take less than that rate (linear in the rows) predicts (above).

Settings: the README's command (``run.sh``): ``train_our.py -m output -dm cloth_sport
--kl_lambda_1 0.005 --kl_lambda_2 0.005 --kl_lambda_1_t 0.001 --kl_lambda_2_t 0.001 --lr 8e-4 --KLD1
1.5 --trans_encoder attention --cs_setting True --epoch <epochs>`` (``--epochs``, default 100,
theirs; their defaults otherwise: batch 512, embeddings 128, sequences of 20, 999 test negatives);
their script runs seeds 0 to 4 one after another in one process, here each seed of ``--seeds``
(default 0 1 2 3 4, theirs) runs in a process of its own (adjustment 3).

Evaluation, theirs (there is no other yet): after every epoch their ``test()`` scores every test row
against 1 positive + 999 sampled negatives (ties count against the positive) and logs, per domain
(cloth = their domain 1, sport = domain 2) and group (cold-start: no target-domain history;
long-tailed: a target-domain list no longer than the file's tail length; all), HR@1/5/10, NDCG@5/10
and MRR, each with its maximum over the epochs so far. Their reported number (``log_all.txt``, the
paper's protocol) is that maximum, taken for each metric on its own over the epochs, on the test
rows: no validation split, no model selection. The table gives it ("max over epochs on the test
rows") beside the metrics of the model after the last epoch, from their log file
(``output/log<seed>.txt``, four decimals) parsed here; the maximum is recomputed from the parsed
epochs and checked against the one they log.

Run-time adjustments to the authors' code (none to their checkout; the i2VAE files are patched as
text in the run folder, each pattern must be found, the patches made are listed in the JSON):

1. CPU: in ``train_our.py``, ``model.py``, ``dataset.py`` and ``utils.py`` every ``.cuda()`` is
   ``.cpu()`` and ``.cuda(x)`` is ``.to(x)`` (the noise of their reparameterisation is drawn on the
   CPU either way); in the LightGCN process ``torch.cuda.is_available`` answers False (their
   ``world.py`` takes CUDA when it exists). ``torch.set_num_threads(--threads)`` (default 1) in
   every process.
2. Data loading: their two ``DataLoader``s' ``num_workers=8`` is ``num_workers=0`` (batches are
   built in the training process; on a 2-core machine 8 workers only compete with it). The rows'
   order is drawn in the training process either way; their negatives are drawn by Python's
   ``random`` of the training process (seeded with their seed) instead of the workers' (seeded by
   torch, one seed a worker), so they are not the numbers a run with 8 workers draws.
3. Seeds: their loop ``for i in range(5):`` (seeds 0 to 4) is ``for i in [<seed>]:``, one seed
   per process; their log file is ``output/log<seed>.txt`` as theirs, their ``log_all.txt``
   averages that one seed.
4. Python 3.11: ``random.sample`` no longer takes a set; in ``dataset.py`` ``random.sample(s, k)``
   is ``random.sample(tuple(s), k)``, which is what Python 3.10 did with a set.
5. LightGCN paths: their relative paths (``../LightGCN/data/...``, ``../LightGCN/code/checkpoints``
   and ``dataset/...`` in ``callback.py``, ``register.py``, ``dataloader.py``, ``world.py``) assume
   a working folder beside ``LightGCN/`` that holds ``dataset/``; both steps run in
   ``<work_dir>/psg``, beside a copy of ``LightGCN/code`` and ``LightGCN/data/cloth_sport``, so no
   path is changed. ``main.py`` is ``exec``-uted as ``__main__`` with ``LightGCN/code`` first on
   ``sys.path``; ``callback.py`` is imported and its ``generate_corr_seq(args, csv)`` called for
   the training file only with their defaults (``seq_len`` 20, ``batch_size`` 1024) (their
   ``__main__`` would also redo the test file, under a name ``train_our.py`` does not read).
6. LightGCN logging: ``--tensorboard 0`` (their flag; their default writes TensorBoard event
   files) and, where ``tensorboardX`` is not installed, a stand-in module for ``main.py``'s import
   (its ``SummaryWriter`` raises if built; the JSON says which ran). ``cppimport`` is not needed:
   their ``utils.py`` falls back to their Python negative sampler when it is missing, as it does.
7. Under ``--rows`` only: their dataset's item pools (``item_pool_d1``, ``item_pool_d2``, where
   negatives are drawn from) are rebuilt by their own ``__build_i_set__`` from the whole file
   (``dataset/cloth_sport_train.csv``, ``dataset/cloth_sport_test_csu_updated.csv``).
8. Recording, no value changed: ``tqdm`` (their loops' progress bars) is wrapped to time each pass
   over the training and the test rows; their dataset's constructor is wrapped to count the test
   rows of each domain and group (their ``cs_label`` and ``tailed_label`` rules); LightGCN's
   ``Procedure.BPR_train_original`` and ``Procedure.Test`` are wrapped to time each epoch and test.
9. Under ``--lightgcn_tests last`` only: their LightGCN loop's test (every 10 epochs, 97 s each
   here: 2.7 of the default budget's 7 hours) is skipped, and run once on the final weights. It
   selects nothing (their loop saves the weights after every epoch, and ``callback.py`` loads the
   last) and draws no random number (it puts the model in eval mode, and every training epoch puts
   it back in train mode), so the pseudo-sequences are the same; the section reports that one test.
10. Resume: in their ``train()`` the running maxima (``best_* = 0``) start from the saved state, the
   epoch loop starts after the saved epoch, and after each epoch's log record the state is saved
   (``<run folder>/epoch-state.pt``: the model, the optimizer, the maxima, the random states, the log's
   length; ``EpochState``). A run's process killed (the end of a session, a timeout) resumes from its
   last saved epoch when the same command is given again with the same ``--work_dir``, and logs what
   it would have logged uninterrupted. No value of theirs is changed. Checked once with the smoke
   run's settings and ``--epochs 3``: stopped (SIGTERM) after the first epoch and given again, its
   three epochs' metrics and losses are those of an uninterrupted run, to the logged digit.

Results: each (side, seed) run is stored as soon as it ends as
``benchmarks/results/parity/i2vae-cloth_sport-<E>epochs-<all|Nrows>-authors-seed<seed>.json``
(atomically; every epoch's metrics, the maximum and last epoch, the group sizes, seconds, the
pseudo-sequence step's record, the patches, the authors' files' git blob ids); a rerun skips a run
stored ``ok`` with the same settings unless ``--redo``. A run interrupted after an epoch resumes from
it (adjustment 10) when its folder is still there: give ``--work_dir`` for runs longer than a sitting
(the default temporary folder is not found again); ``--redo`` starts it over. The section
``i2vae-cloth_sport-<E>epochs[-<N>rows]`` of ``benchmarks/results/parity.md`` is rewritten from the
stored runs after every run, and printed. ``--results_dir`` moves both (a smoke run belongs in a
folder of its own). With ``--work_dir`` the pseudo-sequences made there are reused by a later
command with the same ``--rows`` and LightGCN settings (unless ``--redo``).

Bad arguments (a missing file in ``--authors_repo``, another ``--dataset``, a sample without a
cold-start test row in a domain, ...) end with ``error: ...`` and exit code 2 before anything runs.
Exit code 1 when the pseudo-sequence step or a run failed (its output is in
``<work_dir>/psg/output.log`` or ``<work_dir>/<section>/authors-seed<seed>/output.log``, kept), else 0.
"""

import argparse
import csv
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import types

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(SCRIPT))))  # the repository, for benchmarks

from benchmarks.parity import common as parity  # noqa: E402
from benchmarks.parity.common import UsageError, bench  # noqa: E402

AUTHORS_REPOSITORY = "WujiangXu/IM-VAE"
AUTHORS_COMMIT = "a9ec2faf7b0a5e10146899d276e47e36c15b6098"
I2VAE_FILES = ("train_our.py", "model.py", "dataset.py", "utils.py")
LIGHTGCN_MODULES = ("__init__", "Procedure", "dataloader", "main", "model", "parse", "register", "utils", "world")
LIGHTGCN_FILES = tuple(f"LightGCN/code/{name}.py" for name in LIGHTGCN_MODULES)
LIGHTGCN_DATA = ("train.txt", "test.txt", "s_pre_adj_mat.npz", "hash_table_d2.pkl")
DATASET = "cloth_sport"
TRAIN_CSV, TEST_CSV = f"dataset/{DATASET}_train.csv", f"dataset/{DATASET}_test_csu_updated.csv"
UPDATED_TRAIN_CSV = f"dataset/{DATASET}_train_updated.csv"  # what train_our.py reads; made by their callback.py
AUTHORS_FILES = (*I2VAE_FILES, "callback.py", *LIGHTGCN_FILES, *(f"LightGCN/data/{DATASET}/{name}" for name in LIGHTGCN_DATA), TRAIN_CSV, TEST_CSV)
# git blob ids of the files at AUTHORS_COMMIT: tells a run on other versions of them
AUTHORS_BLOBS = {
    "train_our.py": "857e183ed0fcef626ecc2eb6566202015937b776",
    "model.py": "8eef625dbee52f4d9030a1282e4a0042380a37f6",
    "dataset.py": "26197fa0c99b545882fec30ff2de989d2dee59ce",
    "utils.py": "1f6b43aef53349103b4e1b66283b3b993fefc1ce",
    "callback.py": "55d8a60a0ff095b8954f35c6adcb79d37b1afabb",
    "LightGCN/code/__init__.py": "660d69c2c52a594c257c6903627f9b2cfb0d5c02",
    "LightGCN/code/Procedure.py": "f7bad520c0d582b2f1d6de3b05c794dd35e92e66",
    "LightGCN/code/dataloader.py": "6524daca3e1834966a54046dc26ef4b93c18fd6a",
    "LightGCN/code/main.py": "33f0be19693422176d401eb35d009317df7556c5",
    "LightGCN/code/model.py": "6a403434e99fd4cf316504b5bcaaf2ef44372f05",
    "LightGCN/code/parse.py": "e4c29bbd7cf7a1cef421cdd86df2619f1eb82725",
    "LightGCN/code/register.py": "8fc8b21f7b043fe2da67203cc83b2dd80bef7e36",
    "LightGCN/code/utils.py": "08ca9e62654d705ebe339e16dd0e41f8488cbd4d",
    "LightGCN/code/world.py": "20bdb4e385bfc66afd05d7cfe9559d456657e3d5",
    "LightGCN/data/cloth_sport/train.txt": "d682145d97e525b6a31978a2b54ea16aab411ad3",
    "LightGCN/data/cloth_sport/test.txt": "5c11ce7615f28f28a40c7fd85c4aaf2f337160b5",
    "LightGCN/data/cloth_sport/s_pre_adj_mat.npz": "59b14602831e2313dc117cfe9783d7f53395d686",
    "LightGCN/data/cloth_sport/hash_table_d2.pkl": "157983a8d7c15637cf782aed718654303a713d84",
    "dataset/cloth_sport_train.csv": "c9320642f9e2eb6966a05bf27f83de1f0718b3c3",
    "dataset/cloth_sport_test_csu_updated.csv": "2b55d10ec0401194b38a521993a18533423dd91e",
}
# the README's command (run.sh); -m (their output folder) and --epoch are added per run
README_ARGS = ("-dm", DATASET, "--kl_lambda_1", "0.005", "--kl_lambda_2", "0.005", "--kl_lambda_1_t", "0.001", "--kl_lambda_2_t", "0.001",
               "--lr", "8e-4", "--KLD1", "1.5", "--trans_encoder", "attention", "--cs_setting", "True")
OUTPUT_DIR = "output"
README_EPOCHS = 100  # their --epoch default (run.sh leaves it)
THEIR_SEEDS = (0, 1, 2, 3, 4)  # their loop: for i in range(5): SEED = i
LIGHTGCN_EPOCHS, LIGHTGCN_SEED = 1000, 2020  # their parse.py defaults
LIGHTGCN_ARGS = ("--dataset", DATASET, "--layer", "3", "--recdim", "64")  # lgn-cloth_sport-3-64, the checkpoint callback.py loads
PSG_ARGS = {"seq_len": 20, "batch_size": 1024, "dataset": DATASET}  # seq_len, batch_size: their callback.py defaults (20 pseudo-items a domain)
SIDES = ("authors",)  # ours on the same rows is run by benchmarks/i2vae_protocol.py (row_split) and read from its results
# what names this script's runs and sections (benchmarks/parity/common.py)
NAME, USERS_OPTION, USERS_UNIT = "i2vae", "--rows", "rows"
SIDE_TITLES = {"authors": "authors' `train_our.py`"}
DOMAINS = (("domain1", "cloth"), ("domain2", "sport"))
GROUPS = (("cold-started users", "cold-start"), ("tailed users", "long-tailed"), ("", "all"))
LOG_METRICS = {"HR@1": "hit@1", "HR@5": "hit@5", "HR@10": "hit@10", "NDCG@5": "ndcg@5", "NDCG@10": "ndcg@10", "MRR": "mrr"}
TABLE_METRICS = ("hit@10", "ndcg@10", "mrr")


# ============================================================================ arguments
def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/parity/i2vae.py",
        description="Run the i2VAE authors' code (IM-VAE) on their rows with their README's settings, pseudo-sequences of the "
        "training rows regenerated with their LightGCN; write benchmarks/results/parity.md (see the docstring).",
    )
    parity.add_data_options(parser, AUTHORS_REPOSITORY, ("train_our.py", "callback.py", "LightGCN/", "dataset/"), README_EPOCHS,
                            f"training epochs (default {README_EPOCHS}, theirs)", list(THEIR_SEEDS), "seeds (default 0 1 2 3 4, theirs)",
                            dataset=DATASET, dataset_help=f"their dataset (only {DATASET}, the README's)", data_path=False)
    parser.add_argument("--rows", type=int, default=None, metavar="N", help="a fixed random sample of N rows of the training and of the test file (a smoke run)")
    parser.add_argument("--lightgcn_epochs", type=int, default=LIGHTGCN_EPOCHS, help=f"epochs of their LightGCN (default {LIGHTGCN_EPOCHS}, theirs)")
    parser.add_argument("--lightgcn_seed", type=int, default=LIGHTGCN_SEED, help=f"seed of their LightGCN (default {LIGHTGCN_SEED}, theirs)")
    parser.add_argument("--lightgcn_tests", choices=("every10", "last"), default="every10",
                        help="their LightGCN's test: every 10 epochs (default, theirs) or after the last epoch only (adjustment 9)")
    parity.add_run_options(parser, SIDES)
    return parser


def command_options(args):
    """This script's own options, for the shown command."""
    parts = []
    if args.lightgcn_epochs != LIGHTGCN_EPOCHS:
        parts.append(f"--lightgcn_epochs={args.lightgcn_epochs}")
    if args.lightgcn_seed != LIGHTGCN_SEED:
        parts.append(f"--lightgcn_seed={args.lightgcn_seed}")
    if args.lightgcn_tests != "every10":
        parts.append(f"--lightgcn_tests={args.lightgcn_tests}")
    return parts


def check_args(args):
    """UsageError for arguments that cannot run; reads no data."""
    parity.check_common_args(args)
    if args.dataset != DATASET:
        raise UsageError(f"--dataset {args.dataset}: only {DATASET} (the README's; the one whose training rows this script regenerates)")
    if args.rows is not None and args.rows < 1:
        raise UsageError("--rows must be at least 1")
    if args.lightgcn_epochs < 1:
        raise UsageError("--lightgcn_epochs must be at least 1")
    if "authors" in args.sides:
        parity.check_authors_repo(args.authors_repo, AUTHORS_FILES, AUTHORS_REPOSITORY, AUTHORS_COMMIT)


def authors_code(path):
    """Blob ids of the authors' files (code and data) and whether they are all those of ``AUTHORS_COMMIT``."""
    return parity.authors_code(path, AUTHORS_FILES, AUTHORS_COMMIT, AUTHORS_BLOBS)


# ============================================================================ rows
def read_rows(path):
    """``(header, lines)`` of one of their CSV files: each line after the header one row, as it is."""
    with open(path, encoding="utf-8", newline="") as handle:
        header, *lines = handle.read().splitlines(keepends=True)
    if len(list(csv.reader(io.StringIO("".join(lines))))) != len(lines):
        raise UsageError(f"{path}: a row spans several lines; this script cuts their files line by line")
    return header, lines


def cut_rows(source, target, count):
    """Write ``count`` rows of ``source`` (a fixed random sample, in file order) as ``target``; return their numbers."""
    import numpy as np

    header, lines = read_rows(source)
    if count > len(lines):
        raise UsageError(f"--rows {count}: {os.path.basename(source)} has only {len(lines)} rows")
    chosen = parity.choose_users(np.arange(len(lines)), count, option="--rows")
    with open(target, "w", encoding="utf-8", newline="") as handle:
        handle.write(header)
        handle.writelines(lines[i] for i in chosen)
    return [int(i) for i in chosen]


def cold_start_rows(path):
    """Rows whose target-domain list holds one item (their ``cs_label``), per domain id."""
    counts = {0: 0, 1: 0}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            domain = int(row["domain_id"])
            counts[domain] += len(json.loads(row["seq_d1" if domain == 0 else "seq_d2"])) == 1
    return counts


def prepare_rows(args, work_dir):
    """The training and test files the runs use, under ``work_dir/rows``: ``{"train", "test", "train_rows",
    "test_rows"}`` (the rows' numbers in their files, None for all). UsageError for a sample their
    ``test()`` cannot score."""
    folder = os.path.join(work_dir, "rows")
    os.makedirs(folder, exist_ok=True)
    train, test = (os.path.join(folder, os.path.basename(name)) for name in (TRAIN_CSV, TEST_CSV))
    if args.rows is None:
        shutil.copyfile(os.path.join(args.authors_repo, TRAIN_CSV), train)
        shutil.copyfile(os.path.join(args.authors_repo, TEST_CSV), test)
        return {"train": train, "test": test, "train_rows": None, "test_rows": None}
    train_rows = cut_rows(os.path.join(args.authors_repo, TRAIN_CSV), train, args.rows)
    test_rows = cut_rows(os.path.join(args.authors_repo, TEST_CSV), test, args.rows)
    for domain, count in cold_start_rows(test).items():
        if not count:
            raise UsageError(f"--rows {args.rows}: the sampled test rows hold no cold-start row of {DOMAINS[domain][1]}; their test() "
                             "needs one in each domain (take more rows)")
    return {"train": train, "test": test, "train_rows": train_rows, "test_rows": test_rows}


# ============================================================================ their files, patched
# (file, pattern, replacement, what it does): applied as text to the copies in a run folder (adjustments 1 to 4 and 10)
def patch_rules(seed):
    cpu = [(name, r"\.cuda\(\)", ".cpu()", "CPU: .cuda() -> .cpu()") for name in I2VAE_FILES]
    return [
        *cpu,
        ("model.py", r"\.cuda\((\w[\w.]*)\)", r".to(\1)", "CPU: .cuda(x) -> .to(x)"),
        ("train_our.py", r"num_workers=8", "num_workers=0", "DataLoader num_workers=8 -> 0"),
        ("train_our.py", r"for i in range\(5\):", f"for i in [{int(seed)}]:", f"their seed loop range(5) -> [{int(seed)}]"),
        ("dataset.py", r"random\.sample\((\w+), ", r"random.sample(tuple(\1), ", "random.sample(set) -> random.sample(tuple(set)) (Python 3.10's)"),
        # adjustment 10: their train() resumes from, and saves, the state after each epoch (EpochState)
        ("train_our.py", r"(?m)^(    )(best_\w+) = 0$", rf"\1\2 = {EPOCH_STATE}.best('\2')", "resume: the running maxima from the epoch state"),
        ("train_our.py", r"(?m)^    for epoch in range\(args_config\.epoch\):$",
         f"    for epoch in range({EPOCH_STATE}.restore(model, optimizer), args_config.epoch):", "resume: from the epoch after the saved one"),
        ("train_our.py", r'(?m)^(        )# upload_model\(save_name,name="MRAGN_vis"\)$', rf"\1{EPOCH_STATE}.save(epoch, model, optimizer, locals())",
         "resume: the state saved after each epoch's log record"),
    ]


def patched_sources(sources, seed):
    """``(texts, patches)``: ``sources`` (``{file: text}``) with ``patch_rules(seed)`` applied, and one line per
    rule (file, what, how many places). RuntimeError when a pattern is not found: not the version of
    their code this script knows."""
    texts, patches = dict(sources), []
    for name, pattern, replacement, what in patch_rules(seed):
        texts[name], count = re.subn(pattern, replacement, texts[name])
        if not count:
            raise RuntimeError(f"their {name} has no {pattern!r} ({what}): not the version this script knows how to adjust")
        patches.append(f"{name}: {what} ({count}x)")
    return texts, patches


def their_sources(authors_repo):
    sources = {}
    for name in I2VAE_FILES:
        with open(os.path.join(authors_repo, name), encoding="utf-8") as handle:
            sources[name] = handle.read()
    return sources


def copy_patched(authors_repo, run_dir, seed):
    """Their i2VAE files, patched, into ``run_dir``; returns the patches made."""
    texts, patches = patched_sources(their_sources(authors_repo), seed)
    for name, text in texts.items():
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    return patches


# ============================================================================ their log
RECORD_START = re.compile(r"^\[[^\]\n]*\d\d:\d\d:\d\d[^\]\n]*\] ", re.M)
METRIC_ENTRY = re.compile(r"(?:val (domain[12]) cur/max )?((?:tailed|cold-started) users )?(HR@\d+|NDCG@\d+|MRR): ([^\s,/]+)/([^\s,/]+)")
EPOCH_HEAD = re.compile(r"^Epoch: (\d+)/(\d+)\s+Train Loss: (\S+)\s+Val loss: ([^\s,]+), cls loss: (\S+)")


def parse_epoch_message(message):
    """One epoch's logged message: ``{"epoch", "of", "train_loss", "test_loss", "current", "max"}``, metrics as
    ``{domain: {group: {metric: value}}}`` (cloth/sport, cold-start/long-tailed/all, hit@k/ndcg@k/mrr);
    ``epoch`` 1-based. ValueError when a domain, group or metric is missing or repeated."""
    head = EPOCH_HEAD.match(message)
    if not head:
        raise ValueError(f"not an epoch's record: {message[:80]!r}")
    domains, groups = dict(DOMAINS), dict(GROUPS)
    current, best, domain = {}, {}, None
    for entry in METRIC_ENTRY.finditer(message):
        domain = entry.group(1) or domain
        if domain is None:
            raise ValueError(f"a metric before any domain: {entry.group(0)!r}")
        where = (domains[domain], groups[(entry.group(2) or "").strip()], LOG_METRICS.get(entry.group(3), entry.group(3)))
        if where[2] not in LOG_METRICS.values():
            raise ValueError(f"unknown metric {entry.group(3)!r}")
        cell_now = current.setdefault(where[0], {}).setdefault(where[1], {})
        if where[2] in cell_now:
            raise ValueError(f"{'/'.join(where)} twice in one epoch's record")
        cell_now[where[2]] = float(entry.group(4))
        best.setdefault(where[0], {}).setdefault(where[1], {})[where[2]] = float(entry.group(5))
    found = sum(len(metrics) for group in current.values() for metrics in group.values())
    expected = len(DOMAINS) * len(GROUPS) * len(LOG_METRICS)
    if found != expected:
        raise ValueError(f"{found} metrics in one epoch's record, expected {expected} (2 domains x 3 groups x {len(LOG_METRICS)})")
    return {"epoch": int(head.group(1)) + 1, "of": int(head.group(2)), "train_loss": float(head.group(3)),
            "test_loss": float(head.group(4)), "current": current, "max": best}


def parse_log(text):
    """Every epoch's record in one of their log files (``log<seed>.txt``), in order."""
    starts = [m.end() for m in RECORD_START.finditer(text)]
    ends = [m.start() for m in RECORD_START.finditer(text)][1:] + [len(text)]
    return [parse_epoch_message(text[a:b]) for a, b in zip(starts, ends) if text[a:b].startswith("Epoch: ")]


def over_epochs(epochs):
    """``(maximum, last)``: each metric's maximum over the epochs (NaNs left out; None when every value
    is NaN), and the last epoch's metrics."""
    maximum = {}
    for domain, groups in epochs[-1]["current"].items():
        for group, metrics in groups.items():
            for key in metrics:
                values = [e["current"][domain][group][key] for e in epochs if not math.isnan(e["current"][domain][group][key])]
                maximum.setdefault(domain, {}).setdefault(group, {})[key] = max(values) if values else None
    return maximum, epochs[-1]["current"]


def their_maximum_agrees(epochs, maximum):
    """Whether the maximum they logged at the last epoch is the one recomputed from the epochs (within rounding)."""
    logged = epochs[-1]["max"]
    return all(maximum[d][g][k] is not None and abs(logged[d][g][k] - maximum[d][g][k]) < 1.5e-4
               for d in maximum for g in maximum[d] for k in maximum[d][g])


# ============================================================================ the runs' processes
def resume_key(settings, train_blob, patches):
    """What a saved epoch state must have been trained with to be resumed: the run's settings, the
    training rows' pseudo-sequences (their file's blob id: a regenerated file may differ) and the
    patches made to their code."""
    return parity.settings_key({"settings": settings, "train_updated_blob": train_blob, "patches": patches})


def resumable(run_dir, key):
    """Whether ``run_dir`` holds the state an interrupted run of resume key ``key`` saved after an epoch,
    readable (a state that is not would fail every later attempt: the run starts over instead)."""
    key_file, state_file = os.path.join(run_dir, RESUME_KEY_FILE), os.path.join(run_dir, EPOCH_STATE_FILE)
    if not (os.path.isfile(state_file) and os.path.isfile(key_file)):
        return False
    with open(key_file, encoding="utf-8") as handle:
        if handle.read().strip() != key:
            return False
    import torch

    try:
        torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable state: the run starts over
        print(f"{state_file}: not readable ({type(exc).__name__}); the run starts over", flush=True)
        return False
    return True


RESUME_KEY_FILE = "resume-key.txt"  # the settings key of the run that saves its epoch state in the folder
EPOCH_STATE = "_parity_epoch_state"  # the name their patched train() calls the EpochState by (a global of their script)
EPOCH_STATE_FILE = "epoch-state.pt"


class EpochState:
    """Their run's state after each epoch, in ``path``, and its resume (adjustment 10): their ``train()``
    calls ``best(name)`` for each running maximum's start, ``restore(model, optimizer)`` for the first
    epoch to run, and ``save(epoch, model, optimizer, locals())`` after each epoch's log record.

    Saved (atomically): the epoch, the model's and the optimizer's states, their ``best_*`` maxima,
    the random states their run draws from (torch, numpy, Python's ``random``: the rows' order and
    negatives, dropout, the reparameterisation's noise), the length of their log file, the
    recorder's loop times and the seconds the run's processes took up to the save. A resume restores
    all of it, cuts their log file back to that length (a record logged after the last save is
    written again) and removes their ``log_all.txt`` (written after the last epoch, by a process
    that ended before its run was stored), so an interrupted run, resumed, logs what it would have
    logged without the interruption."""

    def __init__(self, path, log_file, recorder):
        self.path, self.log_file, self.recorder = path, log_file, recorder
        self.resumed_after = []  # the epochs (1-based) a process of this run resumed after
        self.earlier_seconds = 0.0  # the earlier processes' seconds, up to their last save
        self._started = time.perf_counter()
        self._state = None
        if os.path.exists(path):
            import torch

            self._state = torch.load(path, map_location="cpu", weights_only=True)

    def best(self, name):
        return self._state["best"][name] if self._state else 0

    def restore(self, model, optimizer):
        """Load the saved state into ``model``, ``optimizer`` and the random generators; the first epoch to run (0-based)."""
        if not self._state:
            return 0
        import random

        import numpy as np
        import torch

        state = self._state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        kind, keys, position, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        with open(self.log_file, "r+b") as handle:
            handle.truncate(state["log_bytes"])
        log_all = os.path.join(os.path.dirname(self.log_file), "log_all.txt")
        if os.path.exists(log_all):
            os.remove(log_all)
        self.recorder.loops = list(state["loops"])
        self.earlier_seconds = state["seconds"]
        self.resumed_after = [*state["resumed_after"], state["epoch"] + 1]
        return state["epoch"] + 1

    def save(self, epoch, model, optimizer, names):
        import random

        import numpy as np
        import torch

        kind, keys, position, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            # their metrics are numpy floats: plain floats (the same values) load without pickled classes
            "best": {name: float(value) for name, value in names.items() if name.startswith("best_")},
            "torch_rng": torch.get_rng_state(), "numpy_rng": [kind, keys.tolist(), position, has_gauss, cached],
            "python_rng": [version, list(internal), gauss], "log_bytes": os.path.getsize(self.log_file),
            "loops": self.recorder.loops, "resumed_after": self.resumed_after,
            "seconds": self.earlier_seconds + time.perf_counter() - self._started,
        }
        temporary = f"{self.path}.tmp"
        torch.save(state, temporary)
        os.replace(temporary, self.path)


class Recorder:
    """Seconds of their loops, the test rows' groups and LightGCN's epochs (adjustment 8)."""

    def __init__(self):
        self.loops, self.groups, self.lightgcn_epochs, self.lightgcn_tests = [], {}, [], []

    def timed_tqdm(self, tqdm):
        recorder = self

        def timed(iterable=None, *args, **kwargs):
            dataset = getattr(iterable, "dataset", None)
            kind = {True: "train", False: "test"}.get(getattr(dataset, "isTrain", None), "other")

            def passes():
                start, batches = time.perf_counter(), 0
                for item in tqdm(iterable, *args, **kwargs):
                    batches += 1
                    yield item
                recorder.loops.append({"kind": kind, "seconds": time.perf_counter() - start, "batches": batches})

            return passes()

        return timed

    def wrap_dataset(self, cls, whole_files):
        """Their dataset's constructor, recording the test rows' groups; with ``whole_files`` (``{"train": csv,
        "test": csv}``), the item pools rebuilt from those files (adjustment 7)."""
        import pandas as pd

        init, recorder = cls.__init__, self

        def wrapped(dataset, *args, **kwargs):
            init(dataset, *args, **kwargs)
            kind = "train" if dataset.isTrain else "test"
            if whole_files:
                frame = pd.read_csv(whole_files[kind])
                dataset.item_pool_d1 = dataset.__build_i_set__(frame["seq_d1"].tolist())
                dataset.item_pool_d2 = dataset.__build_i_set__(frame["seq_d2"].tolist())
            recorder.groups[kind] = row_groups(dataset)

        cls.__init__ = wrapped


def row_groups(dataset):
    """Rows of each domain and group in their dataset, by their own rules: cold-start (``cs_label``: the
    target-domain list holds one item), long-tailed (``tailed_label``: no longer than the file's tail length)."""
    counts = {name: {"cold-start": 0, "long-tailed": 0, "all": 0} for _, name in DOMAINS}
    tails = (dataset.tail_len_d1, dataset.tail_len_d2)
    for domain, seq_d1, seq_d2 in zip(dataset.domain_id, dataset.seq_d1, dataset.seq_d2):
        length = len(json.loads(seq_d1 if domain == 0 else seq_d2))
        group = counts[DOMAINS[domain][1]]
        group["all"] += 1
        group["cold-start"] += length == 1
        group["long-tailed"] += length <= tails[domain]
    return {"rows": counts, "tail_lengths": {DOMAINS[0][1]: int(tails[0]), DOMAINS[1][1]: int(tails[1])}}


def tensorboard_stand_in():
    """A ``tensorboardX`` module for their ``main.py``'s import; its ``SummaryWriter`` raises if built (adjustment 6)."""
    module = types.ModuleType("tensorboardX")
    module.__doc__ = "stand-in for tensorboardX: importable only"

    class SummaryWriter:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("tensorboardX stand-in: their code wrote TensorBoard events (--tensorboard 1); install tensorboardX")

    module.SummaryWriter = SummaryWriter
    return module


def psg_job(job):
    """The pseudo-sequences of the training rows (cwd: ``<work_dir>/psg``, beside ``LightGCN/``): their LightGCN,
    then their ``callback.generate_corr_seq`` on ``dataset/<name>_train.csv``."""
    import numpy  # noqa: F401 -- imported before their code, so that their first epoch's time holds no import
    import torch

    torch.set_num_threads(int(job["threads"]))  # adjustment 1
    torch.cuda.is_available = lambda: False
    work = os.path.dirname(os.getcwd())
    code_dir = os.path.join(work, "LightGCN", "code")
    for name in LIGHTGCN_MODULES:  # their modules, not any of the same name imported before
        sys.modules.pop(name, None)
    sys.path[:0] = [code_dir, work]
    try:  # adjustment 6
        import tensorboardX

        board = f"tensorboardX {getattr(tensorboardX, '__version__', '?')}"
    except ImportError:
        sys.modules["tensorboardX"] = tensorboard_stand_in()
        board = "stand-in (tensorboardX not installed)"
    sys.argv = ["main.py", *job["lightgcn_argv"]]
    import Procedure

    recorder = Recorder()
    train, test = Procedure.BPR_train_original, Procedure.Test

    def timed_train(*args, **kwargs):
        start = time.perf_counter()
        info = train(*args, **kwargs)
        recorder.lightgcn_epochs.append({"epoch": len(recorder.lightgcn_epochs) + 1, "seconds": time.perf_counter() - start, "info": info})
        return info

    skip_tests = job.get("lightgcn_tests") == "last"

    def timed_test(*args, **kwargs):
        if skip_tests:  # adjustment 9: their loop's test, skipped (it selects nothing and draws no random number)
            return None
        start = time.perf_counter()
        results = test(*args, **kwargs)
        recorder.lightgcn_tests.append({"after_epochs": len(recorder.lightgcn_epochs), "seconds": time.perf_counter() - start,
                                        "results": {key: [float(v) for v in value] for key, value in results.items()}})
        return results

    Procedure.BPR_train_original, Procedure.Test = timed_train, timed_test
    main = os.path.join(code_dir, "main.py")
    with open(main, encoding="utf-8") as handle:
        source = handle.read()
    start = time.perf_counter()
    namespace = {"__name__": "__main__", "__file__": main}
    exec(compile(source, main, "exec"), namespace)  # adjustment 5
    lightgcn_seconds = time.perf_counter() - start
    if skip_tests:  # adjustment 9: one test of the final weights, as their loop's would be
        import world

        skip_tests = False
        timed_test(namespace["dataset"], namespace["Recmodel"], len(recorder.lightgcn_epochs), None, world.config["multicore"])
    import callback

    start = time.perf_counter()
    callback.generate_corr_seq(argparse.Namespace(**PSG_ARGS), TRAIN_CSV)
    generation_seconds = time.perf_counter() - start
    if not os.path.isfile(UPDATED_TRAIN_CSV):
        raise RuntimeError(f"their callback.py wrote no {UPDATED_TRAIN_CSV}")
    epochs = recorder.lightgcn_epochs
    return {
        "status": "ok",
        "lightgcn_epochs": epochs,
        "lightgcn_tests": recorder.lightgcn_tests,
        "lightgcn_seconds": lightgcn_seconds,
        "lightgcn_epoch_seconds": sum(e["seconds"] for e in epochs) / len(epochs),
        "generation_seconds": generation_seconds,
        "train_updated_blob": parity.git_blob_id(UPDATED_TRAIN_CSV),
        "tensorboardX": board,
        "torch_threads": torch.get_num_threads(),
    }


def authors_job(job):
    """One seed of their ``train_our.py`` in this process (cwd: the run folder, their files patched); returns the record."""
    import numpy  # noqa: F401 -- imported before their code
    import pandas  # noqa: F401
    import torch
    import tqdm

    torch.set_num_threads(int(job["threads"]))  # adjustment 1
    run_dir = os.getcwd()
    sys.path.insert(0, run_dir)
    for name in I2VAE_FILES:  # their modules, not any of the same name imported before
        sys.modules.pop(name[:-3], None)
    recorder = Recorder()
    log = os.path.join(run_dir, OUTPUT_DIR, f"log{job['seed']}.txt")
    epoch_state = EpochState(os.path.join(run_dir, EPOCH_STATE_FILE), log, recorder)  # adjustment 10
    real_tqdm = tqdm.tqdm
    tqdm.tqdm = recorder.timed_tqdm(real_tqdm)  # adjustment 8; their modules import it by name
    try:
        import dataset

        recorder.wrap_dataset(dataset.DualDomainSeqDatasetC2DSR, job.get("whole_files"))
        script = os.path.join(run_dir, "train_our.py")
        with open(script, encoding="utf-8") as handle:
            source = handle.read()
        sys.argv = ["train_our.py", *job["argv"]]
        start = time.perf_counter()
        exec(compile(source, script, "exec"), {"__name__": "__main__", "__file__": script, EPOCH_STATE: epoch_state})
        script_seconds = time.perf_counter() - start
    finally:
        tqdm.tqdm = real_tqdm
    with open(log, encoding="utf-8") as handle:
        epochs = parse_log(handle.read())
    if len(epochs) != job["epochs"]:
        raise RuntimeError(f"{len(epochs)} epochs in their log {os.path.basename(log)}, expected {job['epochs']}")
    maximum, last = over_epochs(epochs)
    train = [loop for loop in recorder.loops if loop["kind"] == "train"]
    test = [loop for loop in recorder.loops if loop["kind"] == "test"]
    with open(os.path.join(run_dir, OUTPUT_DIR, "log_all.txt"), encoding="utf-8") as handle:
        log_all = handle.read()
    return {
        "status": "ok",
        "epochs": epochs,
        "max_over_epochs": maximum,
        "last_epoch": last,
        "their_logged_max_agrees": their_maximum_agrees(epochs, maximum),
        "test_groups": recorder.groups.get("test"),
        "train_rows": recorder.groups.get("train", {}).get("rows"),
        "train_batches": train[0]["batches"] if train else None,
        "train_seconds_per_epoch": [loop["seconds"] for loop in train],
        "test_seconds_per_epoch": [loop["seconds"] for loop in test],
        "train_seconds": sum(loop["seconds"] for loop in train),
        "script_seconds": script_seconds,
        "resumed_after_epochs": epoch_state.resumed_after,
        "earlier_processes_seconds": epoch_state.earlier_seconds,
        "their_log_all": log_all,
        "patches": job["patches"],
        "pools_from_whole_files": bool(job.get("whole_files")),
        "torch_threads": torch.get_num_threads(),
    }


def job_main(job_file):
    """``--run_job JOB.json``: the pseudo-sequence step or one side's run in this process; writes ``result.json`` beside the job."""
    return parity.job_main(job_file, {"authors": authors_job, "psg": psg_job})


# ============================================================================ plan, records
def psg_settings(args):
    """What the pseudo-sequences depend on (and a folder of them is reused for)."""
    return {"dataset": args.dataset, "rows": args.rows, "rows_seed": parity.USERS_SEED, "lightgcn_argv": lightgcn_argv(args),
            "generation": PSG_ARGS, "threads": args.threads}


def lightgcn_argv(args):
    return [*LIGHTGCN_ARGS, "--epochs", str(args.lightgcn_epochs), "--seed", str(args.lightgcn_seed), "--tensorboard", "0"]


def side_settings(args, side, seed, code):
    """What a stored run must match to be reused, and what its job needs."""
    settings = {"side": side, "dataset": args.dataset, "epochs": args.epochs, "seed": seed, "rows": args.rows,
                "rows_seed": parity.USERS_SEED, "threads": args.threads, "pseudo_sequences": psg_settings(args)}
    settings["argv"] = ["-m", OUTPUT_DIR, *README_ARGS, "--epoch", str(args.epochs)]
    settings["authors_blobs"] = code["blobs"]
    return settings


def pseudo_sequences(args, work_dir, rows):
    """The training rows with their pseudo-sequences (``<work_dir>/psg/dataset/<name>_train_updated.csv``), made by
    their code in a process of its own (or found there from an earlier command with the same settings);
    returns the step's record (status "failed" with the error when it failed)."""
    psg = os.path.join(work_dir, "psg")
    settings = psg_settings(args)
    stored = parity.read_run(os.path.join(psg, "result.json"))
    if (stored and stored.get("status") == "ok" and stored.get("settings_key") == parity.settings_key(settings)
            and os.path.isfile(os.path.join(psg, UPDATED_TRAIN_CSV)) and not args.redo):
        print(f"pseudo-sequences: made before in {psg}", flush=True)
        return stored
    shutil.rmtree(psg, ignore_errors=True)
    shutil.rmtree(os.path.join(work_dir, "LightGCN"), ignore_errors=True)
    for name in (*LIGHTGCN_FILES, *(f"LightGCN/data/{args.dataset}/{n}" for n in LIGHTGCN_DATA), "callback.py"):
        os.makedirs(os.path.dirname(os.path.join(work_dir, name)), exist_ok=True)
        shutil.copyfile(os.path.join(args.authors_repo, name), os.path.join(work_dir, name))
    os.makedirs(os.path.join(psg, "dataset"))
    shutil.copyfile(rows["train"], os.path.join(psg, TRAIN_CSV))
    job = {"side": "psg", "seed": args.lightgcn_seed, "threads": args.threads, "lightgcn_argv": settings["lightgcn_argv"],
           "lightgcn_tests": args.lightgcn_tests}
    print(f"pseudo-sequences: their LightGCN ({args.lightgcn_epochs} epochs) and callback.py in {psg}", flush=True)
    record = parity.run_process(job, psg, args.timeout, SCRIPT)
    record.pop("traceback", None)
    record.update(settings=settings, settings_key=parity.settings_key(settings), finished=bench.now_utc())
    with open(os.path.join(psg, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, default=str)
    if record["status"] == "ok":
        print(f"    ok: {record['process_seconds']:.0f} s (LightGCN {record['lightgcn_epoch_seconds']:.1f} s an epoch)", flush=True)
    return record


# ============================================================================ table
def mean_std(values):
    import numpy as np

    values = [v for v in values if v is not None]
    return (float(np.mean(values)), float(np.std(values))) if values else (None, None)  # np.std: their log_all's


def metric_cells(metrics, keys=TABLE_METRICS):
    return [bench.fmt(metrics.get(key), 4) for key in keys]


def psg_lines(view, record):
    if not record:
        return []
    psg = record.get("pseudo_sequences") or {}
    tests = psg.get("lightgcn_tests") or []
    recall = ""
    if tests:
        last = tests[-1]
        recall = (f"; their own test of it (`test.txt`, after {last['after_epochs']} epochs): recall@10 "
                  f"{bench.fmt(last['results']['recall'][0], 4)}, NDCG@10 {bench.fmt(last['results']['ndcg'][0], 4)}")
    return [f"- Pseudo-sequences of the training rows, regenerated: their LightGCN (3 layers, 64-d, `--epochs {view['lightgcn_epochs']} "
            f"--seed {view['lightgcn_seed']}`), {bench.fmt_seconds(psg.get('lightgcn_epoch_seconds'))} s an epoch{recall}; their "
            f"`callback.py`, {bench.fmt_seconds(psg.get('generation_seconds'))} s. The test rows' are theirs, as shipped (from their "
            "LightGCN checkpoint, not in their repository)."]


def total_seconds(record):
    """The run's seconds: its process, and the earlier processes of a resumed run (None if unknown)."""
    seconds = record.get("process_seconds")
    return None if seconds is None else seconds + (record.get("earlier_processes_seconds") or 0.0)


def resumed_status(record):
    after = record.get("resumed_after_epochs") or []
    return "ok" + (f" (resumed after epoch {', '.join(map(str, after))})" if after else "")


def render_section(state):
    view, records = state["view"], state["records"]
    lines, done = parity.section_head(state)
    rows = view["rows"]
    ours = {} if rows else state.get("ours") or {}  # ours ran on every row: not beside a sample
    row_text = (f"**a fixed random sample of {rows} rows of each file** (`--rows`; numpy `default_rng({parity.USERS_SEED})` over the "
                "row numbers), negatives drawn from the whole files' item pools, tail lengths of the cut files: a smoke run, not a result"
                if rows else "every row")
    theirs = next((r for (side, _), r in records.items() if side == "authors" and r and r.get("status") == "ok"), None)
    lines += [
        f"- Data: their `{view['dataset']}` rows (`{TRAIN_CSV}` for training, `{TEST_CSV}` for the test, their 20% split); rows: {row_text}.",
        *psg_lines(view, theirs),
        f"- Settings: the README's command (`{' '.join(README_ARGS)}`) with `--epoch {view['epochs']}`, each seed in a process of its "
        f"own; CPU, {view['threads']} torch thread(s).",
        "- Evaluation: theirs, after every epoch, on the test rows: 1 positive + 999 sampled negatives from the test file's items of "
        "the target domain, ties against the positive; groups cold-start (no target-domain history), long-tailed (a target-domain "
        "list no longer than the file's tail length), all. *max*: their reported number, the **max over epochs on the test rows**, "
        "each metric on its own (no validation split, no model selection); *last*: the model after the last epoch. From their "
        "log, four decimals.",
        ours_line(ours, rows),
        "- Train s/epoch: a pass over the training rows; test s/epoch: their test after it; total s: the run's process (and, for a "
        "run resumed after an interruption, its earlier processes up to their last saved epoch).",
    ]
    code = state.get("authors_code")
    if code:
        lines.append(parity.authors_code_line(sys.modules[__name__], code))
    if theirs and not all(r.get("their_logged_max_agrees", True) for r in done if r.get("status") == "ok"):
        lines.append("- **The maximum they logged differs from the one recomputed from their epochs** (see the JSON).")
    lines += parity.machine_lines(state, done, packages=("torch", "numpy", "pandas"))
    header = ["side", "seed", "domain", "group", "rows", *[f"{bench.metric_title(k)} max" for k in TABLE_METRICS],
              *[f"{bench.metric_title(k)} last" for k in TABLE_METRICS], "epochs", "train s/epoch", "test s/epoch", "total s", "status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", "---:", "---", "---"] + ["---:"] * (len(header) - 5) + ["---"]) + "|")
    blank = ["–"] * (2 * len(TABLE_METRICS))
    failed, ok = [], []
    for (side, seed), record in records.items():
        title = SIDE_TITLES[side]
        if record is None:
            lines.append("| " + " | ".join([title, str(seed), "–", "–", "–", *blank, "–", "–", "–", "–", "not run"]) + " |")
            continue
        if record.get("status") != "ok":
            failed.append((title, seed, record.get("error", "unknown error")))
            lines.append(failed_row(title, seed, record))
            continue
        ok.append(record)
        train_s, test_s = (mean_std(record[key])[0] for key in ("train_seconds_per_epoch", "test_seconds_per_epoch"))
        for _, domain in DOMAINS:
            for _, group in GROUPS:
                count = ((record.get("test_groups") or {}).get("rows") or {}).get(domain, {}).get(group)
                lines.append("| " + " | ".join([
                    title, str(seed), domain, group, "–" if count is None else str(count),
                    *metric_cells(record["max_over_epochs"][domain][group]), *metric_cells(record["last_epoch"][domain][group]),
                    str(len(record["epochs"])), bench.fmt_seconds(train_s), bench.fmt_seconds(test_s),
                    bench.fmt_seconds(total_seconds(record)), resumed_status(record),
                ]) + " |")
    if len(ok) > 1:
        for _, domain in DOMAINS:
            for _, group in GROUPS:
                cells = []
                for key in ("max_over_epochs", "last_epoch"):
                    for metric in TABLE_METRICS:
                        mean, std = mean_std([r[key][domain][group][metric] for r in ok])
                        cells.append("–" if mean is None else f"{mean:.4f} ± {std:.4f}")
                lines.append("| " + " | ".join([f"{SIDE_TITLES['authors']}, mean ± std", f"{len(ok)} seeds", domain, group, "", *cells,
                                                "", "", "", "", ""]) + " |")
    lines += ours_rows(ours)
    lines.append("")
    if failed:
        lines += ["Failed:", ""] + [f"- {title}, seed {seed}: {bench.cell(error)}" for title, seed, error in failed] + [""]
    return "\n".join(lines)


# our runs' folders (benchmarks/i2vae_protocol.py --ranking R [--settings authors]) shown beside theirs, and their rows' title
OUR_RANKINGS = {"sampled": "our `i2VAE`", "sampled_rows": "our `i2VAE`, their pool",
                "sampled_rows-authors-settings": "our `i2VAE`, their pool and settings",
                "sampled_rows-popularity": "most-popular, their pool"}


def our_runs():
    """This plugin's i2VAE runs on the same rows with the authors' sampled metric, as stored by
    ``benchmarks/i2vae_protocol.py --ranking R``: {R: {seed: run}} for R in ``OUR_RANKINGS``."""
    from benchmarks import i2vae_protocol as protocol

    ours = {}
    for ranking in OUR_RANKINGS:
        if ranking.endswith("-popularity"):  # the floor of benchmarks/i2vae_protocol.py --popularity
            runs = protocol.popularity_runs(ranking.removesuffix("-popularity"))
        else:
            runs = protocol.board.stored_runs(os.path.join(protocol.PROTOCOL_DIR, ranking), protocol.DATASET)
        ours[ranking] = {seed: run for (label, seed), run in sorted(runs.items()) if label in ("i2VAE", protocol.POPULARITY)}
    return ours


def ours_line(ours, rows=None):
    from benchmarks.i2vae_protocol import AUTHORS_SETTINGS

    if rows:
        return "- Ours: not shown beside a sample of the rows (this plugin's runs on the same rows use every row)."
    if not any(ours.values()):
        return ("- Ours: not run yet (`python benchmarks/i2vae_protocol.py --data_path=DATA --seeds S --ranking sampled` or "
                "`--ranking sampled_rows`, this plugin's i2VAE on the same rows).")
    return ("- Ours (the rows below the authors'): this plugin's i2VAE on the same rows, from `python benchmarks/i2vae_protocol.py "
            "--data_path=DATA --seeds S --ranking R` (dataset option `row_split`: their train and test rows, 10% of the train rows "
            "drawn as a validation part; the model's YAML, which differs from their command where `docs/models/i2VAE.md` says; up "
            "to 50 epochs, early stopping after 5 evaluations without a better valid NDCG@10, so fewer epochs than theirs, which "
            "gives their max over epochs more chances). Its test rows are scored after every epoch against 999 sampled negatives "
            "of the target domain, drawn once for the run from the domain's items the user never interacted with: all of them "
            "(*our `i2VAE`*, `--ranking sampled`), or only those that occur in the test rows, the pool theirs draws from (*their "
            "pool*, `--ranking sampled_rows`, dataset option `eval_negative_pool: rows`); theirs draws anew at every test, from "
            "the test file's items less the row's own list. *max* and *last* as theirs (last: the epoch training stopped at); "
            "the checkpoint chosen on valid is in `benchmarks/results/i2vae-protocol.md`. Its long-tailed group is 1 to 3 "
            "target-domain items, cold-start excluded (theirs includes them); no MRR."
            + (" *Their pool and settings*: `--ranking sampled_rows --settings authors`, i2VAE at their settings where the YAML "
               "and the benchmarks' protocol depart from them (" + ", ".join(f"`{k}: {v}`" for k, v in AUTHORS_SETTINGS.items())
               + "), the same budget as ours." if ours.get("sampled_rows-authors-settings") else "")
            + (" *most-popular, their pool*: the floor, `--ranking sampled_rows --popularity`: every test row of a domain ranks "
               "its items by how often each is the target of the domain's training rows, under the same evaluation; it "
               "trains nothing, so its one result is its max and its last." if ours.get("sampled_rows-popularity") else ""))


def failed_row(title, seed, record):
    """The table row of a failed run (the authors' or ours)."""
    return "| " + " | ".join([title, str(seed), "–", "–", "–", *["–"] * (2 * len(TABLE_METRICS)), "–", "–", "–",
                              bench.fmt_seconds(record.get("process_seconds")), "failed"]) + " |"


def ours_rows(ours):
    """Table rows of our runs (``our_runs``), in the authors' columns."""
    lines = []
    for ranking, title in OUR_RANKINGS.items():
        lines += ranking_rows(title, ours.get(ranking) or {})
    return lines


def ranking_rows(title, runs):
    from benchmarks.i2vae_protocol import POPULARITY, max_over_epochs

    lines = []
    for seed, run in runs.items():
        if run.get("status") != "ok":
            lines.append(failed_row(title, seed, run))
            continue
        epochs = run.get("test_results_per_epoch") or []
        epochs_run = run.get("epochs_run", len(epochs) or "–")
        if not epochs and run.get("label") == POPULARITY:  # it trains nothing: its one result is its max and its last
            epochs = [run["test_result"]]
        train_s = mean_std(run.get("epoch_seconds") or [])[0]
        for _, domain in DOMAINS:
            for _, group in GROUPS:
                key = f"{{}} ({domain}, {group})"
                maximum = {m: max_over_epochs(epochs, key.format(m)) for m in TABLE_METRICS}
                last = {m: epochs[-1].get(key.format(m)) for m in TABLE_METRICS} if epochs else {}
                count = run["test_result"].get(key.format("users"))
                lines.append("| " + " | ".join([
                    title, str(seed), domain, group, "–" if count is None else str(int(count)),
                    *metric_cells(maximum), *metric_cells(last), str(epochs_run), bench.fmt_seconds(train_s), "–",
                    bench.fmt_seconds(run.get("process_seconds")), "ok",
                ]) + " |")
    return lines


# ============================================================================ main
def main(argv=None):
    this = sys.modules[__name__]
    stop, started = parity.start(argv, this)
    if stop is not None:
        return stop
    args, results_dir, code, plan = started
    work_dir, temporary = parity.work_folder(args, this)
    rows = psg = None
    if any(not item["stored"] for item in plan):
        try:
            rows = prepare_rows(args, work_dir)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if temporary:
                shutil.rmtree(work_dir, ignore_errors=True)
            return 2
        for signum in (signal.SIGTERM, signal.SIGINT):  # a stop ends their process too (as execute_plan's runs)
            signal.signal(signum, bench.request_stop)
        psg = pseudo_sequences(args, work_dir, rows)
        if bench._STOP["signal"] is not None:
            print(f"stopped by {signal.Signals(bench._STOP['signal']).name}", flush=True)
            return 128 + bench._STOP["signal"]
        if psg["status"] != "ok":
            print(f"pseudo-sequences FAILED: {psg.get('error')} (output: {os.path.join(work_dir, 'psg', 'output.log')})", flush=True)
            return 1
    state = {
        "section": parity.section_name(this, args), "command": parity.shown_command(this, args), "machine": bench.machine_info(),
        "started": bench.now_utc(), "finished": None, "authors_code": code,
        "view": {"dataset": args.dataset, "epochs": args.epochs, "rows": args.rows, "threads": args.threads,
                 "lightgcn_epochs": args.lightgcn_epochs, "lightgcn_seed": args.lightgcn_seed},
        "records": {(item["side"], item["seed"]): None for item in plan},
        "ours": our_runs(),
    }

    def key_of(item, patches=None):
        if patches is None:
            _, patches = patched_sources(their_sources(args.authors_repo), item["seed"])
        return resume_key(item["settings"], psg["train_updated_blob"], patches)

    def make_job(item, run_dir):
        seed = item["seed"]
        patches = copy_patched(args.authors_repo, run_dir, seed)
        with open(os.path.join(run_dir, RESUME_KEY_FILE), "w", encoding="utf-8") as handle:
            handle.write(key_of(item, patches) + "\n")
        os.makedirs(os.path.join(run_dir, "dataset"), exist_ok=True)
        shutil.copyfile(os.path.join(work_dir, "psg", UPDATED_TRAIN_CSV), os.path.join(run_dir, UPDATED_TRAIN_CSV))
        shutil.copyfile(rows["test"], os.path.join(run_dir, TEST_CSV))
        whole = None if args.rows is None else {"train": os.path.join(args.authors_repo, TRAIN_CSV), "test": os.path.join(args.authors_repo, TEST_CSV)}
        return {"side": "authors", "seed": seed, "epochs": args.epochs, "threads": args.threads, "argv": item["settings"]["argv"],
                "patches": patches, "whole_files": whole}

    def finish_record(item, record):
        psg_record = {key: value for key, value in psg.items() if key not in ("settings",)}
        record.update(authors_code=code, pseudo_sequences=psg_record, rows_sampled=args.rows,
                      train_row_numbers=rows["train_rows"], test_row_numbers=rows["test_rows"])

    return parity.execute_plan(plan, state, script=SCRIPT, work_dir=work_dir, temporary=temporary, timeout=args.timeout,
                               results_dir=results_dir, make_job=make_job, finish_record=finish_record, render=render_section,
                               resumable=lambda item, run_dir: not args.redo and resumable(run_dir, key_of(item)),
                               runs_folder=state["section"])  # a run of other epochs or rows never takes this one's folder


if __name__ == "__main__":
    sys.exit(main())
