/**
 * A hand-rolled progress bar on stderr: one line redrawn in place on a terminal, at most every
 * 200 ms; elsewhere (logs, CI) one plain line per finished unit so the output stays readable.
 */
export interface ProgressState {
  readonly done: number;
  readonly total: number;
  readonly detail: string;
}

/** Where progress goes: stderr, or anything with write (isTTY and columns when it is a terminal). */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export class Progress {
  private lastDraw = 0;
  private readonly started = Date.now();
  private readonly tty: boolean;

  constructor(private readonly stream: ProgressStream | null) {
    this.tty = Boolean(stream?.isTTY);
  }

  /** `force` draws even inside the throttle window (a unit just finished). */
  update(state: ProgressState, force = false): void {
    if (!this.stream) return;
    const now = Date.now();
    if (this.tty) {
      if (!force && now - this.lastDraw < 200) return;
      this.lastDraw = now;
      const columns = this.stream.columns ?? 100;
      this.stream.write(`\r${formatProgress(state, now - this.started, 24).slice(0, columns - 1)}\u001b[K`);
    } else if (force) {
      this.stream.write(`${formatProgress(state, now - this.started, 24)}\n`);
    }
  }

  finish(): void {
    if (this.stream && this.tty) this.stream.write('\n');
  }
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export function formatProgress(state: ProgressState, elapsedMs: number, width: number): string {
  const fraction = state.total === 0 ? 1 : Math.min(1, state.done / state.total);
  const filled = Math.round(fraction * width);
  const eta = state.done > 0 && state.done < state.total ? ` eta ${formatDuration((elapsedMs / state.done) * (state.total - state.done))}` : '';
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${state.done}/${state.total} `
    + `${formatDuration(elapsedMs)}${eta} ${state.detail}`;
}
