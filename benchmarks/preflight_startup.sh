#!/bin/bash
# Wall and CPU time of a fresh `spatialctl` process reporting a missing model, two source trees interleaved
# (3 repetitions): benchmarks/preflight_startup.sh BEFORE_TREE AFTER_TREE. CPU (user + sys) is what to compare
# on a shared machine; the load average is printed with each run.
set -u
before=${1:?before tree}; after=${2:?after tree}
work=$(mktemp -d)
export OMP_NUM_THREADS=1
PYTHONPATH=$after python -m spatialctl synth "$work/syn" --frames 3 --size 32x24 --quiet
cmds=("reconstruct $work/syn/video.mp4 --model /nonexistent --quiet"
      "reconstruct $work/syn/video.mp4 --model nobody/no-dust3r --quiet"
      "track $work/syn/scene.zarr --detector-model nobody/no-det --quiet"
      "extract-gen-features $work/syn/scene.zarr --model nobody/no-wan --quiet")
for rep in 1 2 3; do
  for c in "${cmds[@]}"; do
    for tree in "$before" "$after"; do
      t=$(PYTHONPATH=$tree /usr/bin/time -f "%e %U %S" python -m spatialctl $c 2>&1 >/dev/null | tail -1)
      read -r wall user sys <<<"$t"
      echo "$tree | ${c%% *} ${c#* * } | wall $wall s | cpu $(echo "$user + $sys" | bc) s | load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
rm -rf "$work"
