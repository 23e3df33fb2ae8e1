// actions/download-artifact@v4 stand-in: the real action's selection rules (name, artifact-ids,
// pattern, merge-multiple, path), written anew on @actions/artifact and minimatch, talking to act's
// artifact server. See ../README.md.
const os = require("os");
const path = require("path");
const core = require("@actions/core");
const { DefaultArtifactClient } = require("@actions/artifact");
const { Minimatch } = require("minimatch");

async function run() {
  const name = core.getInput("name");
  const ids = core.getInput("artifact-ids");
  const pattern = core.getInput("pattern");
  const mergeMultiple = core.getBooleanInput("merge-multiple");
  if (core.getInput("github-token")) {
    throw new Error("download-artifact stand-in: github-token (artifacts of another run or repository) is not emulated");
  }
  if (name && ids) {
    throw new Error("Inputs 'name' and 'artifact-ids' cannot be used together. Please specify only one.");
  }
  let destination = core.getInput("path") || process.env.GITHUB_WORKSPACE || process.cwd();
  if (destination.startsWith("~")) destination = destination.replace("~", os.homedir());
  destination = path.resolve(destination);

  const client = new DefaultArtifactClient();
  let artifacts;
  if (name) {
    const { artifact } = await client.getArtifact(name);
    artifacts = [artifact];
  } else {
    const all = (await client.listArtifacts({ latest: true })).artifacts;
    if (ids) {
      const wanted = ids.split(",").map((id) => id.trim()).filter(Boolean).map((id) => {
        const n = Number.parseInt(id, 10);
        if (Number.isNaN(n)) throw new Error(`Invalid artifact ID: '${id}'. Must be a number.`);
        return n;
      });
      artifacts = all.filter((a) => wanted.includes(a.id));
      if (artifacts.length === 0) throw new Error("None of the provided artifact IDs were found");
    } else if (pattern) {
      const matcher = new Minimatch(pattern);
      artifacts = all.filter((a) => matcher.match(a.name));
      core.info(`Filtering artifacts by pattern '${pattern}': ${artifacts.length} of ${all.length}`);
    } else {
      artifacts = all;
    }
  }
  for (const artifact of artifacts) {
    const into = name || mergeMultiple ? destination : path.join(destination, artifact.name);
    core.info(`- ${artifact.name} (ID: ${artifact.id}, Size: ${artifact.size}) -> ${into}`);
    await client.downloadArtifact(artifact.id, { path: into });
  }
  core.info(`Total of ${artifacts.length} artifact(s) downloaded`);
  core.setOutput("download-path", destination);
}

run().catch((error) => core.setFailed(`Unable to download artifact(s): ${error.message}`));
