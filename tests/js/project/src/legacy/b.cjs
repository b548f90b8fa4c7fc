exports.add = (x, y) => x + y;
