// Fails when the committed generated wire types differ from what api/openapi.json generates now.
import { readFileSync } from "node:fs";
const [committed, fresh] = process.argv.slice(2);
if (readFileSync(committed, "utf8") !== readFileSync(fresh, "utf8")) {
  console.error(`${committed} is out of date with api/openapi.json: run \`npm run generate\` in sdk/typescript and commit it`);
  process.exit(1);
}
