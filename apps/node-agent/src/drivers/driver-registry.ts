import { FailedPreconditionError, InvalidArgumentError, WORKLOAD_DRIVERS } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { Driver, DriverFingerprint } from './driver';

interface Entry {
  name: string;
  driver?: Driver;
  /** Why it cannot be used here; shown in fingerprints and errors. */
  unavailable?: string;
}

/**
 * The drivers of this agent, keyed by name. A name Corral knows (see
 * WORKLOAD_DRIVERS) whose driver is switched off or not present here is
 * "unavailable" (FailedPrecondition: the request is fine, this host cannot
 * serve it); any other name is an invalid argument.
 */
export class DriverRegistry {
  private readonly entries = new Map<string, Entry>();
  private cached?: { at: number; fingerprints: DriverFingerprint[] };
  private probing?: Promise<DriverFingerprint[]>;

  constructor(private readonly logger: Logger) {}

  register(driver: Driver): this {
    this.entries.set(driver.name, { name: driver.name, driver });
    this.cached = undefined;
    return this;
  }

  /** Records a driver that exists but is not usable here, and why. */
  markUnavailable(name: string, reason: string): this {
    this.entries.set(name, { name, unavailable: reason });
    this.cached = undefined;
    return this;
  }

  /** The driver for a workload spec; `field` names the spec field in errors. */
  get(name: string, field = 'spec.driver'): Driver {
    const entry = this.entries.get(name);
    if (entry?.driver) return entry.driver;
    if (entry?.unavailable) throw new FailedPreconditionError(`driver ${name} is not available on this host: ${entry.unavailable}`, { field });
    if ((WORKLOAD_DRIVERS as readonly string[]).includes(name)) {
      throw new FailedPreconditionError(`driver ${name} is not available on this host`, { field });
    }
    throw new InvalidArgumentError(`unknown driver ${JSON.stringify(name)}; known drivers: ${this.knownNames().join(', ')}`, { field });
  }

  /** The driver if it is usable here, without throwing. */
  find(name: string): Driver | undefined {
    return this.entries.get(name)?.driver;
  }

  /** Every driver usable here. */
  all(): Driver[] {
    return [...this.entries.values()].flatMap((entry) => (entry.driver ? [entry.driver] : []));
  }

  knownNames(): string[] {
    return [...new Set([...WORKLOAD_DRIVERS, ...this.entries.keys()])].sort();
  }

  /**
   * Fingerprints of every driver of this agent, at most `maxAgeMs` old:
   * heartbeats ask every second, while probing a driver may mean running its
   * CLI. A probe that throws reports the driver unhealthy.
   */
  async fingerprints(maxAgeMs = 30_000): Promise<DriverFingerprint[]> {
    if (this.cached && Date.now() - this.cached.at < maxAgeMs) return this.cached.fingerprints;
    return this.probeAll();
  }

  /**
   * For heartbeats: the fingerprints at hand, at once. When they are older
   * than `maxAgeMs` a new probe starts in the background and the next call
   * gets its result. A heartbeat must never wait on a driver's CLI: podman
   * can block seconds on its storage lock while other podman commands run,
   * and a heartbeat late by two intervals makes the host unreachable.
   * Only the very first call (nothing probed yet) waits.
   */
  async currentFingerprints(maxAgeMs = 30_000): Promise<DriverFingerprint[]> {
    if (!this.cached) return this.probeAll();
    if (Date.now() - this.cached.at >= maxAgeMs) void this.probeAll();
    return this.cached.fingerprints;
  }

  /** Probes every driver once; concurrent callers share the probe in flight. */
  private probeAll(): Promise<DriverFingerprint[]> {
    this.probing ??= this.probeEach().finally(() => (this.probing = undefined));
    return this.probing;
  }

  private async probeEach(): Promise<DriverFingerprint[]> {
    const fingerprints = await Promise.all(
      [...this.entries.values()].map(async (entry): Promise<DriverFingerprint> => {
        if (!entry.driver) return { name: entry.name, healthy: false, version: '', detail: entry.unavailable ?? 'unavailable' };
        try {
          return await entry.driver.fingerprint();
        } catch (err) {
          this.logger.warn('driver fingerprint failed', { driver: entry.name, err });
          return { name: entry.name, healthy: false, version: '', detail: 'fingerprint failed' };
        }
      }),
    );
    this.cached = { at: Date.now(), fingerprints };
    return fingerprints;
  }
}
