"""The `offerflow` command line: one subcommand per stage.

    offerflow generate    write a seeded synthetic world (profiles, offers, events, truth)
    offerflow demo        generate a world, run the whole pipeline, show what to open next
    offerflow check       check every formula, rule and goal condition (no server; exit 2 on a mistake)
    offerflow run         run the pipeline flow for a project file
    offerflow decide      which offers for a profile in one or more placements
    offerflow serve       the HTTP decision service
    offerflow decide-batch  decide for every profile of a segment (no server)
    offerflow caps        frequency caps: show counters, reset
    offerflow rankings    list published ranking versions, show a table's head and metadata, roll back
    offerflow models      the AI models: what they optimize, when they last trained, how good they are
    offerflow evaluate    which strategy helps most: off-policy estimates, holdout lift, HTML report
    offerflow serving     what each placement serves (evaluation switches), history, revert with a reason
    offerflow train       train Customer AI / ranking models, or a variant (--set lightgbm.num_leaves=63)
    offerflow promote     make a model version @champion by hand, with the reason recorded
    offerflow up / down   start / stop the Prefect server, a worker and MLflow; deploy every flow
    offerflow score       Customer AI scores as of a date, with a backtest; offerflow segment exports
"""

# Importing a command module registers its commands, in this order in `offerflow --help`.
from offerflow.cli import runs  # noqa: F401,I001
from offerflow.cli import decisions, models, customer_ai, servers, serving  # noqa: F401,I001
from offerflow.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
