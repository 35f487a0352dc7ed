r"""ADARecReleased
################################################

Reference:
    Xiaoxi Cui, Chao Zhao, Yurong Cheng and Xiangmin Zhou. "De-collapsing User Intent: Adaptive
    Diffusion Augmentation with Mixture-of-Experts for Sequential Recommendation." In AAAI 2026.

Reference code:
    https://github.com/ZhaoChao52/ADARec (commit 90faad2), which differs from the paper's framework
    figure (``ADARec``). Design notes and measurements: ``docs/models/ADARec.md``.
"""

import torch
from torch import nn

from recbole_diffusion.errors import ConfigError
from recbole_diffusion.augmentation import cl4srec_views
from recbole_diffusion.layers import info_nce
from recbole_diffusion.model.adarec_blocks import ADARecBase, DepthController, SequenceEncoder, mean_over_real

__all__ = ["ADARecReleased"]


class ReleasedExpert(nn.Module):
    """One expert: a SASRec model, its controller over ``depths`` and its intent prototypes."""

    def __init__(self, n_items, max_length, config, depths, use_controller, n_prototypes):
        super().__init__()
        hidden = config["hidden_size"]
        self.register_buffer("depth_index", torch.tensor([d - 1 for d in depths]), persistent=False)
        self.encoder = SequenceEncoder(n_items, max_length, config)
        self.controller = DepthController(hidden, len(depths), max_length, False) if use_controller else None
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, hidden)) if n_prototypes else None


class ADARecReleased(ADARecBase):
    r"""The authors' ADARec code with its bugs fixed: independent SASRec experts, each mixing
    forward-noised copies of its input embeddings at a few fixed depths.

    Per expert E_0 = embedding, H = Enc(E_0); training adds E_mix = Σ_k p_k q_sample(E_0, D_k)
    (p = softmax of the controller over the expert's depths, one p per sequence) and H' = Enc(E_mix);
    loss = BCE(H) + λ_n BCE(H') + λ_d ‖H' - sg(H)‖² - λ_e entropy + CL4SRec instance contrast +
    intent-prototype contrast + ELCRec's clustering regulariser, summed over experts. Scores: the
    mean of the experts' scores.

    NOTE: Bugs fixed: the cluster prototypes are initialised (random unit vectors); the experts share
        one optimiser and one early stopping on the fused score (RecBole's trainer).
    NOTE: The two views are encoded once and serve both contrastive losses; a view's instance
        representation is its last real position's output, its intent one the mean over real positions.
    NOTE: BCE negatives are uniform items outside the batch row's items (released: the whole sequence).
    """

    LOSS_WEIGHTS = {
        "rec_noised": "noised_rec_weight", "deno": "deno_weight", "expl": "expl_weight",
        "instance": "instance_cl_weight", "cont": "cont_weight", "cluster": "cluster_weight",
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters
        self.expert_depths = [list(depths) for depths in config["expert_depths"]]
        self.view_ratios = (config["crop_ratio"], config["mask_ratio"], config["reorder_ratio"])

        # define layers
        self.experts = nn.ModuleList(
            ReleasedExpert(self.n_items, self.max_seq_length, config, depths, self.use_depth_controller, self.n_prototypes)
            for depths in self.expert_depths
        )

        # parameters initialization
        self.initialise()

    @classmethod
    def check_config(cls, config):
        """Fail at start, naming the option, for settings ADARecReleased cannot run with."""
        checks, n_steps = super().check_config(config)
        depths = checks.get("expert_depths")
        well_formed = isinstance(depths, (list, tuple)) and len(depths) >= 1 and all(
            isinstance(expert, (list, tuple)) and len(expert) >= 1 for expert in depths
        )
        if not well_formed or not all(
            isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= n_steps for expert in depths for d in expert
        ):
            raise ConfigError(
                f"expert_depths: a list with one list of noise depths per expert, each depth an integer "
                f"in 1..{n_steps} (n_diffusion_steps), e.g. [[4, 5], [9, 10]]; got {depths!r}"
            )
        checks.number("crop_ratio", 0.0, 1.0, low_open=True)
        checks.number("mask_ratio", 0.0, 1.0)
        checks.number("reorder_ratio", 0.0, 1.0)
        return checks, n_steps

    # ------------------------------------------------------------------ training
    def _mix(self, expert, embedded, item_len):
        """E_mix = Σ_k p_k q_sample(E_0, D_k) and the controller logits (one row per sequence)."""
        n_depths = expert.depth_index.numel()
        if expert.controller is not None:
            logits = expert.controller(embedded)
            logits = logits[torch.arange(logits.size(0), device=logits.device), item_len - 1]
            weights = torch.softmax(logits, dim=-1)
        else:
            logits = None
            weights = embedded.new_full((embedded.size(0), n_depths), 1.0 / n_depths)
        mixed = sum(
            weights[:, k, None, None]
            * self.diffusion.q_sample(embedded, expert.depth_index[k], noise=torch.randn_like(embedded))
            for k in range(n_depths)
        )
        return mixed, logits

    def loss_terms(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_len = interaction[self.ITEM_SEQ_LEN]
        targets = self.targets(interaction)
        negatives = self.draw_negatives(item_seq, targets)
        real = (item_seq > 0).unsqueeze(-1)
        batch = item_seq.size(0)
        rows = torch.arange(batch, device=item_seq.device)
        w = self.loss_weights
        # the batch and its two views go through each expert in one encoder call
        sequences, lengths = [item_seq], [item_len]
        if w["instance"] > 0 or w["cont"] > 0:
            for _ in range(2):
                view, view_len = cl4srec_views(item_seq, item_len, *self.view_ratios)
                sequences.append(view)
                lengths.append(view_len)
        all_seq, all_len = torch.cat(sequences), torch.cat(lengths)
        terms = {}

        def add(name, value):
            terms[name] = terms.get(name, 0.0) + value

        for expert in self.experts:
            weight = expert.encoder.item_embedding.weight
            embedded = expert.encoder.embed(all_seq)
            if self.use_augmentation:  # clean batch, then the noised batch and views (training mode)
                mixed, logits = self._mix(expert, embedded, all_len)
                hidden = expert.encoder.encode(torch.cat([embedded[:batch], mixed]), torch.cat([item_seq, all_seq]))
                clean, noised, views = hidden[:batch], hidden[batch : 2 * batch], hidden[2 * batch :]
            else:
                hidden = expert.encoder.encode(embedded, all_seq)
                clean, views = hidden[:batch], hidden[batch:]
            add("rec", self.rec_loss_of(clean, targets, negatives, weight))
            if self.use_augmentation:
                if w["rec_noised"] > 0:
                    add("rec_noised", self.rec_loss_of(noised, targets, negatives, weight))
                if w["deno"] > 0:
                    add("deno", ((noised - clean.detach()) * real).pow(2).sum() / real.sum())
                if logits is not None and w["expl"] > 0:
                    add("expl", self.exploration_loss(logits[:batch]))
            encoded = list(zip(views.split(batch), lengths[1:]))
            if w["instance"] > 0:
                last = [view_hidden[rows, length - 1] for view_hidden, length in encoded]
                add("instance", info_nce(last[0], last[1], self.cl_temperature))
            if expert.prototypes is not None:
                self.renormalise(expert.prototypes)
                query, intent = self.intent_queries(mean_over_real(clean, item_len), expert.prototypes)
                if w["cont"] > 0:
                    assigned = expert.prototypes[intent]
                    add("cont", sum(
                        info_nce(mean_over_real(view_hidden, length), assigned, self.cl_temperature, labels=intent)
                        for view_hidden, length in encoded
                    ) / len(encoded))
                if w["cluster"] > 0:
                    add("cluster", self.cluster_regulariser(query, expert.prototypes))
        return terms

    # ------------------------------------------------------------------ scoring
    def forward(self, item_seq, item_seq_len):
        """The experts' representations at each row's last real position, [E, B, d]."""
        last = self.last_positions(item_seq, item_seq_len)
        return torch.stack([expert.encoder(item_seq)[last] for expert in self.experts])

    def predict(self, interaction):
        representation = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        items = interaction[self.ITEM_ID]
        scores = [(r * expert.encoder.item_embedding(items)).sum(-1) for r, expert in zip(representation, self.experts)]
        return torch.stack(scores).mean(0)

    def full_sort_predict(self, interaction):
        representation = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        # the mean of the experts' scores, summed in place (the same numbers as stacking them and
        # taking the mean, without an [E, B, n_items] copy)
        total = None
        for r, expert in zip(representation, self.experts):
            scores = r @ expert.encoder.item_embedding.weight.t()
            total = scores if total is None else total.add_(scores)
        return total.div_(len(self.experts))
