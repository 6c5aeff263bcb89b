import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { Server, ServerCredentials, type ServerInterceptor, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from '@corral/logging';

export interface ServiceRegistration {
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}

export interface GrpcServerOptions {
  host: string;
  port: number;
  services: ServiceRegistration[];
  logger: Logger;
  credentials?: ServerCredentials;
  /** Run before every call's handler, health and reflection included (e.g. `controlPlaneOnly()`). */
  interceptors?: ServerInterceptor[];
  /** Largest request accepted, in bytes (default 4 MiB). */
  maxReceiveBytes?: number;
}

export interface RunningGrpcServer {
  port: number;
  address: string;
  health: HealthImplementation;
  /** Graceful shutdown, forced after `graceMs`. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

export function serviceNameOf(definition: ServiceDefinition): string {
  const first = Object.values(definition)[0];
  return first.path.split('/')[1];
}

/** Finds the repository's proto/ folder, for server reflection. */
export function findProtoRoot(start = __dirname): string | undefined {
  for (const from of [start, process.cwd()]) {
    let dir = from;
    for (;;) {
      if (existsSync(join(dir, 'proto', 'buf.yaml'))) return join(dir, 'proto');
      const parent = dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
  }
  return undefined;
}

function protoFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (entry.endsWith('.proto')) out.push(relative(root, path));
    }
  };
  walk(root);
  return out.sort();
}

/**
 * Starts a gRPC server with Corral's services plus grpc.health.v1 (every
 * service SERVING once bound) and server reflection over the repository's
 * protos, so grpcurl and similar tools work without local .proto files.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const server = new Server({
    'grpc.max_receive_message_length': options.maxReceiveBytes ?? 4 * 1024 * 1024,
    'grpc.keepalive_permit_without_calls': 1,
    interceptors: options.interceptors ?? [],
  });
  const statuses: Record<string, 'SERVING' | 'NOT_SERVING'> = { '': 'NOT_SERVING' };
  for (const service of options.services) {
    server.addService(service.definition, service.implementation);
    statuses[serviceNameOf(service.definition)] = 'NOT_SERVING';
  }
  const health = new HealthImplementation(statuses);
  health.addToServer(server);

  const protoRoot = findProtoRoot();
  if (protoRoot) {
    const pkg = loadSync(protoFiles(protoRoot), { includeDirs: [protoRoot], keepCase: true });
    new ReflectionService(pkg).addToServer(server);
  } else {
    options.logger.warn('proto/ folder not found: gRPC server reflection disabled');
  }

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${options.host}:${options.port}`, options.credentials ?? ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(err) : resolve(bound),
    ),
  );
  for (const name of Object.keys(statuses)) health.setStatus(name, 'SERVING');

  let stopping: Promise<void> | undefined;
  return {
    port,
    address: `${options.host}:${port}`,
    health,
    stop(graceMs = 5000) {
      stopping ??= new Promise<void>((resolve) => {
        for (const name of Object.keys(statuses)) health.setStatus(name, 'NOT_SERVING');
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return stopping;
    },
  };
}
