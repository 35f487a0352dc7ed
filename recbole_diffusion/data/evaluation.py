"""Full-sort evaluation batched by history length, with padding trimmed.

RecBole's full-sort evaluation of a sequential model runs the encoder over all
``MAX_ITEM_LIST_LENGTH`` positions of every user, although most histories are short
(amazon-beauty: median 6 of 50). Profiled here, the encoder over that padding is nearly all of an
evaluation's time. This loader orders the valid/test users by history length and cuts each
batch's list fields to the batch's longest history. Metrics are per-user averages, so the order
of users does not change them (tested).

Only for models whose output for a user cannot depend on trailing padding: causal encoders read
at position ``item_length - 1`` (RecBole's SASRec and GRU4Rec, listed here), and this plugin's
models that set the class attribute ``TRIM_EVAL_PADDING = True``. Every other model keeps
RecBole's loader unchanged.
"""

from recbole.data.dataloader import FullSortEvalDataLoader

TRIM_SAFE_BUILTINS = ("SASRec", "GRU4Rec")


def trims_eval_padding(config, model_class, phase):
    """Whether ``phase``'s evaluation of ``model_class`` may use the trimmed loader."""
    if config["eval_args"]["mode"][phase] != "full" or model_class.type.name != "SEQUENTIAL":
        return False
    if getattr(model_class, "TRIM_EVAL_PADDING", False):
        return True
    return model_class.__module__.startswith("recbole.") and model_class.__name__ in TRIM_SAFE_BUILTINS


class TrimmedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's sequential full-sort loader, users ordered by history length, padding trimmed."""

    def __init__(self, config, dataset, sampler, shuffle=False):
        self.length_field = config["ITEM_LIST_LENGTH_FIELD"]
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        dataset.sort(by=self.length_field, ascending=True)
        super().__init__(config, dataset, sampler, shuffle=False)

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        width = max(int(interaction[self.length_field].max()), 1)
        for field, value in interaction.interaction.items():
            if value.dim() >= 2 and value.size(1) == self.max_len:
                interaction.interaction[field] = value[:, :width]
        return interaction, history_index, positive_u, positive_i
