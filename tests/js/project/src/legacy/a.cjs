// A CommonJS module requiring another, a JSON file, and (at run time) a
// name that is not a string literal.
const b = require("./b.cjs");
const data = require("./data.json");
module.exports = {
  sum: b.add(2, 3),
  name: data.name,
  dynamic(name) {
    return require(name);
  },
};
