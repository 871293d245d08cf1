#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum[,dram__bytes_read.sum]) per kernel: launches,
mean duration, total, and the read bandwidth where bytes were collected. Usage: ncu_kernel_times.py FILE.csv"""
import csv, collections, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
time, read = collections.defaultdict(list), collections.defaultdict(list)
for r in rows:
    name, value, unit = r['Kernel Name'].split('(')[0], float(r['Metric Value'].replace(',', '')), r['Metric Unit']
    if r['Metric Name'] == 'gpu__time_duration.sum':
        time[name].append(value * {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1, 'usecond': 1, 'ms': 1e3, 'msecond': 1e3}[unit])
    else:
        read[name].append(value * {'byte': 1, 'Kbyte': 1e3, 'Mbyte': 1e6, 'Gbyte': 1e9}[unit])
print(f"{sum(len(v) for v in time.values())} kernels, {sum(sum(v) for v in time.values()):.1f} us in all")
for name, d in sorted(time.items(), key=lambda kv: -sum(kv[1])):
    b = read.get(name)
    extra = f"  {sum(b) / (sum(d) * 1e-6) / 1e12:.2f} TB/s, {sum(b) / len(b) / 1e6:.1f} MB each" if b else ""
    print(f"  {name:28} {len(d):4} launches, {sum(d) / len(d):6.2f} us each, {sum(d):8.1f} us{extra}")
