"""benchmarks/curve.py: the curve tables, the PNG, the section it writes, and refusals of bad input."""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "curve.py")
SECTION = "robust"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


sys.path.insert(0, os.path.dirname(SCRIPT))
import curve  # noqa: E402


def record(label, model, ndcg, status="ok", **overrides):
    """A run.py record: overrides as strings, like the command line; settings without the swept keys,
    as benchmarks/worker.py writes them."""
    rec = {"label": label, "model": model, "overrides": {k: str(v) for k, v in overrides.items()}, "status": status}
    if status == "ok":
        rec["test_result"] = {"hit@10": 0.1, "ndcg@10": ndcg}
        rec["settings"] = {"hidden_size": 64, "epochs": 6}
    else:
        rec["error"] = "worker killed by SIGKILL"
    return rec


RECORDS = [
    record("SASRec@r0", "SASRec", 0.0400),
    record("AsarRec@cl4srec_r0", "AsarRec", 0.0420, augmentation="static_cl4srec"),
    record("AsarRec@r0", "AsarRec", 0.0380),
    record("SASRec@r0.1", "SASRec", 0.0300, train_noise_ratio=0.1),
    record("AsarRec@cl4srec_r0.1", "AsarRec", 0.0330, augmentation="static_cl4srec", train_noise_ratio=0.1),
    record("AsarRec@r0.1", "AsarRec", None, status="failed", train_noise_ratio=0.1),
]

OTHER_SECTIONS = (
    "# Benchmarks: tiny\n\nsome notes outside the sections\n\n"
    f"<!-- section: {SECTION} -->\n## {SECTION}\n| a | b |\n<!-- end section: {SECTION} -->\n\n"
    "<!-- section: other -->\n## other\nkept byte for byte\n<!-- end section: other -->\n"
)


def write_section(folder, records=RECORDS, finished="2026-01-01 00:00:00 UTC"):
    data = {"section": SECTION, "dataset": "tiny", "command": "python benchmarks/run.py ...", "cpu_protocol": {"hidden_size": 64},
            "config_files": [], "finished": finished, "records": records}
    (folder / f"tiny-{SECTION}.json").write_text(json.dumps(data), encoding="utf-8")
    (folder / "tiny.md").write_text(OTHER_SECTIONS, encoding="utf-8")


def run_curve(folder, *extra):
    argv = ["--dataset=tiny", f"--section={SECTION}", "--x=train_noise_ratio", "--metric=ndcg@10", f"--results_dir={folder}", *extra]
    return curve.main(argv)


def curve_section(folder):
    text = (folder / "tiny.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- section: {SECTION}-curve -->\n(.*?)<!-- end section: {SECTION}-curve -->\n", text, re.S)
    assert match, text
    return match.group(1)


def table_rows(section, title):
    """``{series: [cells]}`` of the table under the line starting with ``title``."""
    after = section.split("\n" + title, 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in after.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


# ----------------------------------------------------------------------------- the curve
def test_table_holds_each_series_metric_per_x_and_a_dash_for_missing_points(tmp_path):
    write_section(tmp_path)
    assert run_curve(tmp_path) == 0
    section = curve_section(tmp_path)
    assert "| Series \\ train_noise_ratio | 0 | 0.1 |" in section
    rows = table_rows(section, "Test NDCG@10:")
    assert rows == {
        "SASRec": ["0.0400", "0.0300"],
        # augmentation from the overrides
        "AsarRec (static_cl4srec)": ["0.0420", "0.0330"],
        # augmentation from properties/model/AsarRec.yaml (learned); the failed r=0.1 run is a dash
        "AsarRec (learned)": ["0.0380", "—"],
    }
    assert "- AsarRec (learned): `AsarRec@r0`, `AsarRec@r0.1`" in section
    assert "CPU protocol, hidden 64" in section


def test_relative_differences_divide_by_the_reference_series(tmp_path):
    write_section(tmp_path)
    assert run_curve(tmp_path) == 0
    rows = table_rows(curve_section(tmp_path), "Relative difference to SASRec")
    # (0.042 - 0.04) / 0.04 = +5.0%, (0.033 - 0.03) / 0.03 = +10.0%, (0.038 - 0.04) / 0.04 = -5.0%
    assert rows == {"AsarRec (static_cl4srec)": ["+5.0%", "+10.0%"], "AsarRec (learned)": ["-5.0%", "—"]}

    assert run_curve(tmp_path, "--reference=AsarRec (static_cl4srec)") == 0
    rows = table_rows(curve_section(tmp_path), "Relative difference to AsarRec (static_cl4srec)")
    # (0.04 - 0.042) / 0.042 = -4.76%, (0.03 - 0.033) / 0.033 = -9.09%
    assert rows == {"SASRec": ["-4.8%", "-9.1%"], "AsarRec (learned)": ["-9.5%", "—"]}


def test_png_is_written_and_linked_and_other_sections_are_untouched(tmp_path):
    write_section(tmp_path)
    assert run_curve(tmp_path) == 0
    png = tmp_path / f"tiny-{SECTION}-ndcg10.png"
    payload = png.read_bytes()
    assert payload.startswith(PNG_MAGIC) and len(payload) > 1000
    section = curve_section(tmp_path)
    assert f"](tiny-{SECTION}-ndcg10.png)" in section
    text = (tmp_path / "tiny.md").read_text(encoding="utf-8")
    # everything before the new section is the old file byte for byte; the new section is appended
    assert text.startswith(OTHER_SECTIONS)
    # a rerun replaces the curve section in place instead of appending a second one
    assert run_curve(tmp_path) == 0
    again = (tmp_path / "tiny.md").read_text(encoding="utf-8")
    assert again.count(f"<!-- section: {SECTION}-curve -->") == 1 and again.startswith(OTHER_SECTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-{SECTION}-ndcg10.png", f"tiny-{SECTION}.json", "tiny.md"]


def test_an_unfinished_run_is_marked_incomplete(tmp_path):
    write_section(tmp_path, finished=None)
    assert run_curve(tmp_path) == 0
    assert "**Incomplete run" in curve_section(tmp_path)


# ----------------------------------------------------------------------------- bad input
def assert_nothing_written(folder):
    assert (folder / "tiny.md").read_text(encoding="utf-8") == OTHER_SECTIONS
    assert not list(folder.glob("*.png")) and not list(folder.glob(".*"))


@pytest.mark.parametrize(
    "extra, records, message",
    [
        (["--section=absent"], RECORDS, "tiny-absent.json not found"),
        (["--metric=recall@10"], RECORDS, "--metric"),
        (["--x=label"], RECORDS, "--x: label of record 'SASRec@r0'"),
        (["--reference=GRU4Rec"], RECORDS, "--reference"),
        ([], [record("SASRec@a", "SASRec", 0.04), record("SASRec@b", "SASRec", 0.05)], "both fall on SASRec"),
        ([], [record("SASRec@r0", "SASRec", None, status="failed")], "no record with status ok"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, records, message):
    write_section(tmp_path, records)
    assert run_curve(tmp_path, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert_nothing_written(tmp_path)


def test_unbalanced_markers_exit_2_and_write_nothing(tmp_path, capsys):
    write_section(tmp_path)
    broken = OTHER_SECTIONS + f"<!-- section: {SECTION}-curve -->\nhalf a section\n"
    (tmp_path / "tiny.md").write_text(broken, encoding="utf-8")
    assert run_curve(tmp_path) == 2
    assert "unbalanced" in capsys.readouterr().err
    assert (tmp_path / "tiny.md").read_text(encoding="utf-8") == broken
    assert not list(tmp_path.glob("*.png"))


def test_command_line_exit_code(tmp_path):
    write_section(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, SCRIPT, "--dataset=tiny", f"--section={SECTION}", "--x=train_noise_ratio", "--metric=nope",
         f"--results_dir={tmp_path}"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert out.returncode == 2 and out.stderr.startswith("error: --metric"), out.stderr
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------- several sections
def write_json(folder, section, records, finished="2026-01-01 00:00:00 UTC", config_files=()):
    data = {"section": section, "dataset": "tiny", "command": "python benchmarks/run.py ...", "cpu_protocol": {"hidden_size": 64},
            "config_files": list(config_files), "finished": finished, "records": records}
    (folder / f"tiny-{section}.json").write_text(json.dumps(data), encoding="utf-8")


def write_two_sections(folder, finished_b=None):
    """The grid of RECORDS split over two run.py processes: ``robust-a`` ran r = 0 (finished), ``robust-b``
    r = 0.1 (still running). ``robust-b`` sets the ratio through its own --config_files, not per record, so its
    points land at 0.1 only if each section is resolved against its own JSON."""
    (folder / "tiny.md").write_text(OTHER_SECTIONS, encoding="utf-8")
    noise = folder / "noise.yaml"
    noise.write_text("train_noise_ratio: 0.1\n", encoding="utf-8")
    write_json(folder, "robust-a", RECORDS[:3] + [record("SASRec@r0.1", "SASRec", None, status="failed", train_noise_ratio=0.1)])
    b_records = [
        record("SASRec@r0.1", "SASRec", 0.0300),
        record("AsarRec@cl4srec_r0.1", "AsarRec", 0.0330, augmentation="static_cl4srec"),
        record("AsarRec@r0.1", "AsarRec", None, status="failed"),
    ]
    write_json(folder, "robust-b", b_records, finished=finished_b, config_files=[str(noise)])


def run_sections(folder, *extra):
    argv = ["--dataset=tiny", "--x=train_noise_ratio", "--metric=ndcg@10", f"--results_dir={folder}", *extra]
    return curve.main(argv)


def named_section(folder, name):
    text = (folder / "tiny.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- section: {name}-curve -->\n(.*?)<!-- end section: {name}-curve -->\n", text, re.S)
    assert match, text
    return match.group(1)


def test_several_sections_are_merged_under_name(tmp_path):
    write_two_sections(tmp_path)
    assert run_sections(tmp_path, "--section", "robust-a", "robust-b", "--name=robust-ab") == 0
    section = named_section(tmp_path, "robust-ab")
    assert section.startswith("## robust-ab-curve\n")
    # the same tables as the grid run in one section (SASRec at 0.1: robust-a's failed record does not
    # compete with robust-b's ok one)
    whole = tmp_path / "whole"
    whole.mkdir()
    write_section(whole)
    assert run_curve(whole) == 0
    for title in ("Test NDCG@10:", "Relative difference to SASRec"):
        assert table_rows(section, title) == table_rows(curve_section(whole), title)
    assert table_rows(section, "Test NDCG@10:")["SASRec"] == ["0.0400", "0.0300"]
    assert "sections `robust-a` (`tiny-robust-a.json`), `robust-b` (`tiny-robust-b.json`), merged" in section
    assert "from the 5 ok of 7 records" in section
    # only the section still running is named in the warning
    warning = next(line for line in section.splitlines() if line.startswith("**Incomplete run"))
    assert "section `robust-b` is complete" in warning and "robust-a" not in warning
    assert "- SASRec: `SASRec@r0` (`robust-a`), `SASRec@r0.1` (`robust-a`), `SASRec@r0.1` (`robust-b`)" in section
    assert "](tiny-robust-ab-ndcg10.png)" in section
    assert (tmp_path / "tiny-robust-ab-ndcg10.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "tiny.md").read_text(encoding="utf-8").startswith(OTHER_SECTIONS)

    # both finished: no warning
    write_two_sections(tmp_path, finished_b="2026-01-02 00:00:00 UTC")
    assert run_sections(tmp_path, "--section", "robust-a", "robust-b", "--name=robust-ab") == 0
    assert "**Incomplete run" not in named_section(tmp_path, "robust-ab")


def test_a_point_in_two_sections_exits_2_naming_both(tmp_path, capsys):
    write_two_sections(tmp_path)
    write_json(tmp_path, "robust-c", [record("SASRec@again", "SASRec", 0.0310, train_noise_ratio=0.1)])
    assert run_sections(tmp_path, "--section", "robust-a", "robust-b", "robust-c", "--name=robust-abc") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --section: the point SASRec at train_noise_ratio=0.1"), err
    assert "section 'robust-b' (record 'SASRec@r0.1')" in err and "section 'robust-c' (record 'SASRec@again')" in err, err
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "sections, extra, message",
    [
        (["robust-a", "robust-b"], [], "--name: required with several sections (robust-a, robust-b)"),
        (["robust-a", "robust-absent"], ["--name=robust-ab"], "tiny-robust-absent.json not found"),
        (["robust-a", "robust-a"], ["--name=robust-ab"], "--section: robust-a given more than once"),
        (["robust-a", "robust-b"], ["--name=a/b"], "--name: 'a/b' is not a section name"),
    ],
)
def test_bad_sections_exit_2_and_write_nothing(tmp_path, capsys, sections, extra, message):
    write_two_sections(tmp_path)
    assert run_sections(tmp_path, "--section", *sections, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert_nothing_written(tmp_path)
