r"""Sequence augmentations as matrices: s' = M·s (AsarRec's unified view of five operators).

A batch of right-padded sequences ``item_seq`` [B, L] (RecBole's layout, 0 = padding) is extended
with k candidate items per row (for Insert and Substitute) into *slots* s* = [s_0..s_{L-1},
c_0..c_{k-1}], [B, L + k]. An augmentation is a 0/1 matrix M [B, W, L + k] with every row and
column sum in {0, 1} (a hard semi-doubly stochastic matrix):

    M[b, j, i] = 1  ⇔  output position j of view b takes input slot i,

so the view is ``M @ s*`` (item ids, or slot embeddings [B, L + k, d] for a differentiable view).
An empty row is padding (id 0) in the view. Every matrix is built from its *sources*, a [B, W]
long tensor holding the input slot of each output position (``EMPTY`` = -1 for an empty row):
``source_matrix`` turns sources into M, ``gather_slots`` applies them directly.

Operators (all batched, each returns sources; a candidate slot is L + c, c counting a row's new
items from 0 in position order):
    crop        output j takes slot start + j for j < keep                (shift-left, CL4SRec)
    mask        output j takes slot j, or nothing where masked            (id 0 in place, CoSeRec)
    reorder     output j takes slot order[j]                              (a permutation)
    substitute  a substituted position takes the next candidate slot      (CoSeRec)
    insert      a candidate is placed before each marked item; the rest shift right (CoSeRec)
``keep_last`` then trims a view longer than the model's window to its most recent positions
(the same matrix language: a crop of the front).

``sample_static`` draws CL4SRec's (crop, mask, reorder) or CoSeRec's (+ insert, substitute)
random augmentations with these operators; ``budgeted_assignment`` turns a soft transition matrix
(AsarRec's learned augmenter, after ``layers.semi_sinkhorn``) into a hard one within a
perturbation budget.
"""

import math

import torch

EMPTY = -1

CL4SREC_OPERATORS = ("crop", "mask", "reorder")
COSEREC_OPERATORS = ("crop", "mask", "reorder", "insert", "substitute")


# ----------------------------------------------------------------------------- matrices
def source_matrix(sources, n_slots):
    """The 0/1 matrix M [B, W, n_slots] of ``sources`` [B, W] (``EMPTY`` rows are zero)."""
    filled = sources != EMPTY
    matrix = torch.zeros(*sources.shape, n_slots + 1, device=sources.device)
    matrix.scatter_(-1, torch.where(filled, sources, n_slots).unsqueeze(-1), 1.0)
    return matrix[..., :n_slots]


def gather_slots(sources, slots):
    """``M @ slots`` without the matrix: slot values ``slots`` [B, S] gathered by ``sources``
    [B, W], 0 on empty rows."""
    filled = sources != EMPTY
    return slots.gather(1, sources.clamp(min=0)) * filled


def compose(outer, inner):
    """Sources of ``M_outer @ M_inner``: row j takes ``inner[outer[j]]`` (``EMPTY`` stays empty)."""
    return torch.where(outer != EMPTY, inner.gather(1, outer.clamp(min=0)), EMPTY)


def view_lengths(view):
    """Length of right-padded views [B, W]: one past the last non-padding position (a masked
    position inside a view is padding but does not shorten it)."""
    positions = torch.arange(1, view.shape[1] + 1, device=view.device)
    return ((view != 0) * positions).max(dim=1).values


def _positions(lengths, width):
    return torch.arange(width, device=lengths.device).expand(len(lengths), width)


def _from_positions(target, value, width):
    """Sources [B, width] with ``value`` [B, n] written at output positions ``target`` [B, n]
    (positions outside 0..width-1 are dropped)."""
    out = torch.full((target.shape[0], width + 1), EMPTY, dtype=torch.long, device=target.device)
    out.scatter_(1, torch.where((target >= 0) & (target < width), target, width), value)
    return out[:, :width]


# ----------------------------------------------------------------------------- operators
def identity_sources(lengths, width):
    """Output j takes slot j for j < n."""
    positions = _positions(lengths, width)
    return torch.where(positions < lengths.unsqueeze(1), positions, EMPTY)


def crop_sources(start, keep, width):
    """The slice start..start+keep-1 moved to the front (CL4SRec's crop)."""
    positions = _positions(start, width)
    return torch.where(positions < keep.unsqueeze(1), start.unsqueeze(1) + positions, EMPTY)


def mask_sources(lengths, masked, width):
    """The sequence with the positions ``masked`` [B, L] (bool) emptied in place."""
    sources = identity_sources(lengths, width)
    masked = torch.nn.functional.pad(masked, (0, width - masked.shape[1]))
    return sources.masked_fill(masked, EMPTY)


def reorder_sources(lengths, order, width):
    """Output j takes slot ``order[b, j]`` for j < n (``order`` [B, L]: a permutation of 0..n-1 in
    its first n entries)."""
    order = torch.nn.functional.pad(order, (0, width - order.shape[1]))
    return torch.where(_positions(lengths, width) < lengths.unsqueeze(1), order, EMPTY)


def substitute_sources(lengths, substituted, width, seq_width):
    """The positions ``substituted`` [B, L] (bool) take candidate slots ``seq_width + c`` in order."""
    sources = identity_sources(lengths, width)
    rank = torch.cumsum(substituted.long(), dim=1) - 1
    candidate = torch.nn.functional.pad(torch.where(substituted, seq_width + rank, EMPTY), (0, width - seq_width), value=EMPTY)
    return torch.where(candidate != EMPTY, candidate, sources)


def insert_sources(lengths, insert_before, width, seq_width):
    """A candidate slot inserted before every item marked in ``insert_before`` [B, L] (bool, only
    the first n count); later items shift right. Candidates are numbered in position order."""
    positions = _positions(lengths, seq_width)
    marked = (insert_before & (positions < lengths.unsqueeze(1))).long()
    inserted_up_to = torch.cumsum(marked, dim=1)  # insertions at positions <= j
    item_target = torch.where(positions < lengths.unsqueeze(1), positions + inserted_up_to, -1)
    sources = _from_positions(item_target, positions, width)
    new_target = torch.where(marked.bool(), positions + inserted_up_to - 1, -1)
    new_items = _from_positions(new_target, seq_width + inserted_up_to - 1, width)
    return torch.where(new_items != EMPTY, new_items, sources)


def keep_last(sources, width):
    """Views longer than ``width`` lose their oldest positions (RecBole keeps the most recent
    ``MAX_ITEM_LIST_LENGTH`` items the same way); returns sources [B, width]."""
    filled = sources != EMPTY
    positions = torch.arange(1, sources.shape[1] + 1, device=sources.device)
    length = (filled * positions).max(dim=1).values
    shift = (length - width).clamp(min=0)
    index = shift.unsqueeze(1) + torch.arange(width, device=sources.device)
    return sources.gather(1, index.clamp(max=sources.shape[1] - 1)).masked_fill(index >= sources.shape[1], EMPTY)


def compact(sources):
    """Empty rows removed, the others moved to the front in order (deletion, as opposed to mask)."""
    order = torch.argsort((sources == EMPTY).to(torch.int8), dim=1, stable=True)
    return sources.gather(1, order)


# ----------------------------------------------------------------------------- static policies
def _uniform_int(high, generator):
    """One integer uniform in 0..high[b]-1 per row (``high`` >= 1)."""
    u = torch.rand(high.shape, generator=generator, device=high.device)
    return (u * high).floor().long().clamp(max=high - 1)


def _random_subset(lengths, count, seq_width, generator):
    """A uniformly random set of ``count[b]`` positions among the first n (bool [B, L])."""
    keys = torch.rand(len(lengths), seq_width, generator=generator, device=lengths.device)
    keys = keys.masked_fill(_positions(lengths, seq_width) >= lengths.unsqueeze(1), 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    return rank < count.unsqueeze(1)


def max_new_items(seq_width, ratios):
    """Candidate slots the static operators may need for windows of ``seq_width`` items."""
    return max(1, math.floor(max(ratios["insert"], ratios["substitute"]) * seq_width))


def sample_static(item_seq, lengths, operators, ratios, generator=None):
    """One random static augmentation per row: an operator drawn uniformly from ``operators``.

    ``ratios`` (dict) hold CL4SRec / CoSeRec's rates for a sequence of n items: crop keeps
    max(1, ⌊crop·n⌋) consecutive items from a random start; mask empties ⌊mask·n⌋ random
    positions; reorder shuffles a random slice of ⌊reorder·n⌋ items; substitute replaces
    max(1, ⌊substitute·n⌋) random items by new ones; insert puts max(1, ⌊insert·n⌋) new items
    before random items. Returns ``(sources [B, L + k], anchors [B, k])`` with
    k = ``max_new_items``: ``anchors[b, c]`` is the position whose item new item c stands next to
    (CoSeRec picks a new item correlated with it), ``EMPTY`` when unused. Views are not trimmed.
    """
    batch, seq_width = item_seq.shape
    device = item_seq.device
    n_new = max_new_items(seq_width, ratios)
    width = seq_width + n_new
    n = lengths.clamp(min=1)

    def count(rate, at_least):
        return torch.clamp((rate * n).floor().long(), min=at_least).minimum(n)

    keep = count(ratios["crop"], 1)
    options = {"crop": lambda: (crop_sources(_uniform_int(n - keep + 1, generator), keep, width), None)}
    options["mask"] = lambda: (mask_sources(lengths, _random_subset(lengths, count(ratios["mask"], 0), seq_width, generator), width), None)

    def reorder():
        span = count(ratios["reorder"], 0)
        start = _uniform_int(n - span + 1, generator)
        positions = _positions(lengths, seq_width)
        inside = (positions >= start.unsqueeze(1)) & (positions < (start + span).unsqueeze(1))
        keys = torch.rand(batch, seq_width, generator=generator, device=device)
        keys = torch.where(inside, start.unsqueeze(1) + keys * span.unsqueeze(1), positions.float() + 0.5)
        return reorder_sources(lengths, keys.argsort(dim=1), width), None

    def with_new_items(builder, rate):
        chosen = _random_subset(lengths, count(rate, 1).clamp(max=n_new), seq_width, generator)
        anchors = torch.where(chosen, _positions(lengths, seq_width), seq_width)
        anchors = anchors.sort(dim=1).values[:, :n_new]
        return builder(lengths, chosen, width, seq_width), anchors.masked_fill(anchors == seq_width, EMPTY)

    options["reorder"] = reorder
    options["substitute"] = lambda: with_new_items(substitute_sources, ratios["substitute"])
    options["insert"] = lambda: with_new_items(insert_sources, ratios["insert"])

    choice = torch.randint(0, len(operators), (batch,), generator=generator, device=device)
    sources = torch.full((batch, width), EMPTY, dtype=torch.long, device=device)
    anchors = torch.full((batch, n_new), EMPTY, dtype=torch.long, device=device)
    for index, name in enumerate(operators):
        chosen = (choice == index).unsqueeze(1)
        op_sources, op_anchors = options[name]()
        sources = torch.where(chosen, op_sources, sources)
        if op_anchors is not None:
            anchors = torch.where(chosen, op_anchors, anchors)
    return sources, anchors


def cl4srec_views(item_seq, lengths, crop_ratio, mask_ratio, reorder_ratio, generator=None):
    """One CL4SRec view per right-padded row (crop, mask or reorder, drawn uniformly; the
    operators of :func:`sample_static`, which add no items): ``(view ids [B, L], view lengths [B])``,
    a length being one past the view's last item (:func:`view_lengths`, at least 1)."""
    ratios = {"crop": crop_ratio, "mask": mask_ratio, "reorder": reorder_ratio, "insert": 0.0, "substitute": 0.0}
    sources, _ = sample_static(item_seq, lengths, CL4SREC_OPERATORS, ratios, generator)
    view = gather_slots(keep_last(sources, item_seq.shape[1]), item_seq)
    return view, view_lengths(view).clamp(min=1)


# ----------------------------------------------------------------------------- learned policy
def interleaved_identity(lengths, seq_width):
    """Sources of the identity in the *interleaved frame* of ``budgeted_assignment``: 2L rows,
    row 2j = the gap before item j (empty), row 2j + 1 = item j (slot j)."""
    rows = torch.full((len(lengths), 2 * seq_width), EMPTY, dtype=torch.long, device=lengths.device)
    items = identity_sources(lengths, seq_width)
    rows[:, 1::2] = items
    return rows


def interleaved_options(lengths, seq_width, n_candidates):
    """Allowed entries [B, 2L, L + k + 1] of the interleaved frame (last column: "nothing").

    Item row 2j + 1 (j < n) may take any item slot (reorder), a candidate (substitute) or nothing
    (delete); gap row 2j (j <= n) a candidate (insert) or nothing; rows past the sequence nothing.
    """
    batch = len(lengths)
    n_slots = seq_width + n_candidates
    j = torch.arange(seq_width, device=lengths.device)
    slot = torch.arange(n_slots + 1, device=lengths.device)
    n = lengths.view(batch, 1, 1)
    is_item_slot = (slot < seq_width).view(1, 1, -1)
    is_real_item = is_item_slot & (slot.view(1, 1, -1) < n)
    is_candidate = ((slot >= seq_width) & (slot < n_slots)).view(1, 1, -1)
    is_nothing = (slot == n_slots).view(1, 1, -1)
    item_rows = (j.view(1, -1, 1) < n) & (is_real_item | is_candidate | is_nothing)
    gap_rows = (j.view(1, -1, 1) <= n) & is_candidate | is_nothing
    allowed = torch.empty(batch, 2 * seq_width, n_slots + 1, dtype=torch.bool, device=lengths.device)
    allowed[:, 0::2] = gap_rows.expand(batch, -1, -1)
    allowed[:, 1::2] = item_rows.expand(batch, -1, -1) | is_nothing
    return allowed


def perturbation_budget(lengths, ratio):
    """Edits allowed per sequence: ⌈ratio·n⌉ (at least one for a non-empty sequence)."""
    return torch.ceil(ratio * lengths.float() - 1e-6).long().clamp(min=0)


def budgeted_assignment(soft, lengths, budget, threshold):
    """Hard sources [B, 2L] of the interleaved frame from a soft matrix ``soft`` [B, 2L, S + 1]
    (last column: "nothing"), changing at most ``budget[b]`` rows from the identity.

    Every row's preferred option is its largest entry. A row whose preference differs from its
    identity option (item row: its own slot; gap row: nothing) and reaches ``threshold`` is an
    *edit*, worth its soft margin over the identity. Edits are accepted greedily by worth while
    the budget lasts, keeping every slot used at most once: an edit that takes a slot still held
    by an unedited item row becomes a swap of the two items (two edits), or is skipped. Returns
    ``(sources, n_edits [B])``; every row and column of the result sums to 0 or 1. Only the
    ``4·budget[b]`` most valuable proposals are tried (bounded work per batch).
    """
    batch, n_rows, n_options = soft.shape
    seq_width, nothing = n_rows // 2, n_options - 1
    device = soft.device
    sources = interleaved_identity(lengths, seq_width)
    identity = torch.where(sources == EMPTY, nothing, sources)
    best_value, best = soft.max(dim=-1)
    worth = best_value - soft.gather(-1, identity.unsqueeze(-1)).squeeze(-1)
    is_edit = (best != identity) & (best_value >= threshold)
    worth = worth.masked_fill(~is_edit, float("-inf"))
    order = worth.argsort(dim=1, descending=True)
    used = torch.zeros(batch, n_options, dtype=torch.bool, device=device)
    used.scatter_(1, identity, True)
    used[:, nothing] = False
    state = {
        "sources": sources, "used": used, "edited": torch.zeros(batch, n_rows, dtype=torch.bool, device=device),
        "n_edits": torch.zeros(batch, dtype=torch.long, device=device), "order": order, "best": best, "worth": worth,
        "budget": budget, "seq_width": seq_width, "nothing": nothing,
        # only the 4·budget most valuable proposals are considered (the loop is the hot spot)
        "n_proposed": is_edit.sum(dim=1).minimum(4 * budget),
    }
    # one result, two ways to reach it: on the CPU only the rows that change are written (fastest
    # there); elsewhere every row is written each step, so the host waits for the device only every
    # few steps instead of several times a step (tests/test_asarrec.py checks they agree)
    accept = _accept_edits if device.type == "cpu" else _accept_edits_without_host_waits
    accept(state)
    return state["sources"], state["n_edits"]


def _step_proposals(state, step, rows):
    """This step's proposal of every sequence: its row, option, whether it is still open, and
    whether it is taken as it is (``take``) or as a swap with the row holding the slot (``swap``)."""
    sources, used, edited, n_edits = state["sources"], state["used"], state["edited"], state["n_edits"]
    seq_width, nothing, budget, n_rows = state["seq_width"], state["nothing"], state["budget"], sources.size(1)
    row = state["order"][:, step]
    option = state["best"][rows, row]
    live = torch.isfinite(state["worth"][rows, row]) & ~edited[rows, row] & (n_edits < budget)
    is_nothing = option == nothing
    free = is_nothing | ~used[rows, option]
    # a taken item slot: swap with its row if that row is unedited and two edits remain
    partner = (2 * option + 1).clamp(max=n_rows - 1)
    swap = live & ~free & (option < seq_width) & (row % 2 == 1) & ~edited[rows, partner] & (n_edits + 2 <= budget)
    own = torch.where(row % 2 == 1, row // 2, nothing)  # the slot the row gives up
    return row, option, is_nothing, partner, own, live & free, swap


def _all_done(state, step):
    return ((state["n_edits"] >= state["budget"]) | (step >= state["n_proposed"])).all()


def _accept_edits(state):
    """The greedy acceptance, writing only the rows that change (one host read per step)."""
    sources, used, edited, n_edits, nothing = state["sources"], state["used"], state["edited"], state["n_edits"], state["nothing"]
    batch = sources.size(0)
    rows = torch.arange(batch, device=sources.device)
    for step in range(int(state["n_proposed"].max()) if batch else 0):
        if _all_done(state, step):
            break
        row, option, is_nothing, partner, own, take, swap = _step_proposals(state, step, rows)
        # single edit: the row's own slot (if any) is freed, the chosen one is taken
        used[rows[take], own[take]] = False
        used[rows[take], option[take]] = ~is_nothing[take]
        used[:, nothing] = False
        sources[rows[take], row[take]] = torch.where(is_nothing[take], EMPTY, option[take])
        # swap: both slots stay used
        sources[rows[swap], row[swap]] = option[swap]
        sources[rows[swap], partner[swap]] = own[swap]
        edited[rows[take], row[take]] = True
        edited[rows[swap], row[swap]] = True
        edited[rows[swap], partner[swap]] = True
        n_edits += take.long() + 2 * swap.long()


def _accept_edits_without_host_waits(state, check_every=8):
    """The same acceptance as :func:`_accept_edits`, every row written each step (unchanged rows
    with their own values). Once every sequence is done nothing more is accepted, so reading that
    on the host only every ``check_every`` steps gives the same result."""
    sources, used, edited, n_edits, nothing = state["sources"], state["used"], state["edited"], state["n_edits"], state["nothing"]
    batch = sources.size(0)
    rows = torch.arange(batch, device=sources.device)
    finished = torch.zeros((), dtype=torch.bool, device=sources.device)
    for step in range(int(state["n_proposed"].max()) if batch else 0):
        finished |= _all_done(state, step)
        if step % check_every == check_every - 1 and bool(finished):
            break
        row, option, is_nothing, partner, own, take, swap = _step_proposals(state, step, rows)
        take, swap = take & ~finished, swap & ~finished
        used[rows, own] = used[rows, own] & ~take
        used[rows, option] = torch.where(take, ~is_nothing, used[rows, option])
        used[:, nothing] = False
        chosen = torch.where(is_nothing, EMPTY, option)
        sources[rows, row] = torch.where(take, chosen, torch.where(swap, option, sources[rows, row]))
        sources[rows, partner] = torch.where(swap, own, sources[rows, partner])
        edited[rows, row] = edited[rows, row] | take | swap
        edited[rows, partner] = edited[rows, partner] | swap
        n_edits += take.long() + 2 * swap.long()
