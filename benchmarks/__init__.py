"""The project's benchmarks: ``common`` (what the scripts share) and one thin command-line script per
job (``run.py``, ``leaderboard.py``, ``fingerprint.py``, ...), each run from the repository root as
``python benchmarks/<script>.py``. See ``benchmarks/README.md``."""
