// The floor of any Node HTTP refusal on this machine: a server that answers every request with a
// constant 503 and does nothing else (no routing, no body, no metrics). bench/tools/refusal-cost.sh
// puts it beside redserve under the same retry storm.
//   node bench/tools/constant-503.mjs PORT
import http from 'node:http';

const body = JSON.stringify({ error: 'overloaded', message: 'the inference queue is full; retry shortly' });
http.createServer((_req, res) => {
  res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length, 'retry-after': '1' });
  res.end(body);
}).listen(Number(process.argv[2] ?? 18090), '127.0.0.1');
