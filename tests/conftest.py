"""Shared fixtures: a tiny dataset cut from RecBole's embedded ml-100k, and clean working dirs."""

import os

import pytest
import torch

# asked once, before any test: RecBole's Config sets CUDA_VISIBLE_DEVICES from gpu_id, and a CPU
# test's empty gpu_id would hide the GPUs from a later CUDA test if CUDA were first touched then
HAS_CUDA = torch.cuda.is_available()
# every end-to-end smoke test runs on the CPU and, where CUDA exists, on the GPU
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device"))]

TINY_USERS = 80
TINY_PER_USER = 30


def write_tiny_dataset(folder, name="tiny", users=TINY_USERS, per_user=TINY_PER_USER):
    """Write ``folder/name/name.inter``: the last ``per_user`` interactions of the first
    ``users`` ml-100k users (real data, a few thousand rows). Returns ``(data_path, name)``."""
    import recbole

    source = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    rows = {}
    with open(source, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        u, i, t = (header.index(c) for c in ("user_id:token", "item_id:token", "timestamp:float"))
        for line in handle:
            values = line.rstrip("\n").split("\t")
            uid = int(values[u])
            if uid <= users:
                rows.setdefault(uid, []).append((float(values[t]), values[i]))
    target = os.path.join(folder, name)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, f"{name}.inter"), "w", encoding="utf-8") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for uid in sorted(rows):
            for ts, item in sorted(rows[uid])[-per_user:]:
                out.write(f"{uid}\t{item}\t{ts:.0f}\n")
    return str(folder), name


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``(data_path, dataset_name)`` of the tiny real dataset, shared by the session."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def pytest_configure(config):
    """The upstream warnings recbole_diffusion silences for its users (``compat.KNOWN_WARNINGS``, each
    with its reason) are silenced in every test too: pytest resets the filters for each test."""
    from recbole_diffusion.compat import KNOWN_WARNINGS

    for category, message, _ in KNOWN_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N test processes share the cores
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def in_own_folder(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: RecBole writes log/, log_tensorboard/ and saved/
    relative to the working directory, and a test leaves nothing in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test reaches the network: a download attempt fails at once (tests/test_download.py stubs
    the same function with its own answers)."""
    import urllib.error

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"tests have no network (asked for {url})")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


@pytest.fixture
def one_thread():
    """Tensors this small train several times faster on one thread (and the CI machine is shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in an empty folder, so saved/, log/ and log_tensorboard/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=DEVICES)
def device(request):
    """"cpu", and "cuda" where a GPU exists; ``tiny_config(..., device=device)`` runs there."""
    return request.param


def tiny_config(tiny_data, device="cpu", **overrides):
    """A config dict for a fast end-to-end run on the tiny dataset, on ``device`` ("cpu" or "cuda")."""
    data_path, name = tiny_data
    config = {
        "data_path": data_path,
        "dataset": name,
        "epochs": 1,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
        "MAX_ITEM_LIST_LENGTH": 20,
        "train_batch_size": 256,
        "eval_batch_size": 256,
        "show_progress": False,
        # RecBole picks the device by gpu_id (use_gpu is not read): empty = the CPU on any machine
        "gpu_id": "",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    }
    if device == "cuda":
        config["gpu_id"] = "0"
    config.update(overrides)
    return config


def assert_config_error(model, config_dict, option):
    """``Config(model, config_dict)`` must refuse with a ConfigError whose one-paragraph message
    starts with ``option:`` (the option the user has to change); returns the error."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        Config(model=model, config_dict=config_dict)
    assert str(info.value).startswith(option + ":"), str(info.value)
    return info.value


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_saved(model, tiny_data, folder, make_config=None, **overrides):
    """Train ``model`` on the tiny dataset with RecBole's log folders under ``folder`` and its
    checkpoint in ``folder/saved``, one torch thread; returns ``quick_start.run``'s result.
    ``make_config(data, **overrides)`` builds the config dict (default: ``tiny_config``), so
    another dataset (``tiny_data``: its ``(data_path, name)``) can be trained the same way."""
    import torch

    from recbole_diffusion.quick_start import run

    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(folder)  # RecBole's log folders
    torch.set_num_threads(1)
    try:
        return run(model=model, saved=True, verbose=False,
                   config_dict=(make_config or tiny_config)(tiny_data, **overrides, checkpoint_dir=str(folder / "saved")))
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


def run_benchmark_script(script, cwd, *args):
    """Run ``benchmarks/<script>`` with ``args`` in ``cwd`` (one thread, the repository importable)."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def raw_sequences(data_path, name):
    """Each user's items in RecBole's order (by timestamp, ties in file order), read from the atomic file."""
    rows = {}
    with open(os.path.join(data_path, name, f"{name}.inter"), encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        u, i, t = (header.index(c) for c in ("user_id:token", "item_id:token", "timestamp:float"))
        for line in handle:
            values = line.rstrip("\n").split("\t")
            rows.setdefault(values[u], []).append((float(values[t]), values[i]))
    return {user: [item for _, item in sorted(items, key=lambda pair: pair[0])] for user, items in rows.items()}
