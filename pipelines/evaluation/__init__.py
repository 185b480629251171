"""Retrieval quality: eval sets in the BEIR layout and their metrics (`eval_sets`), and
`embedworker eval` through the real pipeline and index (`retrieval_eval`). May import `ops`,
`batch`, `stream`, `serving`, `maintenance` and the ground floor."""
