"""Whole-sequence training (``train_mode: sequence``) for RecBole's SASRec and GRU4Rec.

Each adapter is a subclass of RecBole's own class, with the same name, parameters and state
dict: it adds only a way to encode every position at once and a ``calculate_loss`` that, on a
sequence batch, scores the next item at every position with RecBole's CE loss. Prefix batches
and all evaluation go through RecBole's own code unchanged, so the adapters train RecBole's
architecture, not a re-implementation of it.
"""

import torch
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.layers import sequence_ce_loss
from recbole_diffusion.utils import ConfigError


class _SequenceTraining:
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.loss_type != "CE":
            raise ConfigError(
                f"train_mode=sequence trains {type(self).__name__} with loss_type CE (full softmax at "
                f"every position); got loss_type={self.loss_type}. Use loss_type=CE or train_mode=prefix"
            )
        self.TARGET_SEQ = target_field(config)

    def calculate_loss(self, interaction):
        if self.TARGET_SEQ not in interaction:
            return super().calculate_loss(interaction)
        hidden = self.forward_all(interaction[self.ITEM_SEQ])
        return sequence_ce_loss(hidden, interaction[self.TARGET_SEQ], self.item_embedding.weight)


class SASRecSequence(_SequenceTraining, SASRec):
    def forward_all(self, item_seq):
        """SASRec.forward without the final gather: the output at every position."""
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        input_emb = self.item_embedding(item_seq) + self.position_embedding(position_ids).unsqueeze(0)
        input_emb = self.dropout(self.LayerNorm(input_emb))
        attention_mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(input_emb, attention_mask, output_all_encoded_layers=True)[-1]


class GRU4RecSequence(_SequenceTraining, GRU4Rec):
    def forward_all(self, item_seq):
        """GRU4Rec.forward without the final gather."""
        gru_output, _ = self.gru_layers(self.emb_dropout(self.item_embedding(item_seq)))
        return self.dense(gru_output)


_ADAPTERS = {SASRec: SASRecSequence, GRU4Rec: GRU4RecSequence}


def sequence_adapter(model_class):
    """The whole-sequence subclass of a RecBole built-in, named like it."""
    adapter = _ADAPTERS.get(model_class)
    if adapter is None:
        supported = ", ".join(cls.__name__ for cls in _ADAPTERS)
        raise ConfigError(
            f"train_mode=sequence is available for this plugin's models and RecBole's {supported}; "
            f"{model_class.__name__} trains with train_mode=prefix (RecBole's own pipeline)"
        )
    return type(model_class.__name__, (adapter,), {"__module__": adapter.__module__})
