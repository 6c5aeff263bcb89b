import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError } from '@corral/domain';
import { implementBidiStream, implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral images import|list` against a scripted gateway: the archive's
// bytes and header sent, progress on stderr, the result on stdout.

const KEY = 'crl_testkey0_secret';

describe('corral images', () => {
  let server: RunningGrpcServer;
  let dir: string;
  const uploads: { header?: apiV1.ImportHostImageHeader; bytes: Buffer; eof: boolean }[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'corral-cli-images-'));
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
                async *importHostImage(requests) {
                  const upload: (typeof uploads)[number] = { bytes: Buffer.alloc(0), eof: false };
                  uploads.push(upload);
                  for await (const m of requests) {
                    if (m.kind?.$case === 'header') {
                      upload.header = m.kind.value;
                      if (m.kind.value.hostId === 'nope') throw new NotFoundError('host not found');
                    } else if (m.kind?.$case === 'chunk') upload.bytes = Buffer.concat([upload.bytes, Buffer.from(m.kind.value)]);
                    else if (m.kind?.$case === 'eof') {
                      upload.eof = true;
                      break;
                    }
                  }
                  const n = upload.bytes.length;
                  yield { kind: { $case: 'progress', value: { phase: 'receiving', receivedBytes: n, consumedBytes: 0, totalBytes: n } } };
                  yield { kind: { $case: 'progress', value: { phase: 'importing', receivedBytes: n, consumedBytes: n, totalBytes: n } } };
                  yield { kind: { $case: 'result', value: { imageId: 'a'.repeat(64), ref: upload.header?.ref ?? '', bytes: n } } };
                },
              },
              silentLogger,
            ),
            ...implementUnary(
              apiV1.CorralServiceService,
              {
                async listHostImages(req) {
                  return { images: [{ imageId: 'b'.repeat(64), refs: [`localhost/${req.hostId}:1`], sizeBytes: 2 * 1024 * 1024, createdAt: new Date('2026-01-01T00:00:00Z') }] };
                },
              },
              silentLogger,
            ),
          },
        },
      ],
    });
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const run = (args: string[]) => runCaptured(args, { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY });

  it('uploads the file with its header and eof, progress on stderr, the result on stdout', async () => {
    const file = join(dir, 'rootfs.tar');
    const content = Buffer.alloc(200 * 1024, 7);
    writeFileSync(file, content);
    const res = await run(['-o', 'json', 'images', 'import', '--host', 'h-1', '--ref', 'localhost/app:1', file]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ hostId: 'h-1', imageId: 'a'.repeat(64), ref: 'localhost/app:1', bytes: content.length });
    expect(res.stderr).toContain('receiving: 0.2 MiB of 0.2 MiB received\n');
    expect(res.stderr).toContain('importing: 0.2 MiB of 0.2 MiB received, podman read 0.2 MiB\n');
    const upload = uploads.at(-1);
    expect(upload?.header).toEqual({ hostId: 'h-1', ref: 'localhost/app:1', format: 'rootfs-tar', sizeBytes: content.length });
    expect(upload?.eof).toBe(true);
    expect(upload?.bytes.equals(content)).toBe(true);
  });

  it('passes --format, refuses an unknown one, and reports a refusal', async () => {
    const file = join(dir, 'image.oci');
    writeFileSync(file, 'oci');
    expect((await run(['images', 'import', '--host', 'h-1', '--ref', 'localhost/app:2', '--format', 'oci-archive', file])).code).toBe(0);
    expect(uploads.at(-1)?.header?.format).toBe('oci-archive');
    const bad = await run(['images', 'import', '--host', 'h-1', '--ref', 'localhost/app:2', '--format', 'zip', file]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--format must be one of/);
    const refused = await run(['images', 'import', '--host', 'nope', '--ref', 'localhost/app:2', file]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: /);
  });

  it('lists a host images', async () => {
    const table = await run(['images', 'list', '--host', 'h-1']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/IMAGE\s+REFS\s+SIZE\s+CREATED/);
    expect(table.stdout).toContain('bbbbbbbbbbbb');
    expect(table.stdout).toContain('localhost/h-1:1');
    const json = await run(['-o', 'json', 'images', 'ls', '--host', 'h-1']);
    expect(JSON.parse(json.stdout)).toEqual({ images: [{ imageId: 'b'.repeat(64), refs: ['localhost/h-1:1'], sizeBytes: 2 * 1024 * 1024, createdAt: '2026-01-01T00:00:00.000Z' }] });
  });
});
