"""`dog` (alias `collie`): Sheepdog's admin tool for sheepblk clusters.

Commands, options, output formats and exit codes are those of Sheepdog
1.0's dog, because scripts parse them (`-r` raw output especially). dog
speaks to the cluster only through sheepblk.client.

Error handling: a command raises QuietError for anything the user must
act on; main() prints its one line and exits with its code. Usage errors
exit with EXIT_USAGE (64) as in Sheepdog, an unreachable sheep with
EXIT_SYSFAIL (2); no traceback reaches the user for either.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from sheepblk.client import NetworkError, SheepdogError

from .alter_copy import cluster_alter_copy, vdi_alter_copy
from .cluster import cluster
from .errors import EXIT_FAILURE, EXIT_SYSFAIL, EXIT_USAGE, QuietError
from .node import node
from .vdi import vdi

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def dog() -> None:
    """Sheepdog administrator utility (sheepblk)."""


cluster.add_command(cluster_alter_copy)
vdi.add_command(vdi_alter_copy)
dog.add_command(cluster)
dog.add_command(node)
dog.add_command(vdi)


def _prog_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "dog"
    return name if name in ("dog", "collie") else "dog"


def run(argv: Sequence[str] | None = None) -> int:
    """Run one dog command and return its exit code (no sys.exit)."""
    err = sys.stderr
    try:
        rv = dog.main(args=list(argv) if argv is not None else None,
                      prog_name=_prog_name(), standalone_mode=False)
    except QuietError as e:
        print(e.message, file=err)
        return e.exitcode
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "dog"
        print(f"{where}: {e.format_message()} (try '{where} --help')", file=err)
        return EXIT_USAGE
    except click.ClickException as e:
        e.show(err)
        return EXIT_FAILURE
    except click.Abort:
        return EXIT_FAILURE
    except NetworkError as e:
        msg = str(e)
        if msg.startswith("cannot connect to "):
            msg = "failed to connect to " + msg[len("cannot connect to "):]
        print(msg, file=err)
        return EXIT_SYSFAIL
    except SheepdogError as e:
        print(str(e), file=err)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_SYSFAIL
    if isinstance(rv, int):
        return rv
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console script entry point (`dog`, `collie`)."""
    code = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Nobody reads our output any more; do not let the interpreter
        # complain about it at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = code or EXIT_SYSFAIL
    sys.exit(code)


__all__ = ["QuietError", "dog", "main", "run"]
