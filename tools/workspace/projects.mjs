// Writes project.json, tsconfig.json and jest.config.js for every Corral
// project so their targets stay uniform. Run: node tools/workspace/projects.mjs
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const libs = {
  launcher: 'type:platform',
  auth: 'type:platform',
  proto: 'type:contracts',
  domain: 'type:domain',
  config: 'type:platform',
  logging: 'type:platform',
  grpc: 'type:platform',
  db: 'type:platform',
  events: 'type:platform',
  exec: 'type:platform',
  pki: 'type:platform',
  testing: 'type:testing',
};
const apps = ['api-gateway', 'scheduler', 'host-registry', 'edge-router', 'secrets-broker', 'reconciler', 'node-agent', 'cli'];

const write = (file, content, overwrite = true) => {
  if (!overwrite && existsSync(file)) return;
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2) + '\n');
};

const common = (name, root) => ({
  lint: { executor: 'nx:run-commands', options: { command: `eslint ${root}`, cwd: '{workspaceRoot}' } },
  typecheck: { executor: 'nx:run-commands', options: { command: `tsc -p ${root}/tsconfig.json --noEmit`, cwd: '{workspaceRoot}' } },
  test: { executor: 'nx:run-commands', options: { command: `mkdir -p tmp/test-results && jest -c ${root}/jest.config.js --passWithNoTests --json --outputFile=tmp/test-results/${name}.json`, cwd: '{workspaceRoot}' } },
});

const project = (name, root, type, tag, extra = {}) => {
  mkdirSync(join(root, 'src'), { recursive: true });
  write(join(root, 'project.json'), {
    name,
    $schema: '../../node_modules/nx/schemas/project-schema.json',
    sourceRoot: `${root}/src`,
    projectType: type,
    tags: [tag],
    targets: { ...extra, ...common(name, root) },
  });
  write(join(root, 'tsconfig.json'), {
    extends: '../../tsconfig.base.json',
    include: ['src/**/*.ts'],
  });
  // Written once: a project may add transforms of its own (api-gateway does).
  write(
    join(root, 'jest.config.js'),
    `module.exports = {\n  displayName: '${name}',\n  preset: '../../jest.preset.js',\n  rootDir: __dirname,\n  testMatch: ['<rootDir>/src/**/*.spec.ts'],\n};\n`,
    false,
  );
};

for (const [lib, tag] of Object.entries(libs)) project(lib, `libs/${lib}`, 'library', tag);
for (const app of apps) {
  const root = `apps/${app}`;
  project(app, root, 'application', 'type:app', {
    build: { executor: 'nx:run-commands', outputs: [`{workspaceRoot}/dist/apps/${app}`], options: { command: `node tools/build/bundle.mjs ${app}`, cwd: '{workspaceRoot}' } },
    serve: { executor: 'nx:run-commands', continuous: true, options: { command: `tsx ${root}/src/main.ts`, cwd: '{workspaceRoot}' } },
  });
}
project('e2e', 'apps/e2e', 'application', 'type:e2e');
