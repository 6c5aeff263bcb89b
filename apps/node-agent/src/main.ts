import { describeConfig } from '@corral/config';
import { runUntilSignal } from '@corral/grpc';
import { createLogger } from '@corral/logging';
import { loadNodeAgentConfig, nodeAgentConfigSchema } from './config';
import { startNodeAgent } from './node-agent';

// SIGINT/SIGTERM stop the agent gracefully; its workloads keep running (own
// process groups, output to files) and are re-adopted by the next start.
const bootLogger = createLogger({ service: 'node-agent' });
void runUntilSignal('node-agent', bootLogger, async () => {
  const config = loadNodeAgentConfig();
  const logger = createLogger({ service: 'node-agent', level: config.logLevel });
  logger.info('starting', { config: describeConfig(nodeAgentConfigSchema, config) });
  return startNodeAgent(config, { logger });
});
