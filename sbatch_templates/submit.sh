#!/bin/bash
# anysweep: submit the $count array script(s) of $study rendered in this folder.
# `anysweep status $root` then follows them: the job names tie them to the study.
set -euo pipefail
cd "$$(dirname "$$0")"
$submit_lines
