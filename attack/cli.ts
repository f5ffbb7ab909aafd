/** Process entry of `npm run attack`: see main.ts for the command line. */
import { runCli } from './main.js';

runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then((code) => {
  process.exitCode = code;
}, (err: Error) => {
  process.stderr.write(`redserve attack: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
