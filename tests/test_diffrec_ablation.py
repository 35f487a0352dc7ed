"""benchmarks/diffrec_ablation.py: the table reads the leaderboard's stored DiffRec and SASRec runs
and each variant's stored runs, and compares them on the same seeds."""

import json
import os
import shutil

from conftest import REPO


def test_the_table_compares_a_stored_variant_with_diffrec_and_sasrec(tmp_path, monkeypatch):
    from benchmarks import diffrec_ablation as ablation

    monkeypatch.setattr(ablation, "ABLATION_DIR", str(tmp_path / "ablation"))
    monkeypatch.setattr(ablation, "PAGE", str(tmp_path / "page.md"))
    # a "variant" that is the leaderboard's SASRec run relabelled: its Δ vs SASRec must be exactly 0
    folder = tmp_path / "ablation" / "last_position" / "leaderboard" / "amazon-beauty"
    folder.mkdir(parents=True)
    source = os.path.join(REPO, "benchmarks", "results", "leaderboard", "amazon-beauty", "SASRec-seed2020.json")
    stored = json.load(open(source, encoding="utf-8"))
    stored["label"] = "DiffRec"
    (folder / "DiffRec-seed2020.json").write_text(json.dumps(stored))
    ablation.render(resamples=200)
    lines = open(ablation.PAGE, encoding="utf-8").read().splitlines()
    row = next(line for line in lines if line.startswith("| `last_position`"))
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[3] == "2020" and cells[7] == "+0.0000 [+0.0000, +0.0000]"  # against SASRec: itself
    assert cells[6].startswith("+0.0") and not cells[6].startswith("+0.0000")  # against DiffRec: SASRec is better
    assert next(line for line in lines if line.startswith("| `tied_nobias`")).split("|")[3].strip() == "0"
    shutil.rmtree(tmp_path / "ablation")
