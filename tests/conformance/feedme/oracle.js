"use strict";
// Loads the exact feedme-util copy that feedme-client@0.0.35 requires, so the
// oracle is the client's own code whether npm nests or hoists it.
const path = require("path");

const clientDir = path.dirname(require.resolve("feedme-client/package.json"));
const utilPkg = require.resolve("feedme-util/package.json", { paths: [clientDir] });
const utilDir = path.dirname(utilPkg);
const version = require(utilPkg).version;
if (version !== "0.2.2") {
  throw new Error(`feedme-client uses feedme-util ${version}, expected 0.2.2`);
}
const load = (name) => require(path.join(utilDir, name)).default;
const cloneDeep = require(require.resolve("lodash/cloneDeep", { paths: [clientDir] }));

// Reads JSON lines from stdin, answers one JSON line per input line.
function serveLines(handle) {
  let buffer = "";
  const out = [];
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk) => {
    buffer += chunk;
  });
  process.stdin.on("end", () => {
    for (const line of buffer.split("\n")) {
      if (line.length === 0) continue;
      let answer;
      try {
        answer = handle(line);
      } catch (e) {
        answer = { crash: String(e && e.message) };
      }
      out.push(JSON.stringify(answer));
    }
    process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
  });
}

module.exports = { load, cloneDeep, serveLines, utilDir, version };
