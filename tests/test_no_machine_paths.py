"""Nothing a user reads carries a path of the machine it was written on, or speaks of the
project's development setup (a data folder beside the checkout, work notes): the package, the
YAMLs, the README and docs, the benchmark scripts and every committed result (JSON and pages)."""

import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_FACING = ("README.md", "docs", "dataset", "properties", "recbole_diffusion", "benchmarks", "hyper", "run_recbole_diff.py")
# the roots of a machine's absolute paths (POSIX homes, scratch and work folders, Windows drives)
MACHINE_PATH = re.compile(r"(?<![\w.~])(/(?:work|home|root|tmp|Users|mnt|opt|scratch)/|[A-Z]:\\\\)")
# what only the developers' setup has: a folder beside the checkout, their work notes by number, a
# design document that is not part of the project
DEVELOPMENT_SETUP = re.compile(r"\.\./shared\b|\bsessions? \d|\bissues? \d|\bthe spec\b|\bspec's\b|\bspecs/")


def tracked_files():
    try:
        listed = subprocess.run(["git", "ls-files", *USER_FACING], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in listed.stdout.splitlines() if not name.endswith((".png", ".pth"))]


def lines_matching(pattern):
    found = []
    for name in tracked_files():
        path = os.path.join(REPO, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if pattern.search(line):
                    found.append(f"{name}:{number}: {line.strip()[:120]}")
    return found


def test_no_committed_file_a_user_reads_holds_a_machine_path():
    found = lines_matching(MACHINE_PATH)
    assert not found, "machine paths in committed files:\n" + "\n".join(found[:20])


def test_no_committed_file_a_user_reads_speaks_of_the_development_setup():
    found = lines_matching(DEVELOPMENT_SETUP)
    assert not found, "references to the development setup in committed files:\n" + "\n".join(found[:20])


def test_the_setup_pattern_catches_references_and_spares_ordinary_words():
    for text in ("--data_path=../shared/data", "(session 2: cosine)", "issue 8", "see the spec", "the spec's method"):
        assert DEVELOPMENT_SETUP.search(text), text
    for text in ("--data_path=DATA", "a looser spec lets pip", "parse_model_spec(spec)", "the specified method", "a shared machine"):
        assert not DEVELOPMENT_SETUP.search(text), text


def test_the_pattern_catches_machine_paths_and_spares_relative_ones():
    assert MACHINE_PATH.search('"cwd": "/work/main"') and MACHINE_PATH.search("log in /home/ana/x.log")
    assert MACHINE_PATH.search(r"C:\\Users\\ana")
    assert not MACHINE_PATH.search("--data_path=../shared/data benchmarks/logs/x.log ./tmp/y")


def test_benchmark_results_are_written_relative_to_the_repository():
    from benchmarks import common as bench

    inside = os.path.join(bench.REPO, "benchmarks", "logs", "x", "output.log")
    record = {"cwd": bench.REPO, "records": [{"log_file": inside, "n": 3}], "other": "/elsewhere/file"}
    assert bench.repo_relative(record) == {
        "cwd": ".", "records": [{"log_file": os.path.join("benchmarks", "logs", "x", "output.log"), "n": 3}],
        "other": "/elsewhere/file",
    }
