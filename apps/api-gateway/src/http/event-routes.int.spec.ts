import { request } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { appendAuditEvent, type AuditEntry } from '@corral/db';
import { silentLogger } from '@corral/logging';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { createClient, Metadata, startGrpcServer } from '@corral/grpc';
import { apiV1 } from '@corral/proto';
import { corralGrpcService } from '../grpc/corral-grpc-service';
import { createCorralOperations } from '../operations/corral-operations';
import { createEventOperations } from '../operations/event-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

// GET /v1/events over a real audit_events table: team scope, filters,
// validation naming the field, and the follow stream (backlog, then new
// entries, by id: nothing twice, nothing skipped).

const ADMIN = 'crl_admin000_secret';
const TEAM_A = 'crl_teamaaaa_secret';
const keys = { [ADMIN]: { keyId: 'k-admin', admin: true, teamId: null }, [TEAM_A]: { keyId: 'k-a', admin: false, teamId: 'team-a' } };

describeWithDatabase('REST audit trail (GET /v1/events)', () => {
  let db: TestDatabase;
  let app: FastifyInstance;
  let baseUrl: string;

  const entry = (subjectId: string, teamId: string | null, overrides: Partial<AuditEntry> = {}): AuditEntry => ({
    actor: 'reconciler/test',
    kind: 'drift',
    action: 'vanished',
    outcome: 'observed',
    subjectType: 'workload',
    subjectId,
    teamId,
    reason: `about ${subjectId}`,
    ...overrides,
  });

  beforeAll(async () => {
    db = await createTestDatabase();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      events: createEventOperations(db.prisma, { pollMs: 50 }),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
    });
    baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    await appendAuditEvent(db.prisma, entry('w-a', 'team-a'));
    await appendAuditEvent(db.prisma, entry('w-a', 'team-a', { kind: 'action', action: 'restart', outcome: 'succeeded' }));
    await appendAuditEvent(db.prisma, entry('w-b', 'team-b'));
    await appendAuditEvent(db.prisma, entry('orphan', null, { action: 'orphan' }));
  });
  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  const get = (url: string, key = ADMIN) => app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${key}` } });

  it('shows an admin every entry, oldest first, and a team only its own', async () => {
    const all = await get('/v1/events');
    expect(all.statusCode).toBe(200);
    expect(all.json().events.map((e: { subjectId: string }) => e.subjectId)).toEqual(['w-a', 'w-a', 'w-b', 'orphan']);
    const team = await get('/v1/events', TEAM_A);
    expect(team.json().events.map((e: { subjectId: string; action: string }) => `${e.subjectId}:${e.action}`)).toEqual(['w-a:vanished', 'w-a:restart']);
    expect(team.json().events[1]).toMatchObject({ kind: 'action', outcome: 'succeeded', reason: 'about w-a', actor: 'reconciler/test', subjectType: 'workload' });
  });

  it('filters by subject, kind, after and limit', async () => {
    const ids = (await get('/v1/events')).json().events.map((e: { id: string }) => e.id);
    expect((await get('/v1/events?subject=w-b')).json().events).toHaveLength(1);
    expect((await get('/v1/events?kind=action')).json().events.map((e: { action: string }) => e.action)).toEqual(['restart']);
    expect((await get(`/v1/events?after=${ids[1]}`)).json().events.map((e: { id: string }) => e.id)).toEqual(ids.slice(2));
    expect((await get('/v1/events?limit=1')).json().events.map((e: { id: string }) => e.id)).toEqual(ids.slice(0, 1));
  });

  it('names the field of a bad query in the 400', async () => {
    for (const [query, field] of [
      ['kind=nope', 'kind'],
      ['limit=0', 'limit'],
      ['since=yesterday', 'since'],
      ['after=-1', 'after'],
    ]) {
      const res = await get(`/v1/events?${query}`);
      expect(res.statusCode).toBe(400);
      expect(res.body).toContain(field);
    }
  });

  it('follows: the backlog, then new entries as they are stored, each once', async () => {
    const lines: Array<{ id: string; action: string }> = [];
    let buffered = '';
    let contentType = '';
    let status = 0;
    // node:http rather than fetch: destroying the request closes the socket at once.
    const req = request(`${baseUrl}/v1/events?follow=true&subject=w-a`, { headers: { authorization: `Bearer ${TEAM_A}` } }, (res) => {
      status = res.statusCode ?? 0;
      contentType = String(res.headers['content-type']);
      res.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const parts = buffered.split('\n');
        buffered = parts.pop() ?? '';
        for (const part of parts) if (part) lines.push(JSON.parse(part));
      });
    });
    req.end();
    const until = async (count: number) => {
      for (let i = 0; i < 250 && lines.length < count; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    };
    try {
      await until(2);
      await appendAuditEvent(db.prisma, entry('w-a', 'team-a', { kind: 'action', action: 'mark-missing', outcome: 'succeeded' }));
      await appendAuditEvent(db.prisma, entry('w-b', 'team-b', { action: 'not-for-team-a' }));
      await appendAuditEvent(db.prisma, entry('w-a', 'team-a', { action: 'back' }));
      await until(4);
    } finally {
      req.destroy();
    }
    expect(status).toBe(200);
    expect(contentType).toMatch(/application\/x-ndjson/);
    expect(lines.map((l) => l.action)).toEqual(['vanished', 'restart', 'mark-missing', 'back']);
    expect(new Set(lines.map((l) => l.id)).size).toBe(4);
  });

  it('follows without a gap when an entry with a lower id commits after a higher one was sent', async () => {
    const events = createEventOperations(db.prisma, { pollMs: 50 });
    const controller = new AbortController();
    const seen: string[] = [];
    const follower = (async () => {
      for await (const e of events.followEvents({ caller: { keyId: 'k', admin: true, teamId: null }, signal: controller.signal }, { subjectId: 'late' })) seen.push(e.action);
    })();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    // The slow writer takes its id first and commits last.
    const slow = db.prisma.$transaction(async (tx) => {
      await appendAuditEvent(tx as never, entry('late', null, { action: 'first-id-last-commit' }));
      await held;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await appendAuditEvent(db.prisma, entry('late', null, { action: 'second-id-first-commit' }));
    for (let i = 0; i < 100 && !seen.includes('second-id-first-commit'); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    await slow;
    for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    await follower;
    expect(seen).toEqual(['second-id-first-commit', 'first-id-last-commit']);
  });

  it('serves the same trail over public gRPC: ListEvents scoped to the team, StreamEvents with its backlog', async () => {
    const operations = createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) });
    const server = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, services: [corralGrpcService(operations, silentLogger, { events: createEventOperations(db.prisma, { pollMs: 50 }) })] });
    const client = createClient(apiV1.CorralServiceClient, server.address, {
      deadlineMs: 5000,
      metadata: () => {
        const md = new Metadata();
        md.set('authorization', `Bearer ${TEAM_A}`);
        return md;
      },
    });
    await appendAuditEvent(db.prisma, entry('g-a', 'team-a'));
    await appendAuditEvent(db.prisma, entry('g-a', 'team-a', { kind: 'action', action: 'restart', outcome: 'succeeded' }));
    await appendAuditEvent(db.prisma, entry('g-b', 'team-b', { kind: 'action', action: 'restart', outcome: 'succeeded' }));
    try {
      const listed = await client.listEvents(apiV1.ListEventsRequest.fromPartial({ kind: 'action' }));
      expect(listed.events.filter((e) => e.subjectId.startsWith('g-')).map((e) => [e.subjectId, e.kind, e.action, e.teamId])).toEqual([['g-a', 'action', 'restart', 'team-a']]);
      expect(JSON.parse(listed.events[0].dataJson)).toEqual({});
      await expect(client.listEvents(apiV1.ListEventsRequest.fromPartial({ kind: 'nope' }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      const controller = new AbortController();
      const streamed: string[] = [];
      try {
        for await (const m of client.stream('streamEvents', { filter: apiV1.ListEventsRequest.fromPartial({ subjectId: 'g-a' }) }, { signal: controller.signal })) {
          streamed.push(m.event?.action ?? '');
          if (streamed.length === 2) controller.abort();
        }
      } catch (err) {
        if (!controller.signal.aborted) throw err;
      }
      expect(streamed).toEqual(['vanished', 'restart']);
    } finally {
      client.close();
      await server.stop();
    }
  });

  it('wakes followers by the doorbell instead of waiting for the poll', async () => {
    let ring: (() => void) | undefined;
    const events = createEventOperations(db.prisma, { pollMs: 60_000, doorbell: (r) => ((ring = r), () => (ring = undefined)) });
    const controller = new AbortController();
    const seen: string[] = [];
    const follower = (async () => {
      for await (const e of events.followEvents({ caller: { keyId: 'k', admin: true, teamId: null }, signal: controller.signal }, { subjectId: 'bell' })) seen.push(e.action);
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await appendAuditEvent(db.prisma, entry('bell', null, { action: 'rung' }));
    ring?.();
    for (let i = 0; i < 100 && seen.length < 1; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    await follower;
    expect(seen).toEqual(['rung']);
    expect(ring).toBeUndefined();
  });
});
