/**
 * Where the served model is in its life: loading, ready (the loaded Ensemble), failed, or draining
 * before the process stops. app.ts sets it; the routes read it through `ready()` and `serving()`,
 * which throw UnavailableError (the HTTP edge answers 503 with Retry-After) when there is nothing
 * to serve.
 */
import type { Ensemble } from './ensemble/ensemble.js';
import { UnavailableError } from './errors.js';

export class ModelState {
  private loaded: Ensemble | null = null;
  private failureMessage: string | null = null;
  private drainingSince: number | null = null;
  private readonly readyListeners: ((ensemble: Ensemble) => void)[] = [];

  /** The ensemble once loaded and warm, else null. */
  get ensemble(): Ensemble | null {
    return this.loaded;
  }

  /** Why loading failed, or null. */
  get failure(): string | null {
    return this.failureMessage;
  }

  /** True from SIGTERM on: readiness turns 503 so load balancers stop sending; in-flight work finishes. */
  get draining(): boolean {
    return this.drainingSince !== null;
  }

  /** Call `listener` when the model becomes ready, before any request can reach it. */
  onReady(listener: (ensemble: Ensemble) => void): void {
    this.readyListeners.push(listener);
  }

  setReady(ensemble: Ensemble): void {
    for (const listener of this.readyListeners) listener(ensemble);
    this.loaded = ensemble;
  }

  setFailed(message: string): void {
    this.failureMessage = message;
  }

  startDraining(): void {
    this.drainingSince ??= performance.now();
  }

  /** The loaded model; throws not_ready while it loads or after it failed. */
  ready(): Ensemble {
    if (this.loaded) return this.loaded;
    throw new UnavailableError('not_ready', this.failureMessage ? 'the model failed to load' : 'the model is still loading');
  }

  /** The loaded model while the server is not draining (readiness). */
  serving(): Ensemble {
    const ensemble = this.ready();
    if (this.draining) throw new UnavailableError('shutting_down', 'the server is draining before it stops');
    return ensemble;
  }
}
