"""Where a dataset comes from, and checks on its atomic files before RecBole reads them.

A dataset folder that exists is read as it is. One that does not exist but whose name is in
RecBole's list of downloadable datasets (RecBole's ``properties/dataset/url.yaml``) is downloaded
the way RecBole does it (its own download functions, the same confirmation prompt for a file over
1 GB, the same folder ``<data_path>/<dataset>``), but into a temporary folder that is renamed only
when the download and the extraction succeed, with a time limit on every network read, so a failed
or interrupted download ends in one error and leaves nothing behind. Any other name is an error
that says where we looked and how to get the data. Then a malformed file fails here, in one
paragraph that names the file and the line, instead of deep inside pandas.
"""

import os
import shutil
import socket
import urllib.error
import zipfile

import recbole
import yaml
from recbole.utils import url as recbole_url

from recbole_diffusion.errors import DataError
from recbole_diffusion.files import properties_dir

_TYPES = ("token", "token_seq", "float", "float_seq")
# seconds any one network operation of a download may block before it fails
DOWNLOAD_TIMEOUT = 60


def _dataset_help(config):
    dataset = config["dataset"]
    examples = [name for name in ("ml-1m", "amazon-beauty") if name != dataset]
    shown = " or ".join(f"--dataset={name}" + (", RecBole's ratings-only release" if name == "amazon-beauty" else "") for name in examples)
    protocol = os.path.join(properties_dir(), "dataset", f"{dataset}.yaml")
    renamed = (
        f"data converted into a folder of another name (e.g. --dataset=beauty) needs --config_files={os.path.relpath(protocol)} "
        f"to keep {dataset}'s benchmark protocol; " if os.path.isfile(protocol) else ""
    )
    return (
        f"To get it: point --data_path at the folder that holds {dataset}/{dataset}.inter; {renamed}or name a dataset "
        f"RecBole can download (e.g. {shown}); "
        "or build the atomic file with dataset/convert.py, e.g. for the S3-Rec release of Amazon Beauty "
        "(data/Beauty.txt of the S3-Rec or ICLRec repository): `python dataset/convert.py --format seq "
        "--input Beauty.txt --output_dir dataset --dataset beauty`, then --data_path=dataset --dataset=beauty "
        "(see dataset/README.md). The embedded offline default is --dataset=ml-100k."
    )


def recbole_download_url(dataset):
    """The URL RecBole downloads ``dataset`` from, or None when RecBole does not list it."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")
    with open(path, encoding="utf-8") as handle:
        return (yaml.safe_load(handle) or {}).get(dataset)


def download_dataset(config, url):
    """Download and extract ``url`` into the dataset folder with RecBole's functions; raise
    :class:`DataError` (leaving no folder and no partial file) when that fails or is declined."""
    folder, dataset = os.path.abspath(config["data_path"]), config["dataset"]
    partial = f"{folder}.download-{os.getpid()}"
    # folders above the dataset's that do not exist yet: removed again if the download fails
    created, parent = [], os.path.dirname(folder)
    while not os.path.exists(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        if not recbole_url.decide_download(url):
            raise DataError(f"dataset {dataset!r}: the download from {url} was declined; nothing was written. " + _dataset_help(config))
        os.makedirs(partial)
        archive = recbole_url.download_url(url, partial)
        recbole_url.extract_zip(archive, partial)
        os.unlink(archive)
        recbole_url.rename_atomic_files(partial, os.path.splitext(os.path.basename(archive))[0], dataset)
        os.replace(partial, folder)
    except (OSError, urllib.error.URLError, zipfile.BadZipFile, RuntimeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"dataset {dataset!r}: the download from {url} (RecBole's source for this name) failed: {reason}. "
            f"Nothing was written. " + _dataset_help(config)
        ) from None
    finally:
        # whatever ended the download (an error, Ctrl-C): no partial folder, and without a dataset
        # folder none of the folders made for it
        socket.setdefaulttimeout(previous_timeout)
        shutil.rmtree(partial, ignore_errors=True)
        if not os.path.isdir(folder):
            for empty in created:  # innermost first
                try:
                    os.rmdir(empty)
                except OSError:
                    break


def resolve_dataset(config):
    """Make sure the dataset folder exists: as given, or downloaded through RecBole's route."""
    folder, dataset = config["data_path"], config["dataset"]
    if os.path.isdir(folder):
        return
    url = recbole_download_url(dataset)
    if url is None:
        raise DataError(
            f"dataset {dataset!r} not found: there is no folder {os.path.abspath(folder)}, and {dataset!r} is not "
            "a dataset RecBole can download. " + _dataset_help(config)
        )
    download_dataset(config, url)


def check_atomic_files(config):
    """Get the dataset (:func:`resolve_dataset`), then raise :class:`DataError` if its ``.inter``
    file is missing or malformed."""
    resolve_dataset(config)
    folder = config["data_path"]
    dataset = config["dataset"]
    if config["benchmark_filename"]:
        files = [os.path.join(folder, f"{dataset}.{part}.inter") for part in config["benchmark_filename"]]
    else:
        files = [os.path.join(folder, f"{dataset}.inter")]
    for path in files:
        unreadable = _unreadable(path)
        if unreadable:
            raise DataError(f"dataset {dataset!r}: {unreadable} cannot be read (permission denied); give this user read access")
        if not os.path.isfile(path):
            raise DataError(
                f"dataset {dataset!r}: the interaction file {os.path.abspath(path)} does not exist. "
                + _dataset_help(config)
            )
        _check_inter_file(path, config)


def _unreadable(path):
    """``path`` or the first folder above it that exists but that this user may not read, or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(folder) and not os.access(folder, os.R_OK | os.X_OK):
        return os.path.abspath(folder)
    if os.path.isfile(path) and not os.access(path, os.R_OK):
        return os.path.abspath(path)
    return None


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
