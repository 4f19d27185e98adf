// Sends one governed agent session to the gateway with an OTLP exporter of the OpenTelemetry
// JavaScript SDK. Usage: node send.mjs <http/json|http/protobuf|grpc> <endpoint> [token]
// With SPAN_PROCESSOR=simple, every span is exported on its own as it ends (concurrent requests).
// Prints {"traceId": "..."} once the exporter has delivered every span.
// The session mirrors tests/gateway/test_javascript_exporters.py's Python twin span for span.
import { SpanStatusCode, context, trace } from '@opentelemetry/api';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';

const [protocol, endpoint, token] = process.argv.slice(2);
const headers = token ? { authorization: `Bearer ${token}` } : {};
const exporters = {
  'http/json': () => new JsonExporter({ url: endpoint, headers }),
  'http/protobuf': () => new ProtoExporter({ url: endpoint, headers }),
  grpc: () => new GrpcExporter({ url: endpoint }),
};
if (!(protocol in exporters)) {
  console.error(`unknown protocol ${protocol}`);
  process.exit(2);
}

const provider = new TracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'trading-bot', 'aigp.agent.id': 'agent.trading-bot-v2' }),
  // Batches, as services export; or one span per request, whose children may reach the gateway
  // after their root (see docs/gateway.md, "Same runs as in process").
  spanProcessors: [
    process.env.SPAN_PROCESSOR === 'simple'
      ? new SimpleSpanProcessor({ exporter: exporters[protocol]() })
      : new BatchSpanProcessor({ exporter: exporters[protocol]() }),
  ],
});
const tracer = provider.getTracer('tests.gateway.js');

const root = tracer.startSpan('invoke', { attributes: { 'gen_ai.agent.name': 'trader' } });
const inRoot = trace.setSpan(context.active(), root);
const child = (name, attributes, build) => {
  const span = tracer.startSpan(name, { attributes }, inRoot);
  build(span);
  span.end();
};
child('load-policy', {}, (span) => span.addEvent('aigp.inject.success', {
  'aigp.event.id': 'e-policy', 'aigp.event.type': 'INJECT_SUCCESS', 'aigp.event.category': 'inject',
  'aigp.governance.hash': '4f1d1ac775da46b2f13d3120d1c7891735b88a735d8b8e6473c5512d974c3cc9',
  'aigp.governance.hash_type': 'sha256', 'aigp.data.classification': 'confidential',
  'aigp.policy.name': 'policy.trading-limits', 'aigp.policy.version': 4, 'aigp.enforcement.result': 'allowed',
  'aigp.sequence.number': 1,
}));
child('execute_tool market-data', { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'market-data' },
  () => {});
child('chat', { 'gen_ai.request.model': 'gpt-x', 'gen_ai.provider.name': 'openai', 'gen_ai.usage.input_tokens': 12 },
  () => {});
child('wire-transfer', {}, (span) => span.addEvent('aigp.tool.denied', {
  'aigp.event.id': 'e-denied', 'aigp.event.type': 'TOOL_DENIED', 'aigp.event.category': 'tool',
  'aigp.enforcement.result': 'denied', 'aigp.denial.reason': 'wire transfers need human approval',
  'aigp.tools.names': ['tool.wire-transfer'], 'aigp.sequence.number': 2,
}));
root.addEvent('exception', {
  'exception.type': 'RuntimeError', 'exception.message': 'order rejected', 'exception.stacktrace': 'at invoke',
});
root.setStatus({ code: SpanStatusCode.ERROR, message: 'order rejected' });
root.end();

await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ traceId: root.spanContext().traceId }));
