"use strict";
// stdin: {"data": <feed data>, "deltas": [<delta>, ...]} per line.
// stdout per line, mirroring feedme-client session.js _processActionRevelation:
//   {"schema": false, "index": i}                 a delta fails validateDelta (INVALID_MESSAGE)
//   {"ok": false, "index": i, "error": "..."}      deltaWriter.apply threw (INVALID_DELTA)
//   {"ok": true, "data": <new data>, "md5": "..."} all applied
const { load, cloneDeep, serveLines } = require("./oracle");

const deltaWriter = load("deltawriter.js");
const validateDelta = load("validatedelta.js");
const md5Calculator = load("md5calculator.js");

serveLines((line) => {
  const { data, deltas } = JSON.parse(line);
  for (let i = 0; i < deltas.length; i += 1) {
    try {
      validateDelta.check(deltas[i], false);
    } catch (e) {
      return { schema: false, index: i, error: e.message };
    }
  }
  let newData = cloneDeep(data);
  for (let i = 0; i < deltas.length; i += 1) {
    try {
      newData = deltaWriter.apply(newData, deltas[i]);
    } catch (e) {
      return { ok: false, index: i, error: e.message };
    }
  }
  return { ok: true, data: newData, md5: md5Calculator.calculate(newData) };
});
