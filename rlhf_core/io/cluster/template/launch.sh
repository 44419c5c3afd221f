#!/usr/bin/env bash
# Train on this machine's GPUs: one process per GPU, launched by Hugging Face accelerate.
#
#   ./launch.sh                        # 8 GPUs (the default)
#   NUM_GPUS=4 ./launch.sh             # 4 GPUs
#   ./launch.sh --max-steps 100        # arguments after launch.sh go to train.py
#
# Multi-node: run this script on EVERY machine, with the same NUM_GPUS = the total number of GPUs
# over all machines, NUM_MACHINES = how many machines, MACHINE_RANK = 0 on the main machine and
# 1, 2, ... on the others, MAIN_PROCESS_IP = the main machine's address (reachable from all) and,
# if 29500 is taken, MAIN_PROCESS_PORT. Example for 2 machines with 8 GPUs each:
#   main:   NUM_GPUS=16 NUM_MACHINES=2 MACHINE_RANK=0 MAIN_PROCESS_IP=10.0.0.1 ./launch.sh
#   other:  NUM_GPUS=16 NUM_MACHINES=2 MACHINE_RANK=1 MAIN_PROCESS_IP=10.0.0.1 ./launch.sh
# Under SLURM, start one task per machine (srun --ntasks-per-node=1) and set MACHINE_RANK from
# $SLURM_NODEID and MAIN_PROCESS_IP from the first host of $SLURM_JOB_NODELIST.
# For models that do not fit one GPU, give accelerate a DeepSpeed ZeRO-3 or FSDP config file with
# ACCELERATE_CONFIG=path/to/config.yaml (see `accelerate config`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
extra=()
if [ -n "${ACCELERATE_CONFIG:-}" ]; then
  extra+=(--config_file "$ACCELERATE_CONFIG")
fi
if [ "${NUM_MACHINES:-1}" -gt 1 ]; then
  exec accelerate launch "${extra[@]}" --multi_gpu --num_machines "$NUM_MACHINES" \
    --machine_rank "${MACHINE_RANK:?set MACHINE_RANK (0 on the main machine)}" \
    --main_process_ip "${MAIN_PROCESS_IP:?set MAIN_PROCESS_IP (the main machine)}" \
    --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
    --num_processes ${NUM_GPUS:-8} train.py "$@"
fi
exec accelerate launch "${extra[@]}" --num_processes ${NUM_GPUS:-8} train.py "$@"
