import { EventEmitter } from 'node:events';
import { implementBidiStream, implementServerStream, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { runCli } from '../run-cli';
import { copyChunksTo, relayExecOutput } from './exec-files';

// `corral exec` and `corral cp ID:/PATH -` write to stdout only as fast as it
// takes their output: while stdout is full they pull nothing more from the
// gRPC stream (so its flow control holds the sender back).

/** Lets every pending promise and I/O callback run: whatever could move on has. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A stdout that refuses (write() false) while `full` is set; the test emits 'drain'. */
class StubStdout extends EventEmitter {
  readonly written: string[] = [];
  full = true;
  write(chunk: string | Uint8Array): boolean {
    this.written.push(Buffer.from(chunk).toString());
    return !this.full;
  }
}

/** The messages `make` builds for 0..count-1, counting how many were pulled. */
function countingSource<T>(count: number, make: (i: number) => T) {
  const state = { pulls: 0 };
  const source = (async function* () {
    for (let i = 0; i < count; i++) {
      state.pulls++;
      yield make(i);
    }
  })();
  return { source, state };
}

const execOutput = (i: number): apiV1.ExecWorkloadResponse =>
  i === 4 ? { kind: { $case: 'exit', value: { exitCode: 3 } } } : { kind: { $case: i % 2 ? 'stderr' : 'stdout', value: Buffer.from(`${i}`) } };

describe('exec and cp output pacing', () => {
  it('exec pulls no further message while stdout refuses, and relays the rest after drain', async () => {
    const stdout = new StubStdout();
    const stderr = new StubStdout();
    stderr.full = false;
    const { source, state } = countingSource(5, execOutput);
    let exitCode: number | undefined;
    const relayed = relayExecOutput(source, { stdout, stderr }, (code) => (exitCode = code));
    await settle();
    await settle();
    expect(state.pulls).toBe(1);
    expect(stdout.written).toEqual(['0']);

    stdout.full = false;
    stdout.emit('drain');
    await relayed;
    expect(state.pulls).toBe(5);
    expect(stdout.written).toEqual(['0', '2']);
    expect(stderr.written).toEqual(['1', '3']);
    expect(exitCode).toBe(3);
  });

  it('exec is held back by a full stderr too', async () => {
    const stdout = new StubStdout();
    stdout.full = false;
    const stderr = new StubStdout();
    const { source, state } = countingSource(5, execOutput);
    const relayed = relayExecOutput(source, { stdout, stderr }, () => undefined);
    await settle();
    await settle();
    expect(state.pulls).toBe(2);
    stderr.full = false;
    stderr.emit('drain');
    await relayed;
    expect(state.pulls).toBe(5);
  });

  it('cp ID:/PATH - pulls no further chunk while stdout refuses, and stops when stdout closes', async () => {
    const stdout = new StubStdout();
    const { source, state } = countingSource(10, (i) => ({ chunk: Buffer.from(`${i}`) }));
    const copied = copyChunksTo(source, stdout);
    await settle();
    await settle();
    expect(state.pulls).toBe(1);
    stdout.emit('drain');
    await settle();
    expect(state.pulls).toBe(2);
    stdout.emit('close');
    await expect(copied).rejects.toThrow('the output was closed before everything was written');
    expect(state.pulls).toBe(2);
  });
});

describe('exec and cp against a scripted gateway with a stdout that is always full', () => {
  const KEY = 'crl_testkey0_secret';
  const CHUNKS = 50;
  let server: RunningGrpcServer;

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: apiV1.CorralServiceService,
          implementation: {
            ...implementBidiStream(
              apiV1.CorralServiceService,
              {
                async *execWorkload(requests) {
                  for await (const m of requests) if (m.kind?.$case === 'stdinEof') break;
                  for (let i = 0; i < CHUNKS; i++) yield { kind: { $case: 'stdout', value: Buffer.from(`line ${i}\n`) } };
                  yield { kind: { $case: 'exit', value: { exitCode: 7 } } };
                },
              },
              silentLogger,
            ),
            ...implementServerStream(
              apiV1.CorralServiceService,
              {
                async *readWorkloadFile() {
                  for (let i = 0; i < CHUNKS; i++) yield { chunk: Buffer.from(`part ${i}\n`) };
                },
              },
              silentLogger,
            ),
          },
        },
      ],
    });
  });
  afterAll(() => server.stop());

  /** Refuses every write and drains on the next turn, as a slow pipe would. */
  function alwaysFullStdout() {
    const out = new StubStdout();
    const write = out.write.bind(out);
    out.write = (chunk) => {
      write(chunk);
      setImmediate(() => out.emit('drain'));
      return false;
    };
    return out;
  }

  const expected = (prefix: string) => Array.from({ length: CHUNKS }, (_, i) => `${prefix} ${i}\n`).join('');
  const env = () => ({ CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY });

  it('exec relays every line in order and passes the exit code on', async () => {
    const stdout = alwaysFullStdout();
    const code = await runCli(['exec', 'w1', '--', 'seq'], { stdout, stderr: new StubStdout(), env: env() });
    expect(stdout.written.join('')).toBe(expected('line'));
    expect(code).toBe(7);
  });

  it('cp ID:/PATH - writes every chunk in order', async () => {
    const stdout = alwaysFullStdout();
    const code = await runCli(['cp', 'w1:/data', '-'], { stdout, stderr: new StubStdout(), env: env() });
    expect(code).toBe(0);
    expect(stdout.written.join('')).toBe(expected('part'));
  });
});
