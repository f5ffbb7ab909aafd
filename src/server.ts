/**
 * Process entry point: read the config once, build the app, listen, load the model, and drain on
 * SIGTERM/SIGINT: readiness turns 503, no new connections are accepted, in-flight requests finish,
 * then the workers stop and the process exits 0 (1 if draining outlasts --drain-timeout-ms; a
 * second signal exits at once). A bad config or package stops start-up with a clear message.
 */
// First: the runtime's environment is set before anything loads onnxruntime.
import './runtime-env.js';
import { buildApp } from './app.js';
import { loadConfig } from './config.js';
import { ConfigError } from './errors.js';

async function main(): Promise<number> {
  let config;
  try {
    config = loadConfig(process.argv.slice(2), process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`redserve: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const app = buildApp(config);
  const log = app.server.log;

  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) {
      log.warn({ signal }, 'second signal: exiting without waiting for in-flight requests');
      process.exit(1);
    }
    closing = true;
    const started = performance.now();
    log.info({ signal, drainTimeoutMs: config.drainTimeoutMs }, 'shutting down: finishing in-flight requests');
    let timedOut = false;
    setTimeout(() => {
      timedOut = true;
      log.error({ drainTimeoutMs: config.drainTimeoutMs }, 'in-flight requests outlasted the drain timeout; exiting');
      // Stop the worker threads before exiting: exiting while one is inside an onnxruntime run can
      // kill the process by a signal instead of exit status 1. Bounded, in case a run never returns.
      setTimeout(() => process.exit(1), 5000);
      app.stopWorkers().finally(() => process.exit(1));
    }, config.drainTimeoutMs).unref();
    app.close().then(() => {
      if (timedOut) return; // the timeout path exits 1 once the workers have stopped
      log.info({ drainMs: Math.round(performance.now() - started) }, 'drained; exiting');
      process.exit(0);
    }, (err) => {
      log.error({ err }, 'error during shutdown');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  // Listen first so /healthz answers while members load; /readyz turns 200 once they are warm.
  await app.server.listen({ port: config.port, host: config.host });
  if (app.grpcServer) {
    const port = await app.grpcServer.listen();
    log.info({ host: config.host, port }, 'Open Inference Protocol gRPC listening');
  }
  if (app.metricsServer) {
    const url = await app.metricsServer.listen({ port: config.metricsPort!, host: config.metricsHost });
    log.info({ url: `${url}/metrics` }, 'Prometheus metrics listening (keep this port internal)');
  }
  try {
    await app.modelReady;
  } catch (err) {
    if (closing) return -1; // a signal during start-up: shutdown() exits
    log.fatal(config.modelRepository === null ? { model: config.modelDir } : { repository: config.modelRepository },
      `cannot serve the model package: ${(err as Error).message}`);
    await app.close();
    return 1;
  }
  return -1; // keep running
}

main().then((code) => {
  if (code >= 0) process.exit(code);
}, (err) => {
  process.stderr.write(`redserve: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
