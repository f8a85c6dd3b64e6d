// The one bound on every wait of the compare_*.mjs drivers: `promise`, or an Error naming
// what was awaited after `ms` milliseconds. Waiting itself is on events, never on sleeps.

export function withTimeout(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
