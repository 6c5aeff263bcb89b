// Adds up the Jest JSON reports of every project into one closing line.
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2] ?? 'tmp/test-results';
let passed = 0, failed = 0, skipped = 0, suitesFailed = 0;
const failures = [];
for (const file of existsSync(dir) ? readdirSync(dir) : []) {
  if (!file.endsWith('.json')) continue;
  const report = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
  suitesFailed += report.numRuntimeErrorTestSuites;
  for (const suite of report.testResults) {
    for (const t of suite.assertionResults) if (t.status === 'failed') failures.push(`${file.replace('.json', '')}: ${t.fullName}`);
    if (suite.status === 'failed' && suite.assertionResults.length === 0) failures.push(`${file.replace('.json', '')}: ${suite.name} (suite failed to run)`);
  }
}
for (const f of failures) console.log(`FAILED ${f}`);
console.log(`tests: ${passed} passed, ${failed + suitesFailed} failed, ${skipped} skipped`);
process.exit(failed + suitesFailed > 0 || passed === 0 ? 1 : 0);
