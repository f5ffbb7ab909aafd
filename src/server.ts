/**
 * Process entry point: read the config once, build the app, listen, load the model, and close
 * gracefully on SIGINT/SIGTERM. A bad config or package stops start-up with a clear message.
 */
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
  // Listen first so /healthz answers while members load; /readyz turns 200 once they are warm.
  await app.server.listen({ port: config.port, host: config.host });
  if (app.metricsServer) {
    const url = await app.metricsServer.listen({ port: config.metricsPort!, host: config.host });
    log.info({ url: `${url}/metrics` }, 'Prometheus metrics listening (keep this port internal)');
  }
  try {
    await app.modelReady;
  } catch (err) {
    log.fatal({ model: config.modelDir }, `cannot serve the model package: ${(err as Error).message}`);
    await app.server.close();
    return 1;
  }
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, 'shutting down: finishing in-flight requests');
    app.close().then(() => process.exit(0), (err) => {
      log.error({ err }, 'error during shutdown');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  return -1; // keep running
}

main().then((code) => {
  if (code >= 0) process.exit(code);
}, (err) => {
  process.stderr.write(`redserve: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
