"""`python -m offerflow.cli ...` runs the command line, as the `offerflow` script does."""

from offerflow.cli import app

app()
