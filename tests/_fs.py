"""File-system failures for tests, the same for root and any other user."""
from __future__ import annotations

import errno
import os
from pathlib import Path


def mkdir_fails_under(monkeypatch, root, err=errno.ENOSPC):
    """Path.mkdir raises OSError(err) (default ENOSPC) for ``root`` and below: the mkdir branch of make_dir,
    the same for root and any other user (a /proc path fails earlier, as not writable, for non-root)."""
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self) == str(root) or str(self).startswith(str(root) + os.sep):
            raise OSError(err, os.strerror(err), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
