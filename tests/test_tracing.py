"""Traces (mgrhooks.tracing): a span per call and per step, read with the SDK's in-memory
exporter or from the console exporter of the real command; handlers get TRACEPARENT and
join the call's trace; with tracing off, nothing of OpenTelemetry is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from conftest import PYTHON_SHEBANG, PanelRoot
from mgrhooks import Panel
from mgrhooks.dispatch import Options

#: an xml handler that puts the TRACEPARENT it got (or "none") into the document
TRACEPARENT_HANDLER = (
    PYTHON_SHEBANG
    + """
import os, sys
doc = sys.stdin.read()
sys.stdout.write(doc.replace("</doc>", "<traceparent>" + os.environ.get("TRACEPARENT", "none") + "</traceparent>\\n</doc>"))
"""
)
CGI_HANDLER = PYTHON_SHEBANG + 'print("<doc><seen>yes</seen></doc>")\n'
SLOW_HANDLER = PYTHON_SHEBANG + "import time\ntime.sleep(30)\n"


@pytest.fixture
def traced_root(root: PanelRoot) -> PanelRoot:
    root.handler("tp.py", TRACEPARENT_HANDLER, '<event name="user" before="yes"/>')
    root.handler("seen.py", CGI_HANDLER, '<event name="user" after="yes"/>', type="cgi")
    return root


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def _panel(root: PanelRoot, exporter: InMemorySpanExporter) -> Panel:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    panel = Panel(root.path)
    panel.tracer_provider = provider  # no global provider: the other tests stay untraced
    return panel


def test_a_call_and_each_step_are_spans_and_the_handler_joins_the_trace(traced_root, exporter) -> None:
    response = _panel(traced_root, exporter).call("user", user="root")
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"call user", "before tp.py", "action user", "after seen.py"}
    call = spans["call user"]
    assert call.parent is None
    assert call.attributes["mgrhooks.func"] == "user"
    assert call.attributes["enduser.id"] == "root"
    assert call.attributes["mgrhooks.level"] == 30
    assert call.attributes["mgrhooks.mgr"] == "billmgr"
    assert len(call.attributes["mgrhooks.call.id"]) == 32
    assert call.attributes["mgrhooks.error"] is False
    assert call.attributes["mgrhooks.call.handlers"] == 2
    assert call.attributes["mgrhooks.call.timeouts"] == 0
    assert [event.name for event in call.events] == ["committed"]
    for name in ("before tp.py", "action user", "after seen.py"):
        assert spans[name].parent.span_id == call.context.span_id
        assert spans[name].context.trace_id == call.context.trace_id
        assert call.start_time <= spans[name].start_time <= spans[name].end_time <= call.end_time

    handler = spans["before tp.py"]
    assert handler.attributes["mgrhooks.stage"] == "before"
    assert handler.attributes["mgrhooks.handler.type"] == "xml"
    assert handler.attributes["process.exit.code"] == 0
    assert handler.attributes["process.pid"] > 0
    assert handler.attributes["process.executable.path"] == str(traced_root.path / "addon" / "tp.py")
    assert handler.attributes["mgrhooks.bytes.in"] > 0
    assert handler.attributes["mgrhooks.bytes.out"] > handler.attributes["mgrhooks.bytes.in"]
    assert handler.status.status_code is StatusCode.UNSET
    assert spans["after seen.py"].attributes["mgrhooks.handler.type"] == "cgi"
    assert "process.pid" not in spans["action user"].attributes

    # the handler's own TRACEPARENT: version 00, the call's trace, the call's span as parent
    version, trace_id, parent_id, flags = response.doc.findtext("traceparent").split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == call.context.trace_id
    assert int(parent_id, 16) == call.context.span_id


def test_a_handler_that_times_out_is_an_error_span_counted_on_the_call(root, exporter) -> None:
    root.handler("slow.py", SLOW_HANDLER, '<event name="user" after="yes"/>')
    response = _panel(root, exporter).call("user", options=Options(timeout=0.2))
    assert response.error
    spans = {span.name: span for span in exporter.get_finished_spans()}
    slow = spans["after slow.py"]
    assert slow.status.status_code is StatusCode.ERROR
    assert slow.attributes["error.type"] == "timeout"
    assert slow.attributes["mgrhooks.handler.timed_out"] is True
    assert slow.attributes["mgrhooks.handler.killed"] >= 1
    assert slow.attributes["mgrhooks.step.stop"] is True
    call = spans["call user"]
    assert call.attributes["mgrhooks.error"] is True
    assert call.attributes["mgrhooks.call.timeouts"] == 1
    assert call.attributes["mgrhooks.call.kills"] == slow.attributes["mgrhooks.handler.killed"]


def test_untraced_handlers_get_no_traceparent(traced_root) -> None:
    response = Panel(traced_root.path).call("user")
    assert response.doc.findtext("traceparent") == "none"


def _untraced_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACE"))}


def test_with_tracing_off_nothing_of_opentelemetry_is_imported(traced_root) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *traced_root.argv("exec", "user")[1:]],
        capture_output=True,
        text=True,
        env=_untraced_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "<traceparent>none</traceparent>" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "mgrhooks.dispatch" in imported  # (the listing is there)
    assert [name for name in imported if "opentelemetry" in name or name == "mgrhooks.tracing"] == []


def _console_spans(stderr: str) -> list[dict]:
    """The spans the console exporter wrote (one JSON object each, pretty-printed)."""
    decoder, spans, at = json.JSONDecoder(), [], stderr.find("{")
    while at >= 0:
        span, end = decoder.raw_decode(stderr, at)
        spans.append(span)
        at = stderr.find("{", end)
    return spans


def test_the_command_exports_to_the_console_exporter_on_stderr(traced_root) -> None:
    env = {**_untraced_env(), "OTEL_TRACES_EXPORTER": "console"}
    result = traced_root.mgrhooks("exec", "user", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<doc')  # stdout: the response only
    spans = {span["name"]: span for span in _console_spans(result.stderr)}
    assert set(spans) == {"call user", "before tp.py", "action user", "after seen.py"}
    call = spans["call user"]
    assert call["parent_id"] is None
    assert call["resource"]["attributes"]["service.name"] == "mgrhooks"
    trace_id = call["context"]["trace_id"].removeprefix("0x")
    assert f"<traceparent>00-{trace_id}-{call['context']['span_id'].removeprefix('0x')}-0" in result.stdout
    assert spans["before tp.py"]["parent_id"] == call["context"]["span_id"]


def test_a_call_joins_the_trace_in_its_own_traceparent(traced_root) -> None:
    """As a nested call from a handler's sbin/mgrctl does, or mgrhooks run by a traced job."""
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    env = {**_untraced_env(), "OTEL_TRACES_EXPORTER": "console", "TRACEPARENT": f"00-{trace_id}-{parent_id}-01"}
    result = traced_root.mgrhooks("exec", "user", env=env)
    call = {span["name"]: span for span in _console_spans(result.stderr)}["call user"]
    assert call["context"]["trace_id"] == f"0x{trace_id}"
    assert call["parent_id"] == f"0x{parent_id}"
    assert f"<traceparent>00-{trace_id}-" in result.stdout


def test_an_exporter_that_is_not_installed_leaves_the_call_untraced(traced_root) -> None:
    env = {**_untraced_env(), "OTEL_TRACES_EXPORTER": "nosuchexporter"}
    result = traced_root.mgrhooks("exec", "user", env=env)
    assert result.returncode == 0, result.stderr
    assert "<traceparent>none</traceparent>" in result.stdout
    assert (
        "OTEL_TRACES_EXPORTER names 'nosuchexporter', which is not installed (pip install its package)"
        in traced_root.log()
    )


@pytest.mark.parametrize(
    "env", [{"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}]
)
def test_tracing_switched_off_by_the_standard_variables(traced_root, env) -> None:
    result = traced_root.mgrhooks("exec", "user", env={**_untraced_env(), **env})
    assert result.returncode == 0 and result.stderr == ""
    assert "<traceparent>none</traceparent>" in result.stdout


def test_a_refused_program_a_final_handler_and_the_response_size(root, exporter) -> None:
    root.handler(
        "cat.py",
        PYTHON_SHEBANG + "import sys\nsys.stdout.write(sys.stdin.read())\n",
        '<event name="user" after="yes"/>',
    )
    root.handler("late.py", CGI_HANDLER, '<event name="user" final="yes"/>', type="cgi")
    root.handler("off.py", CGI_HANDLER, '<event name="desktop" after="yes"/>', type="cgi").chmod(0o640)
    panel = _panel(root, exporter)

    response = panel.call("user", options=Options(defer_final=True))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    call = spans["call user"]
    assert call.attributes["mgrhooks.response.bytes"] == len(response.serialised)  # the text cat.py printed
    assert "final late.py" not in spans
    response.finish()
    late = {span.name: span for span in exporter.get_finished_spans()}["final late.py"]
    assert late.parent.span_id == call.context.span_id and late.start_time >= call.end_time
    assert call.attributes["mgrhooks.call.handlers"] == 1  # the final stage is not counted

    panel.call("desktop")
    off = {span.name: span for span in exporter.get_finished_spans()}["after off.py"]
    assert off.attributes["error.type"] == "refused"
    assert off.status.status_code is StatusCode.ERROR
    assert "process.pid" not in off.attributes


def test_exporters_come_from_the_entry_points_the_exporter_packages_register(monkeypatch) -> None:
    """As opentelemetry-exporter-otlp registers 'otlp' (not installed here: a stand-in)."""
    import importlib.metadata

    from mgrhooks.tracing import configured

    def broken() -> None:
        raise RuntimeError("no endpoint")

    class Found:
        def __init__(self, factory) -> None:
            self.factory = factory

        def load(self):
            return self.factory

    registered = {"memory": InMemorySpanExporter, "broken": broken}
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group, name: [Found(registered[name])] if name in registered else [],
    )
    said: list[str] = []
    provider = configured(["memory", " broken", "otlp", "none"], said.append)
    assert provider is not None
    assert said == [
        "OTEL_TRACES_EXPORTER: exporter 'broken' cannot be made: RuntimeError: no endpoint",
        "OTEL_TRACES_EXPORTER names 'otlp', which is not installed (pip install opentelemetry-exporter-otlp)",
    ]
    assert configured(["otlp"], said.append) is None
    provider.shutdown()
