"""``python -m mgrhooks.mgrctl``: what a root's ``sbin/mgrctl`` runs."""

from mgrhooks.cli import mgrctl, run

if __name__ == "__main__":
    run(mgrctl, "mgrctl")
