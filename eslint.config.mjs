import nx from '@nx/eslint-plugin';

// Only the wrapper lib for each of these may import it directly; everything
// else goes through the wrapper, so there is one place that owns each.
const wrapped = [
  { name: 'winston', lib: 'libs/logging', via: '@corral/logging' },
  { name: 'child_process', lib: 'libs/exec', via: '@corral/exec' },
  { name: 'node:child_process', lib: 'libs/exec', via: '@corral/exec' },
  { name: '@prisma/client', lib: 'libs/db', via: '@corral/db' },
  { name: 'pg', lib: 'libs/db', via: '@corral/db' },
  { name: 'nats', lib: 'libs/events', via: '@corral/events' },
];

const restrictAllBut = (lib) => ({
  'no-restricted-imports': [
    'error',
    {
      paths: wrapped
        .filter((w) => w.lib !== lib)
        .map((w) => ({ name: w.name, message: `import ${w.via} instead; only ${w.lib} may import ${w.name}` })),
      patterns: [
        ...(lib === 'libs/db' ? [] : [{ group: ['**/generated/prisma/**', '@prisma/client/*'], message: 'import @corral/db instead' }]),
        { group: ['@corral/*/src/*', '@corral/*/src'], message: 'no deep imports into another lib: use its index' },
      ],
    },
  ],
});

// Which kinds of project may depend on which, by tag.
const depConstraints = [
  { sourceTag: 'type:contracts', onlyDependOnLibsWithTags: ['type:contracts'] },
  { sourceTag: 'type:domain', onlyDependOnLibsWithTags: ['type:contracts', 'type:domain'] },
  { sourceTag: 'type:platform', onlyDependOnLibsWithTags: ['type:contracts', 'type:domain', 'type:platform'] },
  { sourceTag: 'type:testing', onlyDependOnLibsWithTags: ['type:contracts', 'type:domain', 'type:platform'] },
  { sourceTag: 'type:app', onlyDependOnLibsWithTags: ['type:contracts', 'type:domain', 'type:platform', 'type:testing'] },
  { sourceTag: 'type:e2e', onlyDependOnLibsWithTags: ['type:contracts', 'type:domain', 'type:platform', 'type:testing'] },
];

// Specs of domain and platform libs may also use the test helpers in
// type:testing libs; their production files may not.
const testingFor = ['type:domain', 'type:platform'];
const specDepConstraints = depConstraints.map((constraint) =>
  testingFor.includes(constraint.sourceTag)
    ? { ...constraint, onlyDependOnLibsWithTags: [...constraint.onlyDependOnLibsWithTags, 'type:testing'] }
    : constraint,
);

const moduleBoundaries = (constraints) => ({
  '@nx/enforce-module-boundaries': [
    'error',
    { enforceBuildableLibDependency: false, allow: [], depConstraints: constraints },
  ],
});

export default [
  ...nx.configs['flat/base'],
  ...nx.configs['flat/typescript'],
  { ignores: ['**/dist', '**/node_modules', '**/src/gen/**', '**/generated/**', 'tmp/**', '.data/**'] },
  {
    files: ['**/*.ts'],
    rules: {
      ...moduleBoundaries(depConstraints),
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      ...restrictAllBut(null),
    },
  },
  {
    files: ['**/*.spec.ts'],
    rules: moduleBoundaries(specDepConstraints),
  },
  ...['libs/logging', 'libs/exec', 'libs/db', 'libs/events'].map((lib) => ({
    files: [`${lib}/**/*.ts`],
    rules: restrictAllBut(lib),
  })),
];
