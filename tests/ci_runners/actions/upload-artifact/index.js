// actions/upload-artifact@v4 stand-in: the real action's search and upload rules, written anew on the
// same libraries (@actions/glob, @actions/artifact), talking to act's artifact server. See ../README.md.
const path = require("path");
const fs = require("fs");
const core = require("@actions/core");
const glob = require("@actions/glob");
const { DefaultArtifactClient, ArtifactNotFoundError } = require("@actions/artifact");

const NO_FILES = ["warn", "error", "ignore"];

function inputs() {
  const ifNoFilesFound = core.getInput("if-no-files-found") || "warn";
  if (!NO_FILES.includes(ifNoFilesFound)) {
    throw new Error(`Unrecognized if-no-files-found input. Provided: ${ifNoFilesFound}. Available options: ${NO_FILES.join(", ")}`);
  }
  const level = core.getInput("compression-level");
  const compressionLevel = level === "" ? undefined : Number(level);
  if (compressionLevel !== undefined && !(Number.isInteger(compressionLevel) && compressionLevel >= 0 && compressionLevel <= 9)) {
    throw new Error(`Invalid compression-level: ${level}. Valid values are 0-9`);
  }
  const days = core.getInput("retention-days");
  const retentionDays = days === "" ? undefined : Number(days);
  if (retentionDays !== undefined && !Number.isInteger(retentionDays)) {
    throw new Error(`Invalid retention-days: ${days}`);
  }
  return {
    name: core.getInput("name") || "artifact",
    searchPath: core.getInput("path", { required: true }),
    ifNoFilesFound,
    compressionLevel,
    retentionDays,
    overwrite: core.getBooleanInput("overwrite"),
    includeHiddenFiles: core.getBooleanInput("include-hidden-files"),
  };
}

// The least common ancestor of several search paths: the artifact's root when there are several.
function commonAncestor(paths) {
  const split = paths.map((p) => path.normalize(p).split(path.sep));
  const common = [];
  for (let i = 0; i < Math.min(...split.map((s) => s.length)); i++) {
    if (split.some((s) => s[i] !== split[0][i])) break;
    common.push(split[0][i]);
  }
  return common.join(path.sep) || path.sep;
}

async function findFiles(searchPath, includeHiddenFiles) {
  const globber = await glob.create(searchPath, {
    followSymbolicLinks: true,
    implicitDescendants: true,
    omitBrokenSymbolicLinks: true,
    excludeHiddenFiles: !includeHiddenFiles,
  });
  const files = (await globber.glob()).filter((f) => !fs.statSync(f).isDirectory());
  const searchPaths = globber.getSearchPaths();
  let root;
  if (searchPaths.length > 1) {
    root = commonAncestor(searchPaths);
  } else if (files.length === 1 && searchPaths[0] === files[0]) {
    root = path.dirname(files[0]); // one file named as such: no folders in the artifact
  } else {
    root = searchPaths[0];
  }
  return { files, root };
}

async function run() {
  const given = inputs();
  const client = new DefaultArtifactClient();
  const { files, root } = await findFiles(given.searchPath, given.includeHiddenFiles);
  if (files.length === 0) {
    const message = `No files were found with the provided path: ${given.searchPath}. No artifacts will be uploaded.`;
    if (given.ifNoFilesFound === "error") core.setFailed(message);
    else if (given.ifNoFilesFound === "warn") core.warning(message);
    else core.info(message);
    return;
  }
  core.info(`With the provided path, there will be ${files.length} file${files.length === 1 ? "" : "s"} uploaded`);
  core.info(`Root artifact directory is ${root}`);

  // GitHub's artifact service refuses a second artifact of one name in a run (409 Conflict);
  // act's server would silently replace it, so the stand-in checks, as the service would.
  let existing = true;
  try {
    await client.getArtifact(given.name);
  } catch (error) {
    if (!(error instanceof ArtifactNotFoundError)) throw error;
    existing = false;
  }
  if (existing && given.overwrite) {
    await client.deleteArtifact(given.name);
    core.info(`Deleted the existing artifact '${given.name}' (overwrite: true)`);
  } else if (existing) {
    throw new Error(
      `Failed to CreateArtifact: an artifact with this name already exists on the workflow run: ${given.name} (set overwrite: true to replace it)`,
    );
  }

  const options = {};
  if (given.retentionDays !== undefined) options.retentionDays = given.retentionDays;
  if (given.compressionLevel !== undefined) options.compressionLevel = given.compressionLevel;
  const uploaded = await client.uploadArtifact(given.name, files, root, options);
  core.info(`Artifact ${given.name} has been successfully uploaded! Final size is ${uploaded.size} bytes. Artifact ID is ${uploaded.id}`);
  core.setOutput("artifact-id", uploaded.id);
  core.setOutput("artifact-digest", uploaded.digest || "");
  core.setOutput("artifact-url", "");
}

run().catch((error) => core.setFailed(error.message));
