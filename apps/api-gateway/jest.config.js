module.exports = {
  displayName: 'api-gateway',
  preset: '../../jest.preset.js',
  rootDir: __dirname,
  testMatch: ['<rootDir>/src/**/*.spec.ts'],
  // @fastify/static (under @fastify/swagger-ui) and light-my-request (behind
  // fastify.inject) require packages that ship only as ES modules. Node >=
  // 20.19 loads those with require(); Jest's module runtime cannot, so Jest
  // compiles them to CommonJS first.
  transform: {
    '/node_modules/(content-disposition|cookie)/.+\\.js$': '<rootDir>/jest.esm-to-cjs.js',
  },
  transformIgnorePatterns: ['/node_modules/(?!(content-disposition|cookie)/)'],
};
