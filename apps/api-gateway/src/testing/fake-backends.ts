import { randomUUID } from 'node:crypto';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  instanceStateFromProto,
  instanceStateToProto,
  pauseResumeAction,
  validateWorkloadSpec,
  workloadExtrasFromWire,
  workloadExtrasToWire,
  type InstanceState,
} from '@corral/domain';
import { HostStatus, eventsV1, hostRegistryV1, schedulerV1, type agentV1 } from '@corral/proto';
import type { Caller } from '../operations/caller';
import { AsyncQueue, type BidiCall, type StreamCallOpts } from '@corral/grpc';
import type { ApiKeyAuthenticator, HostRegistry, WorkloadScheduler, WorkloadStreams } from '../operations/ports';

// In-memory stand-ins for the scheduler, the host registry and the API key
// store, for tests of the gateway's adapters. They keep the backends'
// contracts that the gateway relies on: team scoping ('' = all teams),
// not-found for another team's workload, idempotent stop, server-side spec
// validation. `failNext` makes the next call throw, to test error mapping.

export class FakeScheduler implements WorkloadScheduler {
  readonly workloads = new Map<string, schedulerV1.Workload>();
  readonly logs = new Map<string, Buffer>();
  readonly calls: { method: string; request: unknown }[] = [];
  /** Log streams currently open (a followed stream stays open until its workload is settled or it is cancelled). */
  openStreams = 0;
  private failure: unknown;

  failNext(err: unknown) {
    this.failure = err;
  }

  private enter(method: string, request: unknown) {
    this.calls.push({ method, request });
    const failure = this.failure;
    this.failure = undefined;
    if (failure !== undefined) throw failure;
  }

  private visible(id: string, teamId: string): schedulerV1.Workload {
    const workload = this.workloads.get(id);
    if (!workload || (teamId !== '' && workload.teamId !== teamId)) throw new NotFoundError(`workload ${id} not found`);
    return workload;
  }

  add(partial: Omit<Partial<schedulerV1.Workload>, 'state'> & { state?: InstanceState }): schedulerV1.Workload {
    const { state, ...rest } = partial;
    const now = new Date('2026-01-01T00:00:00Z');
    const workload = schedulerV1.Workload.fromPartial({
      id: randomUUID(),
      name: 'w',
      driver: 'process',
      command: ['sleep', '60'],
      createdAt: now,
      updatedAt: now,
      ...rest,
      state: instanceStateToProto(state ?? 'running'),
    });
    this.workloads.set(workload.id, workload);
    return workload;
  }

  async createWorkload(request: schedulerV1.CreateWorkloadRequest): Promise<schedulerV1.CreateWorkloadResponse> {
    this.enter('createWorkload', request);
    const spec = validateWorkloadSpec({ name: request.name, driver: request.driver, command: request.command, env: request.env, ...workloadExtrasFromWire(request) });
    const workload = this.add({
      name: spec.name,
      driver: spec.driver,
      command: spec.command,
      envKeys: Object.keys(spec.env),
      teamId: request.teamId,
      state: 'pending',
      ...workloadExtrasToWire(spec),
    });
    return { workload };
  }

  async pauseWorkload(request: schedulerV1.PauseWorkloadRequest): Promise<schedulerV1.PauseWorkloadResponse> {
    this.enter('pauseWorkload', request);
    return { workload: this.pauseOrResume(request, 'paused') };
  }

  async resumeWorkload(request: schedulerV1.ResumeWorkloadRequest): Promise<schedulerV1.ResumeWorkloadResponse> {
    this.enter('resumeWorkload', request);
    return { workload: this.pauseOrResume(request, 'running') };
  }

  private pauseOrResume(request: { id: string; teamId: string }, to: 'paused' | 'running'): schedulerV1.Workload {
    const workload = this.visible(request.id, request.teamId);
    const action = pauseResumeAction(instanceStateFromProto(workload.state), to);
    if (action === 'refuse') throw new FailedPreconditionError(`workload ${request.id} cannot be ${to === 'paused' ? 'paused' : 'resumed'} now`);
    workload.state = instanceStateToProto(to);
    return workload;
  }

  async restoreWorkload(request: schedulerV1.RestoreWorkloadRequest): Promise<schedulerV1.RestoreWorkloadResponse> {
    this.enter('restoreWorkload', request);
    const source = this.visible(request.id, request.teamId);
    if (request.snapshotId !== 'snap-1-abc') throw new NotFoundError(`snapshot ${request.snapshotId} not found`, { field: 'snapshotId' });
    const restored = this.add({ ...source, id: undefined, name: request.name || `${source.name}-restored`, state: 'running' });
    return { workload: restored };
  }

  async getWorkload(request: schedulerV1.GetWorkloadRequest): Promise<schedulerV1.GetWorkloadResponse> {
    this.enter('getWorkload', request);
    return { workload: this.visible(request.id, request.teamId) };
  }

  async listWorkloads(request: schedulerV1.ListWorkloadsRequest): Promise<schedulerV1.ListWorkloadsResponse> {
    this.enter('listWorkloads', request);
    const terminal = ['INSTANCE_STATE_STOPPED', 'INSTANCE_STATE_FAILED', 'INSTANCE_STATE_RETIRED'];
    return {
      workloads: [...this.workloads.values()].filter(
        (w) =>
          (request.teamId === '' || w.teamId === request.teamId) &&
          (!request.hostId || w.hostId === request.hostId) &&
          !(request.excludeTerminal && terminal.includes(w.state)),
      ),
    };
  }

  /** Like the scheduler: each live workload of the host gets a replacement on `migrationTarget`, the original is retired. */
  migrationTarget = 'h-elsewhere';
  async migrateHostWorkloads(request: schedulerV1.MigrateHostWorkloadsRequest): Promise<schedulerV1.MigrateHostWorkloadsResponse> {
    this.enter('migrateHostWorkloads', request);
    const terminal = ['INSTANCE_STATE_STOPPED', 'INSTANCE_STATE_FAILED', 'INSTANCE_STATE_RETIRED'];
    const live = [...this.workloads.values()].filter((w) => w.hostId === request.hostId && !terminal.includes(w.state) && (request.teamId === '' || w.teamId === request.teamId));
    return {
      migrations: live.map((w) => {
        const { state: _state, ...spec } = w;
        const replacement = this.add({ ...spec, id: randomUUID(), hostId: this.migrationTarget, state: 'running' });
        w.state = instanceStateToProto('retired');
        return { workloadId: w.id, name: w.name, outcome: 'moved', replacementId: replacement.id, toHostId: this.migrationTarget, reason: `replaced by ${replacement.id}, running` };
      }),
    };
  }

  /** Like the scheduler: force stops first; a retired workload is returned unchanged. */
  async destroyWorkload(request: schedulerV1.DestroyWorkloadRequest): Promise<schedulerV1.DestroyWorkloadResponse> {
    this.enter('destroyWorkload', request);
    const workload = this.visible(request.id, request.teamId);
    const atRest = ['INSTANCE_STATE_STOPPED', 'INSTANCE_STATE_FAILED', 'INSTANCE_STATE_RETIRED', 'INSTANCE_STATE_TEARING_DOWN'].includes(workload.state);
    if (!atRest && !request.force) throw new FailedPreconditionError(`cannot destroy workload ${request.id}: it is live`);
    workload.state = instanceStateToProto('retired');
    workload.ports = [];
    return { workload };
  }

  async stopWorkload(request: schedulerV1.StopWorkloadRequest): Promise<schedulerV1.StopWorkloadResponse> {
    this.enter('stopWorkload', request);
    const workload = this.visible(request.id, request.teamId);
    const settled = ['INSTANCE_STATE_STOPPED', 'INSTANCE_STATE_FAILED', 'INSTANCE_STATE_RETIRED'].includes(workload.state);
    // The first stop leaves it stopping; the next finds it stopped, like a
    // real workload whose process exits in between.
    if (!settled && workload.state === 'INSTANCE_STATE_STOPPING') {
      workload.state = instanceStateToProto('stopped');
      workload.exited = true;
      workload.exitCode = 143;
    } else if (!settled) {
      workload.state = instanceStateToProto('stopping');
    }
    return { workload };
  }

  async getWorkloadLogs(request: schedulerV1.GetWorkloadLogsRequest): Promise<schedulerV1.GetWorkloadLogsResponse> {
    this.enter('getWorkloadLogs', request);
    this.visible(request.id, request.teamId);
    const all = this.logs.get(request.id) ?? Buffer.alloc(0);
    const data = request.tailBytes > 0 && all.length > request.tailBytes ? all.subarray(all.length - request.tailBytes) : all;
    return { data, truncated: data.length < all.length };
  }

  async *stream(
    _method: 'streamWorkloadLogs',
    request: schedulerV1.StreamWorkloadLogsRequest,
    opts: { signal?: AbortSignal } = {},
  ): AsyncGenerator<schedulerV1.StreamWorkloadLogsResponse> {
    this.enter('streamWorkloadLogs', request);
    this.visible(request.id, request.teamId);
    this.openStreams++;
    try {
      const all = this.logs.get(request.id) ?? Buffer.alloc(0);
      let offset = request.tailBytes > 0 ? Math.max(0, all.length - request.tailBytes) : 0;
      for (;;) {
        const settled = ['INSTANCE_STATE_STOPPED', 'INSTANCE_STATE_FAILED', 'INSTANCE_STATE_RETIRED'].includes(this.visible(request.id, request.teamId).state);
        const now = this.logs.get(request.id) ?? Buffer.alloc(0);
        if (now.length > offset) {
          yield { data: now.subarray(offset) };
          offset = now.length;
        }
        if (!request.follow || settled || opts.signal?.aborted) return;
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      this.openStreams--;
    }
  }
}

export class FakeHostRegistry implements HostRegistry {
  readonly hosts = new Map<string, hostRegistryV1.Host>();
  readonly tokens: hostRegistryV1.CreateRegistrationTokenRequest[] = [];
  private failure: unknown;

  failNext(err: unknown) {
    this.failure = err;
  }

  private enter() {
    const failure = this.failure;
    this.failure = undefined;
    if (failure !== undefined) throw failure;
  }

  add(partial: Partial<hostRegistryV1.Host>): hostRegistryV1.Host {
    const host = hostRegistryV1.Host.fromPartial({
      id: randomUUID(),
      name: 'host',
      status: HostStatus.HOST_STATUS_ONLINE,
      agentAddress: '10.0.0.1:7000',
      capacity: { cpuMillis: 2000, memoryMb: 4096, diskMb: 10240 },
      usage: { cpuMillis: 0, memoryMb: 0, diskMb: 0 },
      drivers: [{ name: 'process', healthy: true, version: '1', detail: '/usr/sbin secret detail' }],
      lastHeartbeatAt: new Date('2026-01-01T00:00:00Z'),
      createdAt: new Date('2026-01-01T00:00:00Z'),
      ...partial,
    });
    this.hosts.set(host.id, host);
    return host;
  }

  async createRegistrationToken(request: hostRegistryV1.CreateRegistrationTokenRequest): Promise<hostRegistryV1.CreateRegistrationTokenResponse> {
    this.enter();
    this.tokens.push(request);
    return { id: randomUUID(), token: `crt_${randomUUID()}`, expiresAt: new Date(Date.now() + request.ttlSeconds * 1000) };
  }

  async listHosts(request: hostRegistryV1.ListHostsRequest): Promise<hostRegistryV1.ListHostsResponse> {
    this.enter();
    return { hosts: [...this.hosts.values()].filter((h) => request.teamId === '' || h.teamId === '' || h.teamId === request.teamId) };
  }

  async getHost(request: hostRegistryV1.GetHostRequest): Promise<hostRegistryV1.GetHostResponse> {
    this.enter();
    const host = this.hosts.get(request.id);
    if (!host) throw new NotFoundError(`host ${request.id} not found`);
    return { host };
  }

  // Fleet membership, with host-registry's rules: another team's host is not
  // found, a platform host is forbidden to a team, a delete is refused while
  // the host's last report (`reported`) lists live workloads unless forced,
  // and a deleted host leaves the list (kept in `deleted`).

  /** Live workload ids per host, as its last heartbeat would report them. */
  readonly reported = new Map<string, string[]>();
  readonly deleted = new Map<string, hostRegistryV1.Host>();
  readonly registrationTokens = new Map<string, hostRegistryV1.RegistrationToken>();
  readonly fleetCalls: { method: string; request: unknown }[] = [];
  fleetHealth: hostRegistryV1.GetFleetHealthResponse = hostRegistryV1.GetFleetHealthResponse.fromPartial({
    leader: true,
    epoch: 3,
    brakeActive: true,
    brakeReasons: [eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_MASS_SILENCE],
    brakeDetail: '9 of 10 online hosts went silent at once',
    brakeSince: new Date('2026-01-01T00:00:00Z'),
    busConnected: true,
    databaseHealthy: true,
    heartbeatsReceived: 100,
    heartbeatsApplied: 98,
    heartbeatsDropped: 2,
    hostsByStatus: { online: 1, draining: 1 },
  });

  private manageable(id: string, teamId: string, includeDeleted = false): hostRegistryV1.Host {
    const host = this.hosts.get(id) ?? (includeDeleted ? this.deleted.get(id) : undefined);
    if (!host || (teamId !== '' && host.teamId !== '' && host.teamId !== teamId)) throw new NotFoundError(`host ${id} not found`);
    if (teamId !== '' && host.teamId === '') throw new PermissionDeniedError('platform hosts are managed by platform admins');
    return host;
  }

  async drainHost(request: hostRegistryV1.DrainHostRequest): Promise<hostRegistryV1.DrainHostResponse> {
    this.enter();
    this.fleetCalls.push({ method: 'drainHost', request });
    const host = this.manageable(request.id, request.teamId);
    if (host.status === HostStatus.HOST_STATUS_DOWN) throw new FailedPreconditionError(`host ${request.id} is down and cannot be drained`);
    host.status = HostStatus.HOST_STATUS_DRAINING;
    return { host };
  }

  async undrainHost(request: hostRegistryV1.UndrainHostRequest): Promise<hostRegistryV1.UndrainHostResponse> {
    this.enter();
    this.fleetCalls.push({ method: 'undrainHost', request });
    const host = this.manageable(request.id, request.teamId);
    if (host.status !== HostStatus.HOST_STATUS_DRAINING && host.status !== HostStatus.HOST_STATUS_ONLINE) {
      throw new FailedPreconditionError(`host ${request.id} is not draining`);
    }
    host.status = HostStatus.HOST_STATUS_ONLINE;
    return { host };
  }

  async deleteHost(request: hostRegistryV1.DeleteHostRequest): Promise<hostRegistryV1.DeleteHostResponse> {
    this.enter();
    this.fleetCalls.push({ method: 'deleteHost', request });
    const host = this.manageable(request.id, request.teamId, true);
    const affected = this.reported.get(request.id) ?? [];
    if (this.deleted.has(request.id)) return { id: request.id, affectedWorkloadIds: affected, deletedNow: false };
    if (affected.length > 0 && !request.force) throw new FailedPreconditionError(`host ${request.id} still runs ${affected.length} workload(s): ${affected.join(', ')}`);
    host.status = HostStatus.HOST_STATUS_DOWN;
    this.hosts.delete(request.id);
    this.deleted.set(request.id, host);
    return { id: request.id, affectedWorkloadIds: affected, deletedNow: true };
  }

  async getFleetHealth(request: hostRegistryV1.GetFleetHealthRequest): Promise<hostRegistryV1.GetFleetHealthResponse> {
    this.enter();
    this.fleetCalls.push({ method: 'getFleetHealth', request });
    return this.fleetHealth;
  }

  addRegistrationToken(partial: Partial<hostRegistryV1.RegistrationToken>): hostRegistryV1.RegistrationToken {
    const token = hostRegistryV1.RegistrationToken.fromPartial({
      id: randomUUID(),
      description: 'a token',
      createdAt: new Date('2026-01-01T00:00:00Z'),
      expiresAt: new Date('2099-01-01T00:00:00Z'),
      scope: { namePattern: '', labels: {} },
      ...partial,
    });
    this.registrationTokens.set(token.id, token);
    return token;
  }

  async listRegistrationTokens(request: hostRegistryV1.ListRegistrationTokensRequest): Promise<hostRegistryV1.ListRegistrationTokensResponse> {
    this.enter();
    this.fleetCalls.push({ method: 'listRegistrationTokens', request });
    return { tokens: [...this.registrationTokens.values()].filter((t) => request.teamId === '' || t.teamId === request.teamId).reverse() };
  }

  async revokeRegistrationToken(request: hostRegistryV1.RevokeRegistrationTokenRequest): Promise<hostRegistryV1.RevokeRegistrationTokenResponse> {
    this.enter();
    this.fleetCalls.push({ method: 'revokeRegistrationToken', request });
    const token = this.registrationTokens.get(request.id);
    if (!token || (request.teamId !== '' && token.teamId !== request.teamId)) throw new NotFoundError(`registration token ${request.id} not found`);
    token.revokedAt ??= new Date('2026-01-02T00:00:00Z');
    return { token };
  }
}

/** An authenticator over a fixed table of keys. */
export function fakeAuthenticator(keys: Record<string, Caller>): ApiKeyAuthenticator {
  return async (presented) => {
    const caller = keys[presented];
    if (!caller) throw new UnauthenticatedError('unknown API key');
    return caller;
  };
}

/**
 * The scheduler's exec, file and snapshot streams, in memory. Exec runs a
 * tiny command language instead of programs: `echo ARGS...` prints them,
 * `cat` copies stdin to stdout until EOF, `fail-later` writes to stderr and
 * exits 3, `not-running` is refused like a stopped workload, `hang` waits
 * to be cancelled. Files live in `files` (path → content).
 */
export class FakeWorkloadStreams implements WorkloadStreams {
  readonly files = new Map<string, Buffer>();
  readonly calls: { method: string; request: unknown }[] = [];
  /** Exec calls cancelled by the gateway. */
  cancelledExecs = 0;
  /** Snapshot progress events to send before the result. */
  snapshotSteps = 2;

  exec(opts: StreamCallOpts = {}): BidiCall<schedulerV1.ExecWorkloadRequest, schedulerV1.ExecWorkloadResponse> {
    const responses = new AsyncQueue<schedulerV1.ExecWorkloadResponse>();
    let argv: string[] | undefined;
    let done = false;
    const finish = (exitCode: number) => {
      if (done) return;
      done = true;
      responses.push({ kind: { $case: 'exit', value: { exitCode } } });
      responses.end();
    };
    const stdout = (text: string | Buffer) => responses.push({ kind: { $case: 'stdout', value: Buffer.from(text) } });
    opts.signal?.addEventListener(
      'abort',
      () => {
        if (done) return;
        done = true;
        this.cancelledExecs++;
        responses.fail(new UnavailableError('cancelled'));
      },
      { once: true },
    );
    return {
      write: async (message) => {
        const kind = message.kind;
        if (kind?.$case === 'start') {
          this.calls.push({ method: 'exec', request: kind.value });
          argv = kind.value.command;
          if (argv[0] === 'not-running') {
            done = true;
            responses.fail(new FailedPreconditionError('cannot exec into workload: it is stopped'));
            return;
          }
          responses.push({ kind: { $case: 'started', value: {} } });
          if (argv[0] === 'echo') {
            stdout(`${argv.slice(1).join(' ')}${kind.value.tty ? ' (tty)' : ''}\n`);
            finish(0);
          } else if (argv[0] === 'fail-later') {
            responses.push({ kind: { $case: 'stderr', value: Buffer.from('something broke\n') } });
            finish(3);
          }
        } else if (kind?.$case === 'stdin' && argv?.[0] === 'cat') stdout(kind.value);
        else if (kind?.$case === 'stdinEof' && argv?.[0] === 'cat') finish(0);
        else if (kind?.$case === 'resize') stdout(`resized to ${kind.value.columns}x${kind.value.rows}\n`);
      },
      end: () => undefined,
      responses,
      cancel: () => undefined,
    };
  }

  async writeFile(requests: AsyncIterable<schedulerV1.WriteWorkloadFileRequest>, opts: StreamCallOpts = {}): Promise<schedulerV1.WriteWorkloadFileResponse> {
    let path = '';
    const parts: Buffer[] = [];
    let complete = false;
    for await (const message of requests) {
      if (opts.signal?.aborted) throw new UnavailableError('cancelled');
      if (message.kind?.$case === 'header') {
        this.calls.push({ method: 'writeFile', request: message.kind.value });
        path = message.kind.value.path;
      } else if (message.kind?.$case === 'chunk') parts.push(Buffer.from(message.kind.value));
      else if (message.kind?.$case === 'eof') complete = true;
    }
    if (!complete) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
    // Only a complete upload is stored (the agent's writes are atomic).
    const content = Buffer.concat(parts);
    this.files.set(path, content);
    return { bytes: content.length };
  }

  async *readFile(request: schedulerV1.ReadWorkloadFileRequest): AsyncGenerator<schedulerV1.ReadWorkloadFileResponse> {
    this.calls.push({ method: 'readFile', request });
    const content = this.files.get(request.path);
    if (!content) throw new NotFoundError(`${request.path} does not exist in the workload`, { field: 'path' });
    for (let i = 0; i < content.length; i += 3) yield { chunk: content.subarray(i, i + 3) };
  }

  async listDirectory(request: schedulerV1.ListWorkloadDirectoryRequest): Promise<schedulerV1.ListWorkloadDirectoryResponse> {
    this.calls.push({ method: 'listDirectory', request });
    const prefix = request.path.endsWith('/') ? request.path : `${request.path}/`;
    const entries = [...this.files.entries()]
      .filter(([p]) => p.startsWith(prefix) && !p.slice(prefix.length).includes('/'))
      .map(([p, c]) => ({ name: p.slice(prefix.length), kind: 'file', sizeBytes: c.length, mode: 0o644, modifiedAt: new Date('2026-01-01T00:00:00Z') }));
    return { entries };
  }

  /** Snapshots per workload id, as listSnapshots answers them. */
  readonly snapshots = new Map<string, agentV1.SnapshotInfo[]>();
  /** Snapshots whose delete is refused as "a restore from it is under way". */
  readonly snapshotsInUse = new Set<string>();

  async listSnapshots(request: schedulerV1.ListWorkloadSnapshotsRequest): Promise<schedulerV1.ListWorkloadSnapshotsResponse> {
    this.calls.push({ method: 'listSnapshots', request });
    return { snapshots: this.snapshots.get(request.id) ?? [] };
  }

  async deleteSnapshot(request: schedulerV1.DeleteWorkloadSnapshotRequest): Promise<schedulerV1.DeleteWorkloadSnapshotResponse> {
    this.calls.push({ method: 'deleteSnapshot', request });
    if (this.snapshotsInUse.has(request.snapshotId)) throw new FailedPreconditionError(`snapshot ${request.snapshotId} is in use: a restore from it is under way`, { field: 'snapshotId' });
    const list = this.snapshots.get(request.id) ?? [];
    const kept = list.filter((s) => s.snapshotId !== request.snapshotId);
    this.snapshots.set(request.id, kept);
    return { deleted: kept.length !== list.length };
  }

  async *snapshot(request: schedulerV1.SnapshotWorkloadRequest): AsyncGenerator<schedulerV1.SnapshotWorkloadResponse> {
    this.calls.push({ method: 'snapshot', request });
    for (let i = 1; i <= this.snapshotSteps; i++) {
      yield { kind: { $case: 'progress', value: { status: 'active', transferredBytes: i * 100, totalBytes: 1000, remainingBytes: 1000 - i * 100, elapsedMs: i * 10 } } };
    }
    yield { kind: { $case: 'result', value: { snapshotId: 'snap-1', bytes: 1000, durationMs: 42 } } };
  }
}
