"""Writing a file so that a reader never sees half of it: write to a temporary file in the same
folder, then rename it over the target (``os.replace`` is atomic on one file system); on any
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
