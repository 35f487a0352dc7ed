"""Whole-sequence training batches (``train_mode: sequence``).

RecBole's sequential pipeline turns every prefix of every user into its own sample and pads each
to ``MAX_ITEM_LIST_LENGTH``; an encoder then runs once per prefix. Here a sample is a window of a
user's *training* sequence, the loss covers the next item at every position, and batches hold
windows of similar length, trimmed to their longest window.

Exactly RecBole's training targets: the windows are rebuilt from RecBole's own train split (the
prefix samples after ``dataset.build()``), so the targets seen per epoch are exactly the train
split's targets -- each once -- and valid and test items never enter training.

Windows: a user's train sequence s_0..s_n has targets s_1..s_n. With L = MAX_ITEM_LIST_LENGTH,
the targets are cut from the end into chunks of at most L; the chunk of targets s_{e-k+1}..s_e
gets the inputs s_{e-k}..s_{e-1}. For users with at most L targets (all but 0.3% of
amazon-beauty) every target sees exactly the context RecBole's prefix sample gives it; in longer
users, a target early in a chunk sees a shorter context than RecBole's 50-item window.

Batch size: ``train_batch_size`` counts targets, as it counts (prefix) samples in RecBole's
mode, so an epoch takes about as many optimiser steps in both modes.

Batch layout (an ``Interaction``): ``item_id_list`` [B, L_b] right-padded with 0 as RecBole's,
``item_length`` [B], ``target_item_id_list`` [B, L_b] (the next item at each position, 0 on
padding), and ``user_id`` [B].
"""

import json

import numpy as np
import torch
from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.interaction import Interaction

from recbole_diffusion.distributed import rank_and_world
from recbole_diffusion.errors import OptionChecks


def even_shares(batches, world):
    """``batches`` repeated from the start up to a multiple of ``world``, so that every rank's
    share (every ``world``-th batch) has the same length."""
    padded = -(-len(batches) // world) * world
    return [batches[i % len(batches)] for i in range(padded)]


def target_field(config):
    """Name of the per-position target field of a sequence batch."""
    return "target_" + config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]


def is_sequence_batch(interaction, config):
    return target_field(config) in interaction


def user_train_sequences(train_dataset):
    """Rebuild each user's training sequence from RecBole's prefix-sample train split.

    Returns ``(user_ids, sequences)``: a user's sequence is its first prefix sample's history
    followed by the targets of all its train samples, in time order.
    """
    feat = train_dataset.inter_feat
    uid_field, iid_field = train_dataset.uid_field, train_dataset.iid_field
    users = feat[uid_field].numpy()
    targets = feat[iid_field].numpy()
    lists = feat[train_dataset.item_id_list_field].numpy()
    lengths = feat[train_dataset.item_list_length_field].numpy()
    # RecBole keeps each user's samples contiguous and in time order through augmentation and
    # the leave-one-out / ratio split (a stable grouping); check it rather than assume it.
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    if len(np.unique(users[starts])) != len(starts):
        raise ValueError("train split does not keep each user's samples together")
    ends = np.r_[starts[1:], len(users)]
    user_ids, sequences = [], []
    for start, end in zip(starts, ends):
        first = lists[start, : lengths[start]]
        sequences.append(np.concatenate([first, targets[start:end]]))
        user_ids.append(users[start])
    return np.asarray(user_ids), sequences


def make_windows(user_ids, sequences, max_len):
    """Cut every sequence into (user, inputs, targets) windows of at most ``max_len`` targets."""
    win_users, win_inputs, win_targets = [], [], []
    for uid, seq in zip(user_ids, sequences):
        end = len(seq) - 1  # index of the last target
        while end >= 1:
            start = max(1, end - max_len + 1)  # first target of this window
            win_users.append(uid)
            win_inputs.append(seq[start - 1 : end])
            win_targets.append(seq[start : end + 1])
            end = start - 1
    return np.asarray(win_users), win_inputs, win_targets


class SequenceTrainDataLoader(AbstractDataLoader):
    """Train loader yielding whole-sequence windows, bucketed by length.

    Each epoch the windows are shuffled, stably sorted by length (so equal lengths are mixed
    anew every epoch), packed into batches of at most ``train_batch_size`` targets, and the
    batch order is shuffled. Negative sampling is not used in this mode: the plugin's models
    and the sequence adapters of RecBole's built-ins score all items (CE-style losses).
    """

    def __init__(self, config, dataset, sampler, shuffle=True):
        OptionChecks(config).no_negative_sampling(
            "train_mode=sequence trains every position with a full-softmax loss (loss_type: CE) and takes no "
            "negative samples (or use train_mode=prefix)"
        )
        self.target_field = target_field(config)
        self.uid_field = dataset.uid_field
        self.item_list_field = dataset.item_id_list_field
        self.length_field = dataset.item_list_length_field
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        user_ids, sequences = user_train_sequences(dataset)
        self.win_users, self.win_inputs, self.win_targets = make_windows(user_ids, sequences, self.max_len)
        self.win_lengths = np.fromiter((len(t) for t in self.win_targets), dtype=np.int64, count=len(self.win_targets))
        self.n_targets = int(self.win_lengths.sum())
        self.sample_size = len(self.win_targets)
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self._rng = np.random.default_rng(config["seed"])
        self._plan_next_epoch()

    def _plan_next_epoch(self):
        # the generator's state before the plan is what random_state() hands to a checkpoint
        self._plan_state = self._rng.bit_generator.state
        self._epoch_batches = self._plan_batches()

    def random_state(self):
        """The loader's random stream as plain data, from before the next epoch's plan was drawn."""
        return json.dumps(self._plan_state)

    def set_random_state(self, state):
        """Put back :meth:`random_state`'s stream and draw the next epoch's plan from it again."""
        self._rng.bit_generator.state = json.loads(state)
        self._plan_next_epoch()

    def _init_batch_size_and_step(self):
        self.step = self.config["train_batch_size"]
        self.set_batch_size(self.step)

    def _plan_batches(self):
        """Group window indices into batches of at most ``train_batch_size`` targets."""
        order = np.arange(self.sample_size)
        if self.shuffle:
            order = self._rng.permutation(self.sample_size)
        order = order[np.argsort(self.win_lengths[order], kind="stable")]
        budget = self.config["train_batch_size"]
        distributed = not self.config["single_spec"]
        if distributed:  # as RecBole's loaders: train_batch_size is the batch of all ranks together
            budget = max(1, budget // rank_and_world()[1])
        batches, current, used = [], [], 0
        for idx in order:
            length = int(self.win_lengths[idx])
            if current and used + length > budget:
                batches.append(current)
                current, used = [], 0
            current.append(int(idx))
            used += length
        if current:
            batches.append(current)
        if self.shuffle:
            batches = [batches[i] for i in self._rng.permutation(len(batches))]
        if distributed:
            # every rank must take the same number of steps (each step all-reduces gradients): the
            # plan is padded with its first batches, as torch's DistributedSampler pads its samples
            rank, world = rank_and_world()
            batches = even_shares(batches, world)[rank::world]
        return batches

    def __len__(self):
        return len(self._epoch_batches)

    def __iter__(self):
        # plan the next epoch now, so an interrupted epoch cannot leave the loader empty
        batches = self._epoch_batches
        self._plan_next_epoch()
        for batch in batches:
            yield self.collate_fn(batch)

    def collate_fn(self, index):
        index = np.asarray(index)
        lengths = self.win_lengths[index]
        width = int(lengths.max())
        inputs = np.zeros((len(index), width), dtype=np.int64)
        targets = np.zeros((len(index), width), dtype=np.int64)
        for row, idx in enumerate(index):
            n = lengths[row]
            inputs[row, :n] = self.win_inputs[idx]
            targets[row, :n] = self.win_targets[idx]
        return Interaction(
            {
                self.uid_field: torch.from_numpy(self.win_users[index].astype(np.int64)),
                self.item_list_field: torch.from_numpy(inputs),
                self.length_field: torch.from_numpy(lengths.astype(np.int64)),
                self.target_field: torch.from_numpy(targets),
            }
        )
