// The one way an integration suite skips: `describe.skip` with the reason
// printed once per suite name, so a run says what it did not test and why.

const announced = new Set<string>();

/** `describe` when `unavailableReason` is undefined; `describe.skip`, with the reason printed, otherwise. */
export function describeIfAvailable(name: string, unavailableReason: string | undefined, fn: () => void): void {
  if (unavailableReason === undefined) {
    describe(name, fn);
    return;
  }
  if (!announced.has(name)) {
    announced.add(name);
    console.log(`[skip] ${name}: ${unavailableReason}`);
  }
  describe.skip(name, fn);
}
