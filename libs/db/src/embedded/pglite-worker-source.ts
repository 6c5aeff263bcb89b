// The code of the worker thread that runs PGlite and serves it over the
// Postgres wire protocol. It is plain JavaScript in a string, started with
// `new Worker(source, { eval: true })`, so that it survives bundling (there is
// no worker file to ship) and runs under Node's own module loader, which
// PGlite's CommonJS build needs for its dynamic import() of Node built-ins
// (Jest's module sandbox rejects those).
//
// Why not @electric-sql/pglite-socket's PGLiteSocketServer: it queues each
// wire message on its own, so the Parse/Bind/Execute/Sync of one connection
// interleave with other connections' messages on PGlite's single session. A
// transaction on one connection next to plain queries on another then fails
// with 'portal "" does not exist' or runs statements in the wrong transaction.
// This server queues whole batches instead: everything a client sends up to
// the point where it waits for an answer (Sync, Query, Flush, CopyDone/Fail)
// runs as one unit, and while a connection is inside a transaction (its last
// ReadyForQuery was not Idle) only that connection's batches run. So a
// client that idles inside a transaction stalls every other client, not just
// those wanting its locks; one that disconnects is rolled back.
//
// All connections still share one Postgres session, so session state (SET,
// named prepared statements, session advisory locks, LISTEN) is shared too;
// Corral's clients (node-postgres, @prisma/adapter-pg) use none of it.
export const PGLITE_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const { PGlite } = require(workerData.pglitePath);

// Startup-phase request codes (in place of a protocol version).
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
// Frontend messages after which a client waits for the server: Sync, Query,
// Flush, CopyDone, CopyFail. What a client sent up to one of these is a batch.
const BATCH_END = new Set(['S', 'Q', 'H', 'c', 'f']);
const READY_FOR_QUERY = 0x5a; // 'Z'

let db;
let server;
const connections = new Set();
// Batches waiting to run, oldest first: { connection, bytes } or { connection, rollback: true }.
const ready = [];
// The connection inside a transaction, whose batches alone may run until it leaves it.
let owner = null;
let running = false;
let idleWaiters = [];

// Status byte of the last ReadyForQuery in a batch's output ('I' idle,
// 'T' in a transaction, 'E' in a failed one), or null if there is none
// (the client flushed mid-sequence and will send more).
function lastReadyStatus(output) {
  let status = null;
  for (let offset = 0; offset + 5 <= output.length; ) {
    const length = output.readInt32BE(offset + 1);
    if (output[offset] === READY_FOR_QUERY && length === 5) status = String.fromCharCode(output[offset + 5]);
    offset += 1 + length;
  }
  return status;
}

function schedule() {
  if (running) return;
  const index = owner ? ready.findIndex((batch) => batch.connection === owner) : ready.length > 0 ? 0 : -1;
  if (index < 0) {
    if (ready.length === 0) for (const wake of idleWaiters.splice(0)) wake();
    return;
  }
  const [batch] = ready.splice(index, 1);
  running = true;
  run(batch)
    .catch((error) => batch.connection.socket.destroy(error))
    .finally(() => {
      running = false;
      schedule();
    });
}

async function run(batch) {
  const { connection } = batch;
  if (batch.rollback) {
    // Not inside runExclusive: exec takes PGlite's lock itself. Nothing else
    // runs meanwhile, since batches run one at a time. Whatever happens, the
    // departed client must not stay the owner, or nobody would run again.
    try {
      await db.exec('ROLLBACK');
    } finally {
      owner = null;
    }
    return;
  }
  const chunks = [];
  await db.runExclusive(() =>
    db.execProtocolRawStream(batch.bytes, { onRawData: (data) => chunks.push(Buffer.from(data)) }),
  );
  const output = Buffer.concat(chunks);
  owner = lastReadyStatus(output) === 'I' ? null : connection;
  if (!connection.closed) connection.socket.write(output);
}

function accept(socket) {
  socket.setNoDelay(true);
  const connection = { socket, input: Buffer.alloc(0), pending: [], started: false, closed: false };
  connections.add(connection);
  socket.on('data', (data) => {
    if (connection.closed) return;
    connection.input = connection.input.length > 0 ? Buffer.concat([connection.input, data]) : data;
    try {
      readMessages(connection);
    } catch (error) {
      socket.destroy(error);
    }
  });
  socket.on('error', () => undefined);
  socket.on('close', () => closed(connection));
}

function readMessages(connection) {
  for (;;) {
    const input = connection.input;
    if (!connection.started) {
      // Startup-phase messages have no type byte: length, then a code.
      if (input.length < 8) return;
      const length = input.readInt32BE(0);
      if (input.length < length) return;
      const code = input.readInt32BE(4);
      const message = Buffer.from(input.subarray(0, length));
      connection.input = input.subarray(length);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        connection.socket.write('N'); // no encryption; the client goes on in plain text
        continue;
      }
      if (code === CANCEL_REQUEST) {
        connection.socket.end(); // cancelling is not supported
        return;
      }
      connection.started = true;
      ready.push({ connection, bytes: message });
      schedule();
      continue;
    }
    if (input.length < 5) return;
    const length = input.readInt32BE(1);
    if (input.length < 1 + length) return;
    const type = String.fromCharCode(input[0]);
    const message = input.subarray(0, 1 + length);
    connection.input = input.subarray(1 + length);
    if (type === 'X') {
      // Terminate ends this client only; PGlite's session lives on.
      connection.socket.end();
      return;
    }
    connection.pending.push(message);
    if (BATCH_END.has(type)) {
      ready.push({ connection, bytes: Buffer.concat(connection.pending) });
      connection.pending = [];
      schedule();
    }
  }
}

function closed(connection) {
  if (connection.closed) return;
  connection.closed = true;
  connections.delete(connection);
  for (let index = ready.length - 1; index >= 0; index--) {
    if (ready[index].connection === connection) ready.splice(index, 1);
  }
  // A client that went away inside a transaction must not hold up the others.
  if (owner === connection) ready.unshift({ connection, rollback: true });
  schedule();
}

function failed(error) {
  parentPort.postMessage({ type: 'failed', message: String((error && error.message) || error), stack: error && error.stack });
}

async function start() {
  db = await PGlite.create({ dataDir: workerData.dataDir, username: workerData.user, database: workerData.database });
  server = net.createServer(accept);
  server.maxConnections = workerData.maxConnections;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(workerData.port, workerData.host, resolve);
  });
  const address = server.address();
  parentPort.postMessage({ type: 'listening', host: address.address, port: address.port });
}

async function stop() {
  if (server) {
    const closing = new Promise((resolve) => server.close(resolve));
    for (const connection of connections) connection.socket.destroy();
    await closing;
  }
  if (running || ready.length > 0) await new Promise((resolve) => idleWaiters.push(resolve));
  if (db && !db.closed) await db.close();
  parentPort.postMessage({ type: 'stopped' });
  parentPort.close();
}

parentPort.on('message', (message) => {
  if (message === 'stop') stop().catch(failed);
});
start().catch(failed);
`;
