"""What a root's ``sbin/mgrctl`` runs (``python -c 'from mgrhooks.mgrctl import main; main()'``; the
scripts of older roots run ``python -m mgrhooks.mgrctl``, which does the same).

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
    from mgrhooks.__main__ import import_frozen

    import_frozen("mgrhooks.mgrctlcli")  # the collector off meanwhile, as for ``mgrhooks``
    from mgrhooks.cli import run
    from mgrhooks.mgrctlcli import mgrctl

    run(mgrctl, "mgrctl")


if __name__ == "__main__":
    main()
