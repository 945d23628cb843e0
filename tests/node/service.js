// One version of a small Express service, instrumented as a new Node.js user
// instruments one: the upstream zero-code setup from npm, nothing in the code.
//
//   node --require @opentelemetry/auto-instrumentations-node/register service.js
//
// Run by tests/python/test_node_service.py, one process per version. The
// telemetry is configured only by the standard OTEL_* variables, as the
// README's "First five minutes" tells a user to set them:
//
//   OTEL_SERVICE_NAME=shop
//   OTEL_RESOURCE_ATTRIBUTES=deployment.id=shop-v2,git.sha=2b5d…,deployment.environment.name=test
//   OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
//   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<the daemon's HTTP port>
//   OTEL_METRIC_EXPORT_INTERVAL=2000 OTEL_BSP_SCHEDULE_DELAY=200
//
// The register entry point starts NodeSDK with every auto-instrumentation
// (here http and express matter: a SERVER span per request named by its
// route, `GET /api/items`, and the `http.server.request.duration` histogram
// with `http.route`). Traces and metrics are both on by default: NodeSDK
// takes an empty OTEL_TRACES_EXPORTER and an empty OTEL_METRICS_EXPORTER to
// mean `otlp` (sdk-node 0.223.0, `getMetricReadersFromEnv`), so nothing sets
// them. On SIGTERM the entry point shuts the SDK down, which exports what is
// left; its handler replaces Node's default exit, so this file closes the
// server and the process exits once the last export is answered.
//
// The service: `GET /api/items` always answers 200; `POST /api/checkout`
// answers 500 for a deterministic share CHECKOUT_ERROR_RATE (0 to 1) of its
// requests, spread evenly. It listens on LISTEN_HOST:LISTEN_PORT
// (127.0.0.1:0, a free port, by default) and prints
// `listening on http://HOST:PORT` once bound.
'use strict';

const express = require('express');

// Request k (from 1) fails when floor(k * rate) passes an integer: exactly
// `rate` of the requests fail, the same every run (as flask_service.py).
function errorSchedule(rate) {
  let requests = 0;
  return () => {
    requests += 1;
    return Math.floor(requests * rate) > Math.floor((requests - 1) * rate);
  };
}

function readRate(name) {
  const text = process.env[name] || '0';
  const rate = Number(text);
  if (!(rate >= 0 && rate <= 1)) {
    throw new Error(`${name}=${text}: want a number from 0 to 1`);
  }
  return rate;
}

const checkoutFails = errorSchedule(readRate('CHECKOUT_ERROR_RATE'));

const app = express();

app.get('/api/items', (req, res) => {
  res.json({ items: ['apple', 'pear', 'plum'] });
});

app.post('/api/checkout', (req, res) => {
  if (checkoutFails()) {
    res.status(500).json({ error: 'payment backend failed' });
    return;
  }
  res.json({ ok: true });
});

const host = process.env.LISTEN_HOST || '127.0.0.1';
const port = Number(process.env.LISTEN_PORT || '0');
const server = app.listen(port, host, () => {
  console.log(`listening on http://${host}:${server.address().port}`);
});

process.on('SIGTERM', () => {
  server.close();
});
