import { appendAuditEvent, type AuditEntry, type PrismaClient, type StoredAuditEvent } from '@corral/db';
import { publishAuditEvent, type EventBus } from '@corral/events';
import type { Logger } from '@corral/logging';

/**
 * The reconciler's audit trail writer: every entry is stored fenced by the
 * epoch (a deposed leader's entry is dropped, and answers undefined), then
 * published. A publish failure is only logged: the row is the record.
 */
export class AuditRecorder {
  constructor(private readonly deps: { prisma: PrismaClient; bus: Pick<EventBus, 'publish'>; actor: string; logger: Logger }) {}

  async record(entry: Omit<AuditEntry, 'actor'>, epoch: bigint): Promise<StoredAuditEvent | undefined> {
    const stored = await appendAuditEvent(this.deps.prisma, { ...entry, actor: this.deps.actor }, { reconcilerEpoch: epoch });
    if (!stored) return undefined;
    try {
      publishAuditEvent(this.deps.bus, stored);
    } catch (err) {
      this.deps.logger.warn('could not publish an audit event', { id: stored.id.toString(), err });
    }
    return stored;
  }
}
