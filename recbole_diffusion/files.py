"""The plugin's own files and writing files safely.

Where the YAML (``properties/``) and the search spaces (``hyper/``) are, in a checkout or an
install. Writing a file so that a reader never sees half of it: write to a temporary file in the
same folder, then rename it over the target (``os.replace`` is atomic on one file system); on any
failure the temporary file is removed and the target is left as it was."""

import contextlib
import os
import tempfile


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends
    without an error (with the mode a plain ``open()`` would give), removed otherwise."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes the file private (0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------- properties
def _resource_dir(name, marker):
    """``<checkout>/<name>`` of a source checkout, or the copy ``setup.py`` installs as the
    package ``recbole_diffusion.<name>``; ``marker`` is a file that must be in it."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = (os.path.join(os.path.dirname(here), name), os.path.join(here, name))
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, marker)):
            return candidate
    raise FileNotFoundError(
        f"recbole-diffusion's {name}/ folder was not found (looked in {' and '.join(candidates)}); "
        "reinstall the package with `pip install -e .`"
    )


def properties_dir():
    """The folder of this plugin's YAML (``properties/``)."""
    return _resource_dir("properties", "overall.yaml")


def hyper_dir():
    """The folder of the ``<Model>.hyper`` search spaces (``hyper/``)."""
    return _resource_dir("hyper", "SASRec.hyper")
