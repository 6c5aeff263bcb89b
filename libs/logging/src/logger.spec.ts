import { PassThrough } from 'node:stream';
import { createLogger } from './logger';

async function until(ready: () => boolean) {
  for (let i = 0; i < 100 && !ready(); i++) await new Promise((r) => setTimeout(r, 10));
}

function capture() {
  const stream = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  stream.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
  });
  return { stream, lines };
}

describe('createLogger', () => {
  it('writes JSON lines with the service name and a timestamp', async () => {
    const { stream, lines } = capture();
    createLogger({ service: 'scheduler', stream }).info('placed workload', { workloadId: 'w1' });
    await until(() => lines.length > 0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'info', message: 'placed workload', service: 'scheduler', workloadId: 'w1' });
    expect(typeof lines[0].timestamp).toBe('string');
  });

  it('redacts secret-bearing fields at any depth, in children too', async () => {
    const { stream, lines } = capture();
    const logger = createLogger({ service: 'api', stream });
    logger.info('request', {
      headers: { authorization: 'Bearer crl_abc', 'x-request-id': 'r1' },
      spec: { command: ['sh'], env: { DB_PASSWORD: 'hunter2' } },
      apiKey: 'crl_live',
      nested: [{ refreshToken: 'rt-1' }],
    });
    logger.child({ password: 'p4ss', requestId: 'r2' }).warn('child');
    await until(() => lines.length > 1);
    const text = JSON.stringify(lines);
    for (const secret of ['crl_abc', 'hunter2', 'crl_live', 'rt-1', 'p4ss']) expect(text).not.toContain(secret);
    expect(lines[0]).toMatchObject({ headers: { authorization: '[REDACTED]', 'x-request-id': 'r1' }, spec: { command: ['sh'], env: '[REDACTED]' } });
    expect(lines[1]).toMatchObject({ requestId: 'r2', password: '[REDACTED]' });
  });

  it('serialises errors with their name and message', async () => {
    const { stream, lines } = capture();
    const err = new TypeError('boom');
    createLogger({ service: 'x', stream }).error('failed', { err });
    await until(() => lines.length > 0);
    expect(lines[0]).toMatchObject({ err: { name: 'TypeError', message: 'boom' } });
  });
});
