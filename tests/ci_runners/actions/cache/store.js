// The stand-in's cache store: one folder per key under $STAND_IN_ACTIONS_CACHE_ROOT (persistent
// across runs of the harness, like GitHub's cache), each holding `key`, `paths.json` and a tar per path.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync } = require("child_process");

function input(name, required = false) {
  const value = (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
  if (required && !value) {
    throw new Error(`Input required and not supplied: ${name}`);
  }
  return value;
}

function lines(value) {
  return value.split("\n").map((l) => l.trim()).filter((l) => l);
}

function root() {
  const dir = process.env.STAND_IN_ACTIONS_CACHE_ROOT;
  if (!dir) {
    throw new Error("cache stand-in: STAND_IN_ACTIONS_CACHE_ROOT is not set (the harness sets it)");
  }
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function checkKey(key) {
  // The real action's validation (@actions/cache): at most 512 characters, no commas.
  if (key.length > 512) {
    throw new Error(`Key Validation Error: ${key} cannot be larger than 512 characters.`);
  }
  if (key.includes(",")) {
    throw new Error(`Key Validation Error: ${key} cannot contain commas.`);
  }
}

function entryDir(key) {
  return path.join(root(), crypto.createHash("sha256").update(key).digest("hex"));
}

function exact(key) {
  const dir = entryDir(key);
  return fs.existsSync(path.join(dir, "key")) ? dir : null;
}

function byPrefix(prefix) {
  // The newest entry whose key starts with prefix (GitHub's restore-keys rule).
  let best = null;
  for (const name of fs.readdirSync(root())) {
    const dir = path.join(root(), name);
    const keyFile = path.join(dir, "key");
    if (!fs.existsSync(keyFile)) continue;
    const key = fs.readFileSync(keyFile, "utf8");
    if (!key.startsWith(prefix)) continue;
    const mtime = fs.statSync(keyFile).mtimeMs;
    if (!best || mtime > best.mtime) best = { dir, key, mtime };
  }
  return best;
}

function resolvePaths(patterns) {
  // Absolute paths, `~` expanded, relative ones from the workspace. Globs are not emulated.
  const workspace = process.env.GITHUB_WORKSPACE || process.cwd();
  return patterns.map((p) => {
    if (/[*?[\]!]/.test(p)) {
      throw new Error(`cache stand-in: glob patterns are not emulated (${p}); name files or folders`);
    }
    const expanded = p === "~" || p.startsWith("~/") ? path.join(os.homedir(), p.slice(1)) : p;
    return path.resolve(workspace, expanded);
  });
}

function tar(args) {
  execFileSync("tar", args, { stdio: ["ignore", "inherit", "inherit"] });
}

function setOutput(name, value) {
  fs.appendFileSync(process.env.GITHUB_OUTPUT, `${name}=${value}\n`);
}

module.exports = { input, lines, checkKey, entryDir, exact, byPrefix, resolvePaths, tar, setOutput, root };
