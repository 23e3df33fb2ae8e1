// Main step of the actions/cache stand-in: restore the entry of `key`, else of the newest match of a
// restore key, into the paths it was saved from.
"use strict";
const fs = require("fs");
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
  // The i-th path saved comes back as this step's i-th path.
  const targets = store.resolvePaths(store.lines(store.input("path", true)));
  const saved = JSON.parse(fs.readFileSync(path.join(found.dir, "paths.json"), "utf8"));
  saved.forEach((entry, i) => {
    if (i >= targets.length || entry === null) return;
    const into = entry.kind === "dir" ? targets[i] : path.dirname(targets[i]);
    fs.mkdirSync(into, { recursive: true });
    const unpacked = path.join(found.dir, `${i}.tar`);
    if (entry.kind === "dir") {
      store.tar(["-xf", unpacked, "-C", into]);
    } else {
      const scratch = fs.mkdtempSync(path.join(into, ".cache-restore-"));
      store.tar(["-xf", unpacked, "-C", scratch]);
      fs.renameSync(path.join(scratch, entry.name), targets[i]);
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  });
  console.log(`Cache restored from key: ${found.key}`);
}

try {
  main();
} catch (error) {
  console.log(`::error::${error.message}`);
  process.exit(1);
}
