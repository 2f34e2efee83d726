# Sourced by every entry script: the one place the team stack's settings get their defaults.
# Everything comes from the environment (compose's `environment:`, or `reclab up --team`);
# passwords have no default, so a service without its credentials refuses to start.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
# Training epochs and the like log through stdlib loggers: send them to the run log in the UI too.
export PREFECT_LOGGING_EXTRA_LOGGERS="${PREFECT_LOGGING_EXTRA_LOGGERS:-components,story}"
# A service's log is for its operator: INFO whatever the shell that started it prefers (a test
# run's WARNING would hide which process ran which task), and no progress bars in a log file.
export PREFECT_LOGGING_LEVEL="${RECLAB_LOGGING_LEVEL:-INFO}" MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

RECLAB_PG_HOST="${RECLAB_PG_HOST:-127.0.0.1}"
RECLAB_PG_PORT="${RECLAB_PG_PORT:-5432}"

need() {  # need VAR what-it-is: one clear line instead of a service that starts open
  if [ -z "${!1:-}" ]; then
    echo "$(basename "$0"): $1 is not set ($2); export it or put it in your credentials file" >&2
    exit 2
  fi
}

data_dir() {  # the one data directory every reclab process reads and writes
  : "${RECLAB_DATA_DIR:?set RECLAB_DATA_DIR to the data directory every service shares}"
  mkdir -p "$RECLAB_DATA_DIR"
}
