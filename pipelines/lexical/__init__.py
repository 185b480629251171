"""The lexical index: BM25 over Korean morphemes and English/number terms, derived from the lake.

analyzer (text -> terms: Kiwi for Korean, a plain analyzer for Latin words and numbers),
lake_feed (what the Delta table holds for an index now: each document's newest text, read from
the table's files by difference, so a refresh reads only what changed), index (the BM25 matrix
by bm25s, the documents' attributes, filtered search), snapshot (the state saved beside the
lake so that a new process starts from it). Imports the lake scan below it; never the serving
or CLI layers above.
"""
