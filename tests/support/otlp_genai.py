"""Exports GenAI client spans with the real OpenTelemetry Python SDK and its OTLP/HTTP
exporter (protobuf, gzip), as an instrumented app would, for tests/otlp.rs.

    python3 otlp_genai.py ENDPOINT ROUNDS

ENDPOINT is the traces URL (http://HOST:PORT/v1/traces). Each round exports the same spans
again (an exporter's retry). Prints one JSON line of what was sent; exits 1 when an export
fails.
"""
import json
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

endpoint, rounds = sys.argv[1], int(sys.argv[2])
memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create(
    {"service.name": "render-bot", "ratewarden.org": "acme"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("openai-instrumentation")

sent = {"ok": 0, "rate_limited": 0, "tokens": 0, "apps": {}}


def call(app, status, input_tokens, output_tokens):
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
    }
    if app:
        attrs["ratewarden.app"] = app
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes=attrs) as span:
        if status == 429:
            span.set_attribute("error.type", "429")
            span.set_attribute("http.response.status_code", 429)
            span.set_status(Status(StatusCode.ERROR))
            sent["rate_limited"] += 1
        else:
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
            sent["ok"] += 1
            sent["tokens"] += input_tokens + output_tokens
    name = app or "render-bot"
    sent["apps"][name] = sent["apps"].get(name, 0) + 1


for i in range(5):
    call(None, 200, 100 + i, 20)
call("batch", 200, 1000, 250)
call(None, 429, 0, 0)
call("batch", 429, 0, 0)
# Not a GenAI call: the app's own server span.
with tracer.start_as_current_span("GET /render", kind=SpanKind.SERVER):
    pass

exporter = OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip, timeout=10)
spans = memory.get_finished_spans()
for _ in range(rounds):
    if exporter.export(spans) != SpanExportResult.SUCCESS:
        print("export failed", file=sys.stderr)
        sys.exit(1)
exporter.shutdown()
print(json.dumps(sent))
