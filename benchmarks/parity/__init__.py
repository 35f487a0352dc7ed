"""Parity runs: a model of this plugin next to its authors' own code, on the same split and settings
(``dreamrec.py``: DreamRec). The authors' code is never part of this repository; each script runs
it from a checkout the user points to. Results: ``benchmarks/results/parity.md``."""
