// Validate glTF/glb files with the Khronos glTF Validator (npm package gltf-validator).
// Usage: node validate.js <path to node_modules/gltf-validator> FILE...
// Prints {"FILE": report, ...} as JSON: each report is the validator's own (issues.numErrors, issues.messages).
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require(process.argv[2]);

async function validate(file) {
  // External buffers and images (a .gltf beside its .bin and textures) are read from the file's folder.
  const externalResourceFunction = (uri) => fs.promises.readFile(path.resolve(path.dirname(file), decodeURIComponent(uri)))
    .then((data) => new Uint8Array(data), (err) => Promise.reject(err.toString()));
  return validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
    uri: path.basename(file), maxIssues: 0, writeTimestamp: false, externalResourceFunction,
  });
}

(async () => {
  const reports = {};
  for (const file of process.argv.slice(3)) reports[file] = await validate(file);
  process.stdout.write(JSON.stringify(reports));
})().catch((err) => {
  process.stderr.write(`glTF Validator failed: ${err}\n`);
  process.exit(2);
});
