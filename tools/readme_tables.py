"""Markdown tables of the speed-ups in a ``python -m fastxent bench --json FILE`` run, as the
README quotes them: one table per thread count, a row per op, a column per shape, each cell
float32 / float64, ``*`` after a speed-up whose cell misses issue 3's target.

Usage::

    python tools/readme_tables.py /tmp/bench.json
"""
import argparse
import json

NAMES = {"cross_entropy": "cross_entropy (mean)", "ce_grad": "cross_entropy_with_grad"}


def tables(payload):
    """The markdown lines for every thread count of the run, in the run's order."""
    cells = {}
    shapes, ops, threads = [], [], []
    for r in payload["results"]:
        shape = f"{r['n']}x{r['c']}"
        for seen, key in ((shapes, shape), (ops, r["op"]), (threads, r["threads"])):
            if key not in seen:
                seen.append(key)
        star = "*" if r["verdict"] == "MISS" else ""
        cells[r["op"], shape, r["dtype"], r["threads"]] = f"{r['speedup']:.2f}x{star}"
    lines = []
    for t in threads:
        lines += ["", f"{'One thread' if t == 1 else f'{t} threads'}:", "",
                  "| op | " + " | ".join(shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
        for op in ops:
            row = [" / ".join(cells.get((op, s, d, t), "-") for d in ("float32", "float64"))
                   for s in shapes]
            lines.append(f"| {NAMES.get(op, op)} | " + " | ".join(row) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="the file of a bench run's --json")
    args = parser.parse_args(argv)
    with open(args.json) as fh:
        print("\n".join(tables(json.load(fh))))


if __name__ == "__main__":
    main()
