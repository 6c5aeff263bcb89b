import { implementServerStream, implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral events [-f]` against a scripted gateway: filters sent, a table or
// JSON for the list, one line per event while following.

const KEY = 'crl_testkey0_secret';

const event = (id: number, action: string, reason: string): apiV1.AuditEvent => ({
  id,
  at: new Date('2026-12-03T10:00:00Z'),
  actor: 'reconciler/r1',
  kind: action === 'restart' ? 'action' : 'drift',
  action,
  outcome: action === 'restart' ? 'succeeded' : 'observed',
  subjectType: 'workload',
  subjectId: 'w-1',
  teamId: '',
  reason,
  dataJson: '{}',
});

describe('corral events', () => {
  let server: RunningGrpcServer;
  const listed: apiV1.ListEventsRequest[] = [];
  const streamed: apiV1.StreamEventsRequest[] = [];

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: apiV1.CorralServiceService,
          implementation: {
            ...implementUnary(
              apiV1.CorralServiceService,
              {
                async listEvents(req) {
                  listed.push(req);
                  return { events: [event(1, 'ended', 'exited with code 137'), event(2, 'restart', 'restart 1 of 3')] };
                },
              },
              silentLogger,
            ),
            ...implementServerStream(
              apiV1.CorralServiceService,
              {
                async *streamEvents(req) {
                  streamed.push(req);
                  yield { event: event(1, 'ended', 'exited with code 137') };
                  yield { event: event(2, 'restart', 'restart 1 of 3') };
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

  const run = (args: string[]) => runCaptured(args, { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY });

  it('lists the trail with its filters, as a table or JSON', async () => {
    const table = await run(['events', '--subject', 'w-1', '--kind', 'drift', '--limit', '5']);
    expect(table.code).toBe(0);
    expect(listed.at(-1)).toMatchObject({ subjectId: 'w-1', kind: 'drift', limit: 5 });
    expect(table.stdout).toMatch(/KIND\s+ACTION\s+OUTCOME/);
    expect(table.stdout).toContain('exited with code 137');
    const json = await run(['-o', 'json', 'events']);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ id: '1', kind: 'drift', action: 'ended', subject: 'workload/w-1' }),
      expect.objectContaining({ id: '2', kind: 'action', action: 'restart', outcome: 'succeeded' }),
    ]);
  });

  it('follows: one line per event as it arrives', async () => {
    const res = await run(['events', '-f', '--subject', 'w-1']);
    expect(res.code).toBe(0);
    expect(streamed.at(-1)?.filter).toMatchObject({ subjectId: 'w-1' });
    const lines = res.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/action\s+restart\s+succeeded\s+workload\/w-1\s+restart 1 of 3/);
  });
});
