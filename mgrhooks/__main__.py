"""The ``mgrhooks`` command's entry: the console script and ``python -m mgrhooks``.

The command's start imports some forty modules (click, lxml, ours), whose objects live as
long as the process: the garbage collector, which walks every tracked object again each
time enough new ones are made, is off while they are imported, and they are then frozen
out of its later collections (``gc.freeze``). That was ~4 ms of a call without handlers
(docs/performance.md, "Start-up"; our choice, for the commands only: an application that
imports mgrhooks keeps its collector as it is). ``sbin/mgrctl`` (:mod:`mgrhooks.mgrctl`)
imports its command the same way.
"""

import gc


def import_frozen(*modules: str) -> None:
    """Import ``modules`` (dotted names) with the collector off, then freeze what is
    imported out of its later collections; the collector is as it was afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            __import__(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def import_also_frozen(*modules: str) -> None:
    """In a command's own process (one whose start :func:`import_frozen` froze), import
    ``modules`` the same way: the modules a call needs once the command line is parsed.
    Elsewhere (the CLI run in-process: tests, an application) nothing is done: the
    collector there is left as it is."""
    if gc.get_freeze_count():
        import_frozen(*modules)


def main() -> None:
    """Run the ``mgrhooks`` command (:func:`mgrhooks.cli.run`); does not return."""
    import_frozen("mgrhooks.cli")
    from mgrhooks.cli import run

    run()


if __name__ == "__main__":
    main()
