"""OpenTelemetry tracing, off by default (`otel.endpoint` empty: nothing is imported or done).

A SERVER span per client request and a CLIENT span per upstream attempt, with the GenAI
semantic-convention attributes (`gen_ai.*`), exported over OTLP/HTTP by a batch processor (off
the request path). The attempt span's W3C `traceparent` goes upstream; an incoming `traceparent`
from the client becomes the request span's parent.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger(__name__)

# gen_ai.provider.name values of the semantic conventions, by adapter
GEN_AI_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
                   "azure": "azure.ai.openai", "mock": "modelyard.mock"}


class Tracing:
    def __init__(self, endpoint: str, service_name: str = "modelyard") -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.propagators.textmap import DefaultGetter, DefaultSetter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=url), schedule_delay_millis=1000)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("modelyard")
        self._prop = TraceContextTextMapPropagator()
        self._getter, self._setter = DefaultGetter(), DefaultSetter()
        self._kind, self._status, self._code = SpanKind, Status, StatusCode
        self._in_context = set_span_in_context

    # ------------------------------------------------------------ request span
    def start_request(self, endpoint: str, headers: Mapping[str, str]) -> Any:
        parent = None
        if "traceparent" in headers:
            parent = self._prop.extract({"traceparent": headers["traceparent"],
                                         "tracestate": headers.get("tracestate", "")},
                                        getter=self._getter)
        op = "embeddings" if endpoint == "embeddings" else "chat"
        return self.tracer.start_span(f"POST /v1/{'chat/completions' if op == 'chat' else op}",
                                      context=parent, kind=self._kind.SERVER,
                                      attributes={"gen_ai.operation.name": op})

    def end_request(self, span: Any, record: Any) -> None:
        span.set_attributes({
            "gen_ai.request.model": record.model, "http.response.status_code": record.status,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "modelyard.attempts": record.attempts, "modelyard.cost_usd": record.cost_usd,
            "modelyard.provider": record.provider or "none", "modelyard.stream": record.stream})
        if record.fallback:
            span.set_attribute("modelyard.fallback", record.fallback)
        if record.status >= 400 or record.cut:
            span.set_attribute("error.type", record.error_type or record.cut or "error")
            span.set_status(self._status(self._code.ERROR))
        span.end()

    # ------------------------------------------------------------ attempt spans
    def start_attempt(self, parent: Any, target: Any, route_id: str, body: Mapping[str, Any],
                      op: str, headers: dict[str, str]) -> Any:
        attrs = {"gen_ai.operation.name": op,
                 "gen_ai.provider.name": GEN_AI_PROVIDER.get(target.provider.adapter,
                                                              target.provider.adapter),
                 "gen_ai.request.model": target.model, "modelyard.route": route_id,
                 "modelyard.provider": target.provider.name}
        for key, attr in (("max_tokens", "gen_ai.request.max_tokens"),
                          ("max_completion_tokens", "gen_ai.request.max_tokens"),
                          ("temperature", "gen_ai.request.temperature"),
                          ("top_p", "gen_ai.request.top_p")):
            value = body.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attrs[attr] = value
        ctx = self._in_context(parent) if parent is not None else None
        span = self.tracer.start_span(f"{op} {target.model}", context=ctx,
                                      kind=self._kind.CLIENT, attributes=attrs)
        self._prop.inject(headers, context=self._in_context(span), setter=self._setter)  # type: ignore[misc]
        return span

    def end_attempt(self, span: Any, status: int | None, error: Any = None,
                    result: Any = None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        usage = getattr(result, "usage", None)
        body = getattr(result, "body", None)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if isinstance(body, dict):
            if body.get("model"):
                span.set_attribute("gen_ai.response.model", str(body["model"]))
            if body.get("id"):
                span.set_attribute("gen_ai.response.id", str(body["id"]))
            reasons = [c.get("finish_reason") for c in body.get("choices") or []
                       if isinstance(c, dict) and c.get("finish_reason")]
            if reasons:
                span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if error is not None:
            span.set_attribute("error.type", getattr(error, "reason", type(error).__name__))
            span.set_status(self._status(self._code.ERROR, getattr(error, "code", None)))
        span.end()

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()
        except Exception:  # exporting is best effort; never fail a shutdown on it
            log.warning("could not flush traces to the OTLP endpoint")


def create_tracing(endpoint: str, service_name: str) -> Tracing | None:
    if not endpoint:
        return None
    try:
        return Tracing(endpoint, service_name)
    except ImportError:
        log.error("otel.endpoint is set but OpenTelemetry is not installed: "
                  "pip install 'modelyard[otel]'; tracing stays off")
        return None
