"""In-process observers: Python callables that take part in calls, and the dispatch kinds
of Zotonic's notifier over them (after Modoboa's events and Zotonic's notifier).

An observer is registered for an event name with a priority (lower runs first; 500 by
default) and, optionally, an extension name (to remove all of an extension's observers at
once) and a pipeline stage:

* **with** ``stage`` (``before``, ``after`` or ``final``) it takes part in every call of the
  function of that name (or of every function, for ``*``), in the same stages, slots and
  order as plugin handlers (:func:`mgrhooks.plan.order_key`), and ``plan`` lists it. It is
  called as ``callback(request, doc)`` and may change ``doc`` in place or return a new
  ``<doc>``; an ``<error>`` or ``<skipaction/>`` in the result acts as a handler's would, and
  raising :class:`~mgrhooks.errors.PanelError` answers that typed error.
* **without** ``stage`` it serves the dispatch kinds, called with the message:

  ========================  =====================================================  ===========
  kind                      calls, in priority order                               returns
  ========================  =====================================================  ===========
  ``notify(event, msg)``    every observer, in a background thread                 the Thread
  ``notify_sync``           every observer, here                                   ``None``
  ``notify1``               the first observer only, in a background thread        the Thread
  ``first``                 until one answers something but ``None``; an observer  the answer
                            may answer ``Continue(new_msg)`` to pass on a rewritten
                            message (``Continue()``: pass it on unchanged)
  ``map``                   every observer                                         the answers
  ``foldl(event, msg, acc)``  ``acc = callback(msg, acc)``, first priority first   ``acc``
  ``foldr``                 the same, last priority first                          ``acc``
  ========================  =====================================================  ===========

  Exceptions of observers propagate in the synchronous kinds; in the background ones they
  are logged.

Registering the same callback for the same event and stage again replaces the earlier
registration (it never runs twice).
"""

import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from . import logs
from .model import Base, Event, Handler, HandlerType, Placement, Source, Stage

Callback = Callable[..., Any]
DEFAULT_PRIORITY = 500


class Continue(NamedTuple):
    """Answered by a ``first`` observer: not mine; pass ``message`` (or the same) on."""

    message: Any = None
    rewritten: bool = False


def passing(message: Any) -> Continue:  # noqa: ANN401 (any message)
    """``Continue`` with a rewritten message."""
    return Continue(message, True)


class Observer(NamedTuple):
    """One registration: ``stage`` ``None`` for the dispatch kinds; ``number`` counts
    registrations (ties of ``priority`` run in that order); ``base`` and ``placement``
    give the slot in a call, as for plugin events."""

    event: str
    callback: Callback
    stage: Stage | None
    priority: int
    extension: str | None
    number: int
    base: Base
    placement: Placement


class Observers:
    """A set of observers. Thread-safe; changes take effect for the next call."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []
        self._count = 0
        self._lock = threading.Lock()

    def register(
        self,
        event: str,
        callback: Callback,
        *,
        stage: Stage | str | None = None,
        priority: int = DEFAULT_PRIORITY,
        extension: str | None = None,
        base: Base | str = Base.CORE,
        placement: Placement | str = Placement.AFTER,
    ) -> Callback:
        """Register ``callback`` for ``event`` (see the module docstring); returns it."""
        staged = Stage(stage) if stage is not None else None
        with self._lock:
            self._count += 1
            self._observers = self._without(event, callback, staged)
            self._observers.append(
                Observer(event, callback, staged, priority, extension, self._count, Base(base), Placement(placement))
            )
        return callback

    def observe(self, /, *events: str, **options: Any) -> Callable[[Callback], Callback]:  # noqa: ANN401
        """Decorator: ``@observers.observe("user.add", stage="after", extension="crm")``."""

        def decorate(callback: Callback) -> Callback:
            for event in events:
                self.register(event, callback, **options)
            return callback

        return decorate

    def unregister(self, event: str, callback: Callback, stage: Stage | str | None = None) -> bool:
        """Remove ``callback``'s registration for ``event`` (and ``stage``); ``False`` if none."""
        staged = Stage(stage) if stage is not None else None
        with self._lock:
            before = len(self._observers)
            self._observers = self._without(event, callback, staged)
            return len(self._observers) != before

    def _without(self, event: str, callback: Callback, stage: Stage | None) -> list[Observer]:
        return [o for o in self._observers if (o.event, o.callback, o.stage) != (event, callback, stage)]

    def unregister_extension(self, name: str) -> int:
        """Remove every observer registered with ``extension=name`` (the exact name, not a
        part of it, unlike Modoboa's). :returns: how many."""
        with self._lock:
            before = len(self._observers)
            self._observers = [o for o in self._observers if o.extension != name]
            return before - len(self._observers)

    def _ordered(self, event: str) -> list[Observer]:
        with self._lock:
            chosen = [o for o in self._observers if o.event == event and o.stage is None]
        return sorted(chosen, key=lambda o: (o.priority, o.number))

    # --- the pipeline -------------------------------------------------------------------

    def events(self) -> tuple[Event, ...]:
        """The staged observers as :class:`~mgrhooks.model.Event` records for planning."""
        with self._lock:
            staged = [o for o in self._observers if o.stage is not None]
        return tuple(_as_event(o) for o in staged)

    def callback(self, handler: Handler) -> Callback | None:
        """The callable behind an observer's handler record (``None`` once unregistered)."""
        with self._lock:
            return next((o.callback for o in self._observers if _name(o) == handler.name), None)

    # --- the dispatch kinds -------------------------------------------------------------

    def notify_sync(self, event: str, message: Any) -> None:  # noqa: ANN401
        """Call every observer of ``event`` with ``message``, here, in priority order;
        an observer's exception propagates (the later ones are not called)."""
        for observer in self._ordered(event):
            observer.callback(message)

    def notify(self, event: str, message: Any) -> threading.Thread:  # noqa: ANN401
        """:meth:`notify_sync` in a background (daemon) thread, returned started
        (``join()`` to wait); an exception is logged (module ``action``), not raised."""
        return _background(lambda: self.notify_sync(event, message), event)

    def notify1(self, event: str, message: Any) -> threading.Thread:  # noqa: ANN401
        """Call only the first observer of ``event`` (by priority) with ``message``, in a
        background thread as :meth:`notify` does."""
        first = self._ordered(event)[:1]
        return _background(lambda: [o.callback(message) for o in first], event)

    def first(self, event: str, message: Any) -> Any:  # noqa: ANN401
        """Call observers in priority order until one answers something other than
        ``None`` or :class:`Continue`, and return that answer (``None`` when none does).
        ``Continue(new)``/:func:`passing` hands a rewritten message to the next ones."""
        for observer in self._ordered(event):
            answer = observer.callback(message)
            if isinstance(answer, Continue):
                message = answer.message if answer.rewritten else message
            elif answer is not None:
                return answer
        return None

    def map(self, event: str, message: Any) -> list[Any]:  # noqa: ANN401
        """Every observer's answer to ``message``, in priority order."""
        return [observer.callback(message) for observer in self._ordered(event)]

    def foldl(self, event: str, message: Any, accumulator: Any) -> Any:  # noqa: ANN401
        """``accumulator = callback(message, accumulator)`` for each observer, lowest
        priority number first; returns the final accumulator."""
        return _fold(iter(self._ordered(event)), message, accumulator)

    def foldr(self, event: str, message: Any, accumulator: Any) -> Any:  # noqa: ANN401
        """:meth:`foldl` with the highest priority number first."""
        return _fold(reversed(self._ordered(event)), message, accumulator)


def _fold(observers: Iterator[Observer], message: Any, accumulator: Any) -> Any:  # noqa: ANN401
    for observer in observers:
        accumulator = observer.callback(message, accumulator)
    return accumulator


def _background(work: Callable[[], object], event: str) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 (nobody waits for an asynchronous notification)
            logs.ACTION.error("observer of '%s' failed: %s: %s", event, type(exc).__name__, exc)

    context = contextvars.copy_context()  # its records go where the caller's go (the panel log)
    thread = threading.Thread(target=context.run, args=(run,), name=f"mgrhooks-notify-{event}", daemon=True)
    thread.start()
    return thread


def _name(observer: Observer) -> str:
    callback = observer.callback
    label = getattr(callback, "__qualname__", type(callback).__name__)
    return f"{getattr(callback, '__module__', '?')}.{label}#{observer.number}"


def _as_event(observer: Observer) -> Event:
    assert observer.stage is not None
    name = _name(observer)
    handler = Handler(name, HandlerType.PYTHON, "", Source(f"python:{name}"), ignore_errors=False)
    return Event(
        func=observer.event,
        stage=observer.stage,
        handler=handler,
        source=handler.source,
        number=observer.number,
        base=observer.base,
        placement=observer.placement,
        priority=observer.priority,
    )
