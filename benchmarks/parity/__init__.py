"""Parity runs: a model of this plugin next to its authors' own code, on the same split and settings
(``dreamrec.py``: DreamRec, ``adarec.py``: ADARec, ``i2vae.py``: i2VAE, the authors' side so far). The
authors' code is never part of this repository; each script runs it from a checkout the user points
to. Results: ``benchmarks/results/parity.md``."""
