"""Cross-domain data (docs/cross-domain.md): the per-(user, domain) split, what each sample may see,
candidates of the target domain, per-domain files, errors, and per-domain group metrics."""

import math
import random

import numpy as np
import pytest
import torch


CLOTH, SPORT = list(range(1, 31)), list(range(101, 131))


def two_domain_sequences(n_users=48, seed=0):
    """{user: (cloth items, sport items)}: walks on two item cycles whose start is shared, so the
    sport history says where the cloth walk is; user 1 holds every item in its training part."""
    rng = random.Random(seed)
    users = {1: (CLOTH + CLOTH[:2], SPORT + SPORT[:2])}
    for user in range(2, n_users + 2):
        start = rng.randrange(30)
        n_cloth = rng.choice([0, 1, 2, 3, 5, 7]) if user % 5 else 1  # every 5th user: cold-start in cloth
        n_sport = rng.choice([0, 2, 4, 6]) if n_cloth else rng.choice([2, 4, 6])
        if user % 7 == 0 and n_cloth:
            n_sport = 1  # cold-start in sport
        users[user] = ([CLOTH[(start + k) % 30] for k in range(n_cloth)], [SPORT[(start + k) % 30] for k in range(n_sport)])
    return users


def write_two_domain_dataset(folder, name="twodom", sequences=None, domain_column=True, only_domain=None):
    """Atomic files of ``sequences``; ``only_domain`` (0/1) writes that domain alone, without the
    domain column (the per-domain file). Returns ``(data_path, name)``."""
    sequences = sequences or two_domain_sequences()
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    with open(target / f"{name}.inter", "w", encoding="utf-8") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float" + ("\tdomain:token" if domain_column else "") + "\n")
        for user, per_domain in sequences.items():
            for domain, items in enumerate(per_domain):
                if only_domain is not None and domain != only_domain:
                    continue
                for position, item in enumerate(items):
                    out.write(f"{user}\t{item}\t{position}" + (f"\t{domain}" if domain_column else "") + "\n")
    return str(folder), name


def cd_config(data, model="SASRec", **overrides):
    data_path, name = data
    config = {
        "data_path": data_path, "dataset": name, "epochs": 1, "hidden_size": 16, "inner_size": 16, "n_layers": 1,
        "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 64, "eval_batch_size": 64, "show_progress": False,
        "gpu_id": "", "load_col": {"inter": ["user_id", "item_id", "timestamp", "domain"]},
        "domain_field": "domain", "domain_names": {"0": "cloth", "1": "sport"}, "long_tail_length": 2,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
    }
    config.update(overrides)
    return config


def prepare(data, model="SASRec", **overrides):
    from recbole_diffusion.config import Config
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model=model, config_dict=cd_config(data, model, **overrides))
    dataset = create_dataset(config)
    return config, dataset, *data_preparation(config, dataset)


@pytest.fixture(scope="module")
def two_domain(tmp_path_factory):
    return write_two_domain_dataset(tmp_path_factory.mktemp("cd"))


def raw_samples(split_dataset, config):
    """{(user, domain): [(target, own history, other context, merged input)]} in raw tokens."""
    from recbole_diffusion.data.cross_domain import TARGET_DOMAIN, domain_list_fields

    d = split_dataset
    feat = d.inter_feat

    def token(field, ids):
        return [int(d.id2token(field, int(i))) for i in ids if int(i) > 0]

    fields = domain_list_fields(config)
    out = {}
    for row in range(len(feat)):
        domain = int(feat[TARGET_DOMAIN][row])
        user = int(d.id2token("user_id", int(feat["user_id"][row])))
        lists = [token("item_id", feat[f][row][: int(feat[n][row])]) for f, n in fields]
        merged = token("item_id", feat["item_id_list"][row][: int(feat["item_length"][row])])
        target = int(d.id2token("item_id", int(feat["item_id"][row])))
        out.setdefault((user, domain), []).append((target, lists[domain], lists[1 - domain], merged))
    return out


# ----------------------------------------------------------------------------- split
def test_leave_one_out_per_user_and_domain_and_what_each_sample_sees(two_domain, in_tmp_dir):
    config, dataset, train, valid, test = prepare(two_domain)
    sequences = two_domain_sequences()
    parts = [raw_samples(split._dataset, config) for split in (train, valid, test)]
    train_s, valid_s, test_s = parts
    for user, per_domain in sequences.items():
        for domain, items in enumerate(per_domain):
            other = per_domain[1 - domain]
            other_train = other[:-2] if len(other) >= 2 else []
            other_known_at_test = other[:-1]
            n = len(items)
            if n == 0:
                assert (user, domain) not in test_s
                continue
            # test: the last item, after everything but the held-out items of the other domain
            [(target, own, seen_other, merged)] = test_s[(user, domain)]
            assert (target, own, seen_other) == (items[-1], items[:-1][-10:], other_known_at_test[-10:])
            assert merged == (other_known_at_test + items[:-1])[-10:]
            if n >= 2:
                [(target, own, seen_other, _)] = valid_s[(user, domain)]
                assert (target, own, seen_other) == (items[-2], items[:-2][-10:], other_train[-10:])
            else:
                assert (user, domain) not in valid_s
            expected_train = [(items[k], items[:k][-10:], other_train[-10:]) for k in range(1, n - 2)]
            assert [s[:3] for s in train_s.get((user, domain), [])] == expected_train


def test_no_held_out_item_is_input_of_a_training_sample(two_domain, in_tmp_dir):
    config, dataset, train, valid, test = prepare(two_domain)
    held_out = {}
    for split in (valid, test):
        for (user, _), samples in raw_samples(split._dataset, config).items():
            held_out.setdefault(user, set()).update(s[0] for s in samples)
    for (user, _), samples in raw_samples(train._dataset, config).items():
        for target, own, other, merged in samples:
            # user 1 repeats items, so compare positions through the sequences instead
            if user != 1:
                assert not (set(own) | set(other) | set(merged) | {target}) & held_out.get(user, set())
    train_users = {int(dataset.id2token("user_id", u)) for u in dataset.train_interactions[0]}
    for user, (cloth, sport) in two_domain_sequences().items():
        assert (user in train_users) == (len(cloth) >= 3 or len(sport) >= 3)


def test_per_domain_file_has_the_same_samples_and_groups(tmp_path, in_tmp_dir):
    both = write_two_domain_dataset(tmp_path, "both")
    cloth = write_two_domain_dataset(tmp_path, "both-cloth", domain_column=False, only_domain=0)
    config, _, _, _, test_both = prepare(both)
    config_cloth, _, _, _, test_cloth = prepare(
        cloth, domain_field=None, domain_names=None, dataset_domain="cloth", load_col={"inter": ["user_id", "item_id", "timestamp"]}
    )
    both_samples = {k: [s[:2] for s in v] for k, v in raw_samples(test_both._dataset, config).items() if k[1] == 0}
    cloth_samples = {k: [s[:2] for s in v] for k, v in raw_samples(test_cloth._dataset, config_cloth).items()}
    assert both_samples == cloth_samples
    assert test_cloth._dataset.domain_display_names == ["cloth"]


# ----------------------------------------------------------------------------- candidates
def test_evaluation_ranks_only_the_target_domains_items(two_domain, in_tmp_dir, device):
    """On every device present: the mask is built there from the batch's target domains."""
    config, dataset, _, _, test = prepare(two_domain, gpu_id="0" if device == "cuda" else "")
    cloth_ids = {dataset.token2id("item_id", str(i)) for i in CLOTH}
    for interaction, hidden, _, positive_i in test:
        assert hidden.device.type == device
        hidden = hidden.cpu()
        for row in range(len(interaction)):
            shown = set(torch.nonzero(~hidden[row]).squeeze(1).tolist())
            assert shown == (cloth_ids if int(interaction["target_domain"][row]) == 0 else set(range(1, dataset.item_num)) - cloth_ids)
            assert int(positive_i[row]) in shown


def test_sampled_protocol_keeps_the_positive_and_n_unseen_negatives_of_the_domain(two_domain, in_tmp_dir):
    config, dataset, _, _, test = prepare(two_domain, eval_negatives=7)
    indptr, items = dataset.user_items
    first = [hidden.clone() for _, hidden, _, _ in test]
    n_full = 0
    for (interaction, hidden, _, positive_i), again in zip(test, first):
        assert torch.equal(hidden, again), "the same negatives in every evaluation"
        for row in range(len(interaction)):
            shown = set(torch.nonzero(~hidden[row]).squeeze(1).tolist())
            user = int(interaction["user_id"][row])
            negatives = shown - {int(positive_i[row])}
            domain = int(interaction["target_domain"][row])
            unseen = set(np.flatnonzero(dataset.domain_items[domain]).tolist()) - set(items[indptr[user] : indptr[user + 1]].tolist())
            assert int(positive_i[row]) in shown and negatives <= unseen
            assert len(negatives) == min(7, len(unseen))  # user 1 has seen every item
            n_full += len(negatives) == 7
    assert n_full > 0


# ----------------------------------------------------------------------------- errors
def test_missing_domain_column_names_the_file_and_field(tmp_path, in_tmp_dir):
    from recbole_diffusion.errors import DataError

    data = write_two_domain_dataset(tmp_path, "nodom", domain_column=False)
    with pytest.raises(DataError, match=r"nodom\.inter.*domain_field 'domain'"):
        prepare(data, load_col={"inter": ["user_id", "item_id", "timestamp"]})


def test_a_named_domain_without_items_is_refused(tmp_path, in_tmp_dir):
    from recbole_diffusion.errors import DataError

    data = write_two_domain_dataset(tmp_path, "onedom", sequences={u: (c, []) for u, (c, _) in two_domain_sequences().items()})
    with pytest.raises(DataError, match=r"onedom\.inter.*'sport'.*has no items"):
        prepare(data)
    with pytest.raises(DataError, match="exactly two"):
        prepare(data, domain_names=None)


def test_options_are_checked(two_domain, in_tmp_dir):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="train_mode=sequence"):
        prepare(two_domain, train_mode="sequence")
    with pytest.raises(ConfigError, match="long_tail_length"):
        prepare(two_domain, long_tail_length=0)
    with pytest.raises(ConfigError, match="eval_negatives"):
        prepare(two_domain, eval_negatives=-3)
    with pytest.raises(ConfigError, match="domain_field .* dataset_domain"):
        prepare(two_domain, dataset_domain="cloth")


# ----------------------------------------------------------------------------- group metrics
def test_per_domain_group_metrics_recomputed_by_hand(two_domain, in_tmp_dir):
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import get_trainer

    config, dataset, train, valid, test = prepare(two_domain, epochs=2)
    model = build_model(config, train)
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    trainer.fit(train, valid, saved=False)
    result = trainer.evaluate(test, load_best_model=False)

    model = trainer.model.eval()
    ranks, domains, history = [], [], []
    with torch.no_grad():
        for interaction, hidden, positive_u, positive_i in test:
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = -math.inf
            scores[hidden] = -math.inf
            target = scores[positive_u, positive_i]
            ranks.append((scores[positive_u] > target[:, None]).sum(1))
            domains.append(interaction["target_domain"])
            history.append(interaction["domain_history_length"])
    ranks, domains, history = torch.cat(ranks), torch.cat(domains), torch.cat(history)
    sequences = two_domain_sequences()
    for index, name in enumerate(("cloth", "sport")):
        lengths = np.array([len(s[index]) for s in sequences.values() if s[index]])
        expected = {"all": len(lengths), "cold-start": int((lengths == 1).sum()), "long-tailed": int(((lengths >= 2) & (lengths <= 3)).sum())}
        groups = {"all": domains == index, "cold-start": (domains == index) & (history == 0),
                  "long-tailed": (domains == index) & (history >= 1) & (history <= 2)}
        for group, rows in groups.items():
            assert result[f"users ({name}, {group})"] == expected[group] == int(rows.sum())
            group_ranks = ranks[rows]
            for k in (5, 10):
                hit = (group_ranks < k).float().mean().item()
                ndcg = torch.where(group_ranks < k, 1 / torch.log2(group_ranks.float() + 2), torch.zeros(())).mean().item()
                assert result[f"hit@{k} ({name}, {group})"] == pytest.approx(hit, abs=1e-4)
                assert result[f"ndcg@{k} ({name}, {group})"] == pytest.approx(ndcg, abs=1e-4)
        assert expected["cold-start"] > 0 and expected["long-tailed"] > 0
    assert result["hit@10"] == pytest.approx((ranks < 10).float().mean().item(), abs=1e-4)
