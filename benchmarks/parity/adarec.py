"""ADARec against its authors' code: the authors' released ``src/main.py`` (dual-expert ADARec) and this
plugin's ``ADARecReleased`` trained on the same data file with the same settings, each scored by its
authors' evaluation and by ours, side by side.

    python benchmarks/parity/adarec.py --authors_repo=PATH --data_path=DATA
    python benchmarks/parity/adarec.py --authors_repo=PATH --data_path=DATA --epochs 1 --users 128
    python benchmarks/parity/adarec.py --data_path=DATA --sides ours          # our side only

``PATH`` is a checkout of the authors' repository (GitHub ZhaoChao52/ADARec; written against commit
90faad2ad52a32b5aca32d47f6df98e6142a9cb5, whose ``src/`` files ``main.py``, ``trainers.py``,
``models.py``, ``modules.py``, ``datasets.py``, ``utils.py``, ``diffusion_utils.py`` and
``data_augmentation.py`` are all it needs). Nothing of their code or data is part of this repository:
for every run the eight files are copied from ``PATH`` into a fresh run folder under ``--work_dir``
(default: a temporary folder, removed after a successful run), next to our data converted to their
format, and run there in a process of their own.

The data: ``--dataset`` (default amazon-beauty) from ``--data_path``, split by this plugin as every
benchmark splits it (the dataset's YAML: chronological leave-one-out, full ranking;
``MAX_ITEM_LIST_LENGTH`` 50, their ``max_seq_length``). Converted to their input, the ICLRec
format: one line per user, ``user item1 item2 ...``, oldest item first, every user's whole sequence
(its training sequence, then its valid and its test item), users and items as RecBole's internal
ids (1-based; 0 is the padding in both codes), users in id order. Their ``datasets.py`` splits
each line ``s`` as RecBole does: training on ``s[:-2]`` (inputs ``s[:-3]``, the next item at every
position), valid target ``s[-2]`` after ``s[:-2]``, test target ``s[-1]`` after ``s[:-1]``. The file
is written as ``data/Beauty.txt`` in the run folder, whatever the dataset: their ``main.py`` keys
settings to ``--data_name Beauty`` (256 intent prototypes, clustering weight ``trade_off`` 10). On
amazon-beauty the conversion is compared with their own ``data/Beauty`` (the ICLRec Beauty file)
when the checkout has it: users, sequences item for item (our item tokens are the ICLRec ids), and
whether the files are identical; the section says what was found.

``--users N`` runs both sides on a fixed random sample of N users (numpy ``default_rng(0)`` over the
atomic file's user tokens): their rows of ``DATA/<dataset>/<dataset>.inter``, unchanged, are written
as the same dataset in the work folder (with the dataset's other atomic files), read with the
dataset's YAML but without its interaction-count filters (a sample of a 5-core file is not 5-core;
filtering it again would cut sequences). Both sides train and evaluate on those users only. On a
busy 2-core CPU (one torch thread) the authors' code took about 30 s per expert and batch of 256
users: an epoch of the whole amazon-beauty (88 batches) is about an hour and a half (two experts at
hidden size 256, every view encoded twice, a GRU controller over every sequence); ours about half
an hour. ``--epochs 1 --users 128`` (one batch an epoch) is a smoke test of about a minute and a
half, both sides.

Settings, both sides: the authors' README command for Beauty (``--data_name Beauty --cf_weight 0.1
--model_idx 1 --gpu_id 0 --output_dir output/Beauty/ --batch_size 256 --contrast_type Hybrid
--num_intent_cluster 256 --seq_representation_type mean --intent_cf_weight 0.1 --num_hidden_layers 1
--enable_diffusion_aug --hidden_size 256 --attention_probs_dropout_prob 0.5 --hidden_dropout_prob 0.5
--enable_adaptive_diffusion --dual_expert``) with ``--epochs <epochs>`` (default 400, theirs),
``--seed <seed>`` (default 1, theirs) and ``--no_cuda``. Ours: ``ADARecReleased``'s YAML with the
command's values (hidden 256, FFN 1024 = 4 x hidden, 1 layer, 2 heads, dropouts 0.5, 256
prototypes, clustering weight 10, contrast weights 0.1, lr 1e-3), ``MAX_ITEM_LIST_LENGTH: 50``,
selection as theirs (``valid_metric: NDCG@20``, ``stopping_step: 39``: RecBole stops after
``stopping_step + 1`` evaluations without a better score, their early stopping after 40), on the CPU.
Batches: they take 256 users a batch; our ``train_mode: sequence`` counts targets a batch, so
``train_batch_size`` is set to the training targets divided by their number of batches an epoch
(``ceil(users / 256)``, rounded up): as many optimiser steps an epoch, about 256 users a batch. What
still differs is what ``docs/models/ADARec.md`` lists for ``ADARecReleased`` (one optimiser and one
early stopping on the fused score for both experts, initialised prototypes, views encoded once,
negatives outside the batch row), and: they train on the last 50 positions of a longer user only,
we on all of them (windows of 50).

Selection (read from their ``main.py``, ``trainers.py``, ``utils.py``): after every epoch each expert
(e5: noise depths 4 and 5; e10: 9 and 10) is evaluated on valid alone, and keeps its own checkpoint
of its best valid NDCG@20 (a strictly better score; patience 40: an expert stops after 40
evaluations without one, training ends when both have stopped or after ``--epochs``); the test is
the fused model (the mean of the two experts' scores) with each expert's best checkpoint. Ours: one
early stopping on the fused valid NDCG@20, the best checkpoint tested.

Evaluations, of the selected models, on the test split:

- **theirs**: their full ranking: every item id of theirs a candidate (padding 0 and their mask id
  ``max_item + 1`` included), the user's history items (``s[:-1]``) scored 0 (not removed: a negative
  score ranks below them), HR/NDCG at 5 and 20 from their top 20 (``np.argpartition``); at 10 added
  here with their own ``recall_at_k`` and ``ndcg_k`` on the same lists. For their model: what their
  code computed (recorded as it returns it). For ours: the same rule applied by this script to our
  scores (rank = 1 + the items scoring above the target; their columns have no mask id); the
  script's rule is also applied to their model and checked against their own numbers (in the JSON).
- **ours**: the project's Trainer full-sort evaluation, the one every benchmark uses: every item
  ranked but RecBole's padding id, eval mode, no history item masked (RecBole's full-sort evaluation
  of a sequential model masks none). The per-user ranks are stored; HR/NDCG are computed from them.

Run-time adjustments to the authors' code (all made in the run's process, none to their files):

1. ``src/main.py`` does not compile (its ``--trade_off`` argument, line 65, misses its closing
   parenthesis): the source is read, the parenthesis added in memory, and it is ``exec``-uted as
   ``__main__`` with ``sys.argv`` set to the command above, in ``src/`` of the run folder, which is
   first on ``sys.path``. A source that compiles as it is runs unchanged.
2. Data: their loader reads ``<data_dir><data_name>.txt`` (``../data/Beauty.txt``) while their
   checkout ships ``data/Beauty`` without the extension; the run folder holds our conversion as
   ``data/Beauty.txt`` (their file is only compared with it).
3. faiss: ``models.py`` and ``utils.py`` import it; the dual-expert path only constructs its k-means
   objects (``faiss.Clustering``, ``faiss.IndexFlatL2``) and never trains or queries them (the
   prototypes are the models' own uninitialised parameters). Where ``import faiss`` fails, a stand-in
   module with those two classes (any use of them but construction raises) takes its place; the
   JSON says which ran. Install ``faiss-cpu`` to run theirs with the real one.
4. CPU: their own ``--no_cuda`` flag (their ``--gpu_id 0`` stays as the README has it), and
   ``torch.set_num_threads(--threads)`` (default 1), as on our side. ``MPLBACKEND=Agg`` for their
   ``matplotlib`` import.
5. Epochs and seed: their ``--epochs`` and ``--seed`` flags.
6. Recording, no value changed: ``DualExpertTrainer.__init__`` keeps the trainer (its two experts
   hold the best checkpoints after their final test); ``_train_one_expert`` records each step's
   joint loss per expert; ``train_epoch`` and ``valid_epoch`` are timed; ``EarlyStopping
   .save_checkpoint`` records the epoch each expert's checkpoint was saved at; ``iteration`` and
   ``get_full_sort_score`` record every evaluation (split, expert, epoch, seconds, HR/NDCG at 5 and
   20 unrounded, and at 10 from their functions on their top-20 lists).
7. Our evaluation of their model: a wrapper gives the Trainer their scores: each batch's RecBole
   history (right-padded) is laid out as theirs (the last 50 items, left-padded with 0), both
   experts run in eval mode and score every item (``output[:, -1] @ item_embeddings.T``), the mean
   is taken as their ``fused`` evaluation does, and their mask id's column is dropped (the other ids
   are RecBole's).

Results: each (side, seed) run is stored as soon as it ends as
``benchmarks/results/parity/adarec-<dataset>-<E>epochs-<users>-<side>-seed<seed>.json``
(atomically; metrics, per-user test ranks under both evaluations, every evaluation of theirs, losses,
seconds, settings, the authors' files' git blob ids); a rerun skips a run stored ``ok`` with the same
settings unless ``--redo``. The section ``adarec-<dataset>-<E>epochs[-<N>users]`` of
``benchmarks/results/parity.md`` is rewritten from the stored runs after every run
(``benchmarks/common.py``'s markers, lock and atomic writes), and printed. ``--results_dir`` moves
both. The table's first row is the paper's (their README's Table 1, Beauty: the full data, 400
epochs) where the dataset is amazon-beauty.

Bad arguments (a missing file in ``--authors_repo``, ``--users`` without ``--data_path``, a dataset
that cannot be read, a user with fewer than four items, ...) end with ``error: ...`` and exit code 2
before anything runs. Exit code 1 when a run failed (its output is in
``<work_dir>/<side>-seed<seed>/output.log``, kept), else 0.
"""

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from benchmarks import common as bench  # noqa: E402
from benchmarks import worker  # noqa: E402
from benchmarks.parity import common as parity  # noqa: E402

UsageError = bench.UsageError
SCRIPT = os.path.abspath(__file__)

AUTHORS_REPOSITORY = "ZhaoChao52/ADARec"
AUTHORS_COMMIT = "90faad2ad52a32b5aca32d47f6df98e6142a9cb5"
AUTHORS_MODULES = ("main", "trainers", "models", "modules", "datasets", "utils", "diffusion_utils", "data_augmentation")
AUTHORS_FILES = tuple(f"src/{name}.py" for name in AUTHORS_MODULES)
# git blob ids of the files at AUTHORS_COMMIT: tells a run on other versions of them
AUTHORS_BLOBS = {
    "src/main.py": "2a03992b2f20c5d33a374962218548d32cddacbd",
    "src/trainers.py": "8198d20fc53591a31390ba616f3c7a6a81776430",
    "src/models.py": "aeba7f3e59dc4e3fdc6757db00ecda77cf3a5a7c",
    "src/modules.py": "42092bec45706fc00a6dda66f50c8f890440efbb",
    "src/datasets.py": "e258766d33b650ba628562856d1312445db5dd69",
    "src/utils.py": "8f96c1c949dcbdb4847e159e7cf88f3a98fdf905",
    "src/diffusion_utils.py": "3119bfd8a7c8f96fcf77db147f6237f584eedad8",
    "src/data_augmentation.py": "39be8aef0da7407e89108ed07d054fc86877c176",
}
# their copy of a dataset of ours, compared with our conversion when the checkout has it
THEIR_DATA = {"amazon-beauty": ("data/Beauty", "7dfffdf477b014c3eee84a6adca4d8135fae3492")}
DATA_NAME = "Beauty"  # the name their main.py keys the Beauty settings to; our file is written under it
# the README's Beauty command (their --epochs and --seed are added per run, and --no_cuda)
README_BEAUTY_ARGS = (
    "--data_name", DATA_NAME, "--cf_weight", "0.1", "--model_idx", "1", "--gpu_id", "0", "--output_dir", "output/Beauty/",
    "--batch_size", "256", "--contrast_type", "Hybrid", "--num_intent_cluster", "256", "--seq_representation_type", "mean",
    "--intent_cf_weight", "0.1", "--num_hidden_layers", "1", "--enable_diffusion_aug", "--hidden_size", "256",
    "--attention_probs_dropout_prob", "0.5", "--hidden_dropout_prob", "0.5", "--enable_adaptive_diffusion", "--dual_expert",
)
README_EPOCHS = 400
THEIR_DEFAULT_SEED = 1
THEIR_BATCH = 256  # users a batch
THEIR_PATIENCE = 40  # evaluations without a strictly better valid NDCG@20 before an expert stops
MAX_LEN = 50  # their max_seq_length, our MAX_ITEM_LIST_LENGTH
MIN_ITEMS = 4  # their training input s[:-3] must hold an item (their crop view fails on an empty one)
# the same command in our options (explicit, so that a change of the YAML does not change the comparison)
OURS_FROM_README = {
    "hidden_size": 256, "inner_size": 1024, "n_layers": 1, "n_heads": 2, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02, "n_diffusion_steps": 50, "noise_schedule": "linear",
    "expert_depths": [[4, 5], [9, 10]], "noised_rec_weight": 0.5, "deno_weight": 0.0001, "expl_weight": 0.0001,
    "instance_cl_weight": 0.1, "cont_weight": 0.1, "cluster_weight": 10.0, "n_prototypes": 256, "cl_temperature": 1.0,
    "crop_ratio": 0.2, "mask_ratio": 0.7, "reorder_ratio": 0.2, "rec_loss": "bce", "learner": "adam", "learning_rate": 0.001,
    "weight_decay": 0.0, "train_mode": "sequence", "valid_metric": "NDCG@20", "stopping_step": THEIR_PATIENCE - 1, "eval_step": 1,
}
# their README's Table 1 (assets/table1_overall_performance.jpg), ADARec on Beauty: full ranking, no @10
PAPER_BEAUTY = {"hit@5": 0.0600, "ndcg@5": 0.0403, "hit@20": 0.1187, "ndcg@20": 0.0568}
SIDES = parity.SIDES
# what names this script's runs and sections (benchmarks/parity/common.py)
NAME, USERS_OPTION = "adarec", "--users"
SIDE_TITLES = {"authors": "authors' `src/main.py`", "ours": "our `ADARecReleased`"}
TABLE_METRICS = parity.RANK_METRICS
BROKEN_MAIN_LINE = 'help="trade_off for clustering loss (alpha in paper)"\n'


# ============================================================================ arguments
def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/parity/adarec.py",
        description="Run the ADARec authors' code and our ADARecReleased on the same data and settings; write "
        "benchmarks/results/parity.md (see the docstring).",
    )
    parity.add_data_options(parser, AUTHORS_REPOSITORY, AUTHORS_FILES, README_EPOCHS, f"most training epochs of both sides (default {README_EPOCHS}, theirs)",
                            THEIR_DEFAULT_SEED, f"seeds (default {THEIR_DEFAULT_SEED}, theirs)")
    parser.add_argument("--users", type=int, default=None, metavar="N", help="both sides on a fixed random sample of N users (default: all)")
    parity.add_run_options(parser, SIDES)
    return parser


def check_args(args):
    """UsageError for arguments that cannot run; reads no data."""
    parity.check_common_args(args)
    if args.users is not None:
        if args.users < 1:
            raise UsageError("--users must be at least 1")
        if args.data_path is None:
            raise UsageError("--users needs --data_path (the sample is cut from DATA/<dataset>/<dataset>.inter)")
    if "authors" in args.sides:
        check_authors_repo(args.authors_repo)


def check_authors_repo(path):
    parity.check_authors_repo(path, AUTHORS_FILES, AUTHORS_REPOSITORY, AUTHORS_COMMIT)


def authors_code(path):
    """Blob ids of the authors' files and whether they are those of ``AUTHORS_COMMIT``."""
    return parity.authors_code(path, AUTHORS_FILES, AUTHORS_COMMIT, AUTHORS_BLOBS)


# ============================================================================ data
def split_config_dict(data_path=None, sample=False):
    """The configuration the split is built with (our side trains with it plus its settings)."""
    # metric_decimal_place: the full-split results in the JSON to 6 places (RecBole rounds to 4)
    config = {"MAX_ITEM_LIST_LENGTH": MAX_LEN, "gpu_id": "", "show_progress": False, "metric_decimal_place": 6}
    if sample:  # a sample of users is not filtered again
        config.update(user_inter_num_interval="[0,inf)", item_inter_num_interval="[0,inf)")
    if data_path:
        config["data_path"] = os.path.abspath(data_path)
    return config


def build_split(dataset, config_dict):
    """``(config, train_data, valid_data, test_data)``: the plugin's split of ``dataset`` for ADARecReleased."""
    return parity.build_split("ADARecReleased", dataset, config_dict)


def split_samples(split, config):
    """``{user id: (target, history)}`` of a valid or test split (RecBole's internal ids)."""
    feat = split.inter_feat
    users = feat[split.uid_field].numpy()
    targets = feat[split.iid_field].numpy()
    lists = feat[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numpy()
    lengths = feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    return {int(u): (int(t), [int(i) for i in items[:n]]) for u, t, items, n in zip(users, targets, lists, lengths)}


def to_authors_format(train_data, valid_data, test_data, config):
    """The split as their input file: ``{"text", "user_ids", "sequences"}``; line ``k`` of ``text`` is
    ``"<user> <item> <item> ..."`` for the user ``user_ids[k]``, its whole sequence ``sequences[k]``
    (the training sequence, then the valid and the test target) in RecBole's internal ids.

    Raises UsageError for a user their code cannot train on (fewer than ``MIN_ITEMS`` items: no
    training sample in RecBole's split) and for a split that is not leave-one-out."""
    from recbole_diffusion.data.sequence import user_train_sequences

    train_users, train_sequences = user_train_sequences(train_data._dataset)
    train = {int(u): [int(i) for i in s] for u, s in zip(train_users, train_sequences)}
    valid = split_samples(valid_data._dataset, config)
    test = split_samples(test_data._dataset, config)
    width = config["MAX_ITEM_LIST_LENGTH"]
    short = sorted((set(valid) | set(test)) - set(train))
    if short:
        raise UsageError(f"{len(short)} users have fewer than {MIN_ITEMS} interactions (no training sample); the authors' "
                         f"code trains on s[:-3] of every user and cannot take them")
    user_ids, sequences, lines = [], [], []
    for user in sorted(train):
        if user not in valid or user not in test:
            raise UsageError(f"user {user} has no valid or no test sample: not a leave-one-out split")
        (valid_target, valid_history), (test_target, test_history) = valid[user], test[user]
        sequence = train[user] + [valid_target, test_target]
        if valid_history != sequence[:-2][-width:] or test_history != sequence[:-1][-width:]:
            raise UsageError(f"user {user}: the valid or test history is not the items before it: not a leave-one-out split")
        user_ids.append(user)
        sequences.append(sequence)
        lines.append(" ".join(map(str, [user, *sequence])))
    return {"text": "\n".join(lines) + "\n", "user_ids": user_ids, "sequences": sequences}


def read_their_file(path):
    """``{user: [items]}`` of a file in their format, read as their ``get_user_seqs`` reads it (a line
    that does not split into a user and items is skipped), as strings."""
    rows = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                rows[parts[0]] = parts[1].split(" ")
    return rows


def compare_with_their_file(converted, dataset, path):
    """Our conversion against their copy of the data (``path``), by user token: how many users each
    has, how many of ours have the same sequence (our item tokens against their ids), and whether
    the files are identical but for trailing empty lines."""
    theirs = read_their_file(path)
    item_tokens = dataset.field2id_token[dataset.iid_field]
    user_tokens = dataset.field2id_token[dataset.uid_field]
    same, different, missing, first = 0, 0, 0, None
    for user, sequence in zip(converted["user_ids"], converted["sequences"]):
        token = str(user_tokens[user])
        if token not in theirs:
            missing += 1
        elif theirs[token] == [str(item_tokens[i]) for i in sequence]:
            same += 1
        else:
            different += 1
            first = first or token
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return {
        "file": os.path.basename(os.path.dirname(path)) + "/" + os.path.basename(path), "blob": parity.git_blob_id(path),
        "their_users": len(theirs), "our_users": len(converted["user_ids"]), "same_sequences": same,
        "different_sequences": different, "first_different_user": first, "users_not_in_their_file": missing,
        "identical_file": text.rstrip("\n") == converted["text"].rstrip("\n"),
        "trailing_empty_lines": len(text) - len(text.rstrip("\n")) - 1 if text.endswith("\n") else 0,
    }


def write_user_sample(data_path, dataset, count, folder):
    """``folder/<dataset>/``: the atomic files of ``dataset`` with the ``.inter`` rows of ``count`` of its
    users (a fixed random sample), rows unchanged; returns the sampled user tokens, sorted."""
    import numpy as np

    source = os.path.join(data_path, dataset)
    inter = os.path.join(source, f"{dataset}.inter")
    if not os.path.isfile(inter):
        raise UsageError(f"--users: {inter} not found")
    with open(inter, encoding="utf-8") as handle:
        header = handle.readline()
        rows = handle.readlines()
    fields = [name.split(":")[0] for name in header.rstrip("\n").split("\t")]
    if "user_id" not in fields:
        raise UsageError(f"--users: {inter} has no user_id column")
    column = fields.index("user_id")
    users = [row.rstrip("\n").split("\t")[column] for row in rows]
    chosen = parity.choose_users(np.asarray(users), count, option="--users", where=f"{dataset}.inter")
    keep = set(chosen.tolist())
    target = os.path.join(folder, dataset)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, f"{dataset}.inter"), "w", encoding="utf-8") as out:
        out.write(header)
        out.writelines(row for row, user in zip(rows, users) if user in keep)
    for name in os.listdir(source):  # the other atomic files (.item, .user), as they are
        if name.startswith(f"{dataset}.") and name != f"{dataset}.inter" and os.path.isfile(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
    return [str(user) for user in chosen]


def batch_size_for(converted):
    """Our ``train_batch_size`` (targets) for as many batches an epoch as theirs (``THEIR_BATCH`` users
    a batch): the training targets over ``ceil(users / THEIR_BATCH)``, rounded up."""
    users = len(converted["sequences"])
    targets = sum(len(sequence) - 3 for sequence in converted["sequences"])
    return math.ceil(targets / math.ceil(users / THEIR_BATCH))


# ============================================================================ their evaluation rule
def their_protocol_ranks(scores, targets, histories):
    """Ranks under their evaluation: every column a candidate, the columns in ``histories`` (one list
    per row) scored 0, rank = 1 + the columns scoring above the target's score."""
    import torch

    scores = scores.clone()
    rows = torch.cat([torch.full((len(h),), r, dtype=torch.long) for r, h in enumerate(histories)]) if histories else torch.zeros(0, dtype=torch.long)
    cols = torch.cat([torch.as_tensor(h, dtype=torch.long) for h in histories]) if histories else torch.zeros(0, dtype=torch.long)
    scores[rows.to(scores.device), cols.to(scores.device)] = 0
    target_scores = scores.gather(1, targets.view(-1, 1))
    return (scores > target_scores).sum(dim=1) + 1


def make_scorer(score, n_items, histories, config, user_tokens):
    """A module the Trainer evaluates: ``score(interaction)`` gives scores over at least ``n_items``
    columns (RecBole's ids first); it records each row's rank under their rule (``histories``: test
    history items by user id) and hands the first ``n_items`` columns to the Trainer."""
    import torch

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rows = {"user": [], "rank": []}

        def full_sort_predict(self, interaction):
            scores = score(interaction)
            users = interaction[config["USER_ID_FIELD"]].cpu().tolist()
            ranks = their_protocol_ranks(scores.detach(), interaction[config["ITEM_ID_FIELD"]], [histories[u] for u in users])
            self.rows["user"] += [str(user_tokens[u]) for u in users]
            self.rows["rank"] += ranks.cpu().tolist()
            return scores[:, :n_items]

    return Scorer()


def evaluate_both(config, train_data, test_data, converted, model, score):
    """Our Trainer's full-sort test evaluation of ``model`` (scores: ``score``), recording the ranks
    under their rule on the way: ``{"protocol_seconds", "protocol_result", "test_rows", "their_rows"}``."""
    import torch

    from recbole_diffusion.trainer import Trainer

    dataset = test_data._dataset
    histories = {user: sorted(set(sequence[:-1])) for user, sequence in zip(converted["user_ids"], converted["sequences"])}
    scorer = make_scorer(score, dataset.item_num, histories, config, dataset.field2id_token[dataset.uid_field])
    scorer.model = model  # its parameters (and eval mode) go with the scorer
    trainer = Trainer(config, scorer)
    trainer.eval_collector.data_collect(train_data)
    start = time.perf_counter()
    with torch.no_grad():
        result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {
        "protocol_seconds": time.perf_counter() - start,
        "protocol_result": worker.plain(result),
        "test_rows": worker.encode_rows(trainer.last_eval_rows),
        "their_rows": worker.encode_rows(scorer.rows),
    }


# ============================================================================ the runs' processes
def patched_main_source(source):
    """``(source, patches)``: their ``main.py`` as it compiles (adjustment 1)."""
    try:
        compile(source, "main.py", "exec")
        return source, []
    except SyntaxError as exc:
        error = exc
    if source.count(BROKEN_MAIN_LINE) != 1:
        raise RuntimeError(f"their src/main.py does not compile ({error}) and is not the version this script knows how to fix")
    line = source[: source.index(BROKEN_MAIN_LINE)].count("\n") + 1
    fixed = source.replace(BROKEN_MAIN_LINE, BROKEN_MAIN_LINE[:-1] + ")\n")
    compile(fixed, "main.py", "exec")
    return fixed, [f"src/main.py line {line}: closed the parenthesis of the --trade_off argument"]


def faiss_stand_in():
    """A module with faiss's two k-means classes their dual-expert path constructs and never uses (adjustment 3)."""
    module = types.ModuleType("faiss")
    module.__doc__ = "stand-in for faiss: construction only"

    class StandIn:
        def __init__(self, *args):
            self.args = args

        def _unused(self, *args, **kwargs):
            raise RuntimeError("faiss stand-in: their code used k-means; install faiss-cpu")

        train = search = add = _unused

    module.Clustering = type("Clustering", (StandIn,), {})
    module.IndexFlatL2 = type("IndexFlatL2", (StandIn,), {})

    def vector_to_array(*args):
        raise RuntimeError("faiss stand-in: their code used k-means; install faiss-cpu")

    module.vector_to_array = vector_to_array
    return module


class Recorder:
    """What their run does, recorded through wrappers of their methods (adjustment 6)."""

    def __init__(self):
        self.trainer, self.epoch, self.context = None, None, None
        self.steps, self.epochs, self.valid_seconds, self.evaluations, self.saves = [], [], [], [], []

    def install(self, trainers, utils):
        recorder = self
        cls = trainers.DualExpertTrainer
        init, train_one, train_epoch, valid_epoch, iteration = cls.__init__, cls._train_one_expert, cls.train_epoch, cls.valid_epoch, cls.iteration
        full_sort_score, save_checkpoint = trainers.Trainer.get_full_sort_score, utils.EarlyStopping.save_checkpoint

        def wrapped_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            recorder.trainer = self

        def wrapped_train_one(self, model, *args, **kwargs):
            rec_loss, joint_loss = train_one(self, model, *args, **kwargs)
            expert = "e5" if model is self.model_e5 else "e10"
            recorder.steps.append({"epoch": recorder.epoch, "expert": expert, "rec_loss": rec_loss, "joint_loss": joint_loss})
            return rec_loss, joint_loss

        def wrapped_train_epoch(self, epoch):
            recorder.epoch = epoch + 1
            start = time.perf_counter()
            out = train_epoch(self, epoch)
            recorder.epochs.append({"epoch": epoch + 1, "seconds": time.perf_counter() - start,
                                    "experts": [e for e, stopped in (("e5", self.e5_stopped), ("e10", self.e10_stopped)) if not stopped]})
            return out

        def wrapped_valid_epoch(self, epoch):
            start = time.perf_counter()
            out = valid_epoch(self, epoch)
            recorder.valid_seconds.append(time.perf_counter() - start)
            return out

        def wrapped_iteration(self, epoch, dataloader, *args, **kwargs):
            split = "test" if dataloader is self.test_dataloader else "valid" if dataloader is self.eval_dataloader else "other"
            recorder.context = {"epoch": recorder.epoch if split == "valid" else None, "split": split,
                                "expert": kwargs.get("expert_to_eval"), "users": len(dataloader.dataset)}
            start = time.perf_counter()
            out = iteration(self, epoch, dataloader, *args, **kwargs)
            recorder.context["seconds"] = time.perf_counter() - start
            recorder.evaluations.append(recorder.context)
            recorder.context = None
            return out

        def wrapped_full_sort_score(self, epoch, answers, pred_list):
            scores, text = full_sort_score(self, epoch, answers, pred_list)
            if recorder.context is not None:
                metrics = {"hit@5": scores[0], "ndcg@5": scores[1], "hit@20": scores[2], "ndcg@20": scores[3],
                           "hit@10": trainers.recall_at_k(answers, pred_list, 10), "ndcg@10": trainers.ndcg_k(answers, pred_list, 10)}
                recorder.context["metrics"] = {key: float(metrics[key]) for key in TABLE_METRICS}
                recorder.context["printed"] = text
            return scores, text

        def wrapped_save_checkpoint(self, score, model):
            recorder.saves.append({"epoch": recorder.epoch, "file": os.path.basename(self.checkpoint_path), "score": [float(s) for s in score]})
            return save_checkpoint(self, score, model)

        cls.__init__, cls._train_one_expert, cls.train_epoch = wrapped_init, wrapped_train_one, wrapped_train_epoch
        cls.valid_epoch, cls.iteration = wrapped_valid_epoch, wrapped_iteration
        trainers.Trainer.get_full_sort_score = wrapped_full_sort_score
        utils.EarlyStopping.save_checkpoint = wrapped_save_checkpoint


def best_epochs(saves):
    """Each expert's epoch of its last saved checkpoint (the one their test loads)."""
    best = {}
    for save in saves:
        best["e5" if save["file"].endswith("_e5.pt") else "e10"] = save["epoch"]
    return best


def authors_job(job):
    """One run of the authors' code in this process (cwd: the run folder); returns the record."""
    import numpy  # noqa: F401 -- imported before their code, so that their first epoch's time holds no import
    import torch

    torch.set_num_threads(int(job["threads"]))  # adjustment 4
    os.environ["MPLBACKEND"] = "Agg"
    run_dir = os.getcwd()
    src = os.path.join(run_dir, "src")
    os.chdir(src)
    sys.path.insert(0, src)
    for name in AUTHORS_MODULES:  # their modules, not any of the same name imported before
        sys.modules.pop(name, None)
    try:  # adjustment 3
        import faiss

        faiss_used = f"faiss {getattr(faiss, '__version__', '?')}"
    except ImportError:
        sys.modules["faiss"] = faiss_stand_in()
        faiss_used = "stand-in (faiss not installed)"
    import trainers
    import utils

    recorder = Recorder()
    recorder.install(trainers, utils)
    with open("main.py", encoding="utf-8") as handle:
        source, patches = patched_main_source(handle.read())  # adjustment 1
    sys.argv = ["main.py", *job["argv"]]
    start = time.perf_counter()
    exec(compile(source, os.path.join(src, "main.py"), "exec"), {"__name__": "__main__", "__file__": os.path.join(src, "main.py")})
    script_seconds = time.perf_counter() - start
    os.chdir(run_dir)
    trainer = recorder.trainer
    if trainer is None:
        raise RuntimeError("their main.py built no DualExpertTrainer")
    tests = [e for e in recorder.evaluations if e["split"] == "test" and e.get("metrics")]
    if not tests:
        raise RuntimeError("their main.py ran no test evaluation")
    epochs_run = len(recorder.epochs)
    last = recorder.epochs[-1]["epoch"]
    last_steps = [s for s in recorder.steps if s["epoch"] == last]
    batches = len(trainer.train_dataloader)
    epoch_losses = []
    for epoch in range(1, epochs_run + 1):
        steps = [s["joint_loss"] for s in recorder.steps if s["epoch"] == epoch]
        epoch_losses.append(sum(steps) / batches if steps else None)
    record = {
        "status": "ok",
        "own_test": tests[-1],
        "own_evaluations": [e for e in recorder.evaluations if e is not tests[-1]],
        "checkpoint_saves": recorder.saves,
        "best_epochs": best_epochs(recorder.saves),
        "epochs_run": epochs_run,
        "train_batches": batches,
        "epoch_losses": epoch_losses,  # the two experts' joint losses summed, mean over the epoch's batches
        "last_epoch_loss": epoch_losses[-1],
        "last_epoch_expert_losses": {e: sum(s["joint_loss"] for s in last_steps if s["expert"] == e) / batches
                                     for e in ("e5", "e10") if any(s["expert"] == e for s in last_steps)},
        "epoch_seconds": [e["seconds"] for e in recorder.epochs],
        "train_seconds": sum(e["seconds"] for e in recorder.epochs),
        "valid_seconds": recorder.valid_seconds,
        "script_seconds": script_seconds,
        "torch_threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "faiss": faiss_used,
        "main_py_patches": patches,
    }
    record.update(score_authors_model(job, trainer))
    for expert in ("e5", "e10"):  # their checkpoints (their log file stays in the run folder)
        path = os.path.join(src, trainer.args.checkpoint_path + f"_{expert}.pt")
        if os.path.exists(path):
            os.remove(path)
    return record


def score_authors_model(job, their_trainer):
    """Our evaluation of their selected model (adjustment 7), and their rule applied by this script."""
    import torch

    config, train_data, valid_data, test_data = build_split(job["dataset"], job["split_config"])
    converted = to_authors_format(train_data, valid_data, test_data, config)
    experts = torch.nn.ModuleList([their_trainer.model_e5, their_trainer.model_e10])
    item_seq, item_len = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]

    def their_scores(interaction):
        items, lengths = interaction[item_seq], interaction[item_len]
        # their layout: the last MAX_LEN items, left-padded with 0
        source = torch.arange(MAX_LEN, device=items.device).unsqueeze(0) - (MAX_LEN - lengths.unsqueeze(1))
        inputs = torch.where(source >= 0, items.gather(1, source.clamp(0, items.size(1) - 1)), torch.zeros_like(items[:, :1]))
        scores = []
        for model in experts:
            output, _, _ = model(inputs)
            scores.append(torch.matmul(output[:, -1, :], model.item_embeddings.weight.transpose(0, 1)))
        return (scores[0] + scores[1]) / 2.0

    return evaluate_both(config, train_data, test_data, converted, experts, their_scores)


def ours_job(job):
    """One run of our ADARecReleased in this process: train with early stopping, test the best model."""
    import torch

    from recbole_diffusion.quick_start import run

    torch.set_num_threads(int(job["threads"]))
    config, train_data, valid_data, test_data = build_split(job["dataset"], job["split_config"])
    converted = to_authors_format(train_data, valid_data, test_data, config)
    config_dict = {**job["config_dict"], "train_batch_size": batch_size_for(converted), "checkpoint_dir": os.path.join(os.getcwd(), "saved")}
    result = run(model="ADARecReleased", dataset=job["dataset"], config_dict=config_dict, saved=True, verbose=True, return_trainer=True)
    trainer = result["trainer"]
    batches = int(result["ranks"][0]["train_batches"])
    totals = [trainer.train_loss_dict[epoch] for epoch in sorted(trainer.train_loss_dict)]
    epoch_losses = [float(total) / batches for total in totals]
    config = trainer.config
    ranks_of_run = worker.encode_rows(trainer.last_eval_rows)
    model = trainer.model  # the best checkpoint, loaded for the test
    scored = evaluate_both(config, train_data, test_data, converted, model, model.full_sort_predict)
    # the second evaluation (for their rule's ranks) must rank as the run's test did
    scored["reevaluation_identical"] = scored.pop("test_rows") == ranks_of_run
    for path in (result.get("saved_model_file"),):
        if path and os.path.exists(path):
            os.remove(path)
    return {
        "status": "ok",
        "epochs_run": len(result["epoch_seconds"]),
        "best_epoch": worker.best_epoch(len(result["epoch_seconds"]), trainer.eval_step, trainer.cur_step),
        "best_valid_result": worker.plain(result["best_valid_result"]),
        "train_batches": batches,
        "epoch_losses": epoch_losses,
        "last_epoch_loss": epoch_losses[-1],
        "epoch_seconds": list(result["epoch_seconds"]),
        "train_seconds": sum(result["epoch_seconds"]),
        "valid_seconds": list(result["eval_seconds"][:-1]),
        **scored,
        "test_rows": ranks_of_run,
        "protocol_seconds": result["eval_seconds"][-1],
        "protocol_result": worker.plain(result["test_result"]),
        "model_settings": {key: worker.plain(config.final_config_dict[key]) for key in OURS_SETTINGS_SHOWN if config.final_config_dict.get(key) is not None},
        "torch_threads": torch.get_num_threads(),
        "device": str(config["device"]),
        "dataset_statistics": result["dataset_statistics"],
    }


OURS_SETTINGS_SHOWN = tuple(OURS_FROM_README) + ("train_batch_size", "MAX_ITEM_LIST_LENGTH", "epochs", "seed")


def job_main(job_file):
    """``--run_job JOB.json``: one side's run in this process; writes ``result.json`` beside the job."""
    return parity.job_main(job_file, {"authors": authors_job, "ours": ours_job})


# ============================================================================ plan, records
def side_settings(args, side, seed, code):
    """What a stored run must match to be reused, and what its job needs."""
    settings = {"side": side, "dataset": args.dataset, "epochs": args.epochs, "seed": seed, "users": args.users,
                "users_seed": parity.USERS_SEED, "threads": args.threads, "split": split_config_dict(sample=args.users is not None)}
    if side == "authors":
        settings["argv"] = [*README_BEAUTY_ARGS, "--epochs", str(args.epochs), "--seed", str(seed), "--no_cuda"]
        settings["authors_blobs"] = code["blobs"]
    else:
        settings["config_dict"] = {**OURS_FROM_README, "epochs": args.epochs, "seed": seed}
        settings["train_batch_size"] = f"training targets / ceil(users / {THEIR_BATCH}), rounded up"
    return settings


# ============================================================================ table
def epochs_cell(record):
    if record["side"] == "authors":
        best = record.get("best_epochs", {})
        return f"{record['epochs_run']} (e5 {best.get('e5', '–')}, e10 {best.get('e10', '–')})"
    return f"{record['epochs_run']} ({record.get('best_epoch') or '–'})"


def table_rows(record):
    """The table's rows of one stored run: (evaluation, users, metrics, eval seconds)."""
    if record.get("status") != "ok":
        return []
    theirs = parity.rank_metrics(record["their_rows"])
    ours = parity.rank_metrics(record["test_rows"])
    if record["side"] == "authors":
        test = record["own_test"]
        return [("theirs (their code's test)", test["users"], test["metrics"], test.get("seconds")),
                ("ours (full ranking)", ours["users"], ours, record.get("protocol_seconds"))]
    return [("theirs (their rule, applied here)", theirs["users"], theirs, None),
            ("ours (full ranking)", ours["users"], ours, record.get("protocol_seconds"))]


def own_rule_check(record):
    """Largest difference between their code's test metrics and their rule applied by this script to their model."""
    recomputed = parity.rank_metrics(record["their_rows"])
    return max(abs(record["own_test"]["metrics"][key] - recomputed[key]) for key in TABLE_METRICS)


def data_lines(state):
    comparison = state.get("their_data")
    if not comparison:
        return []
    if comparison.get("missing"):
        return [f"- Their copy of the data (`{comparison['file']}`): not in the checkout, not compared."]
    same = comparison["same_sequences"] == comparison["our_users"]
    text = (f"- Their copy of the data (`{comparison['file']}`, {comparison['their_users']} users) against our conversion "
            f"({comparison['our_users']} users): {comparison['same_sequences']} sequences the same item for item (their ids = our item tokens)")
    if not same:
        text += (f", {comparison['different_sequences']} different (e.g. user {comparison['first_different_user']}), "
                 f"{comparison['users_not_in_their_file']} users not in their file")
    if comparison["identical_file"]:
        text += "; the files are identical"
        if comparison["trailing_empty_lines"]:
            text += f" but for their {comparison['trailing_empty_lines']} trailing empty line(s)"
    elif comparison["our_users"] < comparison["their_users"]:
        text += " (ours is a sample of the users)"
    else:
        text += "; the files are not identical (ids or order differ)"
    return [text + "."]


def render_section(state):
    view, records = state["view"], state["records"]
    lines, done = parity.section_head(state)
    yaml_file = bench.dataset_yaml(view["dataset"])
    yaml_text = f"`{yaml_file}`" if yaml_file else "RecBole's defaults"
    users = view["users"]
    user_text = (f"**a fixed random sample of {users} users** (`--users`; numpy `default_rng({parity.USERS_SEED})` over the atomic "
                 "file's users), their rows unchanged and not filtered again, the same file on both sides" if users else "every user")
    ours = next((r for (side, _), r in records.items() if side == "ours" and r and r.get("status") == "ok"), None)
    theirs = next((r for (side, _), r in records.items() if side == "authors" and r and r.get("status") == "ok"), None)
    steps = []
    if theirs:
        steps.append(f"theirs {theirs['train_batches']}")
    if ours:
        steps.append(f"ours {ours['train_batches']} (`train_batch_size` {ours['model_settings'].get('train_batch_size')} targets)")
    lines += [
        f"- Data: `{view['dataset']}`, this plugin's split ({yaml_text}, chronological leave-one-out, MAX_ITEM_LIST_LENGTH {MAX_LEN}), "
        f"converted to the authors' format (one line per user, whole sequence, RecBole's ids), written as `data/{DATA_NAME}.txt`; users: {user_text}.",
        *data_lines(state),
        f"- Settings: the authors' README command for Beauty with `--epochs {view['epochs']} --seed <seed> --no_cuda`; our "
        "`ADARecReleased` with the same values (listed below), batches of about 256 users"
        + (f" (optimiser steps an epoch: {', '.join(steps)})" if steps else "") + f"; both on the CPU, {view['threads']} torch thread(s).",
        f"- Selection: theirs, each expert's best valid NDCG@20 checkpoint (patience {THEIR_PATIENCE}), the two fused for the test; "
        f"ours, the best fused valid NDCG@20 checkpoint (`stopping_step` {THEIR_PATIENCE - 1}). Epochs: run (best: each expert's, ours).",
        "- Evaluations (test): *theirs* is their full ranking: history items scored 0, their padding and mask ids among the candidates, "
        "HR/NDCG@5/20 from their top 20 (@10 added with their own functions); on our model the same rule applied by this script. "
        "*ours* is the project's full-sort evaluation (every item but RecBole's padding id, no history item masked), from the stored per-user ranks.",
        "- Train loss: the two experts' objectives summed, mean over the last epoch's batches (theirs: their `joint_loss` of each expert's step). "
        "Not the same sum of terms: their instance contrast compares unnormalised flattened 50 x d outputs (large logits at temperature 1), "
        "ours each view's output at its last item (`docs/models/ADARec.md`). "
        "Train s: the training epochs' wall seconds (no evaluation); eval s: the test evaluation's; total s: the run's process.",
    ]
    code = state.get("authors_code")
    if code:
        lines.append(parity.authors_code_line(sys.modules[__name__], code, f"; faiss: {theirs['faiss']}" if theirs else ""))
    if theirs:
        lines.append(f"- Their rule applied by this script to their model differs from their code's own test metrics by at most "
                     f"{own_rule_check(theirs):.4f} (ties at the zeroed history scores are the only expected difference).")
    lines += parity.machine_lines(state, done)
    header = ["side", "seed", "evaluation", "users", *[bench.metric_title(k) for k in TABLE_METRICS], "epochs (best)", "train loss",
              "train s", "eval s", "total s", "status"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", "---:", "---"] + ["---:"] * (len(header) - 4) + ["---"]) + "|")
    blank = ["–"] * len(TABLE_METRICS)
    if view["dataset"] == "amazon-beauty":
        lines.append("| " + " | ".join(["paper (their README, Table 1, Beauty)", "–", "theirs (full data, 400 epochs)", "22363",
                                        *[bench.fmt(PAPER_BEAUTY.get(k), 4) for k in TABLE_METRICS], "–", "–", "–", "–", "–", ""]) + " |")
    failed = []
    for (side, seed), record in records.items():
        title = SIDE_TITLES[side]
        if record is None:
            lines.append("| " + " | ".join([title, str(seed), "–", "–", *blank, "–", "–", "–", "–", "–", "not run"]) + " |")
            continue
        if record.get("status") != "ok":
            failed.append((title, seed, record.get("error", "unknown error")))
            lines.append("| " + " | ".join([title, str(seed), "–", "–", *blank, "–", "–", "–", "–",
                                            bench.fmt_seconds(record.get("process_seconds")), "failed"]) + " |")
            continue
        for evaluation, scored, metrics, seconds in table_rows(record):
            lines.append("| " + " | ".join([
                title, str(seed), evaluation, str(scored), *[bench.fmt(metrics.get(k), 4) for k in TABLE_METRICS], epochs_cell(record),
                bench.fmt(record.get("last_epoch_loss"), 4), bench.fmt_seconds(record.get("train_seconds")),
                bench.fmt_seconds(seconds), bench.fmt_seconds(record.get("process_seconds")), "ok",
            ]) + " |")
    lines.append("")
    if failed:
        lines += ["Failed:", ""] + [f"- {title}, seed {seed}: {bench.cell(error)}" for title, seed, error in failed] + [""]
    if ours:
        settings = ", ".join(f"{k}={v}" for k, v in ours.get("model_settings", {}).items())
        lines += [f"Our settings: {settings}.", ""]
    return "\n".join(lines)


# ============================================================================ main
def prepare_data(args, work_dir):
    """The split's conversion, the split configuration the runs use, and the comparison with their copy."""
    data_path = args.data_path
    if args.users is not None:
        data_path = os.path.join(work_dir, "data")
        write_user_sample(args.data_path, args.dataset, args.users, data_path)
    split_config = split_config_dict(data_path, sample=args.users is not None)
    config, train_data, valid_data, test_data = build_split(args.dataset, split_config)
    converted = to_authors_format(train_data, valid_data, test_data, config)
    comparison = None
    if "authors" in args.sides and args.dataset in THEIR_DATA:
        name, _ = THEIR_DATA[args.dataset]
        path = os.path.join(args.authors_repo, name)
        comparison = compare_with_their_file(converted, train_data._dataset, path) if os.path.isfile(path) else {"file": name, "missing": True}
    return converted, split_config, comparison


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    this = sys.modules[__name__]
    stop, started = parity.start(argv, this)
    if stop is not None:
        return stop
    args, results_dir, code, plan = started
    temporary = args.work_dir is None
    work_dir = tempfile.mkdtemp(prefix="parity-adarec-") if temporary else os.path.abspath(args.work_dir)
    converted = split_config = comparison = None
    if any(not item["stored"] for item in plan):
        try:
            from recbole_diffusion.errors import RecBoleDiffusionError

            print(f"building the split of {args.dataset} and its conversion to the authors' format", flush=True)
            converted, split_config, comparison = prepare_data(args, work_dir)
        except (UsageError, RecBoleDiffusionError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            if temporary:
                shutil.rmtree(work_dir, ignore_errors=True)
            return 2
    stored_comparison = next((parity.read_run(i["path"]).get("their_data") for i in plan if i["stored"] and i["side"] == "authors"), None)
    state = {
        "section": parity.section_name(this, args), "command": parity.shown_command(this, args), "machine": bench.machine_info(),
        "started": bench.now_utc(), "finished": None, "authors_code": code, "their_data": comparison or stored_comparison,
        "view": {"dataset": args.dataset, "epochs": args.epochs, "users": args.users, "threads": args.threads},
        "records": {(item["side"], item["seed"]): None for item in plan},
    }

    def make_job(item, run_dir):
        side, seed = item["side"], item["seed"]
        job = {"side": side, "seed": seed, "epochs": args.epochs, "dataset": args.dataset, "threads": args.threads, "split_config": split_config}
        if side == "authors":
            for name in AUTHORS_FILES:  # their code, into the run folder only
                os.makedirs(os.path.dirname(os.path.join(run_dir, name)), exist_ok=True)
                shutil.copyfile(os.path.join(args.authors_repo, name), os.path.join(run_dir, name))
            os.makedirs(os.path.join(run_dir, "data"))
            with open(os.path.join(run_dir, "data", f"{DATA_NAME}.txt"), "w", encoding="utf-8") as handle:
                handle.write(converted["text"])
            job["argv"] = item["settings"]["argv"]
        else:
            job["config_dict"] = {**split_config, **item["settings"]["config_dict"]}
        return job

    def finish_record(item, record):
        record.update(data_path=bench.shown_data_path(args.data_path) if args.data_path else None, users_sampled=args.users,
                      converted_users=len(converted["user_ids"]))
        if item["side"] == "authors":
            record.update(authors_code=code, their_data=comparison)

    return parity.execute_plan(plan, state, script=SCRIPT, work_dir=work_dir, temporary=temporary, timeout=args.timeout,
                               results_dir=results_dir, make_job=make_job, finish_record=finish_record, render=render_section)


if __name__ == "__main__":
    sys.exit(main())
