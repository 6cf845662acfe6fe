// @ts-check
/**
 * Load generator of wordstream's benchmark.
 *
 * Opens SSE clients (if any) and then WebSocket clients against one server.
 * It measures how long connecting all of them takes and when the SSE clients
 * received count events during that burst. After the connections settle, it
 * measures a window of whole ticks: tick-to-receive latency (receive time
 * minus the frame's `ts`), frames that did not arrive, and this process's own
 * CPU time and garbage collection pauses.
 *
 * It writes one JSON object per line to stdout, each with an `event` key:
 *   progress      during the connect phase, about once a second
 *   connected     after the connect phase
 *   window_start  half an interval after the tick before the window
 *   window_end    half an interval after the window's last tick
 *   result        the measurements; the process exits after it
 * Because the window markers fall between two ticks, whatever a caller samples
 * at window_start and window_end covers exactly `ticks` ticks.
 */
import http from 'node:http';
import { PerformanceObserver, constants, monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  LOOP_DELAY_RESOLUTION_MS,
  cpuSeconds,
  emit,
  latencyFigures,
  loopDelayMs,
  openWebSockets,
  positiveInteger,
  positiveNumber,
  sleep,
  wallClockMs,
  warn,
} from './common.mjs';

const { values: args } = parseArgs({
  options: {
    // The server's WebSocket URL, e.g. ws://127.0.0.1:8000/ws.
    url: { type: 'string' },
    // WebSocket clients to open.
    clients: { type: 'string', default: '100' },
    // SSE clients to open before the WebSocket clients.
    'sse-clients': { type: 'string', default: '0' },
    'sse-path': { type: 'string', default: '/api/connections' },
    // Origin header of every request, as a browser on the server's page sends it.
    origin: { type: 'string' },
    // Offer permessage-deflate in the handshake, as browsers do.
    deflate: { type: 'boolean', default: false },
    // Ticks in the measured window.
    ticks: { type: 'string', default: '15' },
    // Seconds between two ticks: the server's WORD_INTERVAL.
    interval: { type: 'string', default: '1.0' },
    // Seconds to wait after the connect phase before the window opens.
    settle: { type: 'string', default: '2' },
    // Handshakes in flight at once during the connect phase.
    'max-pending': { type: 'string', default: '1000' },
    // Attempts per client before it counts as failed.
    attempts: { type: 'string', default: '3' },
    // Seconds the whole connect phase may take.
    'connect-timeout': { type: 'string', default: '120' },
    // After window_end, keep the clients open until a line arrives on stdin,
    // so that the caller can sample the server with every client connected.
    'wait-ack': { type: 'boolean', default: false },
  },
});

if (!args.url) {
  process.stderr.write('loadgen: --url is required, e.g. --url ws://127.0.0.1:8000/ws\n');
  process.exit(2);
}
const serverUrl = new URL(args.url);
const config = {
  url: args.url,
  clients: positiveInteger('clients', args.clients, true),
  sseClients: positiveInteger('sse-clients', args['sse-clients'], false),
  ssePath: args['sse-path'],
  origin: args.origin ?? `http://${serverUrl.host}`,
  deflate: Boolean(args.deflate),
  ticks: positiveInteger('ticks', args.ticks, true),
  intervalMs: positiveNumber('interval', args.interval) * 1000,
  settleMs: positiveNumber('settle', args.settle) * 1000,
  maxPending: positiveInteger('max-pending', args['max-pending'], true),
  attempts: positiveInteger('attempts', args.attempts, true),
  connectTimeoutMs: positiveNumber('connect-timeout', args['connect-timeout']) * 1000,
  waitAck: Boolean(args['wait-ack']),
};
// Milliseconds to wait for late frames of the window's last tick.
const DRAIN_MS = Math.max(5000, 3 * config.intervalMs);
// Milliseconds to wait for the caller's line after window_end.
const ACK_TIMEOUT_MS = 60000;
// Milliseconds to wait for the first frame once the window is armed.
const FIRST_FRAME_TIMEOUT_MS = Math.max(10000, 5 * config.intervalMs);
// The whole run stops by itself after this many milliseconds.
const RUN_LIMIT_MS =
  2 * config.connectTimeoutMs +
  config.settleMs +
  (config.ticks + 3) * config.intervalMs +
  DRAIN_MS +
  ACK_TIMEOUT_MS +
  30000;

/** Per-client counters, indexed by client number. */
const lastSeq = new Float64Array(config.clients);
const windowFrames = new Int32Array(config.clients);
/** @type {(WebSocket | undefined)[]} */
const sockets = new Array(config.clients);
/** @type {http.ClientRequest[]} */
const sseRequests = [];
/** @type {Map<string, number>} */
const errorCounts = new Map();
/** WebSocket clients open now. */
let openCount = 0;
/** The newest tick's seq and the frames of it received so far. */
const newestTick = { seq: 0, frames: 0 };
// node's gc(), exposed by --expose-gc.
const collectGarbage = /** @type {(() => void) | undefined} */ (globalThis.gc);
if (collectGarbage === undefined) {
  warn('gc() is not exposed: run node with --expose-gc to collect between ticks');
}

const counters = {
  seqGaps: 0,
  outOfOrder: 0,
  disconnects: 0,
  sseEvents: 0,
  sseFailed: 0,
  framesTotal: 0,
  shuttingDown: false,
};

/** The measured window: the ticks firstSeq..lastSeq, once a frame arms it. */
const measured = {
  armed: false,
  firstSeq: 0,
  lastSeq: 0,
  latencies: new Float64Array(config.clients * config.ticks),
  samples: 0,
  // Per tick of the window: the lowest and highest latency of its frames.
  tickMinMs: new Float64Array(config.ticks).fill(Infinity),
  tickMaxMs: new Float64Array(config.ticks),
  // Clients that have received the window's last tick.
  complete: 0,
  endScheduled: false,
  /** @type {(() => void) | null} */
  onStart: null,
  /** @type {(() => void) | null} */
  onLastTick: null,
  /** @type {(() => void) | null} */
  onAllComplete: null,
};

/**
 * The count events of each SSE client while the WebSocket clients connect,
 * from the first handshake until the window is armed: their arrival times
 * (performance.now()) and counts.
 */
const burst = {
  recording: false,
  /** performance.now() when the last WebSocket client opened. */
  lastOpenMs: 0,
  /** The open WebSocket clients when the recording stopped. */
  finalCount: 0,
  /** @type {number[][]} */
  times: [],
  /** @type {number[][]} */
  counts: [],
};

/**
 * Return a handler of one SSE client's body chunks that counts its events
 * and records its count events during the burst.
 * @param {number} index the SSE client's number
 * @param {() => void} onFirstEvent called once, at the first event
 */
function eventStreamParser(index, onFirstEvent) {
  burst.times[index] = [];
  burst.counts[index] = [];
  let buffer = '';
  let first = true;
  return (/** @type {string} */ chunk) => {
    buffer += chunk;
    const blocks = buffer.split('\n\n');
    // The text after the last blank line is an incomplete event.
    buffer = blocks.pop() ?? '';
    for (const block of blocks) {
      if (!block.startsWith('data:')) continue;
      counters.sseEvents += 1;
      if (first) {
        first = false;
        onFirstEvent();
      }
      if (!burst.recording) continue;
      const data = JSON.parse(block.slice('data:'.length));
      burst.times[index].push(performance.now());
      burst.counts[index].push(Number(data.active_connections));
    }
  };
}

/**
 * Return the most events that one SSE client received within any second of
 * the burst, and how long after the last WebSocket client opened each SSE
 * client received the final count. A client whose last count differs from
 * the open WebSocket clients counts as missing.
 */
function burstFigures() {
  if (config.sseClients === 0) {
    return { sse_burst_max_per_s: null, sse_final_delay_ms: null, sse_final_missing: 0 };
  }
  let maxPerSecond = 0;
  let missing = 0;
  const delays = [];
  for (let index = 0; index < config.sseClients; index += 1) {
    // A client whose request failed before a response has no events.
    const times = burst.times[index] ?? [];
    const counts = burst.counts[index] ?? [];
    maxPerSecond = Math.max(maxPerSecond, maxWithinOneSecond(times));
    const last = counts.length - 1;
    if (last < 0 || counts[last] !== burst.finalCount) {
      missing += 1;
      continue;
    }
    // The event from which on the client's count stayed final.
    let reached = last;
    while (reached > 0 && counts[reached - 1] === burst.finalCount) reached -= 1;
    delays.push(times[reached] - burst.lastOpenMs);
  }
  return {
    sse_burst_max_per_s: maxPerSecond,
    sse_final_delay_ms: delays.length ? Math.max(...delays) : null,
    sse_final_missing: missing,
  };
}

/**
 * Return the largest number of the sorted times that fall within one second.
 * @param {number[]} times
 */
function maxWithinOneSecond(times) {
  let max = 0;
  let start = 0;
  for (let end = 0; end < times.length; end += 1) {
    while (times[end] - times[start] >= 1000) start += 1;
    max = Math.max(max, end - start + 1);
  }
  return max;
}

/** @param {string} key */
function countError(key) {
  errorCounts.set(key, (errorCounts.get(key) ?? 0) + 1);
}

/** @param {number} index @param {WebSocket.RawData} data */
function onFrame(index, data) {
  const receivedAt = wallClockMs();
  const frame = JSON.parse(data.toString());
  const seq = Number(frame.seq);
  counters.framesTotal += 1;
  const previous = lastSeq[index];
  if (previous !== 0) {
    if (seq > previous + 1) counters.seqGaps += seq - previous - 1;
    else if (seq <= previous) counters.outOfOrder += 1;
  }
  lastSeq[index] = seq;
  countTickFrame(seq);

  if (measured.armed && measured.firstSeq === 0) {
    measured.firstSeq = seq + 1;
    measured.lastSeq = seq + config.ticks;
    measured.onStart?.();
  }
  if (measured.firstSeq === 0 || seq < measured.firstSeq || seq > measured.lastSeq) return;
  const latency = receivedAt - Number(frame.ts);
  if (measured.samples < measured.latencies.length) {
    measured.latencies[measured.samples++] = latency;
  }
  const tick = seq - measured.firstSeq;
  measured.tickMinMs[tick] = Math.min(measured.tickMinMs[tick], latency);
  measured.tickMaxMs[tick] = Math.max(measured.tickMaxMs[tick], latency);
  windowFrames[index] += 1;
  if (seq === measured.lastSeq) {
    measured.onLastTick?.();
    measured.complete += 1;
    if (measured.complete === openCount) measured.onAllComplete?.();
  }
}

/**
 * Count a frame of tick seq, and collect garbage once every open client has
 * received the newest tick, when no frame is in flight. The young generation
 * then starts each tick empty, so node rarely has to stop for a collection
 * while frames arrive. A tick still arriving when the next one starts gets
 * no collection.
 * @param {number} seq
 */
function countTickFrame(seq) {
  if (seq > newestTick.seq) {
    newestTick.seq = seq;
    newestTick.frames = 0;
  }
  if (seq !== newestTick.seq) return;
  newestTick.frames += 1;
  if (newestTick.frames === openCount && collectGarbage !== undefined) {
    setImmediate(collectGarbage);
  }
}

/**
 * Open every WebSocket client, at most maxPending handshakes at a time.
 * Resolves with the connect phase's figures once each client is open or has
 * failed `attempts` times, or when the connect timeout passes.
 */
function openAllWebSockets() {
  return openWebSockets({
    count: config.clients,
    url: () => config.url,
    origin: config.origin,
    deflate: config.deflate,
    maxPending: config.maxPending,
    attempts: config.attempts,
    timeoutMs: config.connectTimeoutMs,
    onOpen: (index, socket) => {
      openCount += 1;
      sockets[index] = socket;
      burst.lastOpenMs = performance.now();
    },
    onMessage: onFrame,
    onClose: () => {
      openCount -= 1;
      if (!counters.shuttingDown) counters.disconnects += 1;
    },
    onError: (error) => {
      countError(/** @type {NodeJS.ErrnoException} */ (error).code ?? error.message);
    },
    onProgress: ({ opened, pending, failed }) => {
      emit({ event: 'progress', opened, pending, failed, clients: config.clients });
    },
  });
}

/**
 * Open the SSE clients, at most maxPending at a time, and resolve once each
 * has received its first event or failed.
 */
function openEventStreams() {
  return new Promise((resolve) => {
    if (config.sseClients === 0) {
      resolve(undefined);
      return;
    }
    const url = new URL(config.ssePath, `http://${serverUrl.host}`);
    let next = 0;
    let pending = 0;
    let settled = 0;

    function launch() {
      while (pending < config.maxPending && next < config.sseClients) {
        open(next);
        next += 1;
      }
    }

    function settleOne() {
      pending -= 1;
      settled += 1;
      if (settled === config.sseClients) resolve(undefined);
      else launch();
    }

    /** @param {number} index */
    function open(index) {
      pending += 1;
      let first = true;
      const timer = setTimeout(() => {
        if (!first) return;
        first = false;
        countError('sse first event timed out');
        counters.sseFailed += 1;
        settleOne();
      }, config.connectTimeoutMs);
      const request = http.get(
        url,
        { agent: false, headers: { Accept: 'text/event-stream', Origin: config.origin } },
        (response) => {
          if (response.statusCode !== 200) {
            countError(`sse status ${response.statusCode}`);
            counters.sseFailed += 1;
            response.resume();
            settleOne();
            return;
          }
          response.setEncoding('utf8');
          response.on(
            'data',
            eventStreamParser(index, () => {
              if (!first) return;
              first = false;
              clearTimeout(timer);
              settleOne();
            }),
          );
        },
      );
      request.on('error', (error) => {
        if (counters.shuttingDown) return;
        countError(`sse ${/** @type {NodeJS.ErrnoException} */ (error).code ?? error.message}`);
        if (first) {
          first = false;
          counters.sseFailed += 1;
          settleOne();
        }
      });
      sseRequests.push(request);
    }

    launch();
  });
}

/**
 * Sum up the garbage collection pauses that node started by itself between
 * start() and stop(). Such a pause delays every frame that arrives during it,
 * so it adds to the latencies measured. The collections forced after each
 * tick are counted in `between`, without their time.
 */
function gcPauses() {
  const figures = { count: 0, totalMs: 0, maxMs: 0, between: 0 };
  /** @param {PerformanceEntry[]} entries */
  const add = (entries) => {
    for (const entry of entries) {
      const flags = /** @type {{ flags?: number }} */ (entry.detail)?.flags ?? 0;
      if (flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) {
        figures.between += 1;
        continue;
      }
      figures.count += 1;
      figures.totalMs += entry.duration;
      figures.maxMs = Math.max(figures.maxMs, entry.duration);
    }
  };
  const observer = new PerformanceObserver((list) => add(list.getEntries()));
  return {
    figures,
    start: () => observer.observe({ entryTypes: ['gc'] }),
    stop: () => {
      // Entries not yet delivered to the callback.
      add(observer.takeRecords());
      observer.disconnect();
    },
  };
}

/**
 * Measure the window of `ticks` ticks and resolve with its figures once every
 * open client has received the last tick or DRAIN_MS has passed.
 */
function measureWindow() {
  return new Promise((resolve) => {
    const loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    const collections = gcPauses();
    const marks = { startCpu: 0, startMs: 0, endCpu: 0, endMs: 0 };
    let resolved = false;

    measured.onStart = () => {
      clearTimeout(noFrames);
      setTimeout(() => {
        marks.startCpu = cpuSeconds();
        marks.startMs = performance.now();
        loopDelay.enable();
        collections.start();
        emit({ event: 'window_start', first_seq: measured.firstSeq });
      }, config.intervalMs / 2);
    };
    measured.onLastTick = () => {
      if (measured.endScheduled) return;
      measured.endScheduled = true;
      setTimeout(() => {
        marks.endCpu = cpuSeconds();
        marks.endMs = performance.now();
        loopDelay.disable();
        collections.stop();
        emit({ event: 'window_end', last_seq: measured.lastSeq });
        finishAfter(DRAIN_MS);
        if (measured.complete >= openCount) finish();
      }, config.intervalMs / 2);
    };
    measured.onAllComplete = () => {
      if (marks.endMs !== 0) finish();
    };
    measured.armed = true;
    const noFrames = setTimeout(() => {
      if (measured.firstSeq !== 0) return;
      process.stderr.write(`loadgen: no frame arrived within ${FIRST_FRAME_TIMEOUT_MS} ms\n`);
      shutDown();
      process.exit(4);
    }, FIRST_FRAME_TIMEOUT_MS);

    /** @param {number} ms */
    function finishAfter(ms) {
      setTimeout(finish, ms);
    }

    function finish() {
      if (resolved) return;
      resolved = true;
      const seconds = (marks.endMs - marks.startMs) / 1000;
      resolve({
        first_seq: measured.firstSeq,
        last_seq: measured.lastSeq,
        window_s: seconds,
        loadgen_cpu: (marks.endCpu - marks.startCpu) / seconds,
        loadgen_loop_delay_p99_ms: loopDelayMs(loopDelay.percentile(99)),
        loadgen_loop_delay_max_ms: loopDelayMs(loopDelay.max),
        loadgen_gc_pauses: collections.figures.count,
        loadgen_gc_ms: collections.figures.totalMs,
        loadgen_gc_max_ms: collections.figures.maxMs,
        loadgen_gc_between_ticks: collections.figures.between,
      });
    }
  });
}

/** Summarize the window's latencies and lost frames. */
function windowFigures() {
  let lost = 0;
  let clientsWithLoss = 0;
  for (let index = 0; index < config.clients; index += 1) {
    if (sockets[index] === undefined) continue;
    const missing = config.ticks - windowFrames[index];
    if (missing > 0) {
      lost += missing;
      clientsWithLoss += 1;
    }
  }
  return {
    frames: measured.samples,
    ...latencyFigures(measured.latencies.subarray(0, measured.samples)),
    lost,
    clients_with_loss: clientsWithLoss,
    // The lowest and highest latency of each tick. A tick that started late
    // raises both, and a tick that took long to send raises the highest.
    tick_latency_ms: Array.from(measured.tickMaxMs, (max, tick) => [
      Math.round(measured.tickMinMs[tick]),
      Math.round(max),
    ]),
  };
}

/** Resolve when a line arrives on stdin, or after ACK_TIMEOUT_MS. */
function waitForAck() {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      process.stderr.write(`loadgen: no acknowledgement within ${ACK_TIMEOUT_MS} ms\n`);
      resolve(undefined);
    }, ACK_TIMEOUT_MS);
    process.stdin.once('data', () => {
      clearTimeout(timer);
      process.stdin.pause();
      resolve(undefined);
    });
  });
}

function shutDown() {
  counters.shuttingDown = true;
  for (const socket of sockets) socket?.terminate();
  for (const request of sseRequests) request.destroy();
}

async function main() {
  const limit = setTimeout(() => {
    process.stderr.write(`loadgen: run limit of ${RUN_LIMIT_MS} ms reached; stopping\n`);
    shutDown();
    process.exit(3);
  }, RUN_LIMIT_MS);

  await openEventStreams();
  burst.recording = true;
  const connectFigures = await openAllWebSockets();
  emit({ event: 'connected', ...connectFigures });
  await sleep(config.settleMs);
  burst.recording = false;
  burst.finalCount = openCount;
  const windowTimes = await measureWindow();
  if (config.waitAck) await waitForAck();
  const figures = windowFigures();
  emit({
    event: 'result',
    clients: config.clients,
    sse_clients: config.sseClients,
    deflate: config.deflate,
    ticks: config.ticks,
    ...connectFigures,
    ...windowTimes,
    ...figures,
    seq_gaps: counters.seqGaps,
    out_of_order: counters.outOfOrder,
    disconnects: counters.disconnects,
    frames_total: counters.framesTotal,
    sse_events: counters.sseEvents,
    sse_failed: counters.sseFailed,
    ...burstFigures(),
    errors: Object.fromEntries(errorCounts),
    loadgen_rss_mb: process.memoryUsage().rss / 2 ** 20,
  });
  clearTimeout(limit);
  shutDown();
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`loadgen: ${error?.stack ?? error}\n`);
  shutDown();
  process.exit(1);
});
