"""recbole-diffusion: diffusion and augmentation sequential recommenders as a RecBole plugin.

Importing the package applies the compatibility workarounds for recbole 1.2.1 on today's stack
(``recbole_diffusion.compat``), once.
"""

from recbole_diffusion import compat as _compat

_compat.apply()

__version__ = "0.1.0"
