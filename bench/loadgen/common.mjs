// @ts-check
/**
 * Helpers shared by the benchmark's load generators: loadgen.mjs, which
 * measures clients that stay connected, and recovery.mjs, which measures a
 * reconnect burst.
 */
import path from 'node:path';
import WebSocket from 'ws';

// The script's name, which prefixes its error messages.
const PROGRAM = path.basename(process.argv[1] ?? 'loadgen', '.mjs');
// Sampling period of the event loop delay histogram, in milliseconds. Its
// values include this period, so it is subtracted from them.
export const LOOP_DELAY_RESOLUTION_MS = 10;
// Milliseconds to wait before a failed connection attempt is repeated.
const RETRY_DELAY_MS = 200;
// Milliseconds one WebSocket handshake may take.
const HANDSHAKE_TIMEOUT_MS = 30000;

/** @param {string} name @param {string | undefined} text @param {boolean} nonZero */
export function positiveInteger(name, text, nonZero) {
  const value = Number(text);
  if (!Number.isInteger(value) || value < (nonZero ? 1 : 0)) {
    process.stderr.write(`${PROGRAM}: --${name} must be an integer >= ${nonZero ? 1 : 0}, got ${text}\n`);
    process.exit(2);
  }
  return value;
}

/** @param {string} name @param {string | undefined} text */
export function positiveNumber(name, text) {
  const value = Number(text);
  if (!(value > 0)) {
    process.stderr.write(`${PROGRAM}: --${name} must be a number > 0, got ${text}\n`);
    process.exit(2);
  }
  return value;
}

/** @param {string} message */
export function warn(message) {
  process.stderr.write(`${PROGRAM}: ${message}\n`);
}

/** @param {Record<string, unknown>} message */
export function emit(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

/** Wall-clock time in milliseconds, with a fraction, comparable to a frame's ts. */
export function wallClockMs() {
  return performance.timeOrigin + performance.now();
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** CPU seconds this process has used, user and system, all threads. */
export function cpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** @param {number} nanoseconds a value of the event loop delay histogram */
export function loopDelayMs(nanoseconds) {
  return Math.max(0, nanoseconds / 1e6 - LOOP_DELAY_RESOLUTION_MS);
}

/**
 * Return p50, p99, max and min of latencies in milliseconds, each null when
 * there are none. Sorts latencies in place.
 * @param {Float64Array} latencies
 */
export function latencyFigures(latencies) {
  latencies.sort();
  const at = (/** @type {number} */ q) =>
    latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : null;
  return {
    p50_ms: at(0.5),
    p99_ms: at(0.99),
    max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    min_ms: latencies.length ? latencies[0] : null,
  };
}

/**
 * @typedef {object} ConnectOptions
 * @property {number} count clients to open, numbered 0 to count - 1
 * @property {(index: number) => string} url the URL of client index
 * @property {string} origin the Origin header of every handshake
 * @property {boolean} deflate whether to offer permessage-deflate
 * @property {number} maxPending handshakes in flight at once
 * @property {number} attempts attempts per client before it counts as failed
 * @property {number} timeoutMs milliseconds the whole connect phase may take
 * @property {(index: number, socket: WebSocket) => void} onOpen
 * @property {(index: number, data: WebSocket.RawData) => void} onMessage
 * @property {(index: number) => void} onClose called when an open socket closes
 * @property {(index: number) => void} [onFailed] called when a client has
 *   failed its last attempt
 * @property {(error: Error) => void} onError
 * @property {(counts: {opened: number, pending: number, failed: number}) => void} [onProgress]
 *   called about once a second until the connect phase ends
 */

/**
 * Open `count` WebSocket clients, at most maxPending handshakes at a time,
 * retrying a failed handshake after RETRY_DELAY_MS. Resolves with the connect
 * phase's figures once each client is open or has failed `attempts` times, or
 * when the timeout passes.
 * @param {ConnectOptions} options
 */
export function openWebSockets(options) {
  return new Promise((resolve) => {
    const started = performance.now();
    const cpuStarted = cpuSeconds();
    let next = 0;
    let pending = 0;
    let opened = 0;
    let failed = 0;
    let retries = 0;
    let finished = false;

    const progress = setInterval(() => {
      options.onProgress?.({ opened, pending, failed });
    }, 1000);
    const timeout = setTimeout(() => finish(true), options.timeoutMs);

    /** @param {boolean} timedOut */
    function finish(timedOut) {
      if (finished) return;
      finished = true;
      clearInterval(progress);
      clearTimeout(timeout);
      const seconds = (performance.now() - started) / 1000;
      resolve({
        connect_s: seconds,
        connect_rate: opened / seconds,
        connected: opened,
        connect_failed: options.count - opened,
        connect_retries: retries,
        connect_timed_out: timedOut,
        loadgen_cpu_connect: (cpuSeconds() - cpuStarted) / seconds,
      });
    }

    function launch() {
      while (!finished && pending < options.maxPending && next < options.count) {
        connect(next++, 1);
      }
    }

    /** @param {number} index @param {number} attempt */
    function connect(index, attempt) {
      pending += 1;
      let isOpen = false;
      const socket = new WebSocket(options.url(index), {
        perMessageDeflate: options.deflate,
        headers: { Origin: options.origin },
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      });
      socket.on('open', () => {
        isOpen = true;
        pending -= 1;
        opened += 1;
        options.onOpen(index, socket);
        if (opened + failed === options.count) finish(false);
        else launch();
      });
      socket.on('message', (data) => options.onMessage(index, data));
      socket.on('error', options.onError);
      socket.on('close', () => {
        if (isOpen) {
          options.onClose(index);
          return;
        }
        pending -= 1;
        if (finished) return;
        if (attempt < options.attempts) {
          pending += 1;
          retries += 1;
          setTimeout(() => {
            pending -= 1;
            connect(index, attempt + 1);
          }, RETRY_DELAY_MS);
          return;
        }
        failed += 1;
        options.onFailed?.(index);
        if (opened + failed === options.count) finish(false);
        else launch();
      });
    }

    if (options.count === 0) finish(false);
    else launch();
  });
}
