"""Traces: each call and each step it runs (handlers, internal handlers, the main logic)
a span, with the OpenTelemetry API; handlers get the call's W3C trace context in
``TRACEPARENT``. I/O (the SDK's exporters). Our choice throughout (the panel has no traces).

A call is traced when the standard variables configure an exporter
(``OTEL_TRACES_EXPORTER=console``, ``otlp``, ... as the SDK reads them; ``none`` or
``OTEL_SDK_DISABLED=true``: not traced) or when the application gives its panel a tracer
provider (``panel.tracer_provider``). Otherwise this module is not even imported: the
call pays one look-up in the environment (:meth:`mgrhooks.api.Panel.call`).

* The call's span, ``call FUNC``, is the current span's child (an application's), else
  the child of the context in the process's own ``TRACEPARENT`` (a nested call from a
  handler's ``sbin/mgrctl`` joins the trace of the call running that handler), else a
  new trace's root. It ends when the call returns: the final stage's spans, which run
  after the response is out, are its children all the same.
* Each step is a span (``before samba.pl``, ``action user.add``, ...), a subscriber of
  the call's monitor (:mod:`mgrhooks.monitor`): it starts when the step is about to run
  and ends when it ran.
* Handlers get ``TRACEPARENT`` (and ``TRACESTATE``) naming the call's span as parent, so
  their own spans and logs join the call's trace (:data:`mgrhooks.env.ALLOWED` passes the
  names; the exporter settings reach a handler only through ``pass_env``).

Attributes use OpenTelemetry's semantic-convention names where there are some
(``enduser.id``, ``process.pid``, ``process.exit.code``, ``process.executable.path``,
``process.command_args``, ``error.type``), ``mgrhooks.*`` for the rest: see
:data:`CALL_ATTRIBUTES` and :data:`STEP_ATTRIBUTES`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .monitor import Later, Monitor, StepEnd, StepStart
from .process.runner import Failure

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .dispatch import Options, Response
    from .document import Document
    from .model import Request
    from .root import Root

#: the call span's attributes: what each holds
CALL_ATTRIBUTES = {
    "mgrhooks.call.id": "the call's id (as in event records)",
    "mgrhooks.mgr": "the panel (billmgr, ispmgr, ...)",
    "mgrhooks.func": "the function called",
    "enduser.id": "the calling user",
    "mgrhooks.level": "the caller's access level, 0-31",
    "mgrhooks.depth": "1, or deeper for a call from a handler",
    "mgrhooks.error": "whether the response holds an <error>",
    "mgrhooks.response.bytes": "the response's size in bytes, when known without serialising it",
    "mgrhooks.call.handlers": "handler programs run (final stage not counted)",
    "mgrhooks.call.timeouts": "of those, how many ran past their timeout",
    "mgrhooks.call.kills": "processes killed: after a timeout or an overflow, or holding a handler's output",
}
#: a step span's attributes (``process.*`` only when a program ran)
STEP_ATTRIBUTES = {
    "mgrhooks.step.kind": "handler, internal or action",
    "mgrhooks.stage": "before, after, final (none for the main logic)",
    "mgrhooks.handler": "the handler's (or internal handler's, or function's) name",
    "mgrhooks.handler.type": "cgi, xml, ...",
    "mgrhooks.handler.program": "the program as the log names it (addon/NAME)",
    "mgrhooks.handler.timeout": "seconds it may run",
    "mgrhooks.bytes.in": "bytes on its stdin",
    "mgrhooks.bytes.out": "bytes it printed on stdout",
    "mgrhooks.bytes.err": "bytes it printed on stderr",
    "mgrhooks.handler.timed_out": "whether it ran past its timeout",
    "mgrhooks.handler.killed": "processes killed with or after it",
    "mgrhooks.step.stop": "the call stops here (an <error>, a failed handler)",
    "mgrhooks.step.skip": "a before-handler answered <skipaction/>",
    "process.pid": "the handler's pid",
    "process.exit.code": "its exit status (a signal: minus its number)",
    "process.executable.path": "its program",
    "process.command_args": "its argv",
    "error.type": "why it failed: spawn, timeout, output, exit, refused",
}
#: the exporter names :func:`configured` makes itself (the others come from the SDK's
#: entry points, ``opentelemetry_traces_exporter``)
CONSOLE = "console"


def traced(
    root: Root,
    request: Request,
    options: Options,
    provider: TracerProvider | None,
    run: Callable[[Request, Options], Response],
) -> Response:
    """``run(request, options)`` inside a span for the call, with a step span per step and
    ``TRACEPARENT`` in the handlers' environment; just ``run`` when no tracer can be had
    (``OTEL_TRACES_EXPORTER=none``, the SDK not installed, no exporter known: said in the
    log's ``action`` module).

    :param provider: the application's tracer provider; ``None``: the global one, set up
        from the ``OTEL_*`` variables if nobody has set one
    """
    tracer = _tracer(provider)
    if tracer is None:
        return run(request, options)
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    parent = None
    if not trace.get_current_span().get_span_context().is_valid and "TRACEPARENT" in os.environ:
        carried = {"traceparent": os.environ["TRACEPARENT"], "tracestate": os.environ.get("TRACESTATE", "")}
        parent = propagator.extract(carried)
    request = request if request.call_id else request._replace(call_id=os.urandom(16).hex())
    attributes: dict[str, str | int] = {
        "mgrhooks.call.id": request.call_id,
        "mgrhooks.mgr": root.mgr,
        "mgrhooks.func": request.func,
        "enduser.id": request.user,
        "mgrhooks.level": int(request.level),
        "mgrhooks.depth": options.depth,
    }
    with tracer.start_as_current_span(f"call {request.func}", context=parent, attributes=attributes) as span:
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        base = options.environ if options.environ is not None else os.environ
        environ = {**base, **{key.upper(): value for key, value in carrier.items()}}
        steps = Steps(tracer, context.get_current(), span)  # (the call's span is the current one)
        response = run(request, options._replace(environ=environ, monitors=(*options.monitors, steps)))
        span.set_attribute("mgrhooks.error", response.error)
        known = response.serialised
        if known is not None:
            span.set_attribute("mgrhooks.response.bytes", len(known))
        steps.counted()
        return response


def _tracer(provider: TracerProvider | None) -> Tracer | None:
    """The tracer of ``provider``, else of the global provider (set up from the ``OTEL_*``
    variables when nobody has set one); ``None``: no tracing (said in the log)."""
    from . import logs
    from .version import __version__

    if provider is None:
        exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporters in ("", "none") or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        try:
            from opentelemetry import trace
        except ImportError:
            logs.ACTION.warning(
                "OTEL_TRACES_EXPORTER is set, but OpenTelemetry is not installed: pip install 'mgrhooks[otel]'"
            )
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):  # nobody set one: ours, from the variables
            made = configured(exporters.split(","), logs.ACTION.warning)
            if made is None:
                return None
            trace.set_tracer_provider(made)
            provider = trace.get_tracer_provider()
    return provider.get_tracer("mgrhooks", __version__)


def configured(names: list[str], warn: Callable[[str], None]) -> TracerProvider | None:
    """An SDK tracer provider exporting to each exporter in ``names`` (as
    ``OTEL_TRACES_EXPORTER`` lists them): ``console`` to stderr, each span as it ends
    (stdout holds only the response); others (``otlp``, ...) from the entry points the
    exporter packages register, in batches, configured by their own ``OTEL_EXPORTER_*``
    variables. The SDK's own variables apply (``OTEL_SERVICE_NAME``, default
    ``mgrhooks``; ``OTEL_RESOURCE_ATTRIBUTES``; ``OTEL_TRACES_SAMPLER``). The provider
    flushes at exit. ``None`` when the SDK is missing or no exporter could be made
    (each reason given to ``warn``)."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        warn("OTEL_TRACES_EXPORTER is set, but the OpenTelemetry SDK is not installed: pip install 'mgrhooks[otel]'")
        return None
    from importlib.metadata import entry_points

    processors: list[SpanProcessor] = []
    for name in (n.strip() for n in names if n.strip() and n.strip() != "none"):
        if name == CONSOLE:
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
            continue
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            package = "opentelemetry-exporter-otlp" if name.startswith("otlp") else "its package"
            warn(f"OTEL_TRACES_EXPORTER names '{name}', which is not installed (pip install {package})")
            continue
        try:
            exporter = next(iter(found)).load()()
        except Exception as exc:  # noqa: BLE001 (an exporter's set-up failing must not fail the call)
            warn(f"OTEL_TRACES_EXPORTER: exporter '{name}' cannot be made: {type(exc).__name__}: {exc}")
            continue
        processors.append(BatchSpanProcessor(exporter))
    if not processors:
        return None
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = SdkProvider(resource=Resource.create({} if named else {"service.name": "mgrhooks"}))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


class Steps(Monitor):
    """A monitor subscriber making a span of each step of one call, children of the
    call's span (in ``parent``); it counts the call's handler runs, timeouts and kills
    for :meth:`counted`."""

    def __init__(self, tracer: Tracer, parent: Context, call: Span) -> None:
        self.tracer, self.parent, self.call = tracer, parent, call
        self.open: list[Span] = []
        self.handlers = self.timeouts = self.kills = 0
        self.done = False

    def before(self, start: StepStart) -> None:
        """Open the step's span."""
        step = start.step
        attributes: dict[str, str | int | float | bool | list[str]] = {
            "mgrhooks.step.kind": step.kind.value,
            "mgrhooks.handler": step.name,
        }
        if step.stage is not None:
            attributes["mgrhooks.stage"] = step.stage.value
        if start.handler is not None:
            attributes["mgrhooks.handler.type"] = start.handler.type.value
        if start.program:
            attributes["mgrhooks.handler.program"] = start.program
        run = start.request
        if run is not None:
            attributes["process.executable.path"] = run.argv[0]
            attributes["process.command_args"] = list(run.argv)
            attributes["mgrhooks.handler.timeout"] = run.timeout
            attributes["mgrhooks.bytes.in"] = len(run.stdin)
        stage = step.stage.value if step.stage is not None else "action"
        self.open.append(self.tracer.start_span(f"{stage} {step.name}", self.parent, attributes=attributes))

    def after(self, end: StepEnd) -> None:
        """Close the step's span with what came of it."""
        from opentelemetry.trace import Status, StatusCode

        span = self.open.pop()
        span.set_attribute("mgrhooks.step.stop", end.result.stop)
        span.set_attribute("mgrhooks.step.skip", end.result.skip)
        outcome = end.outcome
        if outcome is not None:
            if not self.done:
                self.handlers += 1
                self.timeouts += outcome.failure is Failure.TIMEOUT
                self.kills += len(outcome.killed)
            if outcome.pid is not None:
                span.set_attribute("process.pid", outcome.pid)
            if outcome.returncode is not None:
                span.set_attribute("process.exit.code", outcome.returncode)
            span.set_attribute("mgrhooks.bytes.out", len(outcome.stdout))
            span.set_attribute("mgrhooks.bytes.err", len(outcome.stderr))
            span.set_attribute("mgrhooks.handler.timed_out", outcome.failure is Failure.TIMEOUT)
            span.set_attribute("mgrhooks.handler.killed", len(outcome.killed))
            if outcome.failure is not None:
                span.set_attribute("error.type", outcome.failure.value)
                span.set_status(Status(StatusCode.ERROR, outcome.reason))
        elif end.start.program and end.start.request is None:
            span.set_attribute("error.type", "refused")
            span.set_status(Status(StatusCode.ERROR, "the program was refused or could not be prepared"))
        span.end()

    def committed(self, request: Request, document: Document) -> Later | None:
        """Mark the moment the response was decided on the call's span."""
        self.call.add_event("committed", {"mgrhooks.error": document.has_error()})
        return None

    def counted(self) -> None:
        """Put the counts on the call's span (before it ends; later steps, the final
        stage's, are not counted)."""
        self.done = True
        self.call.set_attribute("mgrhooks.call.handlers", self.handlers)
        self.call.set_attribute("mgrhooks.call.timeouts", self.timeouts)
        self.call.set_attribute("mgrhooks.call.kills", self.kills)
