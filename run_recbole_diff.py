"""Train and test one model: this plugin's models first, then every RecBole built-in.

    python run_recbole_diff.py --model=DiffRec --dataset=amazon-beauty --data_path=DATA
    python run_recbole_diff.py --model=SASRec --dataset=ml-100k --epochs=1 --train_mode=sequence

Any other ``--key=value`` overrides a config option, as in RecBole.
"""

import sys

if __name__ == "__main__":
    try:
        from recbole_diffusion.cli import main  # importing the package checks the installed versions
    except ImportError as exc:
        if type(exc).__name__ != "IncompatibleEnvironment":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
