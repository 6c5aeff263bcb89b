import { describeConfig, loadConfig, oneOf, port, str } from '@corral/config';
import { createLogger } from '@corral/logging';
import { runUntilSignal } from './run';
import { startGrpcServer } from './server';

export interface HealthOnlyServiceOptions {
  /** Service name for logs, e.g. `edge-router`. */
  service: string;
  /** Prefix of its variables: `<PREFIX>_GRPC_HOST`, `<PREFIX>_GRPC_PORT`. */
  envPrefix: string;
  defaultPort: number;
}

/**
 * Runs a service whose capability has not landed yet: it joins the system
 * like every other service (typed config, JSON logs, grpc.health.v1 and
 * reflection, clean shutdown) and exposes no operations.
 */
export function runHealthOnlyService(options: HealthOnlyServiceOptions): void {
  const schema = {
    grpcHost: str(`${options.envPrefix}_GRPC_HOST`, { default: '127.0.0.1' }),
    grpcPort: port(`${options.envPrefix}_GRPC_PORT`, { default: options.defaultPort }),
    logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
  };
  const bootLogger = createLogger({ service: options.service });
  void runUntilSignal(options.service, bootLogger, async () => {
    const config = loadConfig(schema);
    const logger = createLogger({ service: options.service, level: config.logLevel });
    logger.info('starting', { config: describeConfig(schema, config) });
    const server = await startGrpcServer({ host: config.grpcHost, port: config.grpcPort, logger, services: [] });
    logger.info(`${options.service} listening (health only)`, { address: server.address });
    return { stop: () => server.stop() };
  });
}
