"""``python -m mgrhooks.mgrctl``: what a root's ``sbin/mgrctl`` runs.

A running ``mgrhooks serve`` of the root answers first (:mod:`mgrhooks.client`, which
imports no more than it needs to ask); without one, or for a command line it does not
serve, the ``mgrctl`` command runs in this process.
"""

import sys


def main() -> None:
    """Run ``mgrctl`` with this process's command line; does not return."""
    from mgrhooks import client

    status = client.mgrctl(sys.argv[1:])
    if status is not None:
        raise SystemExit(status)
    from mgrhooks.cli import mgrctl, run

    run(mgrctl, "mgrctl")


if __name__ == "__main__":
    main()
