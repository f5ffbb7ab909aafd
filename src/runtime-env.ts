/**
 * Environment for the native runtimes, set before onnxruntime loads. Imported first by server.ts
 * and app.ts (an ES module's imports run in order), so that every way of starting the service,
 * the process or an embedding program, sets it before the worker threads load the addon.
 *
 * onnxruntime-node's telemetry otherwise resolves and contacts a Microsoft host, keeps an event
 * store with a device id under ~/.cache/Microsoft/DeveloperTools/.onnxruntime/, and leaves
 * $TMPDIR/mat-debug-PID.log: a security service sends nothing anywhere and writes only where it is
 * told. The value is forced, not defaulted: no environment can turn telemetry back on. The
 * Dockerfile, docker-compose.yml, deploy/k8s and the benchmark's peers set the same variable, for
 * whatever else in the container loads onnxruntime.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = Object.freeze({ ORT_DISABLE_TELEMETRY: '1' });

for (const [name, value] of Object.entries(RUNTIME_ENV)) process.env[name] = value;
