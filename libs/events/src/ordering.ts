// Consumers must tolerate duplicate, late and reordered messages (DESIGN §2):
// NATS core delivers at most once, a publisher may retry, and messages from
// one host can arrive through reconnects out of order. These gates decide,
// per key, whether a message is newer than the last one accepted. They are
// pure in-memory state with no clock of their own, so they are easy to test
// and a consumer that keeps its high-water mark in a database can seed them.

export type GateDecision =
  | { readonly accepted: true; readonly reason: 'first' | 'newer' | 'new-boot' }
  | { readonly accepted: false; readonly reason: 'duplicate' | 'stale' | 'stale-boot' | 'unordered-boot' | 'invalid' };

const isSeq = (seq: number): boolean => Number.isSafeInteger(seq) && seq >= 0;

/**
 * Per key, accepts a sequence number only when it is greater than the last
 * accepted one. Use for WorkloadStateChanged (key = workloadId), whose seq
 * is strictly increasing across agent restarts.
 */
export class SequenceGate<K = string> {
  private readonly last = new Map<K, number>();

  /** Decides on `seq` for `key` and, when accepted, records it. */
  offer(key: K, seq: number): GateDecision {
    if (!isSeq(seq)) return { accepted: false, reason: 'invalid' };
    const prev = this.last.get(key);
    if (prev !== undefined && seq <= prev) return { accepted: false, reason: seq === prev ? 'duplicate' : 'stale' };
    this.last.set(key, seq);
    return { accepted: true, reason: prev === undefined ? 'first' : 'newer' };
  }

  /** `offer(key, seq).accepted`. */
  accept(key: K, seq: number): boolean {
    return this.offer(key, seq).accepted;
  }

  /** The last accepted seq for `key`. */
  lastAccepted(key: K): number | undefined {
    return this.last.get(key);
  }

  /** Seeds the gate from durable state (e.g. the seq stored with a row). */
  remember(key: K, seq: number): void {
    if (!isSeq(seq)) throw new RangeError(`invalid sequence number ${seq}`);
    const prev = this.last.get(key);
    if (prev === undefined || seq > prev) this.last.set(key, seq);
  }

  /** Drops the state of a key (the host or workload is gone). */
  forget(key: K): void {
    this.last.delete(key);
  }

  get size(): number {
    return this.last.size;
  }
}

/** The fields of a HostHeartbeat that order it. */
export interface HeartbeatOrder {
  readonly hostId: string;
  readonly bootId: string;
  readonly seq: number;
  readonly sentAt: Date | undefined;
}

/** Where a host's heartbeat stream stands. */
export interface HeartbeatPosition {
  readonly bootId: string;
  readonly seq: number;
  /** Latest sent_at seen in this boot, if any heartbeat carried one. */
  readonly sentAt: Date | undefined;
}

interface HostState extends HeartbeatPosition {
  /** Boots replaced by a later one, newest last; bounded. */
  readonly retired: readonly string[];
}

export interface HeartbeatGateOptions {
  /** How many replaced boot ids to remember per host. Default 16. */
  readonly retiredBootsPerHost?: number;
}

/**
 * Orders heartbeats per host by (bootId, seq). Within one boot of the agent
 * seq increases by one per heartbeat, so a heartbeat is accepted when its seq
 * is above the last accepted. A different bootId means the agent restarted:
 * its seq starts again, so seq cannot compare across boots, and the boot is
 * accepted as the new one only when its sent_at is later than the latest
 * sent_at of the current boot. A late heartbeat of an older boot therefore
 * cannot take the host back. Replaced boot ids are remembered, so even a
 * skewed clock cannot make the gate flip back to a boot it already left.
 * A heartbeat of an unknown boot without sent_at cannot be ordered and is
 * refused; the agent's next heartbeat carries one.
 */
export class HeartbeatGate {
  private readonly hosts = new Map<string, HostState>();
  private readonly retiredLimit: number;

  constructor(options: HeartbeatGateOptions = {}) {
    this.retiredLimit = Math.max(0, options.retiredBootsPerHost ?? 16);
  }

  offer(hb: HeartbeatOrder): GateDecision {
    const at = hb.sentAt?.getTime();
    if (!hb.bootId || !isSeq(hb.seq) || (at !== undefined && Number.isNaN(at))) {
      return { accepted: false, reason: 'invalid' };
    }
    const cur = this.hosts.get(hb.hostId);
    if (!cur) {
      this.hosts.set(hb.hostId, { bootId: hb.bootId, seq: hb.seq, sentAt: hb.sentAt, retired: [] });
      return { accepted: true, reason: 'first' };
    }
    if (hb.bootId === cur.bootId) {
      if (hb.seq <= cur.seq) return { accepted: false, reason: hb.seq === cur.seq ? 'duplicate' : 'stale' };
      this.hosts.set(hb.hostId, { ...cur, seq: hb.seq, sentAt: later(cur.sentAt, hb.sentAt) });
      return { accepted: true, reason: 'newer' };
    }
    if (cur.retired.includes(hb.bootId)) return { accepted: false, reason: 'stale-boot' };
    if (at === undefined) return { accepted: false, reason: 'unordered-boot' };
    if (cur.sentAt !== undefined && at <= cur.sentAt.getTime()) return { accepted: false, reason: 'stale-boot' };
    const retired = this.retiredLimit === 0 ? [] : [...cur.retired, cur.bootId].slice(-this.retiredLimit);
    this.hosts.set(hb.hostId, { bootId: hb.bootId, seq: hb.seq, sentAt: hb.sentAt, retired });
    return { accepted: true, reason: 'new-boot' };
  }

  /** `offer(hb).accepted`. */
  accept(hb: HeartbeatOrder): boolean {
    return this.offer(hb).accepted;
  }

  /** The position of the last accepted heartbeat of a host. */
  position(hostId: string): HeartbeatPosition | undefined {
    const s = this.hosts.get(hostId);
    return s && { bootId: s.bootId, seq: s.seq, sentAt: s.sentAt };
  }

  /** Seeds the gate from durable state (e.g. the host row). */
  remember(hostId: string, position: HeartbeatPosition): void {
    if (!position.bootId || !isSeq(position.seq)) throw new RangeError('invalid heartbeat position');
    this.hosts.set(hostId, { ...position, retired: this.hosts.get(hostId)?.retired ?? [] });
  }

  /** Drops the state of a host (it was deleted). */
  forget(hostId: string): void {
    this.hosts.delete(hostId);
  }

  get size(): number {
    return this.hosts.size;
  }
}

function later(a: Date | undefined, b: Date | undefined): Date | undefined {
  if (!a) return b;
  if (!b) return a;
  return b.getTime() > a.getTime() ? b : a;
}
