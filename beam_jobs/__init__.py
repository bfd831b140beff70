"""Apache Beam pipelines. Importing the package quiets TensorFlow's and Beam's harmless start-up
output first (see `digitflow.terminal`): `python -m beam_jobs.classify` and Beam's worker
processes import it before either library."""

from digitflow import terminal

terminal.quiet_startup()
