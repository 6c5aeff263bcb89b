// Shared Jest settings for every project. TypeScript is transpiled without
// type-checking (the `typecheck` target does that) so tests start fast.
const { pathsToModuleNameMapper } = require('ts-jest');
const { compilerOptions } = require('./tsconfig.base.json');

module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: `${__dirname}/tsconfig.jest.json`, diagnostics: false }],
  },
  moduleFileExtensions: ['ts', 'js', 'json'],
  moduleNameMapper: pathsToModuleNameMapper(compilerOptions.paths, { prefix: `${__dirname}/` }),
  testTimeout: 30000,
  // Integration tests share one Postgres server and one NATS; one worker
  // per project keeps a 2-core machine responsive.
  maxWorkers: 1,
};
