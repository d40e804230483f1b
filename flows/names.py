"""Names of alpha's flows and of the deployments `alpha serve` registers, in one place: the
pull starts train-and-select by name, and the webhook receiver starts the pull by name."""

from __future__ import annotations

from alpha.config import Settings
from flows.locks import safe_name

ROUND_FLOW = "active-learning-round"
PULL_FLOW = "pull-labels"
TRAIN_FLOW = "train-and-select"


def deployment_name(settings: Settings) -> str:
    """One deployment of each flow per project prefix, so projects can be served side by
    side: `{flow}/alpha-{prefix}`."""
    return f"alpha-{safe_name(settings.s3.prefix)}"


def full_name(flow_name: str, settings: Settings) -> str:
    """`flow/deployment`, the form run_deployment and read_deployment_by_name take."""
    return f"{flow_name}/{deployment_name(settings)}"


def webhook_target(settings: Settings) -> str:
    """Where Label Studio sends the project's annotation events: the receiver's path that
    starts `pull-labels/alpha-{prefix}` (infra.webhook)."""
    base = (settings.labelstudio.webhook_url or "").rstrip("/")
    return f"{base}/labelstudio/{deployment_name(settings)}"
