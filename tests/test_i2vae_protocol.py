"""benchmarks/i2vae_protocol.py: the row settings each entry gets, and the table's two selection
rules (the checkpoint chosen on valid; the authors' maximum over epochs on the test rows)."""

from benchmarks import common as bench
from benchmarks import i2vae_protocol as protocol


def test_each_entry_reads_the_rows_of_its_domain():
    entries = [{"label": label, "model": label.split("@")[0]} for label in protocol.ENTRIES]
    settings = bench.parse_model_args([f"{label}:{protocol.row_split(label)}" for label in protocol.ENTRIES], entries)
    values = {label: eval(settings[label]["row_split"]) for label in protocol.ENTRIES}  # noqa: S307 -- RecBole's Config does the same
    assert values["i2VAE"] == {"train": "raw/cloth_sport_train.csv", "test": "raw/cloth_sport_test_csu.csv"}
    assert values["SASRec@cloth"]["domain_id"] == 0 and values["SASRec@sport"]["domain_id"] == 1
    assert values["SASRec@cloth"]["train"] == "../cloth-sport/raw/cloth_sport_train.csv"
    assert all(settings[label]["train_mode"] == "prefix" for label in protocol.ENTRIES)  # one sample per train row


def run(final, per_epoch):
    key = "{} (cloth, cold-start)"
    return {
        "status": "ok",
        "test_result": {key.format(m): final for m in protocol.METRICS},
        "test_results_per_epoch": [{key.format(m): value for m in protocol.METRICS} for value in per_epoch],
    }


def test_the_table_gives_the_valid_choice_and_the_maximum_over_epochs_on_test():
    runs = {("i2VAE", 1): run(0.02, [0.01, 0.05, 0.03]), ("i2VAE", 2): run(0.04, [0.02, 0.03, 0.07])}
    lines = protocol.table(runs)
    row = next(line for line in lines if line.startswith("| cloth | cold-start | i2VAE |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == "2"
    assert cells[4] == cells[5] == "0.0300 ± 0.0141"  # the chosen checkpoint's test metrics
    assert cells[6] == cells[7] == "0.0600 ± 0.0141"  # max over epochs: 0.05 and 0.07
    empty = next(line for line in lines if line.startswith("| cloth | cold-start | SASRec@cloth |"))
    assert "| 0 | – | – | – | – |" in empty
