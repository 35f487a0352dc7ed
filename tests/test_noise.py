"""train_noise_ratio: random items in the training sequences, held-out targets untouched."""

import numpy as np
import pytest

from conftest import tiny_config


def splits(tiny_data, model="SASRec", **overrides):
    """(config, dataset, train, valid, test) datasets after the split."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.utils import create_dataset

    config = Config(model=model, config_dict=tiny_config(tiny_data, **overrides))
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    return config, dataset, train, valid, test


def targets_by_user(split):
    feat = split.inter_feat
    return dict(zip(feat[split.uid_field].tolist(), feat[split.iid_field].tolist()))


def histories_by_user(split):
    feat = split.inter_feat
    lists, lengths = feat[split.item_id_list_field], feat[split.item_list_length_field]
    return {int(u): lists[i, : lengths[i]].tolist() for i, u in enumerate(feat[split.uid_field])}


def train_sequences(train):
    from recbole_diffusion.data.sequence import user_train_sequences

    users, sequences = user_train_sequences(train)
    return {int(u): list(s) for u, s in zip(users, sequences)}


def is_subsequence(short, long):
    it = iter(long)
    return all(x in it for x in short)


@pytest.fixture(scope="module")
def clean(tiny_data):
    return splits(tiny_data, MAX_ITEM_LIST_LENGTH=50)


@pytest.fixture(scope="module")
def noisy(tiny_data):
    return splits(tiny_data, MAX_ITEM_LIST_LENGTH=50, train_noise_ratio=0.3)


def test_valid_and_test_targets_are_untouched(clean, noisy):
    for index in (3, 4):  # valid, test
        assert targets_by_user(noisy[index]) == targets_by_user(clean[index])


def test_training_sequences_get_random_items_at_the_ratio_never_the_users_own(clean, noisy):
    _, dataset, train, valid, test = noisy
    clean_train, noisy_train = train_sequences(clean[2]), train_sequences(train)
    assert clean_train.keys() == noisy_train.keys()
    added = 0
    for user, sequence in clean_train.items():
        noisy_sequence = noisy_train[user]
        assert is_subsequence(sequence, noisy_sequence), "clean items keep their order"
        # users' items are distinct in ml-100k, so the noise is what is not in the clean sequence
        noise = [item for item in noisy_sequence if item not in sequence]
        assert len(noise) == len(noisy_sequence) - len(sequence)
        own = set(sequence) | {targets_by_user(valid)[user], targets_by_user(test)[user]}
        assert not own & set(noise)
        added += len(noise)
    # E[k] = 0.3·n per user, n = the user's training interactions (its whole train sequence)
    expected = 0.3 * sum(len(s) for s in clean_train.values())
    assert abs(added - expected) < 4 * np.sqrt(len(clean_train)), (added, expected)


def test_valid_and_test_histories_are_the_noisy_training_sequence(noisy):
    _, _, train, valid, test = noisy
    sequences = train_sequences(train)
    valid_histories, test_histories = histories_by_user(valid), histories_by_user(test)
    valid_targets = targets_by_user(valid)
    for user, sequence in sequences.items():
        assert valid_histories[user] == sequence[-50:]
        assert test_histories[user] == (sequence + [valid_targets[user]])[-50:]


def test_noise_is_deterministic_given_the_seed(tiny_data, noisy):
    again = splits(tiny_data, MAX_ITEM_LIST_LENGTH=50, train_noise_ratio=0.3)
    other = splits(tiny_data, MAX_ITEM_LIST_LENGTH=50, train_noise_ratio=0.3, seed=7)
    assert train_sequences(again[2]) == train_sequences(noisy[2])
    assert train_sequences(other[2]) != train_sequences(noisy[2])


def test_ratio_zero_changes_nothing(tiny_data, clean):
    zero = splits(tiny_data, MAX_ITEM_LIST_LENGTH=50, train_noise_ratio=0.0)
    assert train_sequences(zero[2]) == train_sequences(clean[2])


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "high", True])
def test_a_ratio_outside_zero_one_fails_naming_the_option(tiny_data, ratio):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        splits(tiny_data, train_noise_ratio=ratio)
    assert str(info.value).startswith("train_noise_ratio:"), str(info.value)


def test_noise_needs_a_leave_one_out_split(tiny_data):
    from recbole_diffusion.errors import ConfigError

    eval_args = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"}
    with pytest.raises(ConfigError) as info:
        splits(tiny_data, train_noise_ratio=0.2, eval_args=eval_args)
    assert str(info.value).startswith("train_noise_ratio:")


@pytest.mark.parametrize("mode", ["prefix", "sequence"])
def test_recbole_builtin_trains_on_noisy_data_in_both_modes(tiny_data, in_tmp_dir, mode):
    """The sequence loader and RecBole's prefix samples both read the noisy training split."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import run
    from recbole_diffusion.utils import create_dataset, data_preparation

    overrides = dict(train_mode=mode, train_noise_ratio=0.2, MAX_ITEM_LIST_LENGTH=50)
    config = Config(model="SASRec", config_dict=tiny_config(tiny_data, **overrides))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    clean_config = Config(model="SASRec", config_dict=tiny_config(tiny_data, **{**overrides, "train_noise_ratio": 0.0}))
    clean_train, _, _ = data_preparation(clean_config, create_dataset(clean_config))
    n_noisy = train_data.n_targets if mode == "sequence" else len(train_data._dataset)
    n_clean = clean_train.n_targets if mode == "sequence" else len(clean_train._dataset)
    assert n_noisy > n_clean * 1.1
    result = run(model="SASRec", config_dict=tiny_config(tiny_data, **overrides), saved=False, verbose=False)
    assert 0.0 <= dict(result["test_result"])["ndcg@10"] <= 1.0
