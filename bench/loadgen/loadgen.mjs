// @ts-check
/**
 * Load generator of wordstream's benchmark.
 *
 * Opens SSE clients (if any) and then WebSocket clients against one server.
 * It measures how long connecting all of them takes and when the SSE clients
 * received count events during that burst. After the connections settle, it
 * measures a window of whole ticks: tick-to-receive latency (receive time
 * minus the frame's `ts`), frames that did not arrive, and its own CPU time.
 *
 * The WebSocket clients run in wsclients, a C program on one epoll loop
 * (wsclients.c), which this script starts and drives through its stdin and
 * stdout. This script runs the SSE clients and times the window.
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
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  LOOP_DELAY_RESOLUTION_MS,
  cpuSeconds,
  emit,
  loopDelayMs,
  positiveInteger,
  positiveNumber,
  sleep,
  wallClockMs,
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
    // The wsclients program, built from wsclients.c (bench/clients.py builds it).
    'ws-clients': {
      type: 'string',
      default: fileURLToPath(new URL('build/wsclients', import.meta.url)),
    },
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
  wsClients: /** @type {string} */ (args['ws-clients']),
};
if (serverUrl.protocol !== 'ws:' || !/^\d+\.\d+\.\d+\.\d+$/.test(serverUrl.hostname)) {
  process.stderr.write(`loadgen: --url must be ws:// with an IPv4 address, got ${args.url}\n`);
  process.exit(2);
}
if (!fs.existsSync(config.wsClients)) {
  process.stderr.write(`loadgen: ${config.wsClients} is missing: build it from wsclients.c\n`);
  process.exit(2);
}
// The unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on Linux.
const CLOCK_TICKS_PER_S = 100;
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

/** @type {http.ClientRequest[]} */
const sseRequests = [];
/** @type {Map<string, number>} */
const errorCounts = new Map();
/** WebSocket clients open now. */
let openCount = 0;

const counters = {
  sseEvents: 0,
  sseFailed: 0,
  shuttingDown: false,
};

/** The measured window, as wsclients reports it. */
const measured = {
  firstSeq: 0,
  lastSeq: 0,
  // Every open client has received the window's last tick.
  complete: false,
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
 * (wallClockMs(), the clock wsclients reports the last open on) and counts.
 */
const burst = {
  recording: false,
  /** Wall-clock time (wallClockMs()) when the last WebSocket client opened. */
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
      burst.times[index].push(wallClockMs());
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

/**
 * The wsclients process: its events reach `listeners` by name, and `send`
 * writes one command line to it.
 */
const wsClients = {
  /** @type {import('node:child_process').ChildProcess | null} */
  process: null,
  /** @type {Map<string, (event: Record<string, any>) => void>} */
  listeners: new Map(),
  /** @param {string} command */
  send(command) {
    this.process?.stdin?.write(`${command}\n`);
  },
  /** Resolve with the next event named `name`. @param {string} name */
  next(name) {
    return new Promise((resolve) => this.listeners.set(name, resolve));
  },
};

/** This script's CPU seconds when the connect phase started. */
const connectStart = { cpu: 0 };

/**
 * Start wsclients and resolve with the connect phase's figures once each
 * client is open or has failed, or when the connect timeout passes.
 */
function openAllWebSockets() {
  connectStart.cpu = cpuSeconds();
  const child = spawn(
    config.wsClients,
    [
      `--host=${serverUrl.hostname}`,
      `--port=${serverUrl.port || 80}`,
      `--path=${serverUrl.pathname}${serverUrl.search}`,
      `--origin=${config.origin}`,
      `--clients=${config.clients}`,
      `--ticks=${config.ticks}`,
      `--max-pending=${config.maxPending}`,
      `--attempts=${config.attempts}`,
      `--connect-timeout=${config.connectTimeoutMs / 1000}`,
      ...(config.deflate ? ['--deflate'] : []),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  wsClients.process = child;
  child.on('exit', (code, signal) => {
    if (counters.shuttingDown) return;
    process.stderr.write(`loadgen: wsclients exited with ${code ?? signal}\n`);
    process.exit(1);
  });
  readline.createInterface({ input: /** @type {NodeJS.ReadableStream} */ (child.stdout) })
    .on('line', (line) => onWsClientsEvent(JSON.parse(line)));
  return wsClients.next('connected');
}

/** @param {Record<string, any>} event */
function onWsClientsEvent(event) {
  switch (event.event) {
    case 'progress':
      emit({ ...event, clients: config.clients });
      break;
    case 'connected':
      openCount = event.open;
      delete event.open;
      burst.lastOpenMs = event.last_open_ms;
      delete event.last_open_ms;
      // wsclients reports its own CPU; this script's SSE clients add theirs.
      event.loadgen_cpu_connect += (cpuSeconds() - connectStart.cpu) / event.connect_s;
      break;
    case 'closed':
      openCount = event.open;
      break;
    case 'first_frame':
      measured.firstSeq = event.first_seq;
      measured.lastSeq = event.first_seq + config.ticks - 1;
      measured.onStart?.();
      break;
    case 'last_tick':
      measured.onLastTick?.();
      break;
    case 'all_complete':
      measured.complete = true;
      measured.onAllComplete?.();
      break;
  }
  const listener = wsClients.listeners.get(event.event);
  if (listener) {
    wsClients.listeners.delete(event.event);
    const { event: _, ...figures } = event;
    listener(figures);
  }
}

/**
 * CPU seconds of this process and wsclients, from /proc/PID/stat's utime
 * and stime (fields 14 and 15, in clock ticks of 10 ms).
 */
function loadgenCpuSeconds() {
  const pid = wsClients.process?.pid;
  if (pid === undefined) return cpuSeconds();
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The fields after the command name, which is in parentheses, from field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return cpuSeconds() + (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
}

/** Resident memory of this process and wsclients, in MB. */
function loadgenRssMb() {
  const pid = wsClients.process?.pid;
  let rss = process.memoryUsage().rss;
  if (pid !== undefined) {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    rss += Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  }
  return rss / 2 ** 20;
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
 * Measure the window of `ticks` ticks and resolve with its timing once every
 * open client has received the last tick or DRAIN_MS has passed.
 */
function measureWindow() {
  return new Promise((resolve) => {
    const loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    const marks = { startCpu: 0, startMs: 0, endCpu: 0, endMs: 0 };
    let resolved = false;

    // NOTE: the markers follow the first frame received by half an interval.
    // Where delivering a tick takes longer than that (runserver at 10,000
    // clients), they fall inside a delivery, and the CPU figures cover about,
    // not exactly, `ticks` ticks.
    measured.onStart = () => {
      clearTimeout(noFrames);
      setTimeout(() => {
        marks.startCpu = loadgenCpuSeconds();
        marks.startMs = performance.now();
        loopDelay.enable();
        emit({ event: 'window_start', first_seq: measured.firstSeq });
      }, config.intervalMs / 2);
    };
    measured.onLastTick = () => {
      if (measured.endScheduled) return;
      measured.endScheduled = true;
      setTimeout(() => {
        marks.endCpu = loadgenCpuSeconds();
        marks.endMs = performance.now();
        loopDelay.disable();
        emit({ event: 'window_end', last_seq: measured.lastSeq });
        setTimeout(finish, DRAIN_MS);
        if (measured.complete) finish();
      }, config.intervalMs / 2);
    };
    measured.onAllComplete = () => {
      if (marks.endMs !== 0) finish();
    };
    wsClients.send('arm');
    const noFrames = setTimeout(() => {
      if (measured.firstSeq !== 0) return;
      process.stderr.write(`loadgen: no frame arrived within ${FIRST_FRAME_TIMEOUT_MS} ms\n`);
      shutDown();
      process.exit(4);
    }, FIRST_FRAME_TIMEOUT_MS);

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
      });
    }
  });
}

/**
 * Ask wsclients for the window's latencies, lost frames and counters, and
 * merge its error counts into this script's.
 */
async function windowFigures() {
  const result = wsClients.next('result');
  wsClients.send('result');
  const { errors, ...figures } = await result;
  for (const [key, count] of Object.entries(errors)) {
    errorCounts.set(key, (errorCounts.get(key) ?? 0) + count);
  }
  return figures;
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
  wsClients.process?.kill();
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
  const figures = await windowFigures();
  emit({
    event: 'result',
    clients: config.clients,
    sse_clients: config.sseClients,
    deflate: config.deflate,
    ticks: config.ticks,
    ...connectFigures,
    ...windowTimes,
    ...figures,
    sse_events: counters.sseEvents,
    sse_failed: counters.sseFailed,
    ...burstFigures(),
    errors: Object.fromEntries(errorCounts),
    loadgen_rss_mb: loadgenRssMb(),
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
