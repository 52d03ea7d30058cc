// What serverless.yml's `${file(./infra/index.cjs):...}` loads: the framework require()s only
// .js and .cjs files there. Node (22.18 and later) strips the types of index.ts as it loads it.
module.exports = require('./index.ts');
