"""benchmarks/speed.py: the worker's measure mode on tiny data, and the page's ratios and targets."""

import pytest

from benchmarks import speed, worker
from conftest import tiny_config


def test_measure_times_steps_through_the_trainer_and_profiles_them(tiny_data):
    config = tiny_config(tiny_data, train_batch_size=64)
    job = {
        "model": "SASRec", "dataset": config.pop("dataset"), "config_file_list": [], "config_dict": config,
        "threads": 1, "measure": {"train_steps": 2, "warmup_steps": 1, "profile_steps": 1},
    }
    record = worker.measure_job(job)
    assert record["status"] == "ok" and record["timed_steps"] == 2 and record["warmup_steps"] == 1
    assert record["train_batches"] > 3
    assert record["epoch_seconds_estimate"] == pytest.approx(record["step_seconds"] * record["train_batches"])
    assert record["step_seconds"] > 0 and record["valid_eval_seconds"] > 0
    assert record["flops_per_step"] > 0  # the encoder's matrix products at least
    for kind in ("train_profile", "eval_profile"):
        operators = record[kind]["operators"]
        assert operators and all(op["ms_per_step"] >= 0 for op in operators)
        assert sum(op["share"] for op in operators) <= 1.0 + 1e-9
    assert any(op["name"].startswith("aten::") for op in record["train_profile"]["operators"])


def test_first_batches_stops_after_count_and_stamps_each():
    batches = worker.FirstBatches(list(range(10)), 3)
    assert list(batches) == [0, 1, 2] and len(batches) == 3
    assert len(batches.stamps) == 4 and batches.stamps == sorted(batches.stamps)


def record(epoch, evaluation):
    return {"status": "ok", "epoch_seconds_estimate": epoch, "valid_eval_seconds": evaluation}


def test_ratios_and_targets_use_the_reference_of_each_row():
    records = {
        "SASRec": record(10.0, 4.0), "DiffRec": record(14.0, 9.0), "AsarRec": record(16.0, 4.0),
        "SASRec@cloth": record(3.0, 2.0), "SASRec@sport": record(2.0, 1.0), "i2VAE": record(14.0, 5.0),
    }
    speed.add_ratios(records)
    assert records["DiffRec"]["epoch_ratio"] == pytest.approx(1.4) and records["DiffRec"]["eval_ratio"] == pytest.approx(2.25)
    assert records["DiffRec"]["meets_targets"] is False  # the evaluation is over 2x
    assert records["AsarRec"]["meets_targets"] is False  # the epoch is over 1.5x
    # i2VAE: against SASRec on both domains together, 3x per epoch
    assert records["i2VAE"]["epoch_ratio"] == pytest.approx(2.8) and records["i2VAE"]["meets_targets"] is True
    assert "meets_targets" not in records["SASRec"]  # a reference has no target


def test_a_missing_reference_leaves_the_ratio_empty():
    records = {"DiffRec": record(14.0, 9.0)}
    speed.add_ratios(records)
    assert records["DiffRec"]["epoch_ratio"] is None and records["DiffRec"]["meets_targets"] is False


def test_the_page_says_why_a_target_is_missed():
    records = {label: {**record(10.0, 4.0), "train_batches": 10, "flops_per_step": 1e9, "step_seconds": 1.0,
                       "train_batch_size": 256, "setup_seconds": 0.0, "peak_rss_mb": 100.0}
               for label in ("SASRec", "DiffRec", "AsarRec")}
    records["AsarRec"].update(epoch_seconds_estimate=30.0, flops_per_step=2.1e9)
    speed.add_ratios(records)
    state = {"records": records, "command": "python benchmarks/speed.py", "finished": "now", "threads": 1,
             "machine": {"cpu": "cpu", "versions": {"torch": "x"}, "git": None}, "load_start": 0, "load_end": 0,
             "warmup_steps": 1, "train_steps": 2, "profile_steps": 1, "matmul_gflops": 10.0}
    for label in records:
        records[label].update(train_profile={"total_ms_per_step": 1.0, "operators": []}, eval_profile={"total_ms_per_step": 1.0, "operators": []})
    page = speed.render(state)
    assert "**AsarRec**, epoch 3.00x (target 1.5x)" in page and "2.10x SASRec's" in page
    assert "**DiffRec**, epoch" not in page  # a met target needs no reason
