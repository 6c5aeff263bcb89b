import type { Logger } from '@corral/logging';

export interface Stoppable {
  stop(): Promise<void>;
}

/**
 * Runs a service until SIGINT/SIGTERM, then stops it once. A second signal
 * while stopping exits at once, so an operator is never stuck.
 */
export async function runUntilSignal(service: string, logger: Logger, start: () => Promise<Stoppable>): Promise<void> {
  let running: Stoppable;
  try {
    running = await start();
  } catch (err) {
    logger.error(`${service} failed to start`, { err });
    // Config errors carry the variable's name in their message; print it
    // plainly as well so it is visible without a JSON log reader.
    process.stderr.write(`${service}: ${(err as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn('second signal while stopping: exiting now', { signal });
      process.exit(130);
    }
    stopping = true;
    logger.info(`${service} stopping`, { signal });
    running.stop().then(
      () => process.exit(0),
      (err) => {
        logger.error(`${service} did not stop cleanly`, { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
