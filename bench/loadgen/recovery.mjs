// @ts-check
/**
 * Reconnect-burst load generator of wordstream's benchmark.
 *
 * Opens `live` and then `recovering` WebSocket clients against one server and
 * measures the live clients' tick-to-receive latency over `ticks` ticks: the
 * baseline. Then it closes every recovering client at once, lets
 * `missed-ticks` ticks pass, and reopens them all at once with
 * ?since=<the last seq each received>&epoch=<epoch>, as clients do after a
 * proxy restart. It measures:
 *   - the recovery time, from the first reconnect attempt until the last
 *     recovering client has received its notice and every missed word, and
 *     the same time per client;
 *   - per recovering client, whether its notice has recovered: true and
 *     whether the missed seqs and then the live stream arrived in order, with
 *     no duplicate and no gap, up to the tick after the recovery completed;
 *   - the live clients' latency over the ticks from the reconnect until the
 *     recovery completed plus one more tick, and the frames they lost.
 *
 * It writes one JSON object per line to stdout, each with an `event` key:
 *   progress        about once a second while clients connect or reconnect
 *   connected       after the connect phase
 *   baseline_start  half an interval after the tick before the baseline
 *   baseline_end    half an interval after the baseline's last tick
 *   closed          right after the recovering clients were closed
 *   reconnecting    when the reconnect burst starts
 *   recovered       when every recovering client has its missed words, or
 *                   has failed, or the recovery timeout passed
 *   recovery_end    when the live clients have the tick after the recovery
 *   result          the measurements; the process exits after it
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
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
    // Clients that stay connected and whose latency is measured.
    live: { type: 'string', default: '5000' },
    // Clients that close and reconnect with ?since=&epoch=.
    recovering: { type: 'string', default: '1000' },
    // Ticks of the baseline, measured before the recovering clients close.
    ticks: { type: 'string', default: '15' },
    // Ticks that pass between the close and the reconnect.
    'missed-ticks': { type: 'string', default: '5' },
    // Seconds between two ticks: the server's WORD_INTERVAL.
    interval: { type: 'string', default: '1.0' },
    // Seconds to wait after the connect phase before the baseline.
    settle: { type: 'string', default: '2' },
    // Handshakes in flight at once during the first connect phase; the
    // reconnect burst starts every handshake at once.
    'max-pending': { type: 'string', default: '1000' },
    // Attempts per client before it counts as failed, in both phases.
    attempts: { type: 'string', default: '3' },
    // Seconds the first connect phase may take.
    'connect-timeout': { type: 'string', default: '120' },
    // Seconds the recovery may take before it counts as incomplete.
    'recovery-timeout': { type: 'string', default: '30' },
    // Origin header of every request, as a browser on the server's page sends it.
    origin: { type: 'string' },
  },
});

if (!args.url) {
  warn('--url is required, e.g. --url ws://127.0.0.1:8000/ws');
  process.exit(2);
}
const config = {
  url: args.url,
  live: positiveInteger('live', args.live, true),
  recovering: positiveInteger('recovering', args.recovering, true),
  ticks: positiveInteger('ticks', args.ticks, true),
  missedTicks: positiveInteger('missed-ticks', args['missed-ticks'], true),
  intervalMs: positiveNumber('interval', args.interval) * 1000,
  settleMs: positiveNumber('settle', args.settle) * 1000,
  maxPending: positiveInteger('max-pending', args['max-pending'], true),
  attempts: positiveInteger('attempts', args.attempts, true),
  connectTimeoutMs: positiveNumber('connect-timeout', args['connect-timeout']) * 1000,
  recoveryTimeoutMs: positiveNumber('recovery-timeout', args['recovery-timeout']) * 1000,
  origin: args.origin ?? `http://${new URL(args.url).host}`,
};
// Milliseconds to wait for late frames of a tick.
const DRAIN_MS = Math.max(5000, 3 * config.intervalMs);
// Milliseconds to wait for the first frame after the connect phase.
const FIRST_FRAME_TIMEOUT_MS = Math.max(10000, 5 * config.intervalMs);
// The whole run stops by itself after this many milliseconds.
const RUN_LIMIT_MS =
  config.connectTimeoutMs +
  config.settleMs +
  FIRST_FRAME_TIMEOUT_MS +
  (config.ticks + config.missedTicks + 4) * config.intervalMs +
  config.recoveryTimeoutMs +
  4 * DRAIN_MS +
  30000;

/**
 * Clients are numbered with the live ones first: 0 to live - 1 are live,
 * live to live + recovering - 1 recover.
 */
const total = config.live + config.recovering;
/** The last seq each client received before the burst. */
const lastSeq = new Float64Array(total);
/** @type {(import('ws').WebSocket | undefined)[]} */
const sockets = new Array(total);
/** @type {Map<string, number>} */
const errorCounts = new Map();
let shuttingDown = false;
/** The stream's epoch, from the first frame. */
let epoch = '';

/** The live clients' frames and the ticks recorded from the baseline on. */
const live = {
  open: 0,
  disconnects: 0,
  seqGaps: 0,
  outOfOrder: 0,
  otherEpoch: 0,
  // The newest seq any live client has received, and that tick's ts.
  newestSeq: 0,
  newestTs: 0,
  // Ticks with a seq from this one on are recorded.
  recordFrom: Infinity,
  /** @type {Map<number, {ts: number, latencies: number[]}>} */
  ticks: new Map(),
};

/**
 * @typedef {object} Recovery
 * @property {number} client the client's number
 * @property {number} since the last seq it received before it closed
 * @property {Record<string, unknown> | null} notice the first frame after the reconnect
 * @property {number} expected missed words that the notice announced
 * @property {number} received missed words received so far
 * @property {number} nextSeq the seq that the next frame must have
 * @property {number} lastSeq the newest seq received after the reconnect
 * @property {number} doneMs performance.now() once the notice and every
 *   missed word had arrived, or 0
 * @property {boolean} open
 * @property {boolean} finished whether the recovery wait no longer waits for it
 * @property {boolean} reachedEnd whether it has received the last measured tick
 * @property {string} problem the first deviation from an exact recovery, or ''
 */

/** The reconnect burst's state. */
const burst = {
  // Set once the recovering clients are closed: their first sockets' frames
  // are ignored from then on.
  closed: false,
  /** @type {Recovery[]} */
  recoveries: [],
  startMs: 0,
  startWall: 0,
  // Recoveries that are done, failed or closed.
  finished: 0,
  lastFinishedWall: 0,
  open: 0,
  // The tick after the recovery completed, the last one measured; 0 until known.
  endSeq: 0,
  reachedEnd: 0,
};

/** @param {string} key */
function countError(key) {
  errorCounts.set(key, (errorCounts.get(key) ?? 0) + 1);
}

/** Checks run after every frame by waitUntil. @type {Set<() => void>} */
const waiters = new Set();

function notify() {
  for (const check of waiters) check();
}

/**
 * Resolve with true once condition() holds, checked now and after every
 * frame, or with false after timeoutMs.
 * @param {() => boolean} condition @param {number} timeoutMs
 * @returns {Promise<boolean>}
 */
function waitUntil(condition, timeoutMs) {
  return new Promise((resolve) => {
    if (condition()) {
      resolve(true);
      return;
    }
    const check = () => {
      if (condition()) done(true);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    /** @param {boolean} value */
    function done(value) {
      waiters.delete(check);
      clearTimeout(timer);
      resolve(value);
    }
    waiters.add(check);
  });
}

/** @param {import('ws').RawData} data */
function parseFrame(data) {
  return /** @type {Record<string, unknown>} */ (JSON.parse(data.toString()));
}

/** @param {number} index @param {import('ws').RawData} data */
function onLiveFrame(index, data) {
  const receivedAt = wallClockMs();
  const frame = parseFrame(data);
  const seq = Number(frame.seq);
  const ts = Number(frame.ts);
  if (epoch === '') epoch = String(frame.epoch);
  else if (frame.epoch !== epoch) live.otherEpoch += 1;
  const previous = lastSeq[index];
  if (previous !== 0) {
    if (seq > previous + 1) live.seqGaps += seq - previous - 1;
    else if (seq <= previous) live.outOfOrder += 1;
  }
  lastSeq[index] = seq;
  if (seq > live.newestSeq) {
    live.newestSeq = seq;
    live.newestTs = ts;
  }
  if (seq >= live.recordFrom) {
    let tick = live.ticks.get(seq);
    if (tick === undefined) {
      tick = { ts, latencies: [] };
      live.ticks.set(seq, tick);
    }
    tick.latencies.push(receivedAt - ts);
  }
  notify();
}

/**
 * Record the seq of a recovering client's frame before the burst.
 * @param {number} index @param {import('ws').RawData} data
 */
function onSteadyFrame(index, data) {
  if (burst.closed) return;
  const frame = parseFrame(data);
  if (epoch === '') epoch = String(frame.epoch);
  lastSeq[index] = Number(frame.seq);
}

/** @param {Recovery} recovery @param {string} problem */
function flag(recovery, problem) {
  if (recovery.problem === '') recovery.problem = problem;
}

/** @param {Recovery} recovery */
function finish(recovery) {
  if (recovery.finished) return;
  recovery.finished = true;
  burst.finished += 1;
  burst.lastFinishedWall = wallClockMs();
}

/**
 * Check a recovering client's frame after the reconnect: first the notice,
 * then the missed words, then the live stream, each seq one above the last.
 * @param {Recovery} recovery @param {import('ws').RawData} data
 */
function onRecoveryFrame(recovery, data) {
  const now = performance.now();
  const frame = parseFrame(data);
  if (recovery.notice === null && 'recovered' in frame) {
    recovery.notice = frame;
    if (frame.recovered === true) {
      if (frame.epoch !== epoch) flag(recovery, 'notice has another epoch');
      recovery.expected = Number(frame.words);
    }
    if (recovery.expected === 0) {
      recovery.doneMs = now;
      finish(recovery);
    }
    notify();
    return;
  }
  if (recovery.notice === null) {
    recovery.notice = {};
    flag(recovery, 'a word came before the notice');
    finish(recovery);
  }
  const seq = Number(frame.seq);
  if (recovery.notice.recovered === true) {
    if (frame.epoch !== epoch) flag(recovery, 'a word has another epoch');
    if (seq < recovery.nextSeq) flag(recovery, 'a seq came twice or out of order');
    else if (seq > recovery.nextSeq) flag(recovery, 'a gap in seq');
  }
  recovery.nextSeq = Math.max(recovery.nextSeq, seq + 1);
  recovery.lastSeq = Math.max(recovery.lastSeq, seq);
  if (recovery.received < recovery.expected) {
    recovery.received += 1;
    if (recovery.received === recovery.expected) {
      recovery.doneMs = now;
      finish(recovery);
    }
  }
  if (burst.endSeq !== 0 && seq >= burst.endSeq && !recovery.reachedEnd) {
    recovery.reachedEnd = true;
    burst.reachedEnd += 1;
  }
  notify();
}

/** Return whether every open live client has received the tick seq. @param {number} seq */
function liveHas(seq) {
  const tick = live.ticks.get(seq);
  return tick !== undefined && tick.latencies.length >= live.open;
}

/** Open the live and the recovering clients. */
function openAll() {
  return openWebSockets({
    count: total,
    url: () => config.url,
    origin: config.origin,
    deflate: false,
    maxPending: config.maxPending,
    attempts: config.attempts,
    timeoutMs: config.connectTimeoutMs,
    onOpen: (index, socket) => {
      sockets[index] = socket;
      if (index < config.live) live.open += 1;
    },
    onMessage: (index, data) => {
      if (index < config.live) onLiveFrame(index, data);
      else onSteadyFrame(index, data);
    },
    onClose: (index) => {
      if (index >= config.live) return;
      live.open -= 1;
      if (!shuttingDown) live.disconnects += 1;
    },
    onError: (error) => countError(/** @type {NodeJS.ErrnoException} */ (error).code ?? error.message),
    onProgress: ({ opened, pending, failed }) => {
      emit({ event: 'progress', phase: 'connect', opened, pending, failed, clients: total });
    },
  });
}

/** Close every recovering client at once, as a proxy restart drops them. */
function closeRecovering() {
  burst.closed = true;
  for (let client = config.live; client < total; client += 1) {
    const socket = sockets[client];
    if (socket === undefined) continue;
    // No frame of the old socket counts from here on, so since is the last
    // seq the client had when it lost the connection.
    burst.recoveries.push({
      client,
      since: lastSeq[client],
      notice: null,
      expected: 0,
      received: 0,
      nextSeq: lastSeq[client] + 1,
      lastSeq: 0,
      doneMs: 0,
      open: false,
      finished: false,
      reachedEnd: false,
      problem: '',
    });
    sockets[client] = undefined;
    socket.terminate();
  }
}

/** Reopen every recovering client at once with ?since=&epoch=. */
function reconnectRecovering() {
  const recoveries = burst.recoveries;
  return openWebSockets({
    count: recoveries.length,
    url: (index) => {
      const url = new URL(config.url);
      url.searchParams.set('since', String(recoveries[index].since));
      url.searchParams.set('epoch', epoch);
      return url.toString();
    },
    origin: config.origin,
    deflate: false,
    maxPending: recoveries.length,
    attempts: config.attempts,
    timeoutMs: config.recoveryTimeoutMs,
    onOpen: (index, socket) => {
      recoveries[index].open = true;
      sockets[recoveries[index].client] = socket;
      burst.open += 1;
    },
    onMessage: (index, data) => onRecoveryFrame(recoveries[index], data),
    onClose: (index) => {
      const recovery = recoveries[index];
      recovery.open = false;
      burst.open -= 1;
      if (shuttingDown) return;
      flag(recovery, 'closed after the reconnect');
      finish(recovery);
      notify();
    },
    onFailed: (index) => {
      flag(recoveries[index], 'reconnect failed');
      finish(recoveries[index]);
      notify();
    },
    onError: (error) => countError(/** @type {NodeJS.ErrnoException} */ (error).code ?? error.message),
    onProgress: ({ opened, pending, failed }) => {
      const done = recoveries.filter((recovery) => recovery.doneMs !== 0).length;
      emit({ event: 'progress', phase: 'reconnect', opened, pending, failed, done, clients: recoveries.length });
    },
  });
}

/**
 * Return the latency figures of the live clients over the ticks first..last.
 * @param {number} first @param {number} last
 */
function tickFigures(first, last) {
  /** @type {number[]} */
  const latencies = [];
  for (let seq = first; seq <= last; seq += 1) {
    for (const latency of live.ticks.get(seq)?.latencies ?? []) latencies.push(latency);
  }
  return {
    first_seq: first,
    last_seq: last,
    ticks: last - first + 1,
    frames: latencies.length,
    ...latencyFigures(Float64Array.from(latencies)),
  };
}

/**
 * Frames of the ticks first..last that a live client connected after the
 * connect phase never received.
 * @param {number} first @param {number} last @param {number} connected
 */
function lostFrames(first, last, connected) {
  let lost = 0;
  for (let seq = first; seq <= last; seq += 1) {
    const received = live.ticks.get(seq)?.latencies.length ?? 0;
    lost += Math.max(0, connected - received);
  }
  return lost;
}

/** Summarize what the recovering clients received. */
function recoveryFigures() {
  const recoveries = burst.recoveries;
  /** @type {Record<string, number>} */
  const notRecovered = {};
  /** @type {Record<string, number>} */
  const problems = {};
  const missedWords = [];
  const times = [];
  let recovered = 0;
  let exact = 0;

  for (const recovery of recoveries) {
    if (recovery.doneMs !== 0) times.push(recovery.doneMs - burst.startMs);
    const notice = recovery.notice;
    if (notice === null) {
      flag(recovery, 'no notice');
    } else if (notice.recovered === true) {
      recovered += 1;
      missedWords.push(recovery.expected);
      if (recovery.received < recovery.expected) flag(recovery, 'missed words incomplete');
      else if (!recovery.reachedEnd) flag(recovery, 'the live stream stopped before the last tick');
    } else if ('recovered' in notice) {
      const reason = String(notice.reason ?? 'none given');
      notRecovered[reason] = (notRecovered[reason] ?? 0) + 1;
      flag(recovery, 'not recovered');
    }
    if (recovery.problem === '') exact += 1;
    else problems[recovery.problem] = (problems[recovery.problem] ?? 0) + 1;
  }

  const perClient = latencyFigures(Float64Array.from(times));
  const seconds = (/** @type {number | null} */ ms) => (ms === null ? null : ms / 1000);
  return {
    recovering_closed: recoveries.length,
    recovered_true: recovered,
    not_recovered: notRecovered,
    exact,
    problems,
    recoveries_done: times.length,
    recovery_p50_s: seconds(perClient.p50_ms),
    recovery_p99_s: seconds(perClient.p99_ms),
    recovery_max_s: seconds(perClient.max_ms),
    missed_words_min: missedWords.length ? Math.min(...missedWords) : null,
    missed_words_max: missedWords.length ? Math.max(...missedWords) : null,
  };
}

function shutDown() {
  shuttingDown = true;
  for (const socket of sockets) socket?.terminate();
}

/**
 * Wait as waitUntil does, and write failure to stderr if the timeout passes.
 * @param {() => boolean} condition @param {number} timeoutMs @param {string} failure
 * @returns {Promise<void>}
 */
async function waitOrWarn(condition, timeoutMs, failure) {
  if (!(await waitUntil(condition, timeoutMs))) warn(`${failure} within ${timeoutMs} ms; going on`);
}

async function main() {
  const limit = setTimeout(() => {
    warn(`run limit of ${RUN_LIMIT_MS} ms reached; stopping`);
    shutDown();
    process.exit(3);
  }, RUN_LIMIT_MS);
  const half = config.intervalMs / 2;

  const connectFigures = await openAll();
  emit({ event: 'connected', ...connectFigures });
  const liveConnected = live.open;
  await sleep(config.settleMs);

  // The baseline: the next `ticks` ticks after the first one that arrives now.
  const seen = live.newestSeq;
  if (!(await waitUntil(() => live.newestSeq > seen, FIRST_FRAME_TIMEOUT_MS))) {
    warn(`no frame arrived within ${FIRST_FRAME_TIMEOUT_MS} ms`);
    shutDown();
    process.exit(4);
  }
  const baselineFirst = live.newestSeq + 1;
  const baselineLast = live.newestSeq + config.ticks;
  live.recordFrom = baselineFirst;
  const baselineDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  await sleep(half);
  const baselineStart = { cpu: cpuSeconds(), ms: performance.now() };
  baselineDelay.enable();
  emit({ event: 'baseline_start', first_seq: baselineFirst });
  await waitOrWarn(
    () => live.newestSeq >= baselineLast,
    (config.ticks + 1) * config.intervalMs + DRAIN_MS,
    `tick ${baselineLast} did not arrive`,
  );
  await sleep(half);
  await waitOrWarn(() => liveHas(baselineLast), DRAIN_MS, `not every live client received tick ${baselineLast}`);
  const baselineEnd = { cpu: cpuSeconds(), ms: performance.now() };
  baselineDelay.disable();
  emit({ event: 'baseline_end', last_seq: baselineLast });

  // The burst: close, let missedTicks ticks pass, reconnect half an interval
  // after the last of them, so that the burst starts between two ticks.
  const closedAtSeq = live.newestSeq;
  closeRecovering();
  const sinces = burst.recoveries.map((recovery) => recovery.since);
  emit({
    event: 'closed',
    clients: burst.recoveries.length,
    since_min: sinces.length ? Math.min(...sinces) : null,
    since_max: sinces.length ? Math.max(...sinces) : null,
  });
  await waitOrWarn(
    () => live.newestSeq >= closedAtSeq + config.missedTicks,
    (config.missedTicks + 1) * config.intervalMs + DRAIN_MS,
    `tick ${closedAtSeq + config.missedTicks} did not arrive`,
  );
  await sleep(half);

  const recoveryDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  burst.startMs = performance.now();
  burst.startWall = wallClockMs();
  const recoveryStartCpu = cpuSeconds();
  recoveryDelay.enable();
  emit({ event: 'reconnecting', clients: burst.recoveries.length, newest_seq: live.newestSeq });
  const reconnect = reconnectRecovering();
  const complete = await waitUntil(
    () => burst.finished === burst.recoveries.length,
    config.recoveryTimeoutMs,
  );
  const doneTimes = burst.recoveries.filter((recovery) => recovery.doneMs !== 0).map((recovery) => recovery.doneMs);
  // The recovery ends when the last client finished, or at the timeout.
  const completedWall = complete ? burst.lastFinishedWall : wallClockMs();
  const lastDoneMs = doneTimes.length ? Math.max(...doneTimes) : null;
  const recoveryS = lastDoneMs === null ? null : (lastDoneMs - burst.startMs) / 1000;
  emit({
    event: 'recovered',
    done: doneTimes.length,
    finished: burst.finished,
    clients: burst.recoveries.length,
    timed_out: !complete,
    recovery_s: recoveryS,
  });

  // One more tick: the first whose ts is after the recovery completed.
  await waitOrWarn(
    () => live.newestTs > completedWall,
    2 * config.intervalMs + DRAIN_MS,
    'no tick after the recovery arrived',
  );
  let endSeq = live.newestSeq;
  for (const [seq, tick] of live.ticks) {
    if (tick.ts > completedWall && seq < endSeq) endSeq = seq;
  }
  burst.endSeq = endSeq;
  for (const recovery of burst.recoveries) {
    if (recovery.lastSeq >= endSeq) {
      recovery.reachedEnd = true;
      burst.reachedEnd += 1;
    }
  }
  await waitOrWarn(
    () => liveHas(endSeq) && burst.reachedEnd >= burst.open,
    DRAIN_MS,
    `not every client received tick ${endSeq}`,
  );
  const recoveryEnd = { cpu: cpuSeconds(), ms: performance.now() };
  recoveryDelay.disable();
  emit({ event: 'recovery_end', last_seq: endSeq });

  let duringFirst = endSeq;
  for (const [seq, tick] of live.ticks) {
    if (tick.ts >= burst.startWall && seq < duringFirst) duringFirst = seq;
  }
  const reconnectFigures = await reconnect;
  const baselineSeconds = (baselineEnd.ms - baselineStart.ms) / 1000;
  const recoveryWindowSeconds = (recoveryEnd.ms - burst.startMs) / 1000;
  emit({
    event: 'result',
    live: config.live,
    recovering: config.recovering,
    ticks: config.ticks,
    missed_ticks: config.missedTicks,
    interval: config.intervalMs / 1000,
    ...connectFigures,
    live_connected: liveConnected,
    epoch,
    baseline: tickFigures(baselineFirst, baselineLast),
    during: tickFigures(duringFirst, endSeq),
    baseline_s: baselineSeconds,
    recovery_window_s: recoveryWindowSeconds,
    live_lost: lostFrames(baselineFirst, endSeq, liveConnected),
    live_seq_gaps: live.seqGaps,
    live_out_of_order: live.outOfOrder,
    live_other_epoch: live.otherEpoch,
    live_disconnects: live.disconnects,
    reconnected: reconnectFigures.connected,
    reconnect_failed: reconnectFigures.connect_failed,
    reconnect_retries: reconnectFigures.connect_retries,
    reconnect_s: reconnectFigures.connect_s,
    recovery_timed_out: !complete,
    recovery_s: recoveryS,
    ...recoveryFigures(),
    loadgen_cpu_baseline: (baselineEnd.cpu - baselineStart.cpu) / baselineSeconds,
    loadgen_cpu_recovery: (recoveryEnd.cpu - recoveryStartCpu) / recoveryWindowSeconds,
    loadgen_loop_delay_p99_ms_baseline: loopDelayMs(baselineDelay.percentile(99)),
    loadgen_loop_delay_p99_ms_recovery: loopDelayMs(recoveryDelay.percentile(99)),
    loadgen_loop_delay_max_ms_recovery: loopDelayMs(recoveryDelay.max),
    errors: Object.fromEntries(errorCounts),
    loadgen_rss_mb: process.memoryUsage().rss / 2 ** 20,
  });
  clearTimeout(limit);
  shutDown();
  process.exit(0);
}

main().catch((error) => {
  warn(String(error?.stack ?? error));
  shutDown();
  process.exit(1);
});
