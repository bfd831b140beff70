"""Labelled spans: people's own scans with their labels, the one home of the closed loop.

`review` (a bulk run's doubtful rows -> contact sheets and a labels.csv to correct) with
`review_rows`, `contact_sheet` and `review_text`, `rows` (LABELS.csv columns, the reviewed
rule, relative paths), `checks` (production's agreement with a
span, suspect labels), `store` (immutable spans in the model store), `records` (what it
returns), `drafts` (LABELS.csv read into a draft span), `arrays` (images.npz, split by content
hash), `pooling` (spans pooled for training) and the commands `digitflow review` (`review_cli`)
and `digitflow data add | list | remove` (`cli`). Nothing is imported here, so the commands stay
cheap to load.
"""
