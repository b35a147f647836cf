#!/usr/bin/env bash
# Run a flow from cron and act on its exit code. Install with `crontab -e`:
#   */5 * * * * /path/to/flowyard/examples/cron/orders_every_5_min.sh >> /var/log/flowyard-orders.log 2>&1
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
FLOWYARD="${FLOWYARD:-$HERE/../../.venv/bin/flowyard}"
FLOW="${FLOW:-$HERE/../quickstart/flow.yaml}"
export FLOWYARD_STATE="${FLOWYARD_STATE:-$HERE/.flowyard/state.db}"

"$FLOWYARD" run "$FLOW" --output json
code=$?
case $code in
  0) ;;                                                     # all records final, none parked
  1) echo "flowyard: records were dead-lettered; see: flowyard dlq list" >&2 ;;
  2) echo "flowyard: the flow or its environment is invalid; fix the deployment" >&2 ;;
  3) echo "flowyard: could not proceed (source down, circuit open or another run busy); the next run retries" >&2 ;;
  4) echo "flowyard: the state file cannot be used (damaged, read-only or disk full); fix it before the next run" >&2 ;;
  *) echo "flowyard: unexpected exit $code" >&2 ;;
esac
exit $code
