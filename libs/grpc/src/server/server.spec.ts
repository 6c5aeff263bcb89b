import { Metadata } from '@grpc/grpc-js';
import { InvalidArgumentError, NotFoundError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import { createClient } from '../client/client';
import { checkHealth } from '../client/health';
import { implementUnary } from './handlers';
import { startGrpcServer, type RunningGrpcServer } from './server';

// A real server on a loopback port: errors must survive the wire as typed
// errors, and backend text must not.
describe('gRPC server plumbing', () => {
  let server: RunningGrpcServer;
  const seen: Metadata[] = [];

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: schedulerV1.SchedulerServiceService,
          implementation: implementUnary(
            schedulerV1.SchedulerServiceService,
            {
              async getWorkload(req, ctx) {
                seen.push(ctx.metadata);
                if (req.id === 'missing') throw new NotFoundError('workload missing not found');
                if (req.id === 'bad') throw new InvalidArgumentError('id is malformed', { field: 'id' });
                if (req.id === 'crash') throw new Error('relation "workloads" does not exist at /srv/secret/path');
                return { workload: { ...schedulerV1.Workload.fromPartial({ id: req.id, name: 'w' }) } };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(() => server.stop());

  const client = () => createClient(schedulerV1.SchedulerServiceClient, server.address, { deadlineMs: 5000 });

  it('serves a unary call', async () => {
    const res = await client().getWorkload({ id: 'w1', teamId: '' });
    expect(res.workload?.id).toBe('w1');
  });

  it('passes metadata through', async () => {
    const md = new Metadata();
    md.set('authorization', 'Bearer x');
    await client().getWorkload({ id: 'w2', teamId: '' }, { metadata: md });
    expect(seen.at(-1)?.get('authorization')).toEqual(['Bearer x']);
  });

  it('turns typed errors into typed errors on the other side, field included', async () => {
    await expect(client().getWorkload({ id: 'missing', teamId: '' })).rejects.toMatchObject({ name: 'NotFoundError', code: 'NOT_FOUND' });
    await expect(client().getWorkload({ id: 'bad', teamId: '' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'id' });
  });

  it('hides backend text behind a fixed message', async () => {
    const err = await client().getWorkload({ id: 'crash', teamId: '' }).catch((e: Error) => e);
    expect(err).toMatchObject({ name: 'InternalError', message: 'internal error' });
    expect(JSON.stringify(err)).not.toContain('secret');
  });

  it('replaces transport error text (addresses, errno) with a fixed message', async () => {
    const dead = createClient(schedulerV1.SchedulerServiceClient, '127.0.0.1:1', { deadlineMs: 2000 });
    const err = await dead.getWorkload({ id: 'x', teamId: '' }).catch((e: Error) => e);
    expect(err).toMatchObject({ name: 'UnavailableError', message: 'service unavailable' });
    expect((err as Error).message).not.toContain('127.0.0.1');
  });

  it('answers grpc.health.v1 for the server and each service', async () => {
    expect(await checkHealth(server.address, '')).toBe('SERVING');
    expect(await checkHealth(server.address, 'corral.scheduler.v1.SchedulerService')).toBe('SERVING');
  });

  it('stops idempotently, after which health checks fail', async () => {
    const s = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, services: [] });
    expect(await checkHealth(s.address)).toBe('SERVING');
    await Promise.all([s.stop(100), s.stop(100)]);
    await expect(checkHealth(s.address, '', { deadlineMs: 500 })).rejects.toBeDefined();
  });
});
