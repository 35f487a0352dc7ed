"""Trimmed, length-ordered full-sort evaluation gives RecBole's metrics exactly."""

import pytest

from conftest import tiny_config


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "BERT4Rec"])
def test_trimmed_evaluation_equals_recbole_evaluation(tiny_data, in_tmp_dir, model):
    from recbole.data.dataloader import FullSortEvalDataLoader

    from recbole_diffusion.config import Config
    from recbole_diffusion.evaluation import TrimmedFullSortEvalDataLoader
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    config = Config(model=model, config_dict=tiny_config(tiny_data, eval_batch_size=16, MAX_ITEM_LIST_LENGTH=30))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert type(valid_data) is TrimmedFullSortEvalDataLoader and type(test_data) is TrimmedFullSortEvalDataLoader
    widths = [batch[0]["item_id_list"].shape[1] for batch in test_data]
    assert min(widths) < 30 and widths == sorted(widths)  # padding trimmed, short histories first

    model_obj = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, model_obj)
    trainer.fit(train_data, valid_data, saved=False)
    trimmed = trainer.evaluate(test_data, load_best_model=False)

    # RecBole's own loader over a fresh split of the same data
    _, _, reference_split = create_dataset(config).build()
    reference = FullSortEvalDataLoader(config, reference_split, None, shuffle=False)
    assert reference_split.inter_feat["item_id_list"].shape[1] == 30
    assert trainer.evaluate(reference, load_best_model=False) == trimmed


def test_models_that_read_padding_keep_recbole_loader(tiny_data):
    from recbole.model.sequential_recommender.caser import Caser

    from recbole_diffusion.config import Config
    from recbole_diffusion.evaluation import trims_eval_padding

    # Caser convolves over the whole window of MAX_ITEM_LIST_LENGTH positions
    config = Config(model="Caser", config_dict=tiny_config(tiny_data))
    assert not trims_eval_padding(config, Caser, "test")


def test_the_rows_sent_between_ranks_pickle_only_their_own_values():
    """Each rank pickles its rows split per batch: a view of one tensor pickles the whole storage
    (80 views of 80 x 1000 floats would send 80 times the tensor)."""
    import pickle

    import torch

    from recbole_diffusion.evaluation import split_rows

    tensor = torch.randn(80 * 1000)
    parts = split_rows(tensor, [1000] * 80)
    assert torch.equal(torch.cat(parts), tensor)
    assert len(pickle.dumps(parts)) < 2 * len(pickle.dumps(tensor))
