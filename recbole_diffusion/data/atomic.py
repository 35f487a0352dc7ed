"""Checks on RecBole atomic files before RecBole reads them.

RecBole, given a dataset folder that does not exist, tries to download it (and crashes without a
network); given a malformed file, it fails deep inside pandas. These checks turn both into one
paragraph that names the folder, the file and the line.
"""

import os

from recbole_diffusion.errors import DataError

_TYPES = ("token", "token_seq", "float", "float_seq")


def _dataset_help(config):
    dataset = config["dataset"]
    return (
        f"Either point --data_path at the folder that holds {dataset}/{dataset}.inter "
        f"(this project's benchmark data: --data_path=../shared/data), or build the atomic files "
        f"with `python dataset/convert.py` (see dataset/README.md). The embedded offline default "
        f"is --dataset=ml-100k."
    )


def check_atomic_files(config):
    """Raise :class:`DataError` if the dataset's ``.inter`` file is missing or malformed."""
    folder = config["data_path"]
    dataset = config["dataset"]
    if not os.path.isdir(folder):
        raise DataError(
            f"dataset {dataset!r} not found: the folder {os.path.abspath(folder)} does not exist. "
            + _dataset_help(config)
        )
    if config["benchmark_filename"]:
        files = [os.path.join(folder, f"{dataset}.{part}.inter") for part in config["benchmark_filename"]]
    else:
        files = [os.path.join(folder, f"{dataset}.inter")]
    for path in files:
        if not os.path.isfile(path):
            raise DataError(
                f"dataset {dataset!r}: the interaction file {os.path.abspath(path)} does not exist. "
                + _dataset_help(config)
            )
        _check_inter_file(path, config)


def _check_inter_file(path, config):
    sep = config["field_separator"]
    with open(path, "r", encoding=config["encoding"]) as handle:
        header = handle.readline().rstrip("\r\n")
        if not header:
            raise DataError(f"{path}, line 1: the file is empty (a header `user_id:token\\titem_id:token\\t...` is expected)")
        fields = header.split(sep)
        names, types = [], []
        for column in fields:
            if ":" not in column:
                raise DataError(
                    f"{path}, line 1: header column {column!r} has no type; atomic files name each "
                    f"column as name:type with type one of {', '.join(_TYPES)}"
                )
            name, ftype = column.split(":", 1)
            if ftype not in _TYPES:
                raise DataError(f"{path}, line 1: column {name!r} has unknown type {ftype!r}; use one of {', '.join(_TYPES)}")
            names.append(name)
            types.append(ftype)
        required = [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]
        if config["MODEL_TYPE"].name == "SEQUENTIAL":
            required.append(config["TIME_FIELD"])
        for name in required:
            if name not in names:
                raise DataError(
                    f"{path}, line 1: required column {name!r} is missing (header has {', '.join(names)}); "
                    "sequential models need user, item and time columns"
                )
        float_columns = [i for i, t in enumerate(types) if t == "float"]
        rows = 0
        for line_number, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            values = line.split(sep)
            if len(values) != len(fields):
                raise DataError(
                    f"{path}, line {line_number}: expected {len(fields)} fields separated by "
                    f"{sep!r}, found {len(values)}: {line[:80]!r}"
                )
            for i in float_columns:
                value = values[i]
                if value == "":
                    continue
                try:
                    float(value)
                except ValueError:
                    raise DataError(
                        f"{path}, line {line_number}: column {names[i]!r} is a float column but holds {value!r}"
                    ) from None
            rows += 1
    if rows == 0:
        raise DataError(f"{path}: the file has a header but no interactions")
