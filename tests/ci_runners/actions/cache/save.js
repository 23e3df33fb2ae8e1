// Post step of the actions/cache stand-in (the real action's `post-if: success()`): save the paths
// under `key` unless an entry of that key exists (entries are immutable, as on GitHub).
"use strict";
const fs = require("fs");
const path = require("path");
const store = require("./store");

function main() {
  const key = store.input("key", true);
  if (store.input("lookup-only") === "true") return;
  if (store.exact(key)) {
    console.log(`Cache hit occurred on the primary key ${key}, not saving cache.`);
    return;
  }
  const paths = store.resolvePaths(store.lines(store.input("path", true)));
  if (!paths.some((p) => fs.existsSync(p))) {
    console.log("::warning::Path Validation Error: Path(s) specified in the action for caching do(es) not exist, hence no cache is being saved.");
    return;
  }
  // Written aside, then renamed into place: a job saving the same key at the same moment loses
  // the race and keeps the entry it found, as GitHub's reservation does.
  const target = store.entryDir(key);
  const partial = fs.mkdtempSync(path.join(store.root(), "partial-"));
  try {
    // One tar per path (a folder's content, or a file), restored into the restoring step's own
    // i-th path: under act the tool cache of each run is another folder.
    const saved = paths.map((p, i) => {
      if (!fs.existsSync(p)) return null;
      if (fs.statSync(p).isDirectory()) {
        store.tar(["-cf", path.join(partial, `${i}.tar`), "-C", p, "."]);
        return { kind: "dir" };
      }
      store.tar(["-cf", path.join(partial, `${i}.tar`), "-C", path.dirname(p), path.basename(p)]);
      return { kind: "file", name: path.basename(p) };
    });
    fs.writeFileSync(path.join(partial, "paths.json"), JSON.stringify(saved));
    fs.writeFileSync(path.join(partial, "key"), key);
    try {
      fs.renameSync(partial, target);
    } catch (error) {
      if (error.code === "ENOTEMPTY" || error.code === "EEXIST") {
        console.log(`::warning::Failed to save: Unable to reserve cache with key ${key}, another job may be creating this cache.`);
        return;
      }
      throw error;
    }
    console.log(`Cache saved with key: ${key}`);
  } finally {
    fs.rmSync(partial, { recursive: true, force: true });
  }
}

try {
  main();
} catch (error) {
  console.log(`::warning::${error.message}`);
}
