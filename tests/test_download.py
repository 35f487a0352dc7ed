"""Dataset resolution: a name RecBole can download goes through RecBole's download (stubbed here
at the network boundary, ``urllib.request.urlopen``: no test touches the network), a local folder
is read without it, and a failed download or an unknown name is one clear error that leaves
nothing behind."""

import io
import os
import socket
import urllib.error
import zipfile

import pytest

from recbole_diffusion.data import atomic
from recbole_diffusion.errors import DataError

INTER = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{i}\n" for u in range(1, 6) for i in range(1, 7))


class FakeResponse:
    def __init__(self, payload):
        self.stream = io.BytesIO(payload)
        self.length = len(payload)

    def info(self):
        return {"Content-Length": str(self.length)}

    def read(self, size=-1):
        return self.stream.read(size)


def zipped(name, text):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}.inter", text)
    return buffer.getvalue()


@pytest.fixture
def network(monkeypatch):
    """Every urlopen call is recorded and answered by ``network["answer"](url)``."""
    state = {"calls": [], "answer": None}

    def urlopen(url, *args, **kwargs):
        state["calls"].append(url)
        return state["answer"](url)

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    return state


def config_for(tmp_path, dataset):
    """What check_atomic_files reads of a Config, for ``dataset`` under ``tmp_path``."""
    from recbole.utils import ModelType

    return {
        "dataset": dataset, "data_path": str(tmp_path / dataset), "benchmark_filename": None,
        "field_separator": "\t", "encoding": "utf-8", "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp", "MODEL_TYPE": ModelType.SEQUENTIAL,
    }


def test_a_downloadable_name_takes_recboles_download(tmp_path, network):
    url = atomic.recbole_download_url("amazon-beauty")
    assert url and url.endswith("Amazon_Beauty.zip")  # RecBole's own source for the name
    network["answer"] = lambda _: FakeResponse(zipped("Amazon_Beauty", INTER))
    atomic.check_atomic_files(config_for(tmp_path, "amazon-beauty"))
    assert network["calls"] == [url, url]  # RecBole's size check, then the download
    # RecBole's layout: the archive's atomic files renamed after the dataset, in <data_path>/<dataset>
    assert sorted(os.listdir(tmp_path)) == ["amazon-beauty"]
    assert os.listdir(tmp_path / "amazon-beauty") == ["amazon-beauty.inter"]


def test_a_local_dataset_is_not_downloaded(tmp_path, network):
    (tmp_path / "amazon-beauty").mkdir()
    (tmp_path / "amazon-beauty" / "amazon-beauty.inter").write_text(INTER)
    network["answer"] = lambda _: pytest.fail("a local dataset was downloaded")
    atomic.check_atomic_files(config_for(tmp_path, "amazon-beauty"))
    assert network["calls"] == []


@pytest.mark.parametrize("failure", ["unreachable", "timeout", "broken archive"])
def test_a_failed_download_is_one_error_and_leaves_nothing(tmp_path, network, failure):
    def answer(url):
        if failure == "unreachable":
            raise urllib.error.URLError("Name or service not known")
        if failure == "timeout":
            raise socket.timeout("timed out")
        return FakeResponse(b"not a zip archive")

    network["answer"] = answer
    with pytest.raises(DataError, match="amazon-beauty.*download from .*failed.*Nothing was written") as error:
        atomic.check_atomic_files(config_for(tmp_path, "amazon-beauty"))
    assert "dataset/convert.py" in str(error.value)
    assert os.listdir(tmp_path) == []  # no dataset folder, no partial download


def test_a_failed_download_removes_the_folders_it_made(tmp_path, network):
    def answer(url):  # the size check answers, the download itself fails
        if len(network["calls"]) == 1:
            return FakeResponse(zipped("Amazon_Beauty", INTER))
        raise urllib.error.URLError("connection reset")

    network["answer"] = answer
    config = config_for(tmp_path, "amazon-beauty")
    config["data_path"] = str(tmp_path / "new" / "deeper" / "amazon-beauty")
    with pytest.raises(DataError):
        atomic.check_atomic_files(config)
    assert os.listdir(tmp_path) == []


def test_every_network_read_is_bounded_in_time(tmp_path, network):
    seen = []

    def answer(url):
        seen.append(socket.getdefaulttimeout())
        raise socket.timeout("timed out")

    network["answer"] = answer
    before = socket.getdefaulttimeout()
    with pytest.raises(DataError):
        atomic.check_atomic_files(config_for(tmp_path, "amazon-beauty"))
    assert seen == [atomic.DOWNLOAD_TIMEOUT]
    assert socket.getdefaulttimeout() == before


def test_an_unknown_name_says_where_we_looked_and_how_to_get_it(tmp_path, network):
    with pytest.raises(DataError) as error:
        atomic.check_atomic_files(config_for(tmp_path, "no-such-data"))
    message = str(error.value)
    assert str(tmp_path / "no-such-data") in message and "not a dataset RecBole can download" in message
    assert "python dataset/convert.py --format seq" in message and "shared" not in message
    assert network["calls"] == [] and os.listdir(tmp_path) == []
