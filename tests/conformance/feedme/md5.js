"use strict";
// stdin: one JSON feed-data document per line.
// stdout: {"md5": ..., "canonical": ...} per line, from the client's md5calculator.
const { load, serveLines } = require("./oracle");

const md5Calculator = load("md5calculator.js");

serveLines((line) => {
  const data = JSON.parse(line);
  return { md5: md5Calculator.calculate(data), canonical: md5Calculator._canonicalJson(data) };
});
