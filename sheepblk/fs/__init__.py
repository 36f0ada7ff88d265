"""sheepfs: a sheepblk cluster as files, on pyfuse3 and trio.

`operations` holds the tree and the FUSE boundary, `volumes` the open VDIs
and their locks, `status` the dog-compatible status texts, `names` the
file-name rules, `mount` the session and its shutdown.
"""

from .mount import MountError, MountOptions, run
from .operations import SheepFs

__all__ = ["MountError", "MountOptions", "SheepFs", "run"]
