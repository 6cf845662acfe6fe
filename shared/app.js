// @ts-check
/*
 * wordstream page client, loaded as an ES module (strict mode).
 * Shows words from the /ws WebSocket and the deployment-wide connection count
 * from the /api/connections Server-Sent Events stream. Start opens both. Stop
 * closes the WebSocket at once and the count stream once it has shown this
 * page leaving (or after config.stopCountGraceMs). After an unplanned close,
 * the WebSocket reconnects with ?since=<seq>&epoch=<epoch>, and the server
 * sends the words missed meanwhile; #words marks them with li.recovered.
 *
 * Hooks for browser tests:
 *   #start, #stop          buttons, disabled when they do not apply
 *   #pause                 button whose text is "Pause" or "Continue"
 *   #status                data-state: idle | connecting | connected | paused | reconnecting | stopped
 *   #active-connections    text is the latest active_connections number ("–" before the first event)
 *   #words                 <ol>, newest first:
 *                            li.word[data-seq] with the word in .word-text and its time in <time>
 *                            li.gap[data-missed] where seq jumped over missed words
 *                            li.held[data-held] where words arrived while paused
 *   #wpm                   words per minute received over the last 60 s, as a whole number
 *   #chart                 <svg role="img"> whose aria-label carries the latest value
 *   window.wordstream      retryDelays (ms per scheduled WebSocket retry), config and state getters
 */

const config = {
  // WebSocket URL built from the page origin, so a proxy in front needs no rewrite.
  wordsUrl: `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`,
  // Server-Sent Events URL that sends {"active_connections": N}.
  connectionsUrl: '/api/connections',
  // Maximum number of word items in #words. Older items and the marks below them are removed.
  maxWords: 50,
  // Retry window in ms for the first reconnect. Each later attempt doubles it.
  retryBaseMs: 500,
  // Maximum retry window in ms.
  retryCapMs: 15000,
  // Period in ms of the chart and rate refresh and of the stale-socket check.
  tickMs: 1000,
  // Time span shown by the chart, in ms.
  chartWindowMs: 5 * 60 * 1000,
  // Window in ms over which received frames count towards #wpm.
  rateWindowMs: 60 * 1000,
  // Minimum time in ms between two screen-reader announcements of the latest word.
  announceIntervalMs: 10000,
  // An open socket is closed and reopened after this many word intervals without a frame.
  staleAfterIntervals: 5,
  // Lower bound in ms of that silence limit.
  staleMinMs: 10000,
  // After Stop, the longest time in ms the count stream stays open to show this page leaving.
  stopCountGraceMs: 3000,
};

const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART_WIDTH = 600;
const CHART_HEIGHT = 140;
const CHART_PADDING = 4;

/**
 * @typedef {'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stopped'} Connection
 * @typedef {{ word: string, seq: number, ts?: unknown }} WordFrame
 * @typedef {{ t: number, value: number | null }} Sample  A null value means the count is unknown from t on.
 */

const state = {
  /** @type {Connection} */
  connection: 'idle',
  paused: false,
  /** @type {WebSocket | null} */
  socket: null,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  retryTimer: undefined,
  retryAttempt: 0,
  /** @type {EventSource | null} */
  eventSource: null,
  /** True after an EventSource error until the next open event. */
  eventSourceFailed: false,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  eventSourceRetryTimer: undefined,
  eventSourceRetryAttempt: 0,
  /** @type {ReturnType<typeof setTimeout> | undefined} Closes the count stream after Stop. */
  eventSourceCloseTimer: undefined,
  /** True after Stop: the next count closes the count stream. */
  closeEventSourceOnCount: false,
  /** @type {string | null} epoch of the last word frame received. */
  lastEpoch: null,
  /** Number of missed words the server sent again after a reconnect. */
  recovered: 0,
  /** @type {number | null} seq of the last word frame received. */
  lastSeq: null,
  /** @type {number | null} ts of the last word frame received. */
  lastTs: null,
  /** @type {number | null} Server word interval in ms, measured from ts. */
  wordIntervalMs: null,
  /** performance.now() of the last frame, or of the socket open before any frame. */
  lastFrameAt: 0,
  received: 0,
  missed: 0,
  /** Number of words received while paused and not shown. */
  heldWords: 0,
  /** Number of missed words detected while paused. */
  heldMissedWords: 0,
  invalidJsonMessages: 0,
  /** @type {number | null} */
  activeConnections: null,
  /** @type {number[]} performance.now() of each frame inside the rate window. */
  frameTimes: [],
  /** @type {number | null} performance.now() when the rate observation started. */
  rateStartedAt: null,
  /** @type {Sample[]} */
  samples: [],
  pendingAnnouncement: '',
  lastAnnouncedAt: -Infinity,
};

/** @type {number[]} */
const retryDelays = [];
/** @type {number[]} */
const connectionsRetryDelays = [];

const elements = {
  start: requireElement('start', HTMLButtonElement),
  pause: requireElement('pause', HTMLButtonElement),
  stop: requireElement('stop', HTMLButtonElement),
  status: requireElement('status', HTMLElement),
  words: requireElement('words', HTMLOListElement),
  wordsLimit: requireElement('words-limit', HTMLElement),
  feedCounts: requireElement('feed-counts', HTMLElement),
  announcer: requireElement('feed-announcer', HTMLElement),
  connectionsCard: requireElement('connections-card', HTMLElement),
  connectionsState: requireElement('connections-state', HTMLElement),
  activeConnections: requireElement('active-connections', HTMLElement),
  chart: requireElement('chart', SVGSVGElement),
  chartMax: requireElement('chart-max', HTMLElement),
  chartWindow: requireElement('chart-window', HTMLElement),
  chartMinutes: requireElement('chart-minutes', HTMLElement),
  wpm: requireElement('wpm', HTMLElement),
  wpmWindow: requireElement('wpm-window', HTMLElement),
};

const chartParts = buildChart(elements.chart);

/**
 * Returns the element with this id, or throws when it is missing or of another type.
 * @template {Element} T
 * @param {string} id
 * @param {{ new (): T, name: string }} type
 * @returns {T}
 */
function requireElement(id, type) {
  const element = document.getElementById(id);
  if (!(element instanceof type)) {
    throw new Error(`wordstream: element #${id} is missing or is not a ${type.name}`);
  }
  return element;
}

// ---- Controls ----

function start() {
  if (isActive()) return;
  state.connection = 'connecting';
  state.paused = false;
  state.retryAttempt = 0;
  startRateWindow(performance.now());
  openSocket();
  cancelEventSourceClose();
  if (state.eventSource === null && state.eventSourceRetryTimer === undefined) openEventSource();
  render();
  elements.pause.focus();
}

function togglePause() {
  if (!isActive()) return;
  state.paused = !state.paused;
  if (!state.paused) releaseHeld();
  render();
}

function stop() {
  if (!isActive()) return;
  state.connection = 'stopped';
  state.paused = false;
  releaseHeld();
  clearTimeout(state.retryTimer);
  state.retryTimer = undefined;
  closeSocket();
  closeEventSourceSoon();
  render();
  elements.start.focus();
}

function isActive() {
  return ['connecting', 'connected', 'reconnecting'].includes(state.connection);
}

// ---- WebSocket ----

function openSocket() {
  const url = socketUrl();
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (error) {
    console.error(`wordstream: failed to create WebSocket for ${url}`, error);
    scheduleReconnect();
    return;
  }
  state.socket = socket;
  socket.addEventListener('open', () => handleOpen(socket));
  socket.addEventListener('message', (event) => handleMessage(socket, event));
  socket.addEventListener('close', (event) => handleClose(socket, event));
}

/**
 * Returns the WebSocket URL. A reconnect names the last word received, so the
 * server first sends the words missed since then.
 */
function socketUrl() {
  if (state.connection !== 'reconnecting' || state.lastSeq === null || state.lastEpoch === null) {
    return config.wordsUrl;
  }
  const query = new URLSearchParams({ since: String(state.lastSeq), epoch: state.lastEpoch });
  return `${config.wordsUrl}?${query}`;
}

/** Closes the current socket. Its later events are ignored because it is no longer state.socket. */
function closeSocket() {
  const socket = state.socket;
  state.socket = null;
  socket?.close(1000, 'closed by the page');
}

/** @param {WebSocket} socket */
function handleOpen(socket) {
  if (socket !== state.socket) return;
  state.connection = 'connected';
  state.retryAttempt = 0;
  state.lastFrameAt = performance.now();
  render();
}

/**
 * @param {WebSocket} socket
 * @param {CloseEvent} event
 */
function handleClose(socket, event) {
  if (socket !== state.socket) return;
  state.socket = null;
  console.warn(`wordstream: WebSocket closed with code ${event.code}`);
  scheduleReconnect();
}

/**
 * Returns a retry delay in ms drawn uniformly from [0, window], where the window
 * doubles from config.retryBaseMs with each attempt up to config.retryCapMs (full jitter).
 * @param {number} attempt  zero-based attempt number
 */
function backoffDelay(attempt) {
  const windowMs = Math.min(config.retryCapMs, config.retryBaseMs * 2 ** attempt);
  return Math.round(Math.random() * windowMs);
}

/** Schedules the next WebSocket attempt. */
function scheduleReconnect() {
  const delay = backoffDelay(state.retryAttempt);
  state.retryAttempt += 1;
  state.connection = 'reconnecting';
  retryDelays.push(delay);
  console.info(`wordstream: WebSocket reconnect attempt ${state.retryAttempt} in ${delay} ms`);
  state.retryTimer = setTimeout(reconnect, delay);
  render();
}

function reconnect() {
  state.retryTimer = undefined;
  if (state.connection === 'reconnecting') openSocket();
}

/**
 * Closes a socket that stayed silent for several word intervals, because a dead
 * connection may send no close event for minutes.
 * @param {number} now
 */
function closeIfStale(now) {
  if (state.connection !== 'connected' || state.wordIntervalMs === null) return;
  const limitMs = Math.max(config.staleMinMs, config.staleAfterIntervals * state.wordIntervalMs);
  if (now - state.lastFrameAt < limitMs) return;
  console.warn(`wordstream: no frame for ${Math.round(now - state.lastFrameAt)} ms, reconnecting`);
  closeSocket();
  scheduleReconnect();
}

// ---- Frames ----

/**
 * @param {WebSocket} socket
 * @param {MessageEvent} event
 */
function handleMessage(socket, event) {
  if (socket !== state.socket) return;
  state.lastFrameAt = performance.now();
  const frame = parseJsonObject(event.data);
  if (frame === null) return;
  switch (frameKind(frame)) {
    case 'word':
      receiveWord(/** @type {WordFrame} */ (frame));
      break;
    case 'recovery':
      receiveRecoveryNotice(frame);
      break;
    default:
      // Frames of other kinds are ignored, so the server can add new ones.
      break;
  }
}

/**
 * Returns the JSON object in a WebSocket or SSE message, or null for binary data,
 * invalid JSON and JSON values that are not objects.
 * @param {unknown} data
 * @returns {Record<string, unknown> | null}
 */
function parseJsonObject(data) {
  if (typeof data !== 'string') return null;
  try {
    const value = JSON.parse(data);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value;
  } catch (error) {
    logInvalidJson(data, error);
    return null;
  }
  return null;
}

/**
 * @param {string} data
 * @param {unknown} error
 */
function logInvalidJson(data, error) {
  state.invalidJsonMessages += 1;
  // The first three are logged, then every hundredth.
  if (state.invalidJsonMessages <= 3 || state.invalidJsonMessages % 100 === 0) {
    console.warn(`wordstream: ignored invalid JSON message #${state.invalidJsonMessages}: ${data.slice(0, 200)}`, error);
  }
}

/**
 * @param {Record<string, unknown>} frame
 * @returns {'word' | 'recovery' | 'unknown'}
 */
function frameKind(frame) {
  if (typeof frame.word === 'string' && Number.isSafeInteger(frame.seq)) return 'word';
  if (typeof frame.recovered === 'boolean') return 'recovery';
  return 'unknown';
}

/**
 * Marks the feed where a reconnect resumed: with the number of missed words
 * that follow, or with the reason they cannot be sent.
 * @param {Record<string, unknown>} notice
 */
function receiveRecoveryNotice(notice) {
  const item = document.createElement('li');
  if (notice.recovered === true && Number.isSafeInteger(notice.words)) {
    const words = /** @type {number} */ (notice.words);
    state.recovered += words;
    item.className = 'recovered';
    item.dataset.recovered = String(words);
    item.textContent = `${describeCount(words, 'missed word')} recovered`;
  } else {
    item.className = 'unrecovered';
    item.textContent = `Missed words could not be recovered (${String(notice.reason)})`;
  }
  elements.words.prepend(item);
  renderCounts();
}

/** @param {WordFrame} frame */
function receiveWord(frame) {
  // seq is deployment-wide, so a repeated seq is the same word again.
  if (frame.seq === state.lastSeq) return;
  const ts = isValidTimestamp(frame.ts) ? frame.ts : Date.now();
  const missed = countMissed(frame.seq);
  measureWordInterval(frame.seq, ts);
  state.lastSeq = frame.seq;
  if (typeof frame.epoch === 'string') state.lastEpoch = frame.epoch;
  state.lastTs = ts;
  state.received += 1;
  state.missed += missed;
  state.frameTimes.push(performance.now());

  if (state.paused) {
    state.heldWords += 1;
    state.heldMissedWords += missed;
  } else {
    showWord(frame.word, frame.seq, ts, missed);
  }
  renderCounts();
}

/**
 * Returns the number of words skipped between the last seq and this one.
 * A seq lower than the last one means the counter restarted, which is not a gap.
 * @param {number} seq
 */
function countMissed(seq) {
  if (state.lastSeq === null || seq <= state.lastSeq) return 0;
  return seq - state.lastSeq - 1;
}

/**
 * @param {number} seq
 * @param {number} ts
 */
function measureWordInterval(seq, ts) {
  if (state.lastSeq === null || state.lastTs === null || seq <= state.lastSeq) return;
  const interval = (ts - state.lastTs) / (seq - state.lastSeq);
  if (interval > 0) state.wordIntervalMs = interval;
}

/**
 * @param {unknown} ts
 * @returns {ts is number}
 */
function isValidTimestamp(ts) {
  // 8.64e15 ms is the largest time a Date can hold.
  return typeof ts === 'number' && Number.isFinite(ts) && Math.abs(ts) <= 8.64e15;
}

// ---- Word list ----

/**
 * @param {string} word
 * @param {number} seq
 * @param {number} ts
 * @param {number} missed
 */
function showWord(word, seq, ts, missed) {
  if (missed > 0) elements.words.prepend(createGapItem(missed));
  elements.words.prepend(createWordItem(word, seq, ts));
  trimWords();
  queueAnnouncement(missed > 0 ? `${word}, after ${describeCount(missed, 'missed word')}` : word);
}

/** Shows marks for the words that arrived or were missed while paused. */
function releaseHeld() {
  if (state.heldMissedWords > 0) elements.words.prepend(createGapItem(state.heldMissedWords));
  if (state.heldWords > 0) elements.words.prepend(createHeldItem(state.heldWords));
  state.heldWords = 0;
  state.heldMissedWords = 0;
  trimWords();
}

/**
 * @param {string} word
 * @param {number} seq
 * @param {number} ts
 */
function createWordItem(word, seq, ts) {
  const item = document.createElement('li');
  item.className = 'word';
  item.dataset.seq = String(seq);

  const text = document.createElement('span');
  text.className = 'word-text';
  text.textContent = word;

  const date = new Date(ts);
  const time = document.createElement('time');
  time.dateTime = date.toISOString();
  time.textContent = formatClock(date);

  item.append(text, time);
  return item;
}

/** @param {number} missed */
function createGapItem(missed) {
  const item = document.createElement('li');
  item.className = 'gap';
  item.dataset.missed = String(missed);
  item.textContent = `${describeCount(missed, 'word')} missed`;
  return item;
}

/** @param {number} count */
function createHeldItem(count) {
  const item = document.createElement('li');
  item.className = 'held';
  item.dataset.held = String(count);
  item.textContent = `${describeCount(count, 'word')} not shown while paused`;
  return item;
}

/** Removes the oldest word items above config.maxWords and any marks left below the last word. */
function trimWords() {
  const items = elements.words.querySelectorAll('li.word');
  for (let index = config.maxWords; index < items.length; index += 1) {
    items[index].remove();
  }
  let last = elements.words.lastElementChild;
  while (last !== null && !last.classList.contains('word')) {
    last.remove();
    last = elements.words.lastElementChild;
  }
}

/**
 * Formats a local time as HH:MM:SS.
 * @param {Date} date
 */
function formatClock(date) {
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((part) => String(part).padStart(2, '0'))
    .join(':');
}

/**
 * @param {number} count
 * @param {string} noun
 */
function describeCount(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

// ---- Screen-reader announcements ----

/** @param {string} text */
function queueAnnouncement(text) {
  state.pendingAnnouncement = text;
}

/**
 * Announces the latest word at most once per config.announceIntervalMs.
 * @param {number} now
 */
function flushAnnouncement(now) {
  if (state.pendingAnnouncement === '' || now - state.lastAnnouncedAt < config.announceIntervalMs) return;
  elements.announcer.textContent = `Latest word: ${state.pendingAnnouncement}`;
  state.pendingAnnouncement = '';
  state.lastAnnouncedAt = now;
}

// ---- Active connections (Server-Sent Events) ----

function openEventSource() {
  const source = new EventSource(config.connectionsUrl);
  state.eventSource = source;
  state.eventSourceFailed = false;
  source.addEventListener('open', () => handleEventSourceOpen(source));
  source.addEventListener('message', (event) => handleEventSourceMessage(source, event));
  source.addEventListener('error', () => handleEventSourceError(source));
}

/** @param {EventSource} source */
function handleEventSourceOpen(source) {
  if (source !== state.eventSource) return;
  state.eventSourceFailed = false;
  state.eventSourceRetryAttempt = 0;
  renderConnections();
}

/**
 * @param {EventSource} source
 * @param {MessageEvent} event
 */
function handleEventSourceMessage(source, event) {
  if (source !== state.eventSource) return;
  const data = parseJsonObject(event.data);
  const count = data?.active_connections;
  if (typeof count !== 'number' || !Number.isFinite(count) || count < 0) return;
  state.activeConnections = count;
  recordSample(performance.now(), count);
  if (state.closeEventSourceOnCount) closeEventSource();
  renderConnections();
  renderChart(performance.now());
}

/** After Stop: closes the count stream at its next count, which no longer includes this page. */
function closeEventSourceSoon() {
  state.closeEventSourceOnCount = true;
  state.eventSourceCloseTimer = setTimeout(closeEventSource, config.stopCountGraceMs);
}

function cancelEventSourceClose() {
  state.closeEventSourceOnCount = false;
  clearTimeout(state.eventSourceCloseTimer);
  state.eventSourceCloseTimer = undefined;
}

function closeEventSource() {
  cancelEventSourceClose();
  clearTimeout(state.eventSourceRetryTimer);
  state.eventSourceRetryTimer = undefined;
  state.eventSource?.close();
  state.eventSource = null;
  state.eventSourceFailed = false;
  renderConnections();
}

/**
 * EventSource retries by itself while its readyState is CONNECTING. A response that is
 * not 200 with text/event-stream, such as a proxy's 502, makes it give up with readyState
 * CLOSED ("fail the connection" in the HTML Standard), so the page then opens a new one with backoff.
 * @param {EventSource} source
 */
function handleEventSourceError(source) {
  if (source !== state.eventSource) return;
  state.eventSourceFailed = true;
  recordBreak(performance.now());
  if (source.readyState === EventSource.CLOSED) {
    state.eventSource = null;
    scheduleEventSourceReconnect();
  }
  renderConnections();
}

function scheduleEventSourceReconnect() {
  const delay = backoffDelay(state.eventSourceRetryAttempt);
  state.eventSourceRetryAttempt += 1;
  connectionsRetryDelays.push(delay);
  console.warn(`wordstream: ${config.connectionsUrl} closed, reopening in ${delay} ms`);
  state.eventSourceRetryTimer = setTimeout(reopenEventSource, delay);
}

function reopenEventSource() {
  state.eventSourceRetryTimer = undefined;
  if (!isActive()) return;
  openEventSource();
  renderConnections();
}

/** @returns {'idle' | 'connecting' | 'live' | 'reconnecting'} */
function connectionsState() {
  if (state.connection === 'idle') return 'idle';
  if (state.eventSource === null && !isActive()) return 'idle';
  if (state.eventSource === null || state.eventSourceFailed) return 'reconnecting';
  if (state.eventSource.readyState === EventSource.OPEN) return 'live';
  return 'connecting';
}

// ---- Chart ----

/**
 * Adds a sample when the value changed. A value lasts until the next sample, so
 * repeats add nothing, and a change within a quarter tick replaces the last sample.
 * @param {number} now
 * @param {number | null} value
 */
function recordSample(now, value) {
  const last = state.samples[state.samples.length - 1];
  if (last !== undefined && last.value === value) return;
  if (last !== undefined && now - last.t < config.tickMs / 4) {
    last.value = value;
  } else {
    state.samples.push({ t: now, value });
  }
}

/**
 * Ends the current chart line, because the count is unknown from now on.
 * @param {number} now
 */
function recordBreak(now) {
  if (state.samples.length > 0) recordSample(now, null);
}

/**
 * Creates the static parts of the chart: grid lines, area and line paths.
 * @param {SVGSVGElement} svg
 */
function buildChart(svg) {
  svg.setAttribute('viewBox', `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const fraction of [0, 0.5, 1]) {
    const y = String(valueToY(fraction, 1));
    svg.append(createSvgElement('line', { class: 'chart-grid', x1: '0', x2: String(CHART_WIDTH), y1: y, y2: y }));
  }
  const area = createSvgElement('path', { class: 'chart-area', d: '' });
  const line = createSvgElement('path', { class: 'chart-line', d: '' });
  svg.append(area, line);
  return { area, line };
}

/**
 * @param {string} name
 * @param {Record<string, string>} attributes
 */
function createSvgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

/** @param {number} now */
function renderChart(now) {
  const windowStart = now - config.chartWindowMs;
  pruneSamples(windowStart);
  const values = state.samples.flatMap((sample) => (sample.value === null ? [] : [sample.value]));
  const peak = values.length > 0 ? Math.max(...values) : 0;
  // The headroom keeps the peak below the top edge of the plot.
  const yMax = niceCeiling(Math.max(peak * 1.2, 1));

  let lineData = '';
  let areaData = '';
  for (const segment of splitSegments(state.samples, now)) {
    const path = stepPath(segment, windowStart, yMax);
    lineData += path.line;
    areaData += path.area;
  }
  chartParts.line.setAttribute('d', lineData);
  chartParts.area.setAttribute('d', areaData);
  elements.chartMax.textContent = String(yMax);
  const latest = state.activeConnections;
  setChartLabel(latest !== null && values.length > 0 ? chartLabel(latest, peak) : 'Active connections chart: no data yet.');
}

/** @param {number} windowStart */
function pruneSamples(windowStart) {
  // One sample older than the window is kept because its value lasts into the window.
  while (state.samples.length > 1 && state.samples[1].t <= windowStart) state.samples.shift();
}

/**
 * Splits the samples into runs of known values. Each run ends at its break sample,
 * or at now when the count is still known.
 * @param {Sample[]} samples
 * @param {number} now
 * @returns {{ points: { t: number, value: number }[], end: number }[]}
 */
function splitSegments(samples, now) {
  /** @type {{ points: { t: number, value: number }[], end: number }[]} */
  const segments = [];
  /** @type {{ t: number, value: number }[]} */
  let points = [];
  for (const sample of samples) {
    if (sample.value === null) {
      if (points.length > 0) segments.push({ points, end: sample.t });
      points = [];
    } else {
      points.push({ t: sample.t, value: sample.value });
    }
  }
  if (points.length > 0) segments.push({ points, end: now });
  return segments;
}

/**
 * Builds step-line and filled-area path data for one run, in which each value lasts until the next sample.
 * @param {{ points: { t: number, value: number }[], end: number }} segment
 * @param {number} windowStart
 * @param {number} yMax
 */
function stepPath(segment, windowStart, yMax) {
  const toX = (/** @type {number} */ t) => Math.max(0, ((t - windowStart) / config.chartWindowMs) * CHART_WIDTH);
  const [first, ...rest] = segment.points;
  const startX = toX(first.t);

  let line = `M${round(startX)} ${round(valueToY(first.value, yMax))}`;
  for (const point of rest) {
    line += `H${round(toX(point.t))}V${round(valueToY(point.value, yMax))}`;
  }
  line += `H${round(toX(segment.end))}`;
  const area = `${line}V${CHART_HEIGHT}H${round(startX)}Z`;
  return { line, area };
}

/**
 * @param {number} value
 * @param {number} yMax
 */
function valueToY(value, yMax) {
  const usable = CHART_HEIGHT - 2 * CHART_PADDING;
  return CHART_PADDING + (1 - value / yMax) * usable;
}

/**
 * Returns the smallest of 1, 2, 5, 10, 20, 50 … that is at least value.
 * @param {number} value
 */
function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

/** @param {number} value */
function round(value) {
  return Math.round(value * 10) / 10;
}

/**
 * @param {number} latest
 * @param {number} peak
 */
function chartLabel(latest, peak) {
  const minutes = Math.round(config.chartWindowMs / 60000);
  return `Active connections over the last ${describeCount(minutes, 'minute')}: latest ${latest}, peak ${peak}.`;
}

/** @param {string} label */
function setChartLabel(label) {
  if (elements.chart.getAttribute('aria-label') !== label) elements.chart.setAttribute('aria-label', label);
}

// ---- Rate ----

/**
 * Restarts the rate observation when no frame is left in the window, so a new
 * session is not averaged over the time before it.
 * @param {number} now
 */
function startRateWindow(now) {
  pruneFrameTimes(now);
  if (state.frameTimes.length === 0) state.rateStartedAt = now;
}

/** @param {number} now */
function pruneFrameTimes(now) {
  const windowStart = now - config.rateWindowMs;
  while (state.frameTimes.length > 0 && state.frameTimes[0] < windowStart) state.frameTimes.shift();
}

/** @param {number} now */
function wordsPerMinute(now) {
  pruneFrameTimes(now);
  if (state.rateStartedAt === null) return 0;
  // Until a full window has passed since the rate observation started, the count is scaled up.
  const observedMs = Math.max(1000, Math.min(config.rateWindowMs, now - state.rateStartedAt));
  return Math.round((state.frameTimes.length * 60000) / observedMs);
}

// ---- Rendering ----

/** @returns {'idle' | 'connecting' | 'connected' | 'paused' | 'reconnecting' | 'stopped'} */
function statusState() {
  if (state.paused && state.connection === 'connected') return 'paused';
  return state.connection;
}

function statusText() {
  switch (statusState()) {
    case 'idle':
      return 'Idle';
    case 'connecting':
      return state.paused ? 'Connecting… (paused)' : 'Connecting…';
    case 'connected':
      return 'Connected';
    case 'paused':
      return 'Paused';
    case 'reconnecting':
      return `Reconnecting… (attempt ${state.retryAttempt})${state.paused ? ' · paused' : ''}`;
    case 'stopped':
      return 'Stopped';
  }
}

function render() {
  renderControls();
  renderStatus();
  renderConnections();
  renderCounts();
}

function renderControls() {
  const active = isActive();
  elements.start.disabled = active;
  elements.pause.disabled = !active;
  elements.stop.disabled = !active;
  elements.pause.textContent = state.paused ? 'Continue' : 'Pause';
}

function renderStatus() {
  const text = statusText();
  elements.status.dataset.state = statusState();
  // Only changed text is written, because #status is a live region.
  setText(elements.status, text);
}

/**
 * @param {Element} element
 * @param {string} text
 */
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function renderConnections() {
  const connections = connectionsState();
  const labels = {
    idle: 'Not connected',
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: 'Reconnecting…',
  };
  elements.connectionsCard.dataset.state = connections;
  setText(elements.connectionsState, labels[connections]);
  setText(elements.activeConnections, state.activeConnections === null ? '–' : String(state.activeConnections));
}

function renderCounts() {
  const heldNote = state.heldWords > 0 ? ` · ${state.heldWords} held while paused` : '';
  const recoveredNote = state.recovered > 0 ? ` · ${state.recovered} recovered` : '';
  setText(
    elements.feedCounts,
    `${state.received} received · ${state.missed} missed${recoveredNote}${heldNote}`,
  );
}

function tick() {
  const now = performance.now();
  closeIfStale(now);
  setText(elements.wpm, String(wordsPerMinute(now)));
  renderChart(now);
  renderConnections();
  flushAnnouncement(now);
}

// ---- Startup ----

function retryNow() {
  if (state.retryTimer !== undefined) {
    clearTimeout(state.retryTimer);
    reconnect();
  }
  if (state.eventSourceRetryTimer !== undefined) {
    clearTimeout(state.eventSourceRetryTimer);
    reopenEventSource();
  }
}

function init() {
  elements.wordsLimit.textContent = String(config.maxWords);
  const chartMinutes = String(Math.round(config.chartWindowMs / 60000));
  elements.chartWindow.textContent = `−${chartMinutes} min`;
  elements.chartMinutes.textContent = chartMinutes;
  elements.wpmWindow.textContent = `${Math.round(config.rateWindowMs / 1000)} s`;
  elements.start.addEventListener('click', start);
  elements.pause.addEventListener('click', togglePause);
  elements.stop.addEventListener('click', stop);
  // A browser that comes back online retries at once instead of waiting out the backoff.
  window.addEventListener('online', retryNow);
  setInterval(tick, config.tickMs);
  render();
  tick();
}

/** @type {Window & { wordstream?: object }} */ (window).wordstream = {
  retryDelays,
  connectionsRetryDelays,
  config,
  get state() {
    return statusState();
  },
  get connection() {
    return state.connection;
  },
  get connectionsState() {
    return connectionsState();
  },
  get paused() {
    return state.paused;
  },
  get lastSeq() {
    return state.lastSeq;
  },
  get received() {
    return state.received;
  },
  get recovered() {
    return state.recovered;
  },
  get lastEpoch() {
    return state.lastEpoch;
  },
  get missed() {
    return state.missed;
  },
  get heldWords() {
    return state.heldWords;
  },
  get activeConnections() {
    return state.activeConnections;
  },
  get wordsPerMinute() {
    return wordsPerMinute(performance.now());
  },
  get socket() {
    return state.socket;
  },
  get eventSource() {
    return state.eventSource;
  },
};

init();
