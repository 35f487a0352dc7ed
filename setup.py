"""recbole-diffusion: five diffusion / augmentation sequential recommenders as a RecBole plugin.

The metadata and dependencies are in pyproject.toml; this file lays out the packages.
"""

from setuptools import find_packages, setup

# The YAML (properties/) and search spaces (hyper/) live at the top level of the checkout, as in
# RecBole's plugin family; installed, they become the packages recbole_diffusion.properties and
# recbole_diffusion.hyper, and recbole_diffusion.files.properties_dir() finds either copy.
setup(
    packages=find_packages(include=["recbole_diffusion", "recbole_diffusion.*"])
    + ["recbole_diffusion.properties", "recbole_diffusion.hyper"],
    package_dir={"recbole_diffusion.properties": "properties", "recbole_diffusion.hyper": "hyper"},
    package_data={
        "recbole_diffusion.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml"],
        "recbole_diffusion.hyper": ["*.hyper"],
    },
)
