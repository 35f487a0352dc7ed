"""recbole-diffusion: five diffusion / augmentation sequential recommenders as a RecBole plugin."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as handle:
    long_description = handle.read()

# The YAML (properties/) and search spaces (hyper/) live at the top level of the checkout, as in
# RecBole's plugin family; installed, they become the packages recbole_diffusion.properties and
# recbole_diffusion.hyper, and recbole_diffusion.utils.properties_dir() finds either copy.
setup(
    name="recbole-diffusion",
    version="0.1.0",
    description="DiffRec, DreamRec, ADARec, AsarRec and i2VAE for RecBole 1.2.1",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recbole_diffusion", "recbole_diffusion.*"])
    + ["recbole_diffusion.properties", "recbole_diffusion.hyper"],
    package_dir={"recbole_diffusion.properties": "properties", "recbole_diffusion.hyper": "hyper"},
    package_data={
        "recbole_diffusion.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml"],
        "recbole_diffusion.hyper": ["*.hyper"],
    },
    install_requires=[
        # The CPU wheel on this project's machines; a looser spec lets pip pull a multi-GB CUDA build.
        "torch==2.13.0",
        "recbole==1.2.1",
        # recbole 1.2.1 reads np.float_ and friends (and its ray dependency np.bool8): numpy 1 only.
        "numpy>=1.23,<2",
        # pandas 3 silently ignores RecBole's in-place fillna.
        "pandas>=1.5,<3",
        # RecBole's HyperTuning exhaustive search works with hyperopt 0.2.5 only ...
        "hyperopt==0.2.5",
        # ... which, like ray, imports pkg_resources (removed in setuptools 82).
        "setuptools<82",
        "scipy>=1.9",
        "matplotlib>=3.5",
    ],
    extras_require={
        # benchmarks/curve.py's plots
        "plot": ["matplotlib>=3.5"],
        # tests/test_curve.py draws a plot
        "test": ["pytest>=7", "matplotlib>=3.5"],
    },
)
