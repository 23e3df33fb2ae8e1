// projen synthesizing a 6-job GitHub Actions workflow shaped like pipeline's reference chain
// (checkout, set up Python, install, fetch manifests, run the stage, upload its manifest).
// Prints JSON: {"synth_s": seconds spent in new Project(...) + synth(), "files": [...]}.
// Usage: node synth.js OUTDIR
const { performance } = require("node:perf_hooks");
const start = performance.now();
const { Project, github } = require("projen");
const loaded = performance.now();

const outdir = process.argv[2];
const stages = ["commit-test", "bake", "test-stack", "update-stack", "rollback", "promote"];
const t0 = performance.now();
const project = new Project({ name: "hello-web", outdir });
const gh = new github.GitHub(project);
const workflow = gh.addWorkflow("hello-web");
workflow.on({ push: { branches: ["main"] } });
const jobs = {};
stages.forEach((stage, i) => {
  jobs[stage] = {
    runsOn: ["ubuntu-latest"],
    permissions: { contents: github.workflows.JobPermission.READ },
    needs: i === 0 ? [] : [stages[i - 1]],
    timeoutMinutes: 70,
    ...(stage === "promote"
      ? { environment: { name: "production" }, concurrency: { group: "hello-web-production", cancelInProgress: false } }
      : {}),
    steps: [
      { uses: "actions/checkout@v4" },
      { uses: "actions/setup-python@v5", with: { "python-version": "3.11" } },
      { name: "Install pipeline", run: "pip install -e .[run]" },
      { name: "Download run manifests", uses: "actions/download-artifact@v4", with: { pattern: "manifest-*", path: ".pipeline/ci/manifest", "merge-multiple": true } },
      { name: `Run stage ${stage}`, run: `pipeline run stage ${stage} --manifest .pipeline/ci/manifest` },
      { name: "Upload run manifest", if: "always()", uses: "actions/upload-artifact@v4", with: { name: `manifest-${stage}`, path: `.pipeline/ci/manifest/${stage}.json` } },
    ],
  };
});
workflow.addJobs(jobs);
project.synth();
const t1 = performance.now();
process.stdout.write(
  JSON.stringify({ import_s: (loaded - start) / 1000, synth_s: (t1 - t0) / 1000, files: project.files.map((f) => f.path).sort() }) + "\n",
);
