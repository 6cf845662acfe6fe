// @ts-check
'use strict';

/**
 * The consumer node: serves the page from STATIC_DIR and proxies the
 * producer's paths (/ws, /api/connections, /api/words, /admin, /static) to
 * PRODUCER_URL.
 * Any other path is a file of the page or 404.
 *
 * Environment: HOST, PORT, STATIC_DIR, PRODUCER_URL, RESOLVER (see `config`).
 */

const crypto = require('node:crypto');
const dns = require('node:dns/promises');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const express = require('express');
const {
  createProxyMiddleware,
  debugProxyErrorsPlugin,
  proxyEventsPlugin,
} = require('http-proxy-middleware');

const config = {
  // Address to listen on: loopback outside Docker, every interface in the image.
  host: process.env.HOST || '127.0.0.1',
  // Port to listen on.
  port: parsePort(process.env.PORT || '3001'),
  // Folder of the page's files: the repository's shared/ outside Docker, the
  // shared_web volume in the image.
  staticDir: path.resolve(process.env.STATIC_DIR || path.join(__dirname, '..', '..', 'shared')),
  // The producer. A host name is looked up for every connection, and
  // connections take its IPv4 addresses in turn (one per replica under
  // `docker compose up --scale producer=N`).
  producerUrl: new URL(process.env.PRODUCER_URL || 'http://127.0.0.1:8000'),
  // The DNS server that looks up PRODUCER_URL's host name, as an IP address
  // with an optional port (127.0.0.11, 10.0.0.2:5353, [::1]:53), like
  // nginx's RESOLVER. Unset, the system's resolver (dns.lookup) looks it up,
  // which also reads /etc/hosts.
  resolver: process.env.RESOLVER || '',
  // Milliseconds SIGTERM waits for open requests before closing them.
  shutdownTimeout: 10_000,
};

// The same policy the producer sends with the page: nothing from other
// origins, and 'self' also allows the WebSocket to this host.
const CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'";
const BAD_GATEWAY_RESPONSE =
  'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
const NOT_FOUND_RESPONSE =
  'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';

/**
 * Returns a resolver that queries the DNS server `address` (config.resolver),
 * or exits with an error if it is no IP address.
 * @param {string} address
 */
function createResolver(address) {
  // One try of 2 s, so a DNS server that does not answer fails the request
  // within 2 s, as nginx's resolver_timeout does.
  const resolver = new dns.Resolver({ timeout: 2000, tries: 1 });
  try {
    // setServers checks the address but accepts any port number (Node 22.23).
    const port = /^(?:\[[^\]]*\]|[^:]*):(\d+)$/.exec(address)?.[1];
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
      throw new Error(`invalid port ${port}`);
    }
    resolver.setServers([address]);
  } catch (err) {
    console.error(
      'RESOLVER must be an IP address with an optional port, such as 127.0.0.11 or ' +
        '10.0.0.2:5353, got %j: %s',
      address,
      /** @type {Error} */ (err).message,
    );
    process.exit(2);
  }
  return resolver;
}

/** @param {string} value */
function parsePort(value) {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error('PORT must be a port number from 1 to 65535, got %j', value);
    process.exit(2);
  }
  return port;
}

/** The producer's Server-Sent Events streams. */
const EVENT_STREAM_PATHS = new Set(['/api/connections', '/api/words']);

/**
 * Returns whether the producer serves a path. Matches are exact, as nginx's
 * locations are, so /wsx is a missing file here, not a proxied request.
 * @param {string} pathname
 */
function isProducerPath(pathname) {
  return (
    pathname === '/ws' ||
    EVENT_STREAM_PATHS.has(pathname) ||
    pathname === '/admin' ||
    pathname.startsWith('/admin/') ||
    pathname.startsWith('/static/')
  );
}

/** @param {string | undefined} url */
function pathnameOf(url) {
  return new URL(url ?? '/', 'http://localhost').pathname;
}

/** The DNS server's resolver with RESOLVER set, else null. */
const resolver = config.resolver ? createResolver(config.resolver) : null;

/**
 * Looks up a host name's IPv4 addresses (IPv4 like nginx's ipv6=off, because
 * the compose network has no IPv6), through RESOLVER or the system's resolver.
 * @param {string} hostname
 * @returns {Promise<string[]>}
 */
async function lookUpIPv4(hostname) {
  if (resolver) return resolver.resolve4(hostname);
  const found = await dns.lookup(hostname, { all: true, family: 4 });
  return found.map((entry) => entry.address);
}

let nextAddress = 0;

/**
 * Picks the producer for one connection: PRODUCER_URL with its host name
 * replaced by the next of the name's IPv4 addresses.
 */
async function pickProducer() {
  const target = new URL(config.producerUrl);
  if (net.isIP(target.hostname.replace(/^\[|\]$/g, ''))) {
    return target.href;
  }
  const addresses = await lookUpIPv4(target.hostname);
  if (addresses.length === 0) {
    throw new Error(`${target.hostname} has no IPv4 address`);
  }
  // Docker's DNS shuffles the records, so sort them to give each its turn.
  addresses.sort();
  target.hostname = addresses[nextAddress++ % addresses.length];
  return target.href;
}

/**
 * Sets the headers the producer believes from a trusted proxy, replacing
 * what the client sent under the same names.
 * @param {http.IncomingMessage} req
 */
function setForwardingHeaders(req) {
  const forwardedFor = req.headers['x-forwarded-for'];
  const peer = req.socket.remoteAddress ?? '';
  // Appended: the producer takes the last entry, the one written here.
  req.headers['x-forwarded-for'] = forwardedFor ? `${forwardedFor}, ${peer}` : peer;
  req.headers['x-wordstream-via'] = 'node';
}

/** Close code 1001 (going away), sent for the clients on shutdown. */
const GOING_AWAY = 1001;
const GOING_AWAY_REASON = 'proxy shutting down';

/**
 * Returns a WebSocket close frame with code and reason, masked as RFC 6455
 * requires of every frame a client sends.
 * @param {number} code
 * @param {string} reason at most 123 bytes of UTF-8, because a control
 *   frame's payload is at most 125 bytes
 */
function maskedCloseFrame(code, reason) {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  if (payload.length > 125) {
    throw new RangeError(`close reason of ${payload.length - 2} bytes, over 123`);
  }
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  const mask = crypto.randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
  // FIN with opcode 0x8 (close), then the mask bit with the payload length.
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload]);
}

/**
 * Follows the frame boundaries in the bytes a WebSocket client sends, so
 * that the proxy can write a frame of its own between two of the client's.
 * Reads only the frame headers (RFC 6455 base framing) and skips payloads.
 */
class FrameBoundaries {
  constructor() {
    /** @type {number[]} Bytes of a frame header read so far. */
    this.header = [];
    /** Payload bytes of the current frame still to come. */
    this.payloadRemaining = 0;
  }

  /** Whether the bytes read so far end with a whole frame. */
  get atBoundary() {
    return this.header.length === 0 && this.payloadRemaining === 0;
  }

  /**
   * Reads chunk as the next bytes from the client and returns how many it
   * read: all of chunk, or with stopAtBoundary those up to the end of the
   * current frame (none at a boundary).
   * @param {Buffer} chunk
   * @param {boolean} [stopAtBoundary]
   */
  read(chunk, stopAtBoundary = false) {
    let offset = 0;
    while (offset < chunk.length && !(stopAtBoundary && this.atBoundary)) {
      if (this.payloadRemaining > 0) {
        const skipped = Math.min(this.payloadRemaining, chunk.length - offset);
        this.payloadRemaining -= skipped;
        offset += skipped;
      } else {
        this.header.push(chunk[offset]);
        offset += 1;
        this.endHeaderIfComplete();
      }
    }
    return offset;
  }

  /** Sets payloadRemaining from the header once all its bytes are read. */
  endHeaderIfComplete() {
    if (this.header.length < 2) return;
    const lengthField = this.header[1] & 0x7f;
    const masked = (this.header[1] & 0x80) !== 0;
    // A length field of 126 is followed by a 16-bit length, one of 127 by a
    // 64-bit length. The mask key comes last.
    let extendedLengthBytes = 0;
    if (lengthField === 126) extendedLengthBytes = 2;
    if (lengthField === 127) extendedLengthBytes = 8;
    const headerLength = 2 + extendedLengthBytes + (masked ? 4 : 0);
    if (this.header.length < headerLength) return;
    const header = Buffer.from(this.header);
    let payloadLength = lengthField;
    if (extendedLengthBytes === 2) payloadLength = header.readUInt16BE(2);
    if (extendedLengthBytes === 8) payloadLength = Number(header.readBigUInt64BE(2));
    this.header = [];
    this.payloadRemaining = payloadLength;
  }
}

/**
 * A client's WebSocket connection, proxied to the producer. httpxy pipes the
 * two sockets together. This object follows the client's frames beside that
 * pipe and closes the connection cleanly on shutdown (see close()).
 */
class ProxiedWebSocket {
  /** @param {import('node:stream').Duplex} client the client's socket */
  constructor(client) {
    this.client = client;
    /**
     * The producer's socket, once the producer accepted the upgrade.
     * @type {import('node:stream').Duplex | null}
     */
    this.producer = null;
    this.clientFrames = new FrameBoundaries();
    /** Whether close() stopped the pipe of the client's bytes. */
    this.closing = false;
  }

  /**
   * Takes the producer's socket. Called on the producer's 101 response
   * before httpxy pipes the sockets, so the listener added here receives
   * every chunk that the pipe forwards.
   * @param {import('node:stream').Duplex} producer
   */
  opened(producer) {
    this.producer = producer;
    this.client.on('data', (chunk) => this.readClientData(chunk));
  }

  /** @param {Buffer} chunk */
  readClientData(chunk) {
    if (!this.closing) {
      // The pipe forwards the chunk.
      this.clientFrames.read(chunk);
      return;
    }
    // At a boundary while closing, the close frame has been sent, so what the
    // client sends after it, such as its own close frame, is dropped.
    if (this.clientFrames.atBoundary) return;
    const length = this.clientFrames.read(chunk, true);
    this.producer?.write(chunk.subarray(0, length));
    if (this.clientFrames.atBoundary) this.sendCloseFrame();
  }

  /**
   * Closes the connection with 1001 (going away) on the client's behalf.
   * The client's bytes stop going to the producer, and the producer receives
   * a close frame as if the client had sent it. The producer replies with
   * its own close frame, which reaches the client through the pipe, and
   * then closes its TCP connection, which ends the client's. Writing to the
   * producer, not to the client, never cuts into a word frame on its way.
   * A connection whose upgrade is still under way is ended.
   */
  close() {
    // NOTE: a client that never finishes a frame it began gets no close
    // frame, and config.shutdownTimeout ends its connection.
    if (this.producer === null) {
      this.client.end();
      return;
    }
    const producer = this.producer;
    this.closing = true;
    this.client.unpipe(producer);
    // unpipe paused the client's socket. Reading on forwards the rest of a
    // frame that was partly forwarded, after which the close frame goes out,
    // and drops what the client sends later.
    this.client.resume();
    // The pipe no longer passes on the client's end of the connection.
    this.client.once('end', () => producer.end());
    if (this.clientFrames.atBoundary) this.sendCloseFrame();
  }

  sendCloseFrame() {
    if (this.producer?.writable) {
      this.producer.write(maskedCloseFrame(GOING_AWAY, GOING_AWAY_REASON));
    }
  }
}

/** Event streams in flight, each with its response from the producer. */
const eventStreams = new Map();
/** WebSocket connections in flight, by the client's socket. */
const webSockets = new Map();

const proxy = createProxyMiddleware({
  pathFilter: (pathname) => isProducerPath(pathname),
  router: pickProducer,
  // The default plugins respond to a refused connection with 504. These two
  // are kept: the first also closes the producer's response when the client
  // goes away, which ends an event stream upstream too.
  ejectPlugins: true,
  plugins: [debugProxyErrorsPlugin, proxyEventsPlugin],
  on: {
    // Emitted before httpxy adds its own 'upgrade' listener, so the one added
    // here runs first, before the sockets are piped.
    proxyReqWs: (proxyReq, req, socket) => {
      const webSocket = webSockets.get(socket);
      proxyReq.once('upgrade', (proxyRes, producerSocket) => webSocket?.opened(producerSocket));
    },
    proxyRes: (proxyRes, req, res) => {
      if (!EVENT_STREAM_PATHS.has(pathnameOf(req.url))) return;
      eventStreams.set(res, proxyRes);
      res.once('close', () => eventStreams.delete(res));
    },
    error: (err, req, res) => {
      console.error('proxying %s %s failed: %s', req.method, req.url, err.message);
      respondBadGateway(res);
    },
  },
});

/**
 * Sends 502 on a response, or on the socket of a WebSocket upgrade, unless
 * the producer's response has begun, in which case the client's connection
 * is closed.
 * @param {http.ServerResponse | import('node:net').Socket} res
 */
function respondBadGateway(res) {
  if (!(res instanceof http.ServerResponse)) {
    if (res.writable) res.end(BAD_GATEWAY_RESPONSE);
    return;
  }
  if (res.headersSent) {
    if (!res.writableEnded) res.destroy();
    return;
  }
  res.writeHead(502, { 'Content-Type': 'text/plain' });
  res.end('502 Bad Gateway: the producer is unavailable\n');
}

const app = express();
app.disable('x-powered-by');
app.use((req, res, next) => {
  if (isProducerPath(req.path)) setForwardingHeaders(req);
  next();
});
app.use(proxy);
app.use(
  express.static(config.staticDir, {
    setHeaders: (res) => {
      res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
      // A new deployment's page is fetched again, revalidated by ETag.
      res.setHeader('Cache-Control', 'no-cache');
    },
  }),
);
// The proxy's own error handler responds to connection errors. This one
// handles the rest, such as a producer name that could not be looked up.
app.use(
  /** @type {express.ErrorRequestHandler} */
  (err, req, res, _next) => {
    if (!res.headersSent) {
      console.error('proxying %s %s failed: %s', req.method, req.url, err.message);
    }
    respondBadGateway(res);
  },
);

const server = http.createServer(app);

// Wired here rather than by the middleware on its first HTTP request, so the
// first request after start may already be a WebSocket.
server.on('upgrade', (req, socket, head) => {
  if (pathnameOf(req.url) !== '/ws') {
    socket.end(NOT_FOUND_RESPONSE);
    return;
  }
  setForwardingHeaders(req);
  webSockets.set(socket, new ProxiedWebSocket(socket));
  socket.once('close', () => webSockets.delete(socket));
  proxy.upgrade(req, socket, head);
});

/**
 * Stops accepting connections, ends the event streams and closes the
 * WebSockets with 1001, because neither ends by itself, and exits once the
 * other requests are done or after config.shutdownTimeout.
 * @param {string} signal
 */
function shutDown(signal) {
  console.log('%s received, closing', signal);
  server.close(() => {
    console.log('closed');
    process.exit(0);
  });
  server.closeIdleConnections();
  for (const [res, proxyRes] of eventStreams) {
    proxyRes.unpipe(res);
    proxyRes.destroy();
    res.end();
  }
  for (const webSocket of webSockets.values()) webSocket.close();
  setTimeout(() => {
    console.error('requests still open after %d ms, closing them', config.shutdownTimeout);
    server.closeAllConnections();
    for (const socket of webSockets.keys()) socket.destroy();
  }, config.shutdownTimeout).unref();
}

process.once('SIGTERM', shutDown);
process.once('SIGINT', shutDown);

server.listen(config.port, config.host, () => {
  console.log(
    'listening on http://%s:%d: page from %s, producer %s',
    config.host,
    config.port,
    config.staticDir,
    config.producerUrl.href,
  );
});
