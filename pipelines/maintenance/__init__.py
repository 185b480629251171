"""Upkeep of what the stream wrote: the lake's status and maintenance (`lake_admin`), the
retention sweep of the vector index (`retention_sweep`), rebuilding an index from the lake
(`restore`). May import the ground floor only."""
