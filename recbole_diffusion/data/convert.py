"""Convert common raw recommendation data into RecBole atomic ``.inter`` files.

Two source forms are understood:

``seq``
    One line per user, ``user item item ...``, items in chronological order. This is the
    S3-Rec / CL4SRec / ICLRec release (e.g. ICLRec ``data/Beauty.txt``). It carries no
    timestamps, so each interaction gets its position within the user's sequence
    (0, 1, 2, ...) as timestamp. RecBole orders interactions with a stable sort on the
    timestamp, so the original order of every sequence is kept.

``amazon-csv``
    The Amazon review "ratings only" CSV of McAuley et al. (2014 release):
    ``user,item,rating,timestamp`` with no header line (a header line is accepted).
    Ratings are kept in a ``rating:float`` column. ``min_rating`` drops low ratings and
    ``k_core`` applies iterative k-core filtering (the common Beauty benchmark is 5-core).

Every interaction is kept: repeated (user, item) pairs are not merged, and k-core counts
interactions, not distinct partners. Rows are written user by user (users in order of first
appearance); within a user they are ordered by timestamp, ties kept in file order.

The output is ``output_dir/dataset/dataset.inter``, RecBole's layout for
``--data_path=output_dir --dataset=dataset``. It is written to a temporary file in the
target folder and moved into place only when complete, so a failed conversion leaves
nothing behind.

Command line (from a source checkout)::

    python dataset/convert.py --format seq --input Beauty.txt --output_dir dataset --dataset beauty
"""

import argparse
import csv
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass

from recbole_diffusion.files import atomic_path

FORMATS = ("seq", "amazon-csv")

USER_FIELD = "user_id:token"
ITEM_FIELD = "item_id:token"
RATING_FIELD = "rating:float"
TIME_FIELD = "timestamp:float"

# RecBole reads atomic files with pandas, which turns these exact strings into missing values
# even for string columns, so an id spelled like this would silently become NaN.
_PANDAS_MISSING = frozenset(
    [
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    ]
)
# Tabs and line breaks would split a row; a double quote would start a quoted field for pandas.
_FORBIDDEN_ID_CHAR = re.compile('[\t\n\r"]')


class ConversionError(ValueError):
    """Raised when the input cannot be converted; the message names the file and line."""


@dataclass
class ConversionSummary:
    """What a conversion wrote, for the one-line report of the command line."""

    path: str
    fmt: str
    n_users: int
    n_items: int
    n_interactions: int
    n_read: int
    n_dropped_rating: int = 0
    n_dropped_k_core: int = 0

    def line(self):
        text = (
            f"wrote {self.path}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_interactions} interactions (format {self.fmt}, {self.n_read} read"
        )
        if self.n_dropped_rating:
            text += f", {self.n_dropped_rating} dropped by min_rating"
        if self.n_dropped_k_core:
            text += f", {self.n_dropped_k_core} dropped by k_core"
        return text + ")"


@dataclass(slots=True)  # millions of rows: slots keep each one small
class _Interaction:
    user: str
    item: str
    timestamp: float
    rating: float = None


def _where(path, line_no=None):
    return f"{path}, line {line_no}" if line_no is not None else str(path)


def _check_id(value, kind, path, line_no):
    if value in _PANDAS_MISSING:
        shown = repr(value) if value else "an empty string"
        raise ConversionError(
            f"{_where(path, line_no)}: the {kind} id is {shown}, which RecBole's reader "
            f"(pandas) takes for a missing value; rename it in the source."
        )
    forbidden = _FORBIDDEN_ID_CHAR.search(value)
    if forbidden:
        raise ConversionError(
            f"{_where(path, line_no)}: the {kind} id {value!r} contains {forbidden.group()!r}, "
            f"which a tab-separated RecBole atomic file cannot hold."
        )


def _parse_number(text, what, path, line_no):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise ConversionError(
            f"{_where(path, line_no)}: the {what} {text.strip()!r} is not a finite number."
        )
    return value


def _numbered_lines(path):
    """Yield ``(line_no, text)`` per physical line, decoding each line on its own.

    Decoding line by line (instead of letting a text file decode in blocks) is what lets a
    bad byte be reported with the line it is on.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: input file not found (or not a regular file).")
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark would otherwise stick to the first id
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ConversionError(
                    f"{_where(path, line_no)}: not valid UTF-8 text ({error.reason} at "
                    f"character {error.start + 1} of the line)."
                ) from None


def _read_seq(path):
    """Read one ``user item item ...`` line per user; positions become timestamps."""
    interactions = []
    first_line_of_user = {}
    for line_no, line in _numbered_lines(path):
        tokens = line.split()
        if not tokens:
            continue
        user, items = tokens[0], tokens[1:]
        if not items:
            raise ConversionError(
                f"{_where(path, line_no)}: user {user!r} has no items; a seq line must be "
                f"'user item item ...' with at least one item."
            )
        if user in first_line_of_user:
            raise ConversionError(
                f"{_where(path, line_no)}: user {user!r} already has a sequence on line "
                f"{first_line_of_user[user]}; the seq format holds one line per user."
            )
        first_line_of_user[user] = line_no
        _check_id(user, "user", path, line_no)
        for position, item in enumerate(items):
            _check_id(item, "item", path, line_no)
            interactions.append(_Interaction(user, item, float(position)))
    if not interactions:
        raise ConversionError(f"{path}: the file is empty (no user sequences found).")
    return interactions


def _looks_like_header(fields):
    # A header names its columns (user_id,item_id,rating,timestamp or
    # reviewerID,asin,overall,unixReviewTime); a data row has numbers in the last two fields.
    if len(fields) != 4:
        return False
    return all(field.strip().replace("_", "").isalpha() for field in fields)


def _read_amazon_csv(path):
    """Read ``user,item,rating,timestamp`` rows; the first line may be a header."""
    interactions = []
    seen_first_row = False
    reader = csv.reader(text for _, text in _numbered_lines(path))
    try:
        for fields in reader:
            # Each fed string is one physical line, so line_num is the file's line number
            # (a quoted field spanning lines reports the line where the row ends).
            line_no = reader.line_num
            if len(fields) <= 1 and not "".join(fields).strip():
                continue
            if not seen_first_row:
                seen_first_row = True
                if _looks_like_header(fields):
                    continue
            if len(fields) != 4:
                raise ConversionError(
                    f"{_where(path, line_no)}: expected 4 comma-separated fields "
                    f"(user,item,rating,timestamp), found {len(fields)}."
                )
            user, item = fields[0].strip(), fields[1].strip()
            _check_id(user, "user", path, line_no)
            _check_id(item, "item", path, line_no)
            rating = _parse_number(fields[2], "rating", path, line_no)
            timestamp = _parse_number(fields[3], "timestamp", path, line_no)
            interactions.append(_Interaction(user, item, timestamp, rating))
    except csv.Error as error:
        raise ConversionError(
            f"{_where(path, reader.line_num)}: malformed CSV ({error})."
        ) from None
    if not interactions:
        raise ConversionError(f"{path}: the file is empty (no interaction rows found).")
    return interactions


def k_core_filter(interactions, k):
    """Drop users and items with fewer than ``k`` interactions until none is left.

    Removing a user can push one of its items below ``k`` and the other way round, so the
    two filters repeat until a pass removes nothing. Returns the kept interactions in order.
    """
    if k <= 1:
        return list(interactions)
    kept = list(interactions)
    while True:
        user_counts = Counter(row.user for row in kept)
        item_counts = Counter(row.item for row in kept)
        filtered = [
            row for row in kept if user_counts[row.user] >= k and item_counts[row.item] >= k
        ]
        if len(filtered) == len(kept):
            return filtered
        kept = filtered


def _group_by_user(interactions, sort_by_time):
    by_user = {}
    for row in interactions:
        by_user.setdefault(row.user, []).append(row)
    if sort_by_time:
        for rows in by_user.values():
            rows.sort(key=lambda row: row.timestamp)  # list.sort is stable: ties keep file order
    return by_user


def _format_number(value):
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _inter_lines(by_user, with_rating, renumber_positions):
    header = [USER_FIELD, ITEM_FIELD] + ([RATING_FIELD] if with_rating else []) + [TIME_FIELD]
    yield "\t".join(header) + "\n"
    for user, rows in by_user.items():
        for position, row in enumerate(rows):
            timestamp = float(position) if renumber_positions else row.timestamp
            columns = [user, row.item]
            if with_rating:
                columns.append(_format_number(row.rating))
            columns.append(_format_number(timestamp))
            yield "\t".join(columns) + "\n"


def _check_dataset_name(dataset):
    if (
        not isinstance(dataset, str)
        or not dataset.strip()
        or dataset in (".", "..")
        or "/" in dataset
        or (os.sep in dataset)
        or (os.altsep and os.altsep in dataset)
    ):
        raise ConversionError(
            f"dataset name {dataset!r} is not usable: it becomes a folder and file name, so it "
            f"must be non-empty and contain no path separator."
        )


def _check_options(fmt, opts):
    known = {"k_core", "min_rating", "overwrite"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConversionError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    k_core = opts.get("k_core") or 0
    if isinstance(k_core, bool) or not isinstance(k_core, int) or k_core < 0:
        raise ConversionError(f"k_core must be a non-negative integer, got {k_core!r}.")
    min_rating = opts.get("min_rating")
    if min_rating is not None:
        if fmt == "seq":
            raise ConversionError(
                "min_rating does not apply to the seq format, which has no ratings."
            )
        if isinstance(min_rating, bool) or not isinstance(min_rating, (int, float)) or not (
            math.isfinite(min_rating)
        ):
            raise ConversionError(f"min_rating must be a finite number, got {min_rating!r}.")
    return k_core, min_rating, bool(opts.get("overwrite", False))


def _write_atomically(lines, target_dir, target_path):
    """Write ``lines`` to ``target_path``; on failure remove the file and new folders."""
    created = []
    folder = os.path.abspath(target_dir)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(target_dir, exist_ok=True)
        with atomic_path(target_path) as temp_path:
            # RecBole strips the header's last character as the line break, so always "\n".
            with open(temp_path, "w", encoding="utf-8", newline="\n") as out:
                out.writelines(lines)
    except BaseException as error:
        for folder in created:  # innermost first
            try:
                os.rmdir(folder)
            except OSError:
                break
        if isinstance(error, OSError):
            raise ConversionError(f"{target_path}: could not write the output ({error}).") from None
        raise


def convert_with_summary(fmt, input_path, output_dir, dataset, **opts):
    """Like :func:`convert`, but return a :class:`ConversionSummary` instead of the path."""
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}.")
    _check_dataset_name(dataset)
    k_core, min_rating, overwrite = _check_options(fmt, opts)
    input_path = os.fspath(input_path)
    target_dir = os.path.join(os.fspath(output_dir), dataset)
    target_path = os.path.join(target_dir, dataset + ".inter")
    # Checked before reading, so a long parse is not wasted on a run that cannot finish.
    if os.path.exists(target_path) and not overwrite:
        raise ConversionError(
            f"{target_path}: output already exists; pass --overwrite (overwrite=True) to replace it."
        )

    if fmt == "seq":
        interactions = _read_seq(input_path)
    else:
        interactions = _read_amazon_csv(input_path)
    n_read = len(interactions)

    n_dropped_rating = 0
    if min_rating is not None:
        interactions = [row for row in interactions if row.rating >= min_rating]
        n_dropped_rating = n_read - len(interactions)
    n_before_k_core = len(interactions)
    interactions = k_core_filter(interactions, k_core)
    n_dropped_k_core = n_before_k_core - len(interactions)
    if not interactions:
        raise ConversionError(
            f"{input_path}: no interactions left after filtering (min_rating={min_rating}, "
            f"k_core={k_core}); {n_read} were read. Loosen the filters."
        )

    with_rating = fmt == "amazon-csv"
    # seq positions are renumbered after filtering so each user's timestamps stay 0, 1, 2, ...
    by_user = _group_by_user(interactions, sort_by_time=fmt != "seq")
    lines = _inter_lines(by_user, with_rating, renumber_positions=fmt == "seq")
    _write_atomically(lines, target_dir, target_path)

    return ConversionSummary(
        path=target_path,
        fmt=fmt,
        n_users=len(by_user),
        n_items=len({row.item for row in interactions}),
        n_interactions=len(interactions),
        n_read=n_read,
        n_dropped_rating=n_dropped_rating,
        n_dropped_k_core=n_dropped_k_core,
    )


def convert(fmt, input_path, output_dir, dataset, **opts):
    """Convert ``input_path`` (format ``fmt``) to ``output_dir/dataset/dataset.inter``.

    Args:
        fmt (str): ``"seq"`` or ``"amazon-csv"``.
        input_path (str or PathLike): the raw file.
        output_dir (str or PathLike): RecBole ``data_path``; created if missing.
        dataset (str): RecBole dataset name (folder and file name).
        **opts: ``k_core`` (int, 0 = off), ``min_rating`` (float, amazon-csv only, keeps
            ratings >= it), ``overwrite`` (bool, replace an existing output).

    Returns:
        str: the path of the written ``.inter`` file.

    Raises:
        ConversionError: on bad input or options; nothing is left on disk in that case.
    """
    return convert_with_summary(fmt, input_path, output_dir, dataset, **opts).path


def _parser():
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert raw interaction data to a RecBole atomic .inter file, written "
        "to OUTPUT_DIR/DATASET/DATASET.inter (use --data_path=OUTPUT_DIR --dataset=DATASET).",
    )
    parser.add_argument(
        "--format", required=True, dest="fmt", metavar="{" + ",".join(FORMATS) + "}",
        help="seq: one line per user 'user item item ...' (S3-Rec/ICLRec release); "
        "amazon-csv: 'user,item,rating,timestamp' (McAuley ratings CSV).",
    )
    parser.add_argument("--input", required=True, help="the raw input file")
    parser.add_argument("--output_dir", required=True, help="RecBole data_path to write into")
    parser.add_argument("--dataset", required=True, help="RecBole dataset name")
    parser.add_argument(
        "--k_core", type=int, default=0,
        help="iterative k-core filter on users and items (default 0 = off; Beauty uses 5)",
    )
    parser.add_argument(
        "--min_rating", type=float, default=None,
        help="amazon-csv only: keep interactions with rating >= this (default: keep all)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def main(argv=None):
    """Command-line entry; returns the exit status (0 ok, 2 on a conversion error)."""
    args = _parser().parse_args(argv)
    try:
        summary = convert_with_summary(
            args.fmt, args.input, args.output_dir, args.dataset,
            k_core=args.k_core, min_rating=args.min_rating, overwrite=args.overwrite,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
