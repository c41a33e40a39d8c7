#!/usr/bin/env bash
# The replay study (docs/results/replay/README.md): the embedded study's correct protocol
# (experiments/demo.yaml), then the published code's deviations (docs/PAPER_CODE.md) switched on.
# Every run is experiments/demo.yaml plus the overrides below, so each step changes only what it names.
# Run from the repository root; about 2 h on a 2-core CPU (2 trials at a time). Each launch resumes its own store.
set -euo pipefail
cd "$(dirname "$0")/../../.."

# 1. The code's criteria, one at a time, in the demo's own store: they follow the demo's
#    low chain (the IMP masks of the correct protocol) at the same levels.
#    code_high: the code's "high"; code_random: its Bernoulli random; layer_random: random
#    with the ticket's per-tensor counts (which layers vs which weights).
lxsweep launch experiments/demo.yaml --resume \
  --set 'pruning.subnetworks=[low,random,high,reinit,scratch,code_high,code_random,layer_random]' \
  --set 'pruning.levels_of={high: [1], reinit: [2], random: [1,3,4,6,14], code_high: [1,3,4,6,14], code_random: [4,6], layer_random: [1,4,6,14]}'

# The variants below rewind to the same pretrained weights (the demo's rewind point, shipped
# bit-identical in experiments/checkpoints/) instead of pretraining again.
SAME_START=(--set 'model.config={}' --set 'model.pretraining={}'
            --set model.pretrained=checkpoints/tiny-lxmert-d3)

# 2. Everything the code does at once (experiments/paper-code.yaml's options on the embedded task):
#    masks from the one dense fine-tune by per-tensor 10% steps, the code's high and random,
#    mask not enforced while retraining, its tensor scope, one dense fine-tune for all seeds.
lxsweep launch experiments/demo.yaml --resume --set name=replay-code "${SAME_START[@]}" \
  --set training.enforce_mask=false --set pruning.rate=0.1 --set pruning.schedule=stepwise \
  --set pruning.levels=12 --set 'pruning.nominal=[0.5,0.7]' \
  --set 'pruning.subnetworks=[low,code_high,code_random]' \
  --set 'pruning.levels_of={low: [7,12], code_high: [7,12], code_random: [7,12]}' \
  --set 'pruning.scope=[published_code]' --set rewind.dense_seed=0

# 3. One deviation alone: the mask not enforced while retraining (pruned weights regrow), with
#    the correct protocol's IMP, high and random.
lxsweep launch experiments/demo.yaml --resume --set name=replay-no-enforce "${SAME_START[@]}" \
  --set training.enforce_mask=false --set pruning.levels=4 \
  --set 'pruning.subnetworks=[low,random,high]' \
  --set 'pruning.levels_of={low: [1], high: [1], random: [1,4]}'

# 4. One deviation alone: the code's masks (row a), per-tensor 10% steps from the one dense
#    fine-tune, with the correct protocol otherwise (enforced, lxsweep's scope, own dense seeds).
lxsweep launch experiments/demo.yaml --resume --set name=replay-stepwise "${SAME_START[@]}" \
  --set pruning.rate=0.1 --set pruning.schedule=stepwise --set pruning.levels=12 --set 'pruning.nominal=[0.5,0.7]' \
  --set 'pruning.subnetworks=[low]' --set 'pruning.levels_of={low: [7,12]}'

# The reports (docs/results/replay/*/): step 1 is a selection of the demo's store; the other
# stores hold only their own grid. Their names carry a hash that depends on this checkout's
# path (model.pretrained is hashed as the absolute path it resolves to).
lxsweep report experiments/demo.yaml --set pruning.levels=14 \
  --set 'pruning.subnetworks=[low,random,high,code_high,code_random,layer_random]' \
  --set 'pruning.levels_of={low: [1,3,4,6,14], random: [1,3,4,6,14], high: [1], code_high: [1,3,4,6,14], code_random: [4,6], layer_random: [1,4,6,14]}' \
  --out docs/results/replay/criteria
lxsweep report runs/replay-code-* --out docs/results/replay/code
lxsweep report runs/replay-no-enforce-* --out docs/results/replay/no-enforce
lxsweep report runs/replay-stepwise-* --out docs/results/replay/stepwise
