"""Train and test one model: this plugin's models first, then every RecBole built-in.

    python run_recbole_diff.py --model=DiffRec --dataset=amazon-beauty --data_path=../shared/data
    python run_recbole_diff.py --model=SASRec --dataset=ml-100k --epochs=1 --train_mode=sequence

Any other ``--key=value`` overrides a config option, as in RecBole.
"""

import sys

from recbole_diffusion.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
