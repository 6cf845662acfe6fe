// @ts-check
'use strict';

/**
 * The consumer node: serves the page from STATIC_DIR and proxies the
 * producer's paths (/ws, /api/connections, /api/words, /admin, /static) to
 * PRODUCER_URL.
 * Any other path is a file of the page or 404.
 *
 * Environment: HOST, PORT, STATIC_DIR, PRODUCER_URL (see `config`).
 */

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

let nextAddress = 0;

/**
 * Picks the producer for one connection: PRODUCER_URL with its host name
 * replaced by the next of the name's IPv4 addresses (IPv4 like nginx's
 * ipv6=off, because the compose network has no IPv6).
 */
async function pickProducer() {
  const target = new URL(config.producerUrl);
  if (net.isIP(target.hostname.replace(/^\[|\]$/g, ''))) {
    return target.href;
  }
  const addresses = await dns.lookup(target.hostname, { all: true, family: 4 });
  // Docker's DNS shuffles the records, so sort them to give each its turn.
  addresses.sort((a, b) => a.address.localeCompare(b.address));
  target.hostname = addresses[nextAddress++ % addresses.length].address;
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

/** Event streams in flight, each with its response from the producer. */
const eventStreams = new Map();
/** WebSocket connections in flight (client side). */
const webSockets = new Set();

const proxy = createProxyMiddleware({
  pathFilter: (pathname) => isProducerPath(pathname),
  router: pickProducer,
  // The default plugins respond to a refused connection with 504. These two
  // are kept: the first also closes the producer's response when the client
  // goes away, which ends an event stream upstream too.
  ejectPlugins: true,
  plugins: [debugProxyErrorsPlugin, proxyEventsPlugin],
  on: {
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
  webSockets.add(socket);
  socket.once('close', () => webSockets.delete(socket));
  proxy.upgrade(req, socket, head);
});

/**
 * Stops accepting connections, ends the event streams and WebSockets, which
 * never end by themselves, and exits once the other requests are done or
 * after config.shutdownTimeout.
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
  for (const socket of webSockets) socket.end();
  setTimeout(() => {
    console.error('requests still open after %d ms, closing them', config.shutdownTimeout);
    server.closeAllConnections();
    for (const socket of webSockets) socket.destroy();
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
