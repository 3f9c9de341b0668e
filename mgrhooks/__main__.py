"""The ``mgrhooks`` command's entry: the console script and ``python -m mgrhooks``.

The command's start imports some forty modules (click, lxml, ours), whose objects live as
long as the process: the garbage collector, which walks every tracked object again each
time enough new ones are made, is off while they are imported, and they are then frozen
out of its later collections (``gc.freeze``). That was ~4 ms of a call without handlers
(docs/performance.md, "Start-up"; our choice, for the command only: an application that
imports mgrhooks keeps its collector as it is).
"""

import gc


def main() -> None:
    """Run the ``mgrhooks`` command (:func:`mgrhooks.cli.run`); does not return."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        from mgrhooks.cli import run
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    run()


if __name__ == "__main__":
    main()
