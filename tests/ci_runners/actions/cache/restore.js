// Main step of the actions/cache stand-in: restore the entry of `key`, else of the newest match of a
// restore key, into the paths it was saved from.
"use strict";
const path = require("path");
const store = require("./store");

function main() {
  const key = store.input("key", true);
  store.checkKey(key);
  store.resolvePaths(store.lines(store.input("path", true))); // the real action checks the paths up front too
  store.setOutput("cache-primary-key", key);
  let found = store.exact(key) ? { dir: store.exact(key), key } : null;
  for (const prefix of store.lines(store.input("restore-keys"))) {
    if (found) break;
    store.checkKey(prefix);
    found = store.byPrefix(prefix);
  }
  if (!found) {
    const message = `Cache not found for input keys: ${[key, ...store.lines(store.input("restore-keys"))].join(", ")}`;
    if (store.input("fail-on-cache-miss") === "true") {
      throw new Error(`Failed to restore cache entry. Exiting as fail-on-cache-miss is set. ${message}`);
    }
    console.log(message);
    store.setOutput("cache-hit", "false");
    return;
  }
  store.setOutput("cache-matched-key", found.key);
  store.setOutput("cache-hit", found.key === key ? "true" : "false");
  if (store.input("lookup-only") === "true") {
    console.log(`Cache found and can be restored from key: ${found.key}`);
    return;
  }
  // Saved with names relative to /, so each path comes back where it was.
  store.tar(["-xf", path.join(found.dir, "paths.tar"), "-C", "/"]);
  console.log(`Cache restored from key: ${found.key}`);
}

try {
  main();
} catch (error) {
  console.log(`::error::${error.message}`);
  process.exit(1);
}
