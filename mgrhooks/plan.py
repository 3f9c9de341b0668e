"""Planning: which steps run for a function call, and in what order. Pure.

The ordering rule lives in :func:`order_key` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from .errors import PanelError
from .model import (
    ActionStep,
    Base,
    Event,
    HandlerStep,
    HandlerType,
    InternalHandler,
    InternalStep,
    Placement,
    Plan,
    Registry,
    Request,
    Stage,
    Step,
)

#: the core's functions and, for each, its internal handlers (a :class:`Catalogue`)
Catalogue = Mapping[str, Sequence[InternalHandler]]

_STAGE_RANK = {Stage.BEFORE: 0, Stage.AFTER: 2, Stage.FINAL: 3}
_ACTION_RANK = 1
#: the six slots of a stage; an internal group sits between its base's before/after slots
_SLOTS = (
    (Base.CORE, Placement.BEFORE),
    (Base.CORE, None),
    (Base.CORE, Placement.AFTER),
    (Base.PROJECT, Placement.BEFORE),
    (Base.PROJECT, None),
    (Base.PROJECT, Placement.AFTER),
)


def order_key(event: Event) -> tuple[int, int, int, bytes, int]:
    """The sort key of an external handler's registration: the whole ordering rule.

    1. stage: before-handlers, then the main logic, then after-, then final-handlers;
    2. slot within the stage (PROTOCOL §3, Choice), the same six in every stage:
       ``proirity="before" base="core"`` → core internal handlers → ``base="core"``
       (the default) → ``proirity="before" base="project"`` → product (project) internal
       handlers → ``base="project"`` (``proirity="after"`` being the default side);
    3. priority, lower first: ``priority="hi"`` is 0, the default 500, and Python
       observers have their own (``register(..., priority=N)``);
    4. plugin file name, byte order (Python observers have none: they come first);
    5. document order of the ``<event>`` in its file (observers: registration order).

    The same handler registered twice for one stage of one call (say for ``user.add``
    and for ``*``) runs once, at its first place.
    """
    return (
        _STAGE_RANK[event.stage],
        _SLOTS.index((event.base, event.placement)),
        event.priority,
        event.handler.plugin.encode(),
        event.number,
    )


def _internal_key(internal: InternalHandler, position: int) -> tuple[int, int, int, bytes, int]:
    return (_STAGE_RANK[internal.stage], _SLOTS.index((internal.base, None)), 0, b"", position)


def _handler_why(event: Event) -> str:
    anchor = f"base={event.base.value}, proirity={event.placement.value}"
    hi = "priority=hi, " if event.hi else ""
    if event.handler.type is HandlerType.PYTHON:
        hi = f"priority={event.priority}, "
        place = f"Python observer #{event.number} ({event.source})"
    else:
        place = f"file {event.handler.plugin}, event #{event.number} ({event.source})"
    return f"{event.stage.value} stage, slot {anchor}; {hi}{place}"


def plan(
    registry: Registry,
    request: Request,
    catalogue: Catalogue,
    disabled: Collection[str] = (),
    observers: Sequence[Event] = (),
    *,
    main: str | None = None,
    unknown: str | None = None,
) -> Plan:
    """The ordered steps of calling ``request.func`` (PROTOCOL §3).

    :param registry: the loaded plugin descriptions
    :param request: the call: its function, and the caller's level for ``minlevel``
    :param catalogue: the functions the core implements, with their internal handlers
    :param disabled: plugin file names switched off (``mgrhooks plugin disable``): their
        handlers stay in the plan as skipped steps, their ``<func>``s are not offered
    :param observers: Python observers taking part in calls (see mgrhooks.observers),
        ordered with the plugin handlers by the same rule
    :param main: why the core's function stands as the main logic (default ``main logic:
        the core's function 'F'``; ``plan`` names a core document there)
    :param unknown: for ``mgrhooks plan``: a function neither the core nor an addon
        implements, but for which handlers are registered, is planned with its action
        step skipped for this reason, instead of the ``missed`` error
    :returns: handler, internal and action steps in execution order, each with ``why``.
        Handlers whose ``minlevel`` is above the caller's level are left out.
    :raises PanelError: ``missed``/``func`` when neither the core nor an enabled addon's
        ``<func>`` implements the function; ``access``/``func`` when the addon's
        ``minlevel`` is above the caller's level
    """
    func = request.func
    addon = registry.func(func)
    if addon is not None and addon.handler.plugin in disabled:
        if func not in catalogue:
            message = f"Function '{func}' comes from plugin {addon.handler.plugin}, which is disabled"
            raise PanelError("missed", "func", func, message)
        addon = None
    handled = unknown is not None and any(e.func == func for e in registry.events)
    if addon is None and func not in catalogue and not handled:
        raise PanelError("missed", "func", func, f"Unknown function '{func}'")
    if addon is not None and addon.minlevel > request.level:
        raise PanelError("access", "func", func, f"Access to '{func}' needs level {addon.minlevel}")
    keyed: list[tuple[tuple[int, int, int, bytes, int], Step]] = []
    seen: set[tuple[str, str, Stage]] = set()
    events = (*observers, *registry.events)
    matching = (e for e in events if e.func in (func, "*") and e.handler.minlevel <= request.level)
    for event in sorted(matching, key=order_key):
        identity = (event.handler.plugin, event.handler.name, event.stage)
        if identity in seen:
            continue
        seen.add(identity)
        skipped = "plugin disabled" if event.handler.plugin in disabled else ""
        keyed.append((order_key(event), HandlerStep(event, _handler_why(event), skipped)))
    if addon is None:
        for position, internal in enumerate(catalogue.get(func, ())):
            base = internal.base.value
            why = (
                f"{internal.stage.value} stage, internal handler of {base}: after handlers with"
                f' proirity="before" base="{base}", before those with base="{base}"'
            )
            keyed.append((_internal_key(internal, position), InternalStep(internal, why)))
        known = func in catalogue
        default = f"main logic: the core's function '{func}'" if known else f"main logic: unknown function '{func}'"
        why = main or default
        skipped = "" if known else unknown or ""
        action = ActionStep(func, why, skipped=skipped)
    else:
        why = f"main logic: <func> of handler '{addon.handler.name}' ({addon.source})"
        action = ActionStep(addon.handler.name, why, func=addon)
    keyed.append(((_ACTION_RANK, 0, 0, b"", 0), action))
    keyed.sort(key=lambda pair: pair[0])
    return Plan(func, tuple(step for _, step in keyed))
