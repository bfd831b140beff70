"""Prefect flows. Importing the package quiets TensorFlow's and Beam's harmless start-up output
first (see `digitflow.terminal`): flow runs started by a worker or `serve` import it before
either library."""

from digitflow import terminal

terminal.quiet_startup()
