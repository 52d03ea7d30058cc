// This process's threads, as Linux lists them: each one's name (/proc/<tid>/comm, which Node sets
// for its own threads) and nice value (/proc/<tid>/stat, the 19th field). Linux only.
import { readdirSync, readFileSync } from 'node:fs';

export interface Thread {
  tid: string;
  name: string;
  nice: number;
}

export function threadsOfThisProcess(): Thread[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // The fields after the command name, which may hold spaces and parentheses: state is field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
    return { tid, name, nice: Number(fields[16]) };
  });
}
