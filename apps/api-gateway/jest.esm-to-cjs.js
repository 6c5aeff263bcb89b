// A Jest transform that compiles an ES module from node_modules to CommonJS,
// for the few dependencies that ship only as ES modules (see jest.config.js).
const { transformSync } = require('esbuild');

module.exports = {
  process(source, path) {
    const { code, map } = transformSync(source, { format: 'cjs', target: 'node20', sourcefile: path, sourcemap: true, loader: 'js' });
    return { code, map };
  },
};
