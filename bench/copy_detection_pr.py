#!/usr/bin/env python3
"""Precision / recall of `dino dedup` pairs on the copy-detection set of the CLI tests (6 photos
with 6 transformed copies each, 126 true pairs; file `NAME_tK.ext` is a copy of `NAME.jpg`).

    DINO_KEEP_COPYSET=/tmp/copyset cargo test --release -p dino-native --test collections dedup
    dino dedup /tmp/copyset -w W --out /tmp/dd --k 60 --threshold=-1 --show 0
    python3 bench/copy_detection_pr.py /tmp/dd/pairs.csv 0.75 0.9
"""
import csv, os, sys
rows=list(csv.DictReader(open(sys.argv[1])))
def stem(p):
    b=os.path.basename(p); return b.split('_t')[0].split('.')[0]
npos = 6*21
sc=sorted(((float(r['score']), stem(r['a'])==stem(r['b'])) for r in rows), reverse=True)
best=(0,0,0,0); tp=0
for i,(s,t) in enumerate(sc):
    tp+=t; p=tp/(i+1); r=tp/npos; f=2*p*r/(p+r) if p+r else 0
    if f>best[0]: best=(f,s,p,r)
print("best F1 %.3f at threshold %.3f: precision %.3f recall %.3f"%best)
for th in [float(x) for x in sys.argv[2:]]:
    sel=[t for s,t in sc if s>=th]; tp=sum(sel)
    print("threshold %.2f: %d pairs, precision %.3f recall %.3f"%(th,len(sel),tp/max(1,len(sel)),tp/npos))
