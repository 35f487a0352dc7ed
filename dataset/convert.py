"""Command-line entry for the dataset converter, runnable from a source checkout.

    python dataset/convert.py --format seq --input Beauty.txt --output_dir dataset --dataset beauty

All the work is in :mod:`recbole_diffusion.data.convert`; see dataset/README.md.
"""

import os
import sys

# Run as a script, Python puts dataset/ (not the checkout root) on the path; the checkout's
# package must win over any installed copy so the script matches the code beside it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_diffusion.data.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
