"""Whole-sequence training (``train_mode: sequence``) for RecBole's SASRec, GRU4Rec and BERT4Rec.

Each adapter is a subclass of RecBole's own class, with the same name, parameters and state
dict. SASRec's and GRU4Rec's add a way to encode every position at once and a
``calculate_loss`` that, on a sequence batch, scores the next item at every position with
RecBole's CE loss. BERT4Rec's is bidirectional, so it cannot score the next item everywhere at
once; its adapter instead trains BERT4Rec's own masked-item objective on each user's whole
training window, with RecBole's masking rules and RecBole's ``calculate_loss``. Prefix batches
and all evaluation go through RecBole's own code unchanged, so the adapters train RecBole's
architecture, not a re-implementation of it.
"""

import torch
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.bert4rec import BERT4Rec
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec
from torch.nn import functional as F

from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.layers import sasrec_input, sequence_ce_loss
from recbole_diffusion.errors import ConfigError


class _SequenceTraining:
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.loss_type != "CE":
            raise ConfigError(
                f"train_mode=sequence trains {type(self).__name__} with loss_type CE (a full softmax over "
                f"the items); got loss_type={self.loss_type}. Use loss_type=CE or train_mode=prefix"
            )
        self.TARGET_SEQ = target_field(config)

    def calculate_loss(self, interaction):
        if self.TARGET_SEQ not in interaction:
            return super().calculate_loss(interaction)
        return self.sequence_loss(interaction)

    def sequence_loss(self, interaction):
        """Next-item CE at every position of a sequence batch (causal encoders)."""
        hidden = self.forward_all(interaction[self.ITEM_SEQ])
        return sequence_ce_loss(hidden, interaction[self.TARGET_SEQ], self.item_embedding.weight)


class SASRecSequence(_SequenceTraining, SASRec):
    def forward_all(self, item_seq):
        """SASRec.forward without the final gather: the output at every position."""
        input_emb = sasrec_input(self.item_embedding(item_seq), self.position_embedding, self.LayerNorm, self.dropout)
        attention_mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(input_emb, attention_mask, output_all_encoded_layers=True)[-1]


class GRU4RecSequence(_SequenceTraining, GRU4Rec):
    def forward_all(self, item_seq):
        """GRU4Rec.forward without the final gather."""
        gru_output, _ = self.gru_layers(self.emb_dropout(self.item_embedding(item_seq)))
        return self.dense(gru_output)


class BERT4RecSequence(_SequenceTraining, BERT4Rec):
    """BERT4Rec's masked-item training on whole training windows.

    In prefix mode RecBole's ``MaskItemSequence`` transform (``recbole/data/transform.py``,
    where RecBole 1.2 keeps BERT4Rec's training-data masking) masks the history of every prefix
    sample, so a user's items are re-masked once per prefix. Here each window is masked once:
    its items are the window's inputs plus its last target (see :meth:`training_sequences`),
    and :meth:`draw_mask` / :meth:`recbole_mask_fields` turn them into exactly the fields that
    transform would give that sequence, which RecBole's own ``BERT4Rec.calculate_loss`` (its
    CE branch: masked positions only) then scores. The masking rules are RecBole's, quirks
    included, so the objective is the one BERT4Rec trains with in RecBole:

    - per batch, with probability ``ft_ratio`` (0.5 in RecBole's BERT4Rec.yaml) only the last
      item of every row is masked (the paper's samples that mimic next-item prediction);
      otherwise every item is masked independently with probability ``mask_ratio``, always by
      the mask token (no 80/10/10 as in BERT);
    - at most ``mask_item_length = int(mask_ratio * MAX_ITEM_LIST_LENGTH)`` masks per row are
      scored, the *last* ones; earlier masks stay masked in the input but are not scored;
    - a mask at position 0 is never scored: RecBole's ``MASK_INDEX`` pads with 0 and its loss
      counts only indices > 0;
    - a row with no scored mask adds nothing, and the loss is the mean over the batch's scored
      positions. Nothing forces a mask into a row, as in RecBole. A batch without any scored
      position is 0/0 (NaN) in RecBole, which stops its trainer; here it is a zero loss
      (only possible with tiny batches: each scorable item is masked with p = ``mask_ratio``).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # read as RecBole's MaskItemSequence reads it: 0 when the option is not set
        self.ft_ratio = config["ft_ratio"] or 0.0
        if self.mask_item_length < 1:
            raise ConfigError(
                f"train_mode=sequence: BERT4Rec scores int(mask_ratio * MAX_ITEM_LIST_LENGTH) masked "
                f"items per sequence, here {self.mask_item_length}; raise mask_ratio or MAX_ITEM_LIST_LENGTH"
            )

    def training_sequences(self, interaction):
        """Each row's training window as one BERT4Rec input: ``(item_seq [B, W], lengths [B])``.

        A window's inputs are s_a..s_{e-1} and its targets s_{a+1}..s_e, so its items are the
        first input followed by the targets, left-aligned and right-padded with 0 as RecBole's
        item lists. BERT4Rec has only ``MAX_ITEM_LIST_LENGTH`` (= L) positions -- RecBole's
        training samples hold at most L items, and evaluation the last L - 1 history items plus
        the appended mask token -- but a full window has L inputs and L targets, L + 1 items.
        Such a window keeps its last L items (its targets): the dropped first input is the
        last target of the user's previous window, so each training item still appears in one
        window per epoch, except a user's very first item when that user's first window is full.
        """
        inputs, targets = interaction[self.ITEM_SEQ], interaction[self.TARGET_SEQ]
        lengths = interaction[self.ITEM_SEQ_LEN] + 1
        full = lengths > self.max_seq_length
        item_seq = torch.where(full.unsqueeze(1), F.pad(targets, (0, 1)), torch.cat([inputs[:, :1], targets], dim=1))
        return item_seq[:, : self.max_seq_length], lengths - full.long()

    def draw_mask(self, item_seq, lengths):
        """The masked positions [B, W] (bool), drawn as RecBole's MaskItemSequence draws them."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        if torch.rand(()).item() < self.ft_ratio:  # one draw per batch, as in RecBole
            return positions == (lengths - 1).unsqueeze(1)
        draws = torch.rand(item_seq.shape, device=item_seq.device)
        return (draws < self.mask_ratio) & (positions < lengths.unsqueeze(1))

    def recbole_mask_fields(self, item_seq, masked):
        """The fields RecBole's MaskItemSequence gives ``item_seq`` when it masks ``masked``.

        ``MASK_ITEM_SEQ``: the sequence with every masked item replaced by the mask token;
        ``MASK_INDEX`` / ``POS_ITEMS`` [B, mask_item_length]: the last ``mask_item_length``
        masked positions of each row in order and their items, left-padded with 0. RecBole's
        CE loss does not read ``NEG_ITEMS``, so no negatives are sampled: it is all 0.
        """
        n_slots = self.mask_item_length
        # 1 at a row's last mask, 2 at the one before, ...; the ones kept take the last slots
        from_end = masked.flip(1).cumsum(1).flip(1)
        kept = masked & (from_end <= n_slots)
        slot = torch.where(kept, n_slots - from_end, n_slots)  # slot n_slots collects the rest
        positions = torch.arange(item_seq.size(1), device=item_seq.device).expand_as(item_seq)
        index = item_seq.new_zeros(item_seq.size(0), n_slots + 1).scatter_(1, slot, positions * kept)
        items = item_seq.new_zeros(item_seq.size(0), n_slots + 1).scatter_(1, slot, item_seq * kept)
        return Interaction({
            self.MASK_ITEM_SEQ: item_seq.masked_fill(masked, self.mask_token),
            self.POS_ITEMS: items[:, :n_slots].contiguous(),  # RecBole's loss calls .view on them
            self.NEG_ITEMS: torch.zeros_like(items[:, :n_slots]),
            self.MASK_INDEX: index[:, :n_slots].contiguous(),
        })

    def sequence_loss(self, interaction):
        """RecBole's BERT4Rec loss on the masked whole training windows of a sequence batch."""
        item_seq, lengths = self.training_sequences(interaction)
        fields = self.recbole_mask_fields(item_seq, self.draw_mask(item_seq, lengths))
        if not bool((fields[self.MASK_INDEX] > 0).any()):
            return self.output_bias.sum() * 0.0  # nothing scored (see the class docstring)
        return BERT4Rec.calculate_loss(self, fields)


_ADAPTERS = {SASRec: SASRecSequence, GRU4Rec: GRU4RecSequence, BERT4Rec: BERT4RecSequence}


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
