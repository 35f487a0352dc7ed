"""benchmarks/parity/i2vae.py without the authors' code: the run-time patches of their files (applied to
small stand-ins holding the patched patterns), the parsing of their log, the row sample, the groups of
their rows, the section, and the refusal of an incomplete checkout."""

import json
import math
import os
import types

import pytest

from conftest import run_benchmark_script

# ---------------------------------------------------------------------------- their files, patched
FAKE_SOURCES = {
    # what their files hold where the script patches them, in small runnable stand-ins
    "train_our.py": (
        "import torch\n"
        "SEEDS = []\n"
        "for i in range(5):\n"
        "    SEEDS.append(i)\n"
        "ONES = torch.LongTensor(torch.ones(3).long()).cuda()\n"
        "LOADERS = [dict(batch_size=512, shuffle=True, num_workers=8,drop_last=False), dict(num_workers=8,drop_last=False)]\n"
        "print(torch.cuda.is_available())  # torch.cuda, not a call of cuda: left alone\n"
        # their train(): running maxima from 0, the epoch loop, a comment closing the loop's body; draws from
        # every random generator their run draws from (the global optimizer is theirs too)
        "import random\n"
        "import numpy as np\n"
        "def train(model, args_config, log_file):\n"
        "    best_fit = 0\n"
        "    best_draw = 0\n"
        "    for epoch in range(args_config.epoch):\n"
        "        out = torch.nn.functional.dropout(model(torch.randn(8, 3)), 0.5)\n"
        "        loss = (out - random.random() - float(np.random.rand())).pow(2).mean()\n"
        "        optimizer.zero_grad()\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        best_fit = max(best_fit, np.float64(1 / (1 + loss.item())))  # their metrics are numpy floats\n"
        "        best_draw = max(best_draw, random.random())\n"
        "        with open(log_file, 'a') as log:\n"
        "            log.write(f'Epoch: {epoch} loss {loss.item():.8f} max {best_fit:.8f} {best_draw:.8f}\\n')\n"
        "        # upload_model(save_name,name=\"MRAGN_vis\")\n"
        "    return best_fit, best_draw\n"
    ),
    "model.py": (
        "import torch\n"
        "def mask(tl):\n"
        "    attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool))\n"
        "    return attention_mask.cuda()\n"
        "def noise(mean):\n"
        "    return torch.randn(mean.size(0), 4).cuda(mean.device)\n"
    ),
    "dataset.py": (
        "import random\n"
        "import torch\n"
        "def negatives(pool, seen, k):\n"
        "    neg_items_set = pool - set(seen)\n"
        "    return random.sample(neg_items_set, k)\n"
        "if __name__ == '__main__':\n"
        "    u_node = torch.LongTensor([1]).cuda()\n"
    ),
    "utils.py": "import torch\ndef zeros(n):\n    return torch.Tensor(torch.zeros(n)).cuda()\n",
}


def write_checkout(folder, sources):
    for name, text in sources.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def run_module(path):
    namespace = {"__name__": "patched"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_their_files_are_patched_for_the_cpu_one_seed_no_workers_and_python_3_11(tmp_path):
    import torch

    from benchmarks.parity import i2vae

    checkout, run_dir = tmp_path / "checkout", tmp_path / "run"
    write_checkout(checkout, FAKE_SOURCES)
    run_dir.mkdir()
    patches = i2vae.copy_patched(str(checkout), str(run_dir), seed=3)
    assert {name: (checkout / name).read_text() for name in FAKE_SOURCES} == FAKE_SOURCES  # their copy untouched
    texts = {name: (run_dir / name).read_text() for name in FAKE_SOURCES}
    for name, text in texts.items():
        assert ".cuda(" not in text, name
    assert "torch.cuda.is_available()" in texts["train_our.py"]
    assert "for i in [3]:" in texts["train_our.py"] and "range(5)" not in texts["train_our.py"]
    assert texts["train_our.py"].count("num_workers=0") == 2 and "num_workers=8" not in texts["train_our.py"]
    assert "random.sample(tuple(neg_items_set), k)" in texts["dataset.py"]
    assert "attention_mask.cpu()" in texts["model.py"] and ".to(mean.device)" in texts["model.py"]
    assert patches == [
        "train_our.py: CPU: .cuda() -> .cpu() (1x)", "model.py: CPU: .cuda() -> .cpu() (1x)", "dataset.py: CPU: .cuda() -> .cpu() (1x)",
        "utils.py: CPU: .cuda() -> .cpu() (1x)", "model.py: CPU: .cuda(x) -> .to(x) (1x)", "train_our.py: DataLoader num_workers=8 -> 0 (2x)",
        "train_our.py: their seed loop range(5) -> [3] (1x)", "dataset.py: random.sample(set) -> random.sample(tuple(set)) (Python 3.10's) (1x)",
        "train_our.py: resume: the running maxima from the epoch state (2x)", "train_our.py: resume: from the epoch after the saved one (1x)",
        "train_our.py: resume: the state saved after each epoch's log record (1x)",
    ]

    # what the patched code does on this CPU and Python
    train = run_module(run_dir / "train_our.py")
    assert train["SEEDS"] == [3] and train["ONES"].device.type == "cpu"
    assert [loader["num_workers"] for loader in train["LOADERS"]] == [0, 0]
    model = run_module(run_dir / "model.py")
    assert model["mask"](3).device.type == "cpu" and model["noise"](torch.zeros(2)).shape == (2, 4)
    drawn = run_module(run_dir / "dataset.py")["negatives"]({1, 2, 3, 4, 5}, [1, 2], 3)
    assert len(set(drawn)) == 3 and set(drawn) <= {3, 4, 5}
    assert run_module(run_dir / "utils.py")["zeros"](2).device.type == "cpu"
    with pytest.raises(TypeError):  # their dataset.py as it is, on Python 3.11
        run_module(checkout / "dataset.py")["negatives"]({1, 2, 3, 4, 5}, [1, 2], 3)


def test_a_file_without_a_pattern_is_not_patched_but_refused(tmp_path):
    from benchmarks.parity import i2vae

    sources = dict(FAKE_SOURCES, **{"train_our.py": FAKE_SOURCES["train_our.py"].replace("num_workers=8", "num_workers=4")})
    with pytest.raises(RuntimeError, match="train_our.py has no 'num_workers=8'"):
        i2vae.patched_sources(sources, 0)
    with pytest.raises(RuntimeError, match=r"model.py has no .*\.to\(x\)"):
        i2vae.patched_sources(dict(FAKE_SOURCES, **{"model.py": "x.cuda()\n"}), 0)


class Interrupted(Exception):
    pass


def run_their_train(run_dir, folder, epochs, stop_before_saving=None):
    """One process of their patched (stand-in) ``train()``: seeds and a model built as at their script's
    start, then ``train``; ``stop_before_saving``: the process dies after that epoch's log record, before
    its state is saved. Returns (maxima, weights, the epoch state)."""
    import random

    import numpy as np
    import torch

    from benchmarks.parity import i2vae

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    model = torch.nn.Linear(3, 1)
    recorder = i2vae.Recorder()
    recorder.loops.append({"kind": "train", "seconds": float(len(os.listdir(folder))), "batches": 1})
    state = i2vae.EpochState(str(folder / i2vae.EPOCH_STATE_FILE), str(folder / "log0.txt"), recorder)
    save = state.save

    def save_or_die(epoch, *args):
        if epoch == stop_before_saving:
            raise Interrupted
        save(epoch, *args)

    state.save = save_or_die
    namespace = {"__name__": "patched", i2vae.EPOCH_STATE: state, "optimizer": torch.optim.Adam(model.parameters(), lr=0.1)}
    exec(compile((run_dir / "train_our.py").read_text(), "train_our.py", "exec"), namespace)
    maxima = namespace["train"](model, types.SimpleNamespace(epoch=epochs), str(folder / "log0.txt"))
    return maxima, model.state_dict(), state


def test_an_interrupted_run_of_theirs_resumes_from_its_last_epoch_as_if_never_stopped(tmp_path):
    import torch

    from benchmarks.parity import i2vae

    checkout, run_dir, whole, stopped = (tmp_path / name for name in ("checkout", "run", "whole", "stopped"))
    for folder in (run_dir, whole, stopped):
        folder.mkdir()
    write_checkout(checkout, FAKE_SOURCES)
    i2vae.copy_patched(str(checkout), str(run_dir), seed=0)

    expected, weights, state = run_their_train(run_dir, whole, 5)
    assert state.resumed_after == [] and len((whole / "log0.txt").read_text().splitlines()) == 5

    with pytest.raises(Interrupted):  # killed after logging the third epoch, before saving it
        run_their_train(run_dir, stopped, 5, stop_before_saving=2)
    assert len((stopped / "log0.txt").read_text().splitlines()) == 3
    first_loops = torch.load(stopped / i2vae.EPOCH_STATE_FILE, weights_only=True)["loops"]
    resumed, resumed_weights, state = run_their_train(run_dir, stopped, 5)
    assert state.resumed_after == [2]  # the state of epoch 2 (1-based), so epochs 3 to 5 ran again
    assert (stopped / "log0.txt").read_text() == (whole / "log0.txt").read_text()  # the third record once
    assert resumed == expected
    assert all(torch.equal(resumed_weights[key], weights[key]) for key in weights)
    assert state.recorder.loops == first_loops  # the loop times of the epochs before the interruption, kept
    assert state.earlier_seconds > 0  # the stopped process's seconds up to its last save, counted in the run's total
    record = {"process_seconds": 2.0, "earlier_processes_seconds": state.earlier_seconds, "resumed_after_epochs": state.resumed_after}
    assert i2vae.total_seconds(record) == 2.0 + state.earlier_seconds and i2vae.resumed_status(record) == "ok (resumed after epoch 2)"
    assert i2vae.resumed_status({}) == "ok" and i2vae.total_seconds({"process_seconds": 2.0}) == 2.0

    # a resumed run that had written their log_all.txt (after its last epoch) before it was stopped writes it once
    (stopped / "log_all.txt").write_text("the stopped process's averages\n")
    run_their_train(run_dir, stopped, 5)
    assert not (stopped / "log_all.txt").exists()

    # a folder without a state starts at epoch 0; the resume key names the settings, the pseudo-sequences and the patches
    key = i2vae.resume_key({"seed": 0, "epochs": 5}, "blob", ["a patch"])
    assert not i2vae.resumable(str(whole / "none"), key)
    (stopped / i2vae.RESUME_KEY_FILE).write_text(key + "\n")
    assert i2vae.resumable(str(stopped), key)
    for other in (i2vae.resume_key({"seed": 0, "epochs": 6}, "blob", ["a patch"]), i2vae.resume_key({"seed": 0, "epochs": 5}, "other", ["a patch"]),
                  i2vae.resume_key({"seed": 0, "epochs": 5}, "blob", ["another patch"])):
        assert not i2vae.resumable(str(stopped), other)
    (stopped / i2vae.EPOCH_STATE_FILE).write_bytes(b"not a state")  # unreadable: started over, not failed every time
    assert not i2vae.resumable(str(stopped), key)


FAKE_DATASET_CLASS = (
    "import json\n"
    "import pandas as pd\n"
    "class DualDomainSeqDatasetC2DSR:\n"
    "    def __init__(self, isTrain, csv_path=''):\n"
    "        frame = pd.read_csv(csv_path)\n"
    "        self.isTrain, self.domain_id = isTrain, frame['domain_id'].tolist()\n"
    "        self.seq_d1, self.seq_d2 = frame['seq_d1'].tolist(), frame['seq_d2'].tolist()\n"
    "        self.item_pool_d1, self.item_pool_d2 = self.__build_i_set__(self.seq_d1), self.__build_i_set__(self.seq_d2)\n"
    "        self.tail_len_d1 = self.tail_len_d2 = 1\n"
    "    def __build_i_set__(self, seqs):\n"
    "        return {item for seq in seqs for item in json.loads(seq)}\n"
)


def test_the_recorders_take_the_pools_of_the_whole_files_count_the_groups_and_time_their_loops(tmp_path):
    from benchmarks.parity import i2vae

    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    write_rows(whole, [(1, [1, 2], [10], 0), (2, [3], [11, 12], 1), (3, [], [13], 1)])
    write_rows(cut, [(2, [3], [11, 12], 1)])
    namespace = {}
    exec(FAKE_DATASET_CLASS, namespace)
    cls = namespace["DualDomainSeqDatasetC2DSR"]
    recorder = i2vae.Recorder()
    recorder.wrap_dataset(cls, {"train": str(whole), "test": str(whole)})
    dataset = cls(isTrain=False, csv_path=str(cut))
    assert (dataset.item_pool_d1, dataset.item_pool_d2) == ({1, 2, 3}, {10, 11, 12, 13})  # not the cut's {3}, {11, 12}
    assert recorder.groups["test"]["rows"]["sport"] == {"cold-start": 0, "long-tailed": 0, "all": 1}
    namespace = {}
    exec(FAKE_DATASET_CLASS, namespace)
    plain = namespace["DualDomainSeqDatasetC2DSR"]
    i2vae.Recorder().wrap_dataset(plain, None)  # without --rows: their pools
    assert plain(isTrain=True, csv_path=str(cut)).item_pool_d1 == {3}

    seen = []

    def their_tqdm(iterable, *args, **kwargs):
        seen.append(kwargs)
        return iter(iterable)

    class Loader(list):
        pass

    train, test = Loader([1, 2, 3]), Loader([4])
    train.dataset, test.dataset = types.SimpleNamespace(isTrain=True), types.SimpleNamespace(isTrain=False)
    timed = recorder.timed_tqdm(their_tqdm)
    assert [list(timed([7, 8], total=2)), list(timed(train)), list(timed(test))] == [[7, 8], [1, 2, 3], [4]]
    assert [(loop["kind"], loop["batches"]) for loop in recorder.loops] == [("other", 2), ("train", 3), ("test", 1)]
    assert seen[0] == {"total": 2} and all(loop["seconds"] >= 0 for loop in recorder.loops)


# ---------------------------------------------------------------------------- their log
METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
BLOCKS = (("domain1", "tailed users "), ("domain1", "cold-started users "), ("domain2", "tailed users "),
          ("domain2", "cold-started users "), ("domain1", ""), ("domain2", ""))
NAMES = {"domain1": "cloth", "domain2": "sport", "tailed users ": "long-tailed", "cold-started users ": "cold-start", "": "all"}
KEYS = {"HR@1": "hit@1", "HR@5": "hit@5", "HR@10": "hit@10", "NDCG@5": "ndcg@5", "NDCG@10": "ndcg@10", "MRR": "mrr"}


def value(epoch, block, metric):
    """A value unique to each place; even places peak at epoch 1, odd ones at epoch 2."""
    place = BLOCKS.index(block) * len(METRICS) + METRICS.index(metric)
    return round(0.01 * place + (0.3 if (place % 2 == 0) == (epoch == 1) else 0.0), 4)


def epoch_record(epoch, of, logged_max):
    """One epoch's record laid out as their log file has it (cloth_sport, --cs_setting True)."""
    lines = [f"[2026-01-02 03:04:{epoch:02d},123] Epoch: {epoch - 1}/{of} \tTrain Loss: {20 - epoch:.4f} \tVal loss: 0.7450, cls loss: 0.7450",
             "Val loss x: 0.3771, Val loss y: 0.3679"]
    for block in BLOCKS:
        domain, group = block
        pairs = [f"{value(epoch, block, m):.4f}/{logged_max(block, m):.4f}" for m in METRICS]
        head = f"val {domain} cur/max "
        lines += [f"{head}{group}HR@1: {pairs[0]} ", f",{group}HR@5: {pairs[1]} ", f", {group}HR@10: {pairs[2]} ",
                  f"{group}NDCG@5: {pairs[3]} ", f", {group}NDCG@10: {pairs[4]}, ",
                  f"{head if not group else group}MRR: {pairs[5]} "]
    return "\n".join(lines) + "\n"


def their_log(epochs=2, logged_max=None):
    logged_max = logged_max or (lambda epoch: lambda block, m: max(value(e, block, m) for e in range(1, epoch + 1)))
    text = "[2026-01-02 03:04:00,001] {'epoch': 2, 'bs': 512, 'model_dir': 'output'}\n"
    for epoch in range(1, epochs + 1):
        text += "[2026-01-02 03:04:00,500] train total loss:20.1, 10.0, 10.1; kld loss:19.0, 9.5, 9.5; cls loss:0.7, 0.0, 0.0 \t\n"
        text += epoch_record(epoch, epochs, logged_max(epoch))
    # their log_all record (mean/std over seeds) goes to the same file: not an epoch
    text += "[2026-01-02 03:05:00,000] domain1 tailed users HR@1: 0.0000/0.0000 \n,tailed users HR@5: 0.0000/0.0000 \n"
    return text


def test_their_log_is_parsed_into_every_epoch_the_maximum_and_the_last_epoch():
    from benchmarks.parity import i2vae

    epochs = i2vae.parse_log(their_log())
    assert [(e["epoch"], e["of"], e["train_loss"], e["test_loss"]) for e in epochs] == [(1, 2, 19.0, 0.745), (2, 2, 18.0, 0.745)]
    for e in epochs:
        assert set(e["current"]) == {"cloth", "sport"}
        for block in BLOCKS:
            domain, group = NAMES[block[0]], NAMES[block[1]]
            assert set(e["current"][domain][group]) == set(KEYS.values())
            for metric in METRICS:
                assert e["current"][domain][group][KEYS[metric]] == value(e["epoch"], block, metric), (e["epoch"], block, metric)
    maximum, last = i2vae.over_epochs(epochs)
    for block in BLOCKS:
        for metric in METRICS:
            domain, group, key = NAMES[block[0]], NAMES[block[1]], KEYS[metric]
            assert maximum[domain][group][key] == max(value(1, block, metric), value(2, block, metric))
            assert last[domain][group][key] == value(2, block, metric)
    assert maximum != last and maximum != epochs[0]["current"]  # each metric's maximum from its own epoch
    assert i2vae.their_maximum_agrees(epochs, maximum)


def test_a_logged_maximum_that_is_not_the_epochs_is_told_and_a_broken_record_refused():
    from benchmarks.parity import i2vae

    wrong = their_log(logged_max=lambda epoch: lambda block, m: value(epoch, block, m))  # the current value logged as the max
    epochs = i2vae.parse_log(wrong)
    assert not i2vae.their_maximum_agrees(epochs, i2vae.over_epochs(epochs)[0])
    text = their_log(epochs=1)
    with pytest.raises(ValueError, match="35 metrics in one epoch's record, expected 36"):
        i2vae.parse_log(text.replace(", cold-started users HR@10:", ", cold-started users XX@10:", 1))
    with pytest.raises(ValueError, match="twice"):
        i2vae.parse_log(text.replace("val domain2 cur/max tailed users", "val domain1 cur/max tailed users"))
    nan = i2vae.parse_log(text.replace("val domain1 cur/max MRR: 0.2900/", "val domain1 cur/max MRR: nan/"))
    assert math.isnan(nan[0]["current"]["cloth"]["all"]["mrr"]) and i2vae.over_epochs(nan)[0]["cloth"]["all"]["mrr"] is None


# ---------------------------------------------------------------------------- rows
def write_rows(path, rows):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",user_id,seq_d1,seq_d2,domain_id\n")
        for index, (user, seq_d1, seq_d2, domain) in enumerate(rows):
            handle.write(f'{index},{user},"{json.dumps(seq_d1)}","{json.dumps(seq_d2)}",{domain}\n')


def test_a_row_sample_keeps_rows_as_they_are_and_needs_a_cold_start_row_in_each_domain(tmp_path):
    from benchmarks.parity import i2vae

    checkout = tmp_path / "checkout"
    (checkout / "dataset").mkdir(parents=True)
    rows = [(u, [u, u + 1] if u % 3 else [u], [u + 100], u % 2) for u in range(40)]  # some one-item target lists in both domains
    write_rows(checkout / i2vae.TRAIN_CSV, rows)
    write_rows(checkout / i2vae.TEST_CSV, rows)
    args = types.SimpleNamespace(authors_repo=str(checkout), rows=12)
    found = i2vae.prepare_rows(args, str(tmp_path / "a"))
    again = i2vae.prepare_rows(args, str(tmp_path / "b"))
    assert found["train_rows"] == again["train_rows"] == sorted(found["train_rows"]) and len(set(found["train_rows"])) == 12
    source = (checkout / i2vae.TRAIN_CSV).read_text().splitlines(keepends=True)
    assert open(found["train"]).read() == "".join([source[0]] + [source[1 + i] for i in found["train_rows"]])
    assert i2vae.prepare_rows(types.SimpleNamespace(authors_repo=str(checkout), rows=None), str(tmp_path / "c"))["test_rows"] is None
    with pytest.raises(i2vae.UsageError, match="--rows 41: cloth_sport_train.csv has only 40 rows"):
        i2vae.prepare_rows(types.SimpleNamespace(authors_repo=str(checkout), rows=41), str(tmp_path / "d"))
    write_rows(checkout / i2vae.TEST_CSV, [(u, [u], [u + 100, u + 101], u % 2) for u in range(40)])  # sport: no one-item list
    with pytest.raises(i2vae.UsageError, match="no cold-start row of sport"):
        i2vae.prepare_rows(args, str(tmp_path / "e"))


def test_the_groups_of_their_rows_follow_their_labels():
    from benchmarks.parity import i2vae

    dataset = types.SimpleNamespace(
        domain_id=[0, 0, 0, 1, 1], tail_len_d1=2, tail_len_d2=3,
        seq_d1=["[5]", "[5, 6]", "[5, 6, 7]", "[]", "[1, 2, 3, 4, 5]"], seq_d2=["[9]", "[]", "[]", "[8]", "[1, 2, 3, 4]"],
    )
    assert i2vae.row_groups(dataset) == {
        "rows": {"cloth": {"cold-start": 1, "long-tailed": 2, "all": 3}, "sport": {"cold-start": 1, "long-tailed": 1, "all": 2}},
        "tail_lengths": {"cloth": 2, "sport": 3},
    }


# ---------------------------------------------------------------------------- the section
def stored_run(seed, shift):
    from benchmarks.parity import i2vae

    epochs = i2vae.parse_log(their_log())
    for e in epochs:
        for groups in e["current"].values():
            for metrics in groups.values():
                for key in metrics:
                    metrics[key] = round(metrics[key] + shift, 4)
    maximum, last = i2vae.over_epochs(epochs)
    counts = {"cold-start": 7, "long-tailed": 40, "all": 60}
    return {"status": "ok", "side": "authors", "seed": seed, "epochs": epochs, "max_over_epochs": maximum, "last_epoch": last,
            "their_logged_max_agrees": True, "test_groups": {"rows": {"cloth": counts, "sport": dict(counts, all=55)}},
            "train_seconds_per_epoch": [10.0, 12.0], "test_seconds_per_epoch": [5.0, 5.0], "process_seconds": 100.0,
            "finished": f"2026-01-0{seed + 1} 00:00:00 UTC",
            "pseudo_sequences": {"lightgcn_epoch_seconds": 16.2, "generation_seconds": 300.0,
                                 "lightgcn_tests": [{"after_epochs": 990, "results": {"recall": [0.05], "ndcg": [0.03]}}]}}


def test_the_section_gives_the_max_over_epochs_and_the_last_epoch_per_domain_and_group():
    from benchmarks.parity import i2vae

    machine = {"cpu": "a CPU", "cores": 2, "ram_gib": 8, "python": "3.11", "versions": {"torch": "2", "numpy": "1", "pandas": "2"},
               "git": {"commit": "abc1234", "uncommitted_changes": False}}
    state = {"section": "i2vae-cloth_sport-2epochs", "command": "python benchmarks/parity/i2vae.py --authors_repo=PATH", "machine": machine,
             "finished": "now", "authors_code": None,
             "view": {"dataset": "cloth_sport", "epochs": 2, "rows": None, "threads": 1, "lightgcn_epochs": 1000, "lightgcn_seed": 2020},
             "records": {("authors", 0): stored_run(0, 0.0), ("authors", 1): stored_run(1, 0.02),
                         ("authors", 2): {"status": "failed", "error": "their test() failed", "process_seconds": 3.0}, ("authors", 3): None}}
    text = i2vae.render_section(state)
    assert "**max over epochs on the test rows**" in text and "Ours: not run yet" in text
    assert "16.2 s an epoch" in text and "after 990 epochs): recall@10 0.0500" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| side | seed | domain | group | rows | HR@10 max | NDCG@10 max | MRR max | HR@10 last | NDCG@10 last | MRR last |")
    cells = {tuple(c.strip() for c in line.strip("|").split("|")[1:4]): [c.strip() for c in line.strip("|").split("|")] for line in table[1:]}
    # seed 0, sport, cold-start: HR@10 and NDCG@10 are places 20 and 22 (even: their max at epoch 1), MRR 23 (odd: at epoch 2)
    row = cells[("0", "sport", "cold-start")]
    assert row[4:11] == ["7", "0.5000", "0.5200", "0.5300", "0.2000", "0.2200", "0.5300"]
    assert row[11:] == ["2", "11.0", "5.00", "100.0", "ok"]
    assert cells[("0", "sport", "all")][4] == "55"
    mean = cells[("2 seeds", "sport", "cold-start")]
    assert mean[5] == "0.5100 ± 0.0100" and mean[0] == "authors' `train_our.py`, mean ± std"
    assert cells[("2", "–", "–")][-1] == "failed" and cells[("3", "–", "–")][-1] == "not run"
    assert len(table) == 1 + 2 * 6 + 2 + 6  # the header, two runs of 6 rows, failed, not run, the means
    assert "- authors' `train_our.py`, seed 2: their test() failed" in text


def test_our_runs_on_the_same_rows_join_the_section_in_their_columns():
    from benchmarks.parity import i2vae

    machine = {"cpu": "a CPU", "cores": 2, "ram_gib": 8, "python": "3.11", "versions": {"torch": "2", "numpy": "1", "pandas": "2"},
               "git": {"commit": "abc1234", "uncommitted_changes": False}}

    def epoch(value):
        return {f"{m} ({d}, {g})": value for m in ("hit@10", "ndcg@10") for d in ("cloth", "sport") for g in ("cold-start", "long-tailed", "all")}

    test_result = {**epoch(0.3), **{f"users ({d}, {g})": 11.0 for d in ("cloth", "sport") for g in ("cold-start", "long-tailed", "all")}}
    ours = {"sampled": {2020: {"status": "ok", "seed": 2020, "test_result": test_result, "process_seconds": 50.0, "epoch_seconds": [4.0, 6.0, 5.0],
                               "test_results_per_epoch": [epoch(0.1), epoch(0.4), epoch(0.2)]},
                        2021: {"status": "failed", "seed": 2021, "process_seconds": 3.0}},
            "sampled_rows": {2020: {"status": "ok", "seed": 2020, "test_result": test_result, "process_seconds": 40.0, "epoch_seconds": [4.0],
                                    "test_results_per_epoch": [epoch(0.05)]}}}
    state = {"section": "i2vae-cloth_sport-2epochs", "command": "python benchmarks/parity/i2vae.py --authors_repo=PATH", "machine": machine,
             "finished": "now", "authors_code": None, "ours": ours,
             "view": {"dataset": "cloth_sport", "epochs": 2, "rows": None, "threads": 1, "lightgcn_epochs": 1000, "lightgcn_seed": 2020},
             "records": {("authors", 0): stored_run(0, 0.0)}}
    text = i2vae.render_section(state)
    assert "Ours: not run yet" not in text and "--ranking sampled" in text
    assert "--ranking sampled_rows" in text and "their pool" in text
    pool = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| our `i2VAE`, their pool |")]
    assert len(pool) == 6 and pool[0][4:8] == ["11", "0.0500", "0.0500", "–"]  # the run with the authors' pool, in its own rows
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| our `i2VAE` |")]
    assert len(rows) == 6 + 1  # every domain and group of the ok run, one row for the failed one
    cloth_cold = next(r for r in rows if r[1:4] == ["2020", "cloth", "cold-start"])
    # max over the three epochs 0.4, the last epoch 0.2, no MRR; 3 epochs, 5 s an epoch
    assert cloth_cold[4:11] == ["11", "0.4000", "0.4000", "–", "0.2000", "0.2000", "–"]
    assert cloth_cold[11:] == ["3", "5.00", "–", "50.0", "ok"]
    assert rows[-1][1] == "2021" and rows[-1][-1] == "failed"
    assert "--settings authors" not in text  # said only once such a run is stored
    ours["sampled_rows-authors-settings"] = {2020: dict(ours["sampled_rows"][2020], test_results_per_epoch=[epoch(0.02)])}
    text = i2vae.render_section(state)
    assert "--settings authors" in text and "`kl_weight: 1.0`" in text
    theirs = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
              if line.startswith("| our `i2VAE`, their pool and settings |")]
    assert len(theirs) == 6 and theirs[0][5] == "0.0200"
    assert "| most-popular" not in text and "--popularity" not in text
    ours["sampled_rows-popularity"] = {2020: {"status": "ok", "seed": 2020, "label": "most-popular", "test_result": {**test_result, **epoch(0.07)},
                                              "test_results_per_epoch": [], "process_seconds": 9.0}}
    text = i2vae.render_section(state)
    floor = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| most-popular, their pool |")]
    assert len(floor) == 6 and "--popularity" in text
    assert floor[0][4:11] == ["11", "0.0700", "0.0700", "–", "0.0700", "0.0700", "–"] and floor[0][11] == "–"  # no epochs: one result
    # a model's run without per-epoch results shows none (its valid-chosen result is not an epoch's)
    ours["sampled_rows-authors-settings"][2020]["test_results_per_epoch"] = []
    text = i2vae.render_section(state)
    theirs = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
              if line.startswith("| our `i2VAE`, their pool and settings |")]
    assert theirs[0][5:11] == ["–"] * 6
    # a smoke run on a sample of the rows: our runs (every row) are not beside it
    state["view"] = dict(state["view"], rows=300)
    text = i2vae.render_section(state)
    assert "| our `i2VAE`" not in text and "not shown beside a sample of the rows" in text


def test_a_checkout_without_one_of_the_files_is_refused(tmp_path):
    from benchmarks.parity import i2vae

    checkout = tmp_path / "IM-VAE"
    for name in i2vae.AUTHORS_FILES:
        if name != "callback.py":
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_text("# not the authors' code\n")
    results = tmp_path / "results"
    out = run_benchmark_script(os.path.join("parity", "i2vae.py"), tmp_path, f"--authors_repo={checkout}", f"--results_dir={results}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --authors_repo") and "callback.py missing" in out.stderr and "model.py missing" not in out.stderr
    assert not results.exists()
    out = run_benchmark_script(os.path.join("parity", "i2vae.py"), tmp_path, f"--authors_repo={checkout}", "--dataset=phone_elec")
    assert out.returncode == 2 and "only cloth_sport" in out.stderr


FAKE_LIGHTGCN = {
    # their main.py's loop (a test every 10 epochs, the weights saved after every epoch) over stand-ins
    "LightGCN/code/world.py": "config = {'multicore': 0}\n",
    "LightGCN/code/Procedure.py": (
        "def BPR_train_original(dataset, model, loss, epoch, neg_k=1, w=None):\n"
        "    model['trained'] += 1\n"
        "    return 'loss 0.1'\n"
        "def Test(dataset, model, epoch, w=None, multicore=0):\n"
        "    return {'recall': [model['trained'] / 100], 'ndcg': [0.0], 'precision': [0.0]}\n"
    ),
    "LightGCN/code/main.py": (
        "import sys\n"
        "import Procedure\n"
        "import world\n"
        "dataset, Recmodel = 'data', {'trained': 0}\n"
        "for epoch in range(int(sys.argv[sys.argv.index('--epochs') + 1])):\n"
        "    if epoch % 10 == 0:\n"
        "        Procedure.Test(dataset, Recmodel, epoch, None, world.config['multicore'])\n"
        "    Procedure.BPR_train_original(dataset, Recmodel, None, epoch)\n"
    ),
    "callback.py": (
        "def generate_corr_seq(args, csv):\n"
        "    open('dataset/cloth_sport_train_updated.csv', 'w').write('user_id,corr_d1,corr_d2\\n')\n"
    ),
}


@pytest.mark.parametrize("tests, after", [("every10", [0, 10, 20]), ("last", [25])])
def test_their_lightgcn_is_tested_every_10_epochs_or_once_after_the_last(tmp_path, tests, after):
    from benchmarks.parity import common as parity
    from benchmarks.parity import i2vae

    write_checkout(tmp_path, FAKE_LIGHTGCN)
    (tmp_path / "psg" / "dataset").mkdir(parents=True)
    job = {"side": "psg", "seed": 1, "threads": 1, "lightgcn_argv": ["--epochs", "25"], "lightgcn_tests": tests}
    record = parity.run_process(job, str(tmp_path / "psg"), 120, i2vae.SCRIPT)
    assert record["status"] == "ok", record
    assert len(record["lightgcn_epochs"]) == 25
    assert [t["after_epochs"] for t in record["lightgcn_tests"]] == after
    assert record["lightgcn_tests"][-1]["results"]["recall"] == [after[-1] / 100]  # the weights of that epoch
