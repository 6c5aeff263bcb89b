// Bundles one app into dist/apps/<app>/main.js with esbuild. Workspace libs
// (resolved through tsconfig paths) are inlined; npm packages stay external
// and are resolved from node_modules at run time.
import { build } from 'esbuild';

const app = process.argv[2];
if (!app) {
  console.error('usage: node tools/build/bundle.mjs <app>');
  process.exit(2);
}
await build({
  entryPoints: [`apps/${app}/src/main.ts`],
  outfile: `dist/apps/${app}/main.js`,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  packages: 'external',
  sourcemap: true,
  tsconfig: 'tsconfig.base.json',
  logLevel: 'warning',
});
console.log(`built dist/apps/${app}/main.js`);
